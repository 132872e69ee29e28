//! `signalbox.json`: how to run a build, checked field by field.
//!
//! ```json
//! {
//!   "start":   { "command": "python3", "args": ["server.py", "--port", "${PORT}"], "env": { "MODE": "prod" } },
//!   "ready":   { "http": "/healthz", "timeout_ms": 20000 },
//!   "metrics": { "path": "/metrics" },
//!   "drain":   { "signal": "TERM", "grace_ms": 5000 }
//! }
//! ```
//!
//! Only `start.command` is required. A build should listen on `$SIGNALBOX_ADDRESS:$PORT`. A command starting with `./` is a file of the bundle;
//! any other is looked up on the host's `PATH`. Arguments and environment values may use the
//! placeholders of [`PLACEHOLDERS`]; the process also gets them as environment variables
//! (`PORT`, `SIGNALBOX_INSTANCE_ID`, ...), and runs in its release directory.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signalbox_domain::bounds::{MAX_ITEMS, MAX_PATH, check_count, check_text};

use crate::{Error, Result};

/// Longest a build may take to become ready, or to drain: ten minutes.
const MAX_WAIT_MS: u64 = 10 * 60 * 1000;

/// The placeholders arguments and environment values may hold, and the environment variable
/// each is also passed as.
pub const PLACEHOLDERS: [(&str, &str); 5] = [
    ("${PORT}", "PORT"),
    ("${ADDRESS}", "SIGNALBOX_ADDRESS"),
    ("${INSTANCE_ID}", "SIGNALBOX_INSTANCE_ID"),
    ("${INSTANCE_DIR}", "SIGNALBOX_INSTANCE_DIR"),
    ("${RELEASE_DIR}", "SIGNALBOX_RELEASE_DIR"),
];

/// How to run one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// How to start it.
    pub start: Start,
    /// How to tell it is ready to serve.
    #[serde(default)]
    pub ready: Ready,
    /// Where its Prometheus metrics are.
    #[serde(default)]
    pub metrics: Metrics,
    /// How to stop it gracefully.
    #[serde(default)]
    pub drain: Drain,
}

/// The process to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// `./file` of the bundle, or a program on the host's `PATH`.
    pub command: String,
    /// Its arguments; placeholders are replaced.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; placeholders in values are replaced.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// How to tell a started build is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// An HTTP path on the instance's port that answers 2xx once ready. The default when no
    /// `command` is given: `/`.
    #[serde(default)]
    pub http: Option<String>,
    /// Or a command run in the release directory that exits 0 once ready.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// How long it may take, in milliseconds (at most ten minutes).
    #[serde(default = "default_ready_ms")]
    pub timeout_ms: u64,
}

impl Default for Ready {
    fn default() -> Self {
        Self { http: None, command: None, timeout_ms: default_ready_ms() }
    }
}

fn default_ready_ms() -> u64 {
    20_000
}

/// Where the build's metrics are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// HTTP path of its Prometheus text exposition on the instance's port.
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self { path: default_metrics_path() }
    }
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

/// How to stop a build gracefully: `signal`, then a kill after `grace_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// `TERM`, `INT`, `QUIT`, `HUP`, `USR1` or `USR2`.
    #[serde(default = "default_signal")]
    pub signal: String,
    /// Milliseconds between the signal and the kill (at most ten minutes).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

impl Default for Drain {
    fn default() -> Self {
        Self { signal: default_signal(), grace_ms: default_grace_ms() }
    }
}

fn default_signal() -> String {
    "TERM".into()
}

fn default_grace_ms() -> u64 {
    5_000
}

/// The signals a drain may send.
const SIGNALS: [&str; 6] = ["TERM", "INT", "QUIT", "HUP", "USR1", "USR2"];

/// What the placeholders stand for on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    /// The port the instance serves on.
    pub port: u16,
    /// The address it serves on (its host's address; loopback on the local fleet).
    pub address: String,
    /// The instance's id.
    pub instance_id: String,
    /// The instance's directory (kept across releases).
    pub instance_dir: String,
    /// The release's directory (the process's working directory).
    pub release_dir: String,
}

impl Vars {
    fn values(&self) -> [String; 5] {
        [self.port.to_string(), self.address.clone(), self.instance_id.clone(), self.instance_dir.clone(), self.release_dir.clone()]
    }

    fn expand(&self, text: &str) -> String {
        PLACEHOLDERS.iter().zip(self.values()).fold(text.to_owned(), |t, ((p, _), v)| t.replace(p, &v))
    }

    /// The environment every started build gets: `PORT`, `SIGNALBOX_INSTANCE_ID`, ...
    pub fn env(&self) -> Vec<(&'static str, String)> {
        PLACEHOLDERS.iter().map(|(_, name)| *name).zip(self.values()).collect()
    }
}

impl Manifest {
    /// Reads and checks a manifest; an error names the field (`signalbox.json: start.command`).
    pub fn read(json: &[u8]) -> Result<Self> {
        let field = |path: &str| if path == "." { crate::MANIFEST.to_owned() } else { format!("{}: {path}", crate::MANIFEST) };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::invalid(crate::MANIFEST, format!("is not JSON: {e}")))?;
        let manifest: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let rule = e.inner().to_string();
            match rule.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
                Some(name) if path == "." => Error::invalid(field(name), "is required"),
                Some(name) => Error::invalid(field(&format!("{path}.{name}")), "is required"),
                None => Error::invalid(field(&path), rule),
            }
        })?;
        manifest.check().map_err(|e| match e {
            Error::Invalid { field: f, rule } => Error::invalid(field(&f), rule),
            other => other,
        })?;
        Ok(manifest)
    }

    /// The rules serde cannot say; fields are named relative to the manifest.
    fn check(&self) -> Result<()> {
        let domain = |e: signalbox_domain::Error| Error::invalid(e.field().to_owned(), e.to_string().split_once(": ").map_or(String::new(), |(_, r)| r.to_owned()));
        let command = &self.start.command;
        if command.trim().is_empty() {
            return Err(Error::invalid("start.command", "must not be empty"));
        }
        check_text("start.command", command, MAX_PATH).map_err(domain)?;
        if command.starts_with('/') || (command.contains('/') && !command.starts_with("./")) || command.split('/').any(|p| p == "..") {
            return Err(Error::invalid("start.command", "must be ./<file of the bundle> or a program name looked up on PATH"));
        }
        check_count("start.args", self.start.args.len(), MAX_ITEMS).map_err(domain)?;
        for (i, arg) in self.start.args.iter().enumerate() {
            let f = format!("start.args[{i}]");
            check_text(&f, arg, MAX_PATH).map_err(domain)?;
            check_placeholders(&f, arg)?;
        }
        check_count("start.env", self.start.env.len(), MAX_ITEMS).map_err(domain)?;
        for (name, value) in &self.start.env {
            let f = format!("start.env.{name}");
            let well_formed = !name.is_empty()
                && name.len() <= 128
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !well_formed {
                return Err(Error::invalid(f, "a variable name is 1 to 128 of A-Z, a-z, 0-9 and '_', not starting with a digit"));
            }
            if name == "PORT" || name.starts_with("SIGNALBOX_") {
                return Err(Error::invalid(f, "PORT and SIGNALBOX_* are set by signalbox"));
            }
            check_text(&f, value, MAX_PATH).map_err(domain)?;
            check_placeholders(&f, value)?;
        }
        match (&self.ready.http, &self.ready.command) {
            (Some(_), Some(_)) => return Err(Error::invalid("ready", "give http or command, not both")),
            (Some(path), None) => check_http_path("ready.http", path)?,
            (None, Some(cmd)) => {
                if cmd.is_empty() || cmd[0].trim().is_empty() {
                    return Err(Error::invalid("ready.command", "must name a program"));
                }
                check_count("ready.command", cmd.len(), MAX_ITEMS).map_err(domain)?;
                for (i, arg) in cmd.iter().enumerate() {
                    let f = format!("ready.command[{i}]");
                    check_text(&f, arg, MAX_PATH).map_err(domain)?;
                    check_placeholders(&f, arg)?;
                }
            }
            (None, None) => {}
        }
        if !(1..=MAX_WAIT_MS).contains(&self.ready.timeout_ms) {
            return Err(Error::invalid("ready.timeout_ms", format!("must be 1 to {MAX_WAIT_MS} (ten minutes)")));
        }
        check_http_path("metrics.path", &self.metrics.path)?;
        if !SIGNALS.contains(&self.drain.signal.as_str()) {
            return Err(Error::invalid("drain.signal", format!("must be one of {}", SIGNALS.join(", "))));
        }
        if self.drain.grace_ms > MAX_WAIT_MS {
            return Err(Error::invalid("drain.grace_ms", format!("must be at most {MAX_WAIT_MS} (ten minutes)")));
        }
        Ok(())
    }

    /// The program, its arguments and its environment on one instance.
    pub fn command_line(&self, vars: &Vars) -> (String, Vec<String>, Vec<(String, String)>) {
        let mut env: Vec<(String, String)> = self.start.env.iter().map(|(k, v)| (k.clone(), vars.expand(v))).collect();
        env.extend(vars.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
        (self.start.command.clone(), self.start.args.iter().map(|a| vars.expand(a)).collect(), env)
    }

    /// The readiness command with placeholders replaced, if readiness is a command.
    pub fn ready_command(&self, vars: &Vars) -> Option<Vec<String>> {
        self.ready.command.as_ref().map(|c| c.iter().map(|a| vars.expand(a)).collect())
    }

    /// The HTTP path that says ready, if readiness is HTTP (the default).
    pub fn ready_path(&self) -> Option<&str> {
        match (&self.ready.http, &self.ready.command) {
            (Some(p), _) => Some(p),
            (None, None) => Some("/"),
            (None, Some(_)) => None,
        }
    }

    /// How long a start may take to become ready.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready.timeout_ms)
    }

    /// How long a drain may take before the kill.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.drain.grace_ms)
    }
}

fn check_http_path(field: &str, path: &str) -> Result<()> {
    let ok = path.starts_with('/') && path.len() <= MAX_PATH && path.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(Error::invalid(field, "must be an HTTP path starting with '/', printable ASCII without spaces")) }
}

/// Every `${...}` in `text` is a known placeholder.
fn check_placeholders(field: &str, text: &str) -> Result<()> {
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let tail = &rest[at..];
        let end = tail.find('}').map_or(tail.len(), |e| e + 1);
        let found = &tail[..end];
        if !PLACEHOLDERS.iter().any(|(p, _)| *p == found) {
            let known: Vec<&str> = PLACEHOLDERS.iter().map(|(p, _)| *p).collect();
            return Err(Error::invalid(field, format!("unknown placeholder {found}; known: {}", known.join(", "))));
        }
        rest = &tail[end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(json: &str) -> String {
        Manifest::read(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn only_the_command_is_required_and_everything_else_takes_its_default() {
        let m = Manifest::read(br#"{"start": {"command": "./server"}}"#).unwrap();
        assert_eq!(m.ready_path(), Some("/"));
        assert_eq!(m.ready_timeout(), Duration::from_secs(20));
        assert_eq!(m.metrics.path, "/metrics");
        assert_eq!((m.drain.signal.as_str(), m.grace()), ("TERM", Duration::from_secs(5)));
    }

    #[test]
    fn placeholders_are_replaced_and_passed_as_environment() {
        let m = Manifest::read(br#"{"start": {"command": "python3", "args": ["app.py", "--port=${PORT}"], "env": {"DATA": "${INSTANCE_DIR}/data"}}}"#).unwrap();
        let vars = Vars { port: 8080, address: "10.0.0.7".into(), instance_id: "i-0001".into(), instance_dir: "/srv/i-0001".into(), release_dir: "/srv/i-0001/releases/ab".into() };
        let (program, args, env) = m.command_line(&vars);
        assert_eq!((program.as_str(), args), ("python3", vec!["app.py".to_owned(), "--port=8080".to_owned()]));
        assert!(env.contains(&("DATA".into(), "/srv/i-0001/data".into())));
        assert!(env.contains(&("PORT".into(), "8080".into())));
        assert!(env.contains(&("SIGNALBOX_INSTANCE_ID".into(), "i-0001".into())));
    }

    #[test]
    fn a_bad_manifest_is_refused_naming_the_field_and_the_rule() {
        assert_eq!(refused(r#"{}"#), "signalbox.json: start: is required");
        assert_eq!(refused(r#"{"start": {}}"#), "signalbox.json: start.command: is required");
        assert!(refused(r#"{"start": {"command": "x", "argz": []}}"#).starts_with("signalbox.json: start.argz: unknown field `argz`"));
        assert!(refused(r#"{"start": {"command": "x", "args": [1]}}"#).starts_with("signalbox.json: start.args[0]: invalid type"));
        assert_eq!(refused(r#"{"start": {"command": "/bin/sh"}}"#), "signalbox.json: start.command: must be ./<file of the bundle> or a program name looked up on PATH");
        assert_eq!(refused(r#"{"start": {"command": "./../x"}}"#), "signalbox.json: start.command: must be ./<file of the bundle> or a program name looked up on PATH");
        assert_eq!(refused(r#"{"start": {"command": "x", "args": ["${PROT}"]}}"#), "signalbox.json: start.args[0]: unknown placeholder ${PROT}; known: ${PORT}, ${ADDRESS}, ${INSTANCE_ID}, ${INSTANCE_DIR}, ${RELEASE_DIR}");
        assert_eq!(refused(r#"{"start": {"command": "x", "env": {"PORT": "1"}}}"#), "signalbox.json: start.env.PORT: PORT and SIGNALBOX_* are set by signalbox");
        assert_eq!(refused(r#"{"start": {"command": "x"}, "ready": {"http": "/a", "command": ["b"]}}"#), "signalbox.json: ready: give http or command, not both");
        assert_eq!(refused(r#"{"start": {"command": "x"}, "ready": {"http": "healthz"}}"#), "signalbox.json: ready.http: must be an HTTP path starting with '/', printable ASCII without spaces");
        assert_eq!(refused(r#"{"start": {"command": "x"}, "ready": {"timeout_ms": 0}}"#), "signalbox.json: ready.timeout_ms: must be 1 to 600000 (ten minutes)");
        assert_eq!(refused(r#"{"start": {"command": "x"}, "drain": {"signal": "KILL"}}"#), "signalbox.json: drain.signal: must be one of TERM, INT, QUIT, HUP, USR1, USR2");
        assert_eq!(refused(r#"{"start": {"command": "x"}, "drain": {"grace_ms": 700000}}"#), "signalbox.json: drain.grace_ms: must be at most 600000 (ten minutes)");
        let many: Vec<String> = (0..101).map(|i| format!("\"a{i}\"")).collect();
        assert_eq!(refused(&format!(r#"{{"start": {{"command": "x", "args": [{}]}}}}"#, many.join(","))), "signalbox.json: start.args: must have at most 100 entries (has 101)");
        assert!(refused("not json").starts_with("signalbox.json: is not JSON"));
    }
}
