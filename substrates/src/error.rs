//! Errors of the substrates, each knowing whether a retry can help.

use std::path::{Path, PathBuf};

/// What can go wrong acting on a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule; retrying cannot help.
    #[error(transparent)]
    Invalid(#[from] signalbox_domain::Error),
    /// No substrate of this kind is registered with the worker.
    #[error("target.kind: no substrate of kind {kind:?} on this worker (it has: {known})")]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The kinds the registry has, comma-separated.
        known: String,
    },
    /// The target does not exist or is unusable.
    #[error("target.name: {0}")]
    Target(String),
    /// An instance did not reach the wanted state in time (transient: a retry may succeed).
    #[error("instance {instance}: {message}")]
    Instance {
        /// Instance id.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// An instance the platform reports unhealthy on the new build (pods that never became
    /// Ready, or crash): a verdict on the build, so a retry would only wait again.
    #[error("instance {instance}: {message}")]
    Unhealthy {
        /// Instance id.
        instance: String,
        /// What the platform says.
        message: String,
    },
    /// The target is halted: an operator froze it, nothing may change until it is released.
    #[error("target {0} is halted; nothing was changed")]
    Halted(String),
    /// An artifact could not be read from the store or a cache.
    #[error(transparent)]
    Artifact(#[from] signalbox_store::Error),
    /// An instance's disk or process: a release that cannot run, a start that failed.
    #[error(transparent)]
    Host(#[from] signalbox_host::Error),
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// Whether retrying the same call could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid(_) | Self::UnknownKind { .. } | Self::Target(_) | Self::Halted(_) | Self::Unhealthy { .. } => false,
            Self::Artifact(e) => e.is_retryable(),
            Self::Host(e) => e.is_retryable(),
            Self::Instance { .. } | Self::Io { .. } => true,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
