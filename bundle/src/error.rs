//! Errors of reading and unpacking bundles.

use std::path::PathBuf;

/// What went wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest or the tarball breaks a rule; `field` names where.
    #[error("{field}: {rule}")]
    Invalid {
        /// Dotted path, e.g. `signalbox.json: start.args[1]` or `bundle`.
        field: String,
        /// The rule, in words.
        rule: String,
    },
    /// Reading or writing the release directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), rule: rule.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
