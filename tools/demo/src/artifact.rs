//! The artifact: the demo service's "build", one JSON file whose fields are the
//! behaviour the service shows once deployed. Shipping a worse build means shipping a
//! file with a higher `error_rate` or `latency_ms`, which is what canary analysis must
//! catch.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// The only `schema` value this build of the service understands.
pub const SCHEMA: &str = "signalbox.demo/v1";

/// Upper bound for `latency_ms` and `latency_jitter_ms`: a minute per request is already
/// far beyond anything a demo should do, and bounds the drain time of an instance.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Upper bound for `log_lines_per_request`, so a typo cannot fill the disk of a
/// thousand-instance fleet.
pub const MAX_LOG_LINES_PER_REQUEST: u32 = 1_000;

/// The artifact manifest.
///
/// ```json
/// {"schema":"signalbox.demo/v1","service":"checkout","version":"1.4.0","error_rate":0.005,
///  "latency_ms":5,"latency_jitter_ms":3,"log_lines_per_request":1}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Format marker; must be [`SCHEMA`].
    pub schema: String,
    /// Service name, e.g. `checkout`: letters, digits, `.`, `_`, `-`.
    pub service: String,
    /// Version label, e.g. `1.4.0`; no whitespace or control characters.
    pub version: String,
    /// Probability in [0, 1] that a `GET /` answers 500.
    pub error_rate: f64,
    /// Mean time a `GET /` takes, in milliseconds.
    pub latency_ms: u64,
    /// Half-width of the uniform jitter added to `latency_ms`, in milliseconds.
    pub latency_jitter_ms: u64,
    /// Log lines written to stdout per `GET /`.
    pub log_lines_per_request: u32,
    /// Warm-up before the instance opens its port, in milliseconds (a slow-starting build).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub startup_delay_ms: u64,
    /// After this long up, in milliseconds, requests fail at `degraded_error_rate` instead (a
    /// build that passes its verdict and then regresses, as a leak does); 0 never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub degrade_after_ms: u64,
    /// The error rate once degraded, in [0, 1].
    #[serde(default, skip_serializing_if = "is_unset")]
    pub degraded_error_rate: f64,
}

fn is_unset(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Artifact {
    /// Reads, parses and validates the artifact at `path` (symlinks followed).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        Loaded::from_path(path).map(|loaded| loaded.artifact)
    }

    /// Parses and validates an artifact from its bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes, || "artifact".to_owned())
    }

    fn parse(bytes: &[u8], what: impl Fn() -> String) -> Result<Self> {
        let artifact: Self = crate::parse_json(bytes, what)?;
        artifact.validate()?;
        Ok(artifact)
    }

    /// Checks every field's range; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        fn invalid(field: &'static str, reason: impl Into<String>) -> Result<()> {
            Err(Error::InvalidField {
                field,
                reason: reason.into(),
            })
        }
        if self.schema != SCHEMA {
            return invalid(
                "schema",
                format!("is {:?}, expected {SCHEMA:?}", self.schema),
            );
        }
        if self.service.is_empty() || self.service.len() > 128 {
            return invalid("service", "must be 1 to 128 characters long");
        }
        if let Some(c) = self
            .service
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(
                "service",
                format!("contains {c:?}; allowed are letters, digits, '.', '_', '-'"),
            );
        }
        if self.version.is_empty() || self.version.len() > 128 {
            return invalid("version", "must be 1 to 128 characters long");
        }
        if let Some(c) = self
            .version
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(
                "version",
                format!("contains {c:?}; whitespace and control characters are not allowed"),
            );
        }
        if !(0.0..=1.0).contains(&self.degraded_error_rate) {
            return invalid("degraded_error_rate", format!("is {}, must be within [0, 1]", self.degraded_error_rate));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return invalid(
                "error_rate",
                format!("is {}, must be within [0, 1]", self.error_rate),
            );
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return invalid(
                "latency_ms",
                format!("is {}, must be at most {MAX_LATENCY_MS}", self.latency_ms),
            );
        }
        if self.latency_jitter_ms > MAX_LATENCY_MS {
            return invalid(
                "latency_jitter_ms",
                format!(
                    "is {}, must be at most {MAX_LATENCY_MS}",
                    self.latency_jitter_ms
                ),
            );
        }
        if self.log_lines_per_request > MAX_LOG_LINES_PER_REQUEST {
            return invalid(
                "log_lines_per_request",
                format!(
                    "is {}, must be at most {MAX_LOG_LINES_PER_REQUEST}",
                    self.log_lines_per_request
                ),
            );
        }
        if self.startup_delay_ms > MAX_LATENCY_MS {
            return invalid(
                "startup_delay_ms",
                format!("is {}, must be at most {MAX_LATENCY_MS}", self.startup_delay_ms),
            );
        }
        Ok(())
    }
}

/// An artifact as read from disk, with what identifies it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated manifest.
    pub artifact: Artifact,
    /// `sha256:<hex>` of the file's bytes, the artifact's content address.
    pub digest: String,
    /// The file actually read, symlinks resolved: a later switch of a `current` symlink
    /// does not change what this process serves.
    pub path: PathBuf,
}

impl Loaded {
    /// Resolves `path` once, then reads, digests, parses and validates the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let read_error = |error| Error::Read {
            path: path.to_owned(),
            error,
        };
        let resolved = std::fs::canonicalize(path).map_err(read_error)?;
        let bytes = std::fs::read(&resolved).map_err(read_error)?;
        let artifact = Artifact::parse(&bytes, || format!("artifact {}", resolved.display()))?;
        Ok(Self {
            artifact,
            digest: digest(&bytes),
            path: resolved,
        })
    }
}

/// The content address of artifact bytes: `sha256:<lowercase hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"schema":"signalbox.demo/v1","service":"checkout","version":"1.4.0","error_rate":0.005,"latency_ms":5,"latency_jitter_ms":3,"log_lines_per_request":1}"#;

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut doc: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        doc[field] = value;
        serde_json::to_vec(&doc).unwrap()
    }

    fn error_of(bytes: &[u8]) -> String {
        Artifact::from_slice(bytes).unwrap_err().to_string()
    }

    #[test]
    fn example_parses() {
        let a = Artifact::from_slice(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(a.service, "checkout");
        assert_eq!(a.version, "1.4.0");
        assert_eq!(a.error_rate, 0.005);
        assert_eq!(
            (a.latency_ms, a.latency_jitter_ms, a.log_lines_per_request),
            (5, 3, 1)
        );
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        use serde_json::json;
        let cases = [
            ("schema", json!("signalbox.demo/v2")),
            ("service", json!("")),
            ("service", json!("check out")),
            ("version", json!("1.4 .0")),
            ("error_rate", json!(1.5)),
            ("error_rate", json!(-0.1)),
            ("latency_ms", json!(MAX_LATENCY_MS + 1)),
            ("latency_jitter_ms", json!(MAX_LATENCY_MS + 1)),
            (
                "log_lines_per_request",
                json!(MAX_LOG_LINES_PER_REQUEST + 1),
            ),
        ];
        for (field, value) in cases {
            let message = error_of(&with(field, value.clone()));
            assert!(
                message.contains(&format!("`{field}`")),
                "{field}={value}: {message}"
            );
        }
    }

    #[test]
    fn type_errors_name_their_field() {
        use serde_json::json;
        for (field, value) in [
            ("latency_ms", json!(-5)),
            ("error_rate", json!("high")),
            ("version", json!(14)),
        ] {
            let message = error_of(&with(field, value.clone()));
            assert!(
                message.contains(&format!("field `{field}`")),
                "{field}={value}: {message}"
            );
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_rejected_by_name() {
        assert!(error_of(&with("colour", "blue".into())).contains("colour"));
        let mut doc: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        doc.as_object_mut().unwrap().remove("version");
        assert!(error_of(&serde_json::to_vec(&doc).unwrap()).contains("`version`"));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        assert!(Artifact::from_slice(format!("{EXAMPLE} {{}}").as_bytes()).is_err());
    }

    #[test]
    fn from_path_resolves_the_symlink_once_and_digests_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("release-a");
        std::fs::create_dir(&release).unwrap();
        std::fs::write(release.join("artifact.json"), EXAMPLE).unwrap();
        std::os::unix::fs::symlink(&release, dir.path().join("current")).unwrap();

        let loaded = Loaded::from_path(dir.path().join("current/artifact.json")).unwrap();
        assert_eq!(
            loaded.path,
            release.join("artifact.json").canonicalize().unwrap()
        );
        assert_eq!(loaded.digest, digest(EXAMPLE.as_bytes()));
        assert_eq!(loaded.digest.len(), "sha256:".len() + 64);
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn from_path_names_a_missing_file() {
        let message = Artifact::from_path("/nonexistent/current/artifact.json")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("/nonexistent/current/artifact.json"),
            "{message}"
        );
    }
}
