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
    /// The hosts the owners expect (agents register themselves; this says who is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostSpec>,
}

/// A host the owners expect in a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Its name, as its agent's `--host`.
    pub name: String,
    /// Its region, one of the target's.
    pub region: String,
}

/// A target file as kept in git (TOML):
///
/// ```toml
/// name = "web"
/// kind = "agent"
/// report_timeout_ms = 60000
///
/// [regions.us-east]
/// cache = "http://cache.us-east.internal:8082"
///
/// [[hosts]]
/// name = "web-1"
/// region = "us-east"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// The target's name: 1 to 63 of a-z, 0-9 and '-'.
    pub name: String,
    /// Its kind; `agent` is the one a file declares.
    #[serde(default = "agent_kind")]
    pub kind: String,
    /// Each region, with the cache its hosts pull builds from.
    pub regions: BTreeMap<String, RegionSpec>,
    /// How long a host may take to report a change, in milliseconds.
    #[serde(default = "default_report_ms")]
    pub report_timeout_ms: u64,
    /// The hosts the owners expect.
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
}

fn agent_kind() -> String {
    "agent".into()
}

/// A target file that breaks a rule: the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Invalid {
    /// Dotted path, e.g. `hosts[2].region`.
    pub field: String,
    /// The rule, in words.
    pub rule: String,
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), rule: rule.into() }
}

/// Most hosts a file may declare.
pub const MAX_HOSTS: usize = 10_000;

impl TargetFile {
    /// Reads and checks a target file (TOML); an error names the field.
    pub fn read(text: &str) -> Result<Self, Invalid> {
        let table: toml::Table = toml::from_str(text).map_err(|e| invalid("file", format!("is not TOML: {}", e.message())))?;
        let value = serde_json::to_value(table).map_err(|e| invalid("file", e.to_string()))?;
        let file: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let rule = e.inner().to_string();
            match rule.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
                Some(name) if path == "." => invalid(name, "is required"),
                Some(name) => invalid(format!("{path}.{name}"), "is required"),
                None => invalid(if path == "." { "file".to_owned() } else { path }, rule),
            }
        })?;
        file.check()?;
        Ok(file)
    }

    /// The spec the file declares, as etcd keeps it.
    pub fn spec(&self) -> TargetSpec {
        TargetSpec { regions: self.regions.clone(), report_timeout_ms: self.report_timeout_ms, hosts: self.hosts.clone() }
    }

    fn check(&self) -> Result<(), Invalid> {
        let name_rule = |s: &str| (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-');
        if !name_rule(&self.name) {
            return Err(invalid("name", "must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'"));
        }
        if self.kind != "agent" {
            return Err(invalid("kind", "must be agent: local fleets are made by signalbox demo and the test harness"));
        }
        if self.regions.is_empty() {
            return Err(invalid("regions", "must name at least one region"));
        }
        for (region, spec) in &self.regions {
            if !name_rule(region) {
                return Err(invalid(format!("regions.{region}"), "a region name is 1 to 63 of a-z, 0-9 and '-'"));
            }
            let cache = &spec.cache;
            let ok = (cache.starts_with("http://") || cache.starts_with("https://")) && cache.len() <= 2048 && cache.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(invalid(format!("regions.{region}.cache"), "must be an http:// or https:// URL"));
            }
        }
        if !(1_000..=3_600_000).contains(&self.report_timeout_ms) {
            return Err(invalid("report_timeout_ms", "must be 1000 to 3600000 (an hour)"));
        }
        if self.hosts.len() > MAX_HOSTS {
            return Err(invalid("hosts", format!("must have at most {MAX_HOSTS} entries (has {})", self.hosts.len())));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let ok = (1..=128).contains(&host.name.len()) && host.name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !ok {
                return Err(invalid(format!("hosts[{i}].name"), "must be 1 to 128 printable ASCII characters without spaces or '/'"));
            }
            if !seen.insert(host.name.as_str()) {
                return Err(invalid(format!("hosts[{i}].name"), format!("{} is declared twice", host.name)));
            }
            if !self.regions.contains_key(&host.region) {
                return Err(invalid(format!("hosts[{i}].region"), format!("{:?} is not one of the target's regions", host.region)));
            }
        }
        Ok(())
    }
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

/// Every host key of a target read at once: registrations, desired states (with the key's
/// revision, for compare-and-set) and observed states, by host.
#[derive(Debug, Default)]
pub struct Hosts {
    /// Live registrations.
    pub registration: BTreeMap<String, Registration>,
    /// Desired states and their keys' revisions.
    pub desired: BTreeMap<String, (Desired, i64)>,
    /// Observed states.
    pub observed: BTreeMap<String, Observed>,
}

impl Hosts {
    /// Reads `(key, value, revision)` triples of a prefix read of `keys.hosts()`; a value that
    /// cannot be read is named by its key.
    pub fn read<'a>(keys: &Keys, kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8], i64)>) -> Result<Self, Invalid> {
        let mut hosts = Self::default();
        for (key, value, revision) in kvs {
            let key = String::from_utf8_lossy(key);
            let Some((host, what)) = keys.parse_host_key(&key) else { continue };
            let bad = |e: serde_json::Error| invalid(key.to_string(), format!("is unreadable: {e}"));
            match what {
                "registration" => {
                    hosts.registration.insert(host.to_owned(), serde_json::from_slice(value).map_err(bad)?);
                }
                "desired" => {
                    hosts.desired.insert(host.to_owned(), (serde_json::from_slice(value).map_err(bad)?, revision));
                }
                "observed" => {
                    hosts.observed.insert(host.to_owned(), serde_json::from_slice(value).map_err(bad)?);
                }
                _ => {}
            }
        }
        Ok(hosts)
    }
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

    const FILE: &str = r#"
name = "web"
report_timeout_ms = 30000

[regions.us-east]
cache = "http://cache.us-east:8082"

[regions.eu-west]
cache = "http://cache.eu-west:8082"

[[hosts]]
name = "web-1"
region = "us-east"
"#;

    #[test]
    fn a_target_file_reads_with_defaults() {
        let file = TargetFile::read(FILE).unwrap();
        assert_eq!((file.name.as_str(), file.kind.as_str(), file.report_timeout_ms), ("web", "agent", 30_000));
        assert_eq!(file.regions["eu-west"].cache, "http://cache.eu-west:8082");
        assert_eq!(file.hosts, vec![HostSpec { name: "web-1".into(), region: "us-east".into() }]);
    }

    #[test]
    fn a_bad_target_file_is_refused_naming_the_field() {
        let refused = |text: &str| TargetFile::read(text).unwrap_err().to_string();
        assert_eq!(refused("name = \"web\""), "regions: is required");
        assert!(refused("name = ").starts_with("file: is not TOML"));
        assert_eq!(refused(&FILE.replace("us-east\"\n", "us-wast\"\n")), "hosts[0].region: \"us-wast\" is not one of the target's regions");
        assert_eq!(refused(&FILE.replace("http://cache.eu-west", "ftp://cache.eu-west")), "regions.eu-west.cache: must be an http:// or https:// URL");
        assert_eq!(refused(&FILE.replace("name = \"web\"", "name = \"Web\"")), "name: must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'");
        assert_eq!(refused(&format!("kind = \"local\"\n{FILE}")), "kind: must be agent: local fleets are made by signalbox demo and the test harness");
        assert_eq!(refused(&FILE.replace("30000", "5")), "report_timeout_ms: must be 1000 to 3600000 (an hour)");
        assert!(refused(&FILE.replace("cache = \"http://cache.us-east:8082\"", "cache = \"http://x\"\ncahce = 1")).starts_with("regions.us-east.cahce: unknown field `cahce`"), "{}", refused(&FILE.replace("cache = \"http://cache.us-east:8082\"", "cache = \"http://x\"\ncahce = 1")));
        assert_eq!(refused(&format!("{FILE}\n[[hosts]]\nname = \"web-1\"\nregion = \"eu-west\"\n")), "hosts[1].name: web-1 is declared twice");
    }

    #[test]
    fn host_keys_read_back_as_host_and_kind() {
        let keys = Keys::new("web");
        assert_eq!(keys.desired("h-01"), "/signalbox/targets/web/hosts/h-01/desired");
        assert_eq!(keys.parse_host_key(&keys.observed("h-01")), Some(("h-01", "observed")));
        assert_eq!(keys.parse_host_key("/signalbox/targets/other/hosts/h/desired"), None);
    }
}
