//! The keys and values the agent and the agent substrate exchange through etcd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use signalbox_domain::Digest;

/// Where every target's keys live.
pub const ROOT: &str = "/signalbox/targets/";

/// The keys of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    target: String,
}

impl Keys {
    /// The keys of `target`.
    pub fn new(target: &str) -> Self {
        Self { target: target.to_owned() }
    }

    /// The target's name.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn base(&self) -> String {
        format!("{ROOT}{}/", self.target)
    }

    /// The target's spec.
    pub fn spec(&self) -> String {
        format!("{}spec", self.base())
    }

    /// The halt key.
    pub fn halt(&self) -> String {
        format!("{}halt", self.base())
    }

    /// The prefix of every host key.
    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.base())
    }

    /// The prefix of one host's keys.
    pub fn host(&self, host: &str) -> String {
        format!("{}{host}/", self.hosts())
    }

    /// A host's registration (under its agent's lease).
    pub fn registration(&self, host: &str) -> String {
        format!("{}registration", self.host(host))
    }

    /// A host's desired state.
    pub fn desired(&self, host: &str) -> String {
        format!("{}desired", self.host(host))
    }

    /// A host's observed state.
    pub fn observed(&self, host: &str) -> String {
        format!("{}observed", self.host(host))
    }

    /// The prefix of a deploy's audit events on this target.
    pub fn audit(&self, deploy_id: &str) -> String {
        format!("{}audit/{deploy_id}/", self.base())
    }

    /// Which host key `key` is: `(host, "registration" | "desired" | "observed")`.
    pub fn parse_host_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(&self.hosts())?;
        rest.split_once('/')
    }
}

/// A target of agent hosts, as its owners declare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Each region, with the cache its hosts pull builds from.
    pub regions: BTreeMap<String, RegionSpec>,
    /// How long a host may take to report a change (pull, switch, ready), in milliseconds.
    #[serde(default = "default_report_ms")]
    pub report_timeout_ms: u64,
}

fn default_report_ms() -> u64 {
    60_000
}

/// One region of a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Base URL of the region's artifact cache; a build is at `<cache>/sha256/<hex>`.
    pub cache: String,
}

/// What an agent says about its host, under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The host's name.
    pub host: String,
    /// Its region.
    pub region: String,
    /// The address its service answers on.
    pub address: String,
    /// The port its service answers on.
    pub port: u16,
    /// When this agent process started (RFC 3339).
    pub started_at: String,
}

/// The build a host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Bumped by every write: an observed state answers one generation.
    pub generation: u64,
    /// The build.
    pub digest: Digest,
    /// Its version name.
    pub version: String,
    /// The deploy that wants it.
    pub deploy_id: String,
    /// Where to pull it: the region cache's base URL.
    pub source: String,
    /// An undo: taken even while the target is halted.
    #[serde(default)]
    pub rollback: bool,
}

/// Where a host stands with its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Pulling, switching or starting.
    Converging,
    /// Serving `digest`, ready.
    Ready,
    /// The change failed; `message` says why.
    Failed,
    /// The target is halted: no step was taken.
    Halted,
}

/// What a host runs, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The desired generation this answers.
    pub generation: u64,
    /// Where it stands.
    pub state: State,
    /// The build it runs (its `current` release).
    pub digest: Option<Digest>,
    /// That build's version.
    pub version: Option<String>,
    /// The build it ran before (its `previous` release).
    pub previous: Option<Digest>,
    /// The previous build's version.
    pub previous_version: Option<String>,
    /// The deploy that last changed it.
    pub owner: Option<String>,
    /// HTTP path of its metrics (from the running bundle's manifest).
    pub metrics_path: String,
    /// Why a change failed, or what it is doing.
    pub message: String,
    /// When this was written (RFC 3339).
    pub at: String,
}

/// A target's halt mark: the deploy that froze it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltMark {
    /// The deploy that set it.
    pub deploy_id: String,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_read_back_as_host_and_kind() {
        let keys = Keys::new("web");
        assert_eq!(keys.desired("h-01"), "/signalbox/targets/web/hosts/h-01/desired");
        assert_eq!(keys.parse_host_key(&keys.observed("h-01")), Some(("h-01", "observed")));
        assert_eq!(keys.parse_host_key("/signalbox/targets/other/hosts/h/desired"), None);
    }
}
