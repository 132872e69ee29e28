//! Errors of the activities, each knowing whether a retry can help.

use std::path::{Path, PathBuf};

use signalbox_domain::Digest;
use temporalio_sdk::activities::ActivityError;
use temporalio_common::error::ApplicationFailure;

/// What can go wrong while acting on the world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule; retrying cannot help.
    #[error(transparent)]
    Invalid(#[from] signalbox_domain::Error),
    /// The store has no artifact with this digest.
    #[error("artifact.digest: unknown artifact {0}; push it to the store first")]
    UnknownArtifact(Digest),
    /// Bytes under a digest do not hash to it.
    #[error("artifact {expected} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes found.
        actual: Digest,
    },
    /// The fleet does not exist or is unusable.
    #[error("fleet.name: {0}")]
    Fleet(String),
    /// An instance did not reach the wanted state in time (transient: a retry may succeed).
    #[error("instance {instance}: {message}")]
    Instance {
        /// Instance id.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// The fleet is halted: an operator froze it, nothing may change until it is released.
    #[error("fleet {0} is halted; nothing was changed")]
    Halted(String),
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Object store trouble.
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
    /// A metrics endpoint could not be read.
    #[error("metrics of {instance}: {message}")]
    Metrics {
        /// Instance id.
        instance: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// Whether retrying the same call could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Invalid(_) | Self::UnknownArtifact(_) | Self::Corrupt { .. } | Self::Fleet(_) | Self::Halted(_))
    }
}

impl Error {
    /// The activity failure for this error, marked non-retryable where a retry cannot help.
    ///
    /// The SDK converts any error into a *retryable* failure with `?`; every activity returns
    /// through this instead, so bad input and policy refusals fail fast.
    pub fn into_activity(self) -> ActivityError {
        let (e, message) = (&self, self.to_string());
        if e.is_retryable() {
            ActivityError::application(ApplicationFailure::new(message))
        } else {
            ActivityError::application(ApplicationFailure::non_retryable(message))
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
