//! Errors of the activities, each knowing whether a retry can help.

use signalbox_contract::activities::INVALID_ARGUMENT;
use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// What can go wrong while acting on the world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule; retrying cannot help.
    #[error(transparent)]
    Invalid(#[from] signalbox_domain::Error),
    /// The artifact store or a cache.
    #[error(transparent)]
    Store(#[from] signalbox_store::Error),
    /// A target's substrate.
    #[error(transparent)]
    Substrate(#[from] signalbox_substrate::Error),
    /// The load balancer refused or failed a command.
    #[error("{0}")]
    Balancer(String),
    /// Temporal could not be asked (a lane's holder).
    #[error("temporal: {0}")]
    Temporal(String),
}

impl Error {
    /// Whether retrying the same call could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid(_) => false,
            Self::Store(e) => e.is_retryable(),
            Self::Substrate(e) => e.is_retryable(),
            Self::Balancer(_) | Self::Temporal(_) => true,
        }
    }

    /// Whether the error refuses a field of the request (its message is `<field>: <rule>`):
    /// the workflow reports it as bad input.
    pub fn is_invalid_field(&self) -> bool {
        use signalbox_substrate::Error as S;
        matches!(
            self,
            Self::Invalid(_) | Self::Store(signalbox_store::Error::UnknownArtifact(_) | signalbox_store::Error::Quarantined { .. }) | Self::Substrate(S::Invalid(_) | S::UnknownKind { .. } | S::Target(_))
        )
    }

    /// The activity failure for this error, marked non-retryable where a retry cannot help, and
    /// typed `InvalidArgument` where it refuses a field.
    ///
    /// The SDK converts any error into a *retryable* failure with `?`; every activity returns
    /// through this instead, so bad input and policy refusals fail fast.
    pub fn into_activity(self) -> ActivityError {
        let message = self.to_string();
        let failure = if self.is_invalid_field() {
            ApplicationFailure::builder(message).type_name(INVALID_ARGUMENT.to_owned()).non_retryable(true).build()
        } else if self.is_retryable() {
            ApplicationFailure::new(message)
        } else {
            ApplicationFailure::non_retryable(message)
        };
        ActivityError::application(failure)
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_field_is_typed_and_never_retried() {
        let unknown = Error::Store(signalbox_store::Error::UnknownArtifact(signalbox_domain::Digest::from_sha256_bytes(&[1; 32])));
        assert!(unknown.is_invalid_field() && !unknown.is_retryable());
        assert!(unknown.to_string().starts_with("artifact.digest: "));
        let halted = Error::Substrate(signalbox_substrate::Error::Halted("f".into()));
        assert!(!halted.is_invalid_field() && !halted.is_retryable());
        let flaky = Error::Substrate(signalbox_substrate::Error::Instance { instance: "i-1".into(), message: "slow".into() });
        assert!(flaky.is_retryable());
    }
}
