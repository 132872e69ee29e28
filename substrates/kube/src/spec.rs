//! The worker's file of Kubernetes targets: which cluster, namespace and workload each target
//! name means. TOML, every field checked at start with the field named in the refusal:
//!
//! ```toml
//! [[target]]
//! name = "web-prod"          # the target name deploys use (kind "kubernetes")
//! namespace = "shop"
//! workload = "web"           # a Deployment: its pod template is every build's template
//! container = "app"          # the container whose image a build sets; default the first
//! context = "prod-eu"        # kubeconfig context; default the current one
//! kubeconfig = "/etc/signalbox/kubeconfig"  # default $KUBECONFIG, ~/.kube/config, else in-cluster
//! region = "eu-west"         # what the status calls the cluster; default the context, else "kubernetes"
//! ready_timeout_ms = 120000  # how long a batch's pods may take to be Ready before the batch fails
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use signalbox_domain::Error as Invalid;
use signalbox_domain::bounds::check_name;

/// Default time a batch's pods have to become Ready.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 120_000;

/// One Kubernetes target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The target's name in deploy requests.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The Deployment whose pod template every build's ReplicaSet copies.
    pub workload: String,
    /// The container a build's image goes into; `None` is the template's first.
    #[serde(default)]
    pub container: Option<String>,
    /// The kubeconfig context; `None` is the file's current context.
    #[serde(default)]
    pub context: Option<String>,
    /// The kubeconfig file; `None` is `$KUBECONFIG` or `~/.kube/config`, else in-cluster.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// What instances report as their region.
    #[serde(default)]
    pub region: Option<String>,
    /// How long a batch's pods may take to become Ready.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
}

fn default_ready_timeout_ms() -> u64 {
    DEFAULT_READY_TIMEOUT_MS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<TargetSpec>,
}

/// A refused targets file: the file and the broken rule, naming its field.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// `<field>: <rule>`.
    pub message: String,
}

impl TargetSpec {
    /// The region instances report.
    pub fn region(&self) -> &str {
        self.region.as_deref().or(self.context.as_deref()).unwrap_or("kubernetes")
    }

    fn check(&self, at: &str) -> signalbox_domain::Result<()> {
        check_name(&format!("{at}.name"), &self.name)?;
        check_dns_label(&format!("{at}.namespace"), &self.namespace)?;
        // The workload's ReplicaSets are named `<workload>-<12 hex digits>`.
        check_dns_label(&format!("{at}.workload"), &self.workload)?;
        if self.workload.len() > 63 - 13 {
            return Err(Invalid::invalid(format!("{at}.workload"), "must be at most 50 characters (its ReplicaSets add 13)"));
        }
        if let Some(c) = &self.container {
            check_dns_label(&format!("{at}.container"), c)?;
        }
        if self.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(Invalid::invalid(format!("{at}.context"), "must not be empty; leave it out for the current context"));
        }
        if !(1_000..=3_600_000).contains(&self.ready_timeout_ms) {
            return Err(Invalid::invalid(format!("{at}.ready_timeout_ms"), "must be between 1000 and 3600000"));
        }
        Ok(())
    }
}

/// A Kubernetes object name of the DNS-label kind: 1 to 63 of a-z, 0-9 and '-', starting and
/// ending with a letter or digit.
fn check_dns_label(field: &str, value: &str) -> signalbox_domain::Result<()> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(()) } else { Err(Invalid::invalid(field, "must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'")) }
}

/// Reads the targets in `text` (from `path`, for the message); the first broken rule is the
/// error, naming its field (`target[1].namespace: ...`).
pub fn parse(path: &Path, text: &str) -> Result<Vec<TargetSpec>, FileError> {
    let refuse = |message: String| FileError { path: path.to_owned(), message };
    let table: toml::Table = toml::from_str(text).map_err(|e| refuse(format!("file: is not TOML: {}", e.message())))?;
    let value = serde_json::to_value(table).map_err(|e| refuse(format!("file: {e}")))?;
    let file: File = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let rule = e.inner().to_string();
        refuse(match rule.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
            Some(name) => format!("{path}.{name}: is required"),
            None => format!("{path}: {rule}"),
        })
    })?;
    for (i, t) in file.target.iter().enumerate() {
        t.check(&format!("target[{i}]")).map_err(|e| refuse(e.to_string()))?;
        if file.target[..i].iter().any(|o| o.name == t.name) {
            return Err(refuse(format!("target[{i}].name: {:?} is named twice", t.name)));
        }
    }
    Ok(file.target)
}

/// Reads the targets file at `path`.
pub fn read(path: &Path) -> Result<Vec<TargetSpec>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError { path: path.to_owned(), message: format!("cannot read: {e}") })?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[target]]\nname = \"web-prod\"\nnamespace = \"shop\"\nworkload = \"web\"\n";

    fn refusal(text: &str) -> String {
        parse(Path::new("kube.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_target_needs_only_name_namespace_and_workload() {
        let t = &parse(Path::new("kube.toml"), GOOD).unwrap()[0];
        assert_eq!((t.name.as_str(), t.namespace.as_str(), t.workload.as_str(), t.ready_timeout_ms, t.region()), ("web-prod", "shop", "web", DEFAULT_READY_TIMEOUT_MS, "kubernetes"));
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        assert_eq!(refusal(&GOOD.replace("shop", "Shop")), "kube.toml: target[0].namespace: must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'");
        assert!(refusal(&format!("{GOOD}ready_timeout_ms = 5\n")).starts_with("kube.toml: target[0].ready_timeout_ms: "));
        assert!(refusal(&format!("{GOOD}contxt = \"x\"\n")).starts_with("kube.toml: target[0].contxt: unknown field `contxt`"), "{}", refusal(&format!("{GOOD}contxt = \"x\"\n")));
        assert_eq!(refusal(&GOOD.replace("workload = \"web\"\n", "")), "kube.toml: target[0].workload: is required");
        assert_eq!(refusal(&format!("{GOOD}{GOOD}")), "kube.toml: target[1].name: \"web-prod\" is named twice");
        assert!(refusal(&GOOD.replace("\"web\"", &format!("\"{}\"", "w".repeat(51)))).starts_with("kube.toml: target[0].workload: must be at most 50"));
    }
}
