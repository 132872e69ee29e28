//! The crate's one error type.

/// Why a metric could not be read, a query not built, or a recording not converted.
///
/// A read that fails becomes an [`Observation::Error`](signalbox_analysis::Observation) in a
/// sample, never a pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The request failed: refused, reset, or timed out.
    #[error("{url}: {message}")]
    Http {
        /// What was asked.
        url: String,
        /// What went wrong, e.g. `timed out after 2s`.
        message: String,
    },
    /// The source answered with something other than what was asked for.
    #[error("{url}: {message}")]
    Answer {
        /// What was asked.
        url: String,
        /// What was wrong with the answer, e.g. `HTTP 503` or a parse error.
        message: String,
    },
    /// Prometheus refused or failed the query.
    #[error("prometheus {kind}: {message} (query: {query})")]
    Query {
        /// Prometheus' `errorType`, e.g. `bad_data` or `timeout`.
        kind: String,
        /// Prometheus' `error`.
        message: String,
        /// The PromQL sent.
        query: String,
    },
    /// A query template is malformed.
    #[error("template {template:?}: {rule}")]
    Template {
        /// The template text.
        template: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A template placeholder has no value for this group.
    #[error("placeholder {{{{{0}}}}} has no value")]
    MissingValue(String),
    /// The source has no query or measure under this metric name.
    #[error("metric `{0}`: this source has no query for it")]
    UnknownMetric(String),
    /// A recorded deploy does not have the expected shape; `field` says where.
    #[error("{field}: {rule}")]
    Invalid {
        /// Where, e.g. `events[33].attributes`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
}

impl Error {
    /// Whether asking again could succeed: I/O and Prometheus' own failures can, a bad
    /// template, an unknown metric or a malformed recording cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { .. } | Self::Answer { .. } => true,
            Self::Query { kind, .. } => !matches!(kind.as_str(), "bad_data"),
            Self::Template { .. }
            | Self::MissingValue(_)
            | Self::UnknownMetric(_)
            | Self::Invalid { .. } => false,
        }
    }

    pub(crate) fn http(url: &str, e: &reqwest::Error) -> Self {
        let message = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            error_chain(e)
        };
        Self::Http {
            url: url.to_owned(),
            message,
        }
    }

    pub(crate) fn answer(url: &str, message: impl Into<String>) -> Self {
        Self::Answer {
            url: url.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// reqwest's top-level message ("error sending request") hides the cause ("connection
/// refused"); a source error must say what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
