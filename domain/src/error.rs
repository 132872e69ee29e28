//! Errors of the deploy domain.

/// A request or plan that breaks a rule. Every variant names the field and the rule, so the
/// caller can fix its input without reading code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A field of the input breaks a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `batch_plan.steps[2].percent`.
        field: String,
        /// The rule it breaks, in words.
        rule: String,
    },
}

impl Error {
    /// An [`Error::Invalid`] for `field` breaking `rule`.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), rule: rule.into() }
    }

    /// The offending field's dotted path.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
