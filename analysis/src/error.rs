//! The crate's one error type.

/// Why a policy, an input or a sample was refused.
///
/// Every refusal is bad input: retrying the same call cannot succeed, so callers that run
/// inside a Temporal activity should report it as non-retryable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule. `field` is a path a person can find in the JSON input,
    /// e.g. `policy.metrics[2].weight`.
    #[error("{field}: {rule}")]
    Invalid {
        /// Path of the offending field, e.g. `policy.metrics[2].weight`.
        field: String,
        /// The rule it breaks, e.g. `must be > 0`.
        rule: String,
    },
    /// Text that is not JSON of the expected shape.
    #[error("not a valid {what}: {message}")]
    Json {
        /// What was being read, e.g. `AnalysisInput`.
        what: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for [`Error::Invalid`].
pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Refuses `value` unless it is a finite number satisfying `ok`.
pub(crate) fn check(field: &str, value: f64, ok: bool, rule: &str) -> Result<()> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(invalid(field, rule))
    }
}
