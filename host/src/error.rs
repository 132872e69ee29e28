//! Errors of keeping an instance.

use std::path::{Path, PathBuf};

/// What can go wrong on an instance's disk or with its process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The service process could not be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A build is not a bundle that can run (retrying cannot help).
    #[error(transparent)]
    Bundle(#[from] signalbox_bundle::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// Whether retrying could succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Bundle(_))
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
