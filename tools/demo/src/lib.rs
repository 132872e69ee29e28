//! The demo workload that signalbox deploys: an HTTP service whose artifact (one JSON
//! file) carries its behaviour, and a load generator that drives a fleet of it.
//!
//! - [`artifact`]: the artifact manifest, its validation and content digest.
//! - [`metrics`]: the service's Prometheus metrics, kept in atomics, rendered by hand.
//! - [`service`]: one fleet instance (`signalbox-demo-service`).
//! - [`fleet`]: the fleet inventory file the load generator follows.
//! - [`pacing`] and [`loadgen`]: the load generator (`signalbox-loadgen`).

pub mod artifact;
pub mod fleet;
pub mod loadgen;
pub mod metrics;
pub mod pacing;
pub mod prng;
pub mod service;
pub mod shutdown;

use std::path::PathBuf;

pub use artifact::Artifact;

/// Everything that can go wrong in the demo crate.
///
/// Messages include their cause (which is therefore not also exposed as
/// [`std::error::Error::source`], lest `{:#}` reports print it twice).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// A JSON document does not have the expected shape.
    #[error("{what}: {}{error}", field_prefix(.field))]
    Parse {
        /// What was parsed, e.g. `artifact /x/artifact.json`.
        what: String,
        /// Path to the offending field (`latency_ms`, `instances.3.port`); empty when the
        /// error is about the document as a whole (the JSON error then names the field,
        /// as in "missing field `version`").
        field: String,
        /// The JSON error.
        error: serde_json::Error,
    },
    /// An artifact field has a value outside its allowed range.
    #[error("artifact field `{field}` {reason}")]
    InvalidField {
        /// The field's name in the JSON document.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("binding {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// Any other I/O failure, e.g. while serving.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// A command-line or configuration option is unusable.
    #[error("option `{option}` {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("building HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

/// Parses JSON bytes, reporting the path of the offending field on type errors.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl Fn() -> String,
) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        Error::Parse {
            what: what(),
            field: if field == "." { String::new() } else { field },
            error: e.into_inner(),
        }
    })?;
    de.end().map_err(|error| Error::Parse {
        what: what(),
        field: String::new(),
        error,
    })?;
    Ok(value)
}
