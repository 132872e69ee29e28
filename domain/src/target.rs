//! Where a deploy goes: a target of some kind (the local process fleet today, host agents and
//! Kubernetes workloads later), named within its kind.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounds::check_name;
use crate::{Error, Result};

/// The kind of the local process fleet, the embedded default.
pub const LOCAL: &str = "local";

/// A deploy target: which substrate kind acts on it, and its name there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Target name: lowercase letters, digits and `-`, 1 to 63 characters. For the local kind,
    /// a fleet under the signalbox home.
    pub name: String,
    /// Substrate kind, e.g. `local`; default `local`.
    #[serde(default = "local")]
    pub kind: String,
}

fn local() -> String {
    LOCAL.to_owned()
}

impl Target {
    /// The local fleet `name`.
    pub fn local(name: impl Into<String>) -> Self {
        Self { name: name.into(), kind: local() }
    }

    /// Checks name and kind; errors name the field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        check_name(&format!("{prefix}.name"), &self.name)?;
        let kind_ok = (1..=32).contains(&self.kind.len()) && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !kind_ok {
            return Err(Error::invalid(format!("{prefix}.kind"), "must be 1 to 32 of a-z, 0-9 and '-'"));
        }
        Ok(())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_kind_is_a_local_fleet() {
        let t: Target = serde_json::from_str(r#"{"name": "demo"}"#).unwrap();
        assert_eq!(t, Target::local("demo"));
        assert_eq!(t.to_string(), "local/demo");
        assert_eq!(Target { kind: "K8s".into(), ..t.clone() }.validate("target").unwrap_err().field(), "target.kind");
        assert_eq!(Target::local("").validate("target").unwrap_err().field(), "target.name");
        assert!(serde_json::from_str::<Target>(r#"{"name": "demo", "knd": "local"}"#).is_err(), "typos are refused");
    }
}
