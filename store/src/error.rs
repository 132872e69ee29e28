//! Errors of the store, each knowing whether a retry can help.

use std::path::{Path, PathBuf};

use signalbox_domain::Digest;

/// What can go wrong reading or writing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store has no artifact with this digest.
    #[error("artifact.digest: unknown artifact {0}; push it to the store first")]
    UnknownArtifact(Digest),
    /// The build is in quarantine: a release caught it failing; someone must lift it first.
    #[error("artifact.digest: build {digest} is quarantined by {by} since {at}: {reason}; lift it with `signalbox artifact lift {digest} --reason ...` once it is known good")]
    Quarantined {
        /// The build.
        digest: Digest,
        /// Who quarantined it.
        by: String,
        /// Why.
        reason: String,
        /// Since when.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A lift of a build that is not in quarantine.
    #[error("digest: build {0} is not in quarantine")]
    NotQuarantined(Digest),
    /// Bytes under a digest do not hash to it.
    #[error("artifact {expected} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes found.
        actual: Digest,
    },
    /// An artifact's record cannot be read.
    #[error("artifact {digest}: its record is unreadable: {message}")]
    Record {
        /// The artifact.
        digest: Digest,
        /// What is wrong.
        message: String,
    },
    /// What a pusher said about a build breaks a rule.
    #[error("{0}")]
    Invalid(signalbox_domain::Error),
    /// A pushed tarball is not a bundle signalbox can run.
    #[error("{0}")]
    Bundle(signalbox_bundle::Error),
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
    Backend(#[from] object_store::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// The input field a refusal names (`git_sha`, `signalbox.json: start.command`), if it is one.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Self::Invalid(e) => Some(e.field()),
            Self::Bundle(signalbox_bundle::Error::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    /// Whether retrying the same call could succeed: an unknown or corrupt artifact stays so.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::UnknownArtifact(_) | Self::Quarantined { .. } | Self::NotQuarantined(_) | Self::Corrupt { .. } | Self::Record { .. } | Self::Invalid(_) | Self::Bundle(_))
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
