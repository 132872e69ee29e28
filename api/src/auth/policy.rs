//! Who may do what: roles granted to principals and groups, scoped by service, target and
//! channel, from a policy file kept in git next to the pipelines.
//!
//! ```toml
//! [[allow]]
//! who = ["alice@example.com", "group:sre"]
//! roles = ["start", "steer", "approve"]
//! services = ["checkout", "payments-*"]   # default: every service
//! targets = ["eu-*"]                      # default: every target
//! channels = ["*"]                        # default: every channel
//! ```
//!
//! Reading (get, watch, list) needs an authenticated caller and no role. Nothing is allowed
//! that no rule grants; a rule never takes a grant away.

use std::fmt;

use serde::Deserialize;

use super::{Error, Principal, canonical};

/// Most rules a policy file may hold, and most entries in one of a rule's lists.
const MAX_RULES: usize = 1000;
const MAX_ENTRIES: usize = 1000;

/// What a call does, as the policy grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Start a deploy or a release, push a build.
    Start,
    /// Pause, resume, halt, abort or roll back.
    Steer,
    /// Approve a gate (four-eyes still applies: see the deploy's approval policy).
    Approve,
    /// The emergency bypass of gates, bake timers and soaks.
    Bypass,
    /// Quarantine a build or lift its quarantine.
    Quarantine,
    /// Freeze deploys of a service or target.
    Freeze,
    /// Stop the line of a deploy train.
    StopLine,
    /// Register or change a target.
    Targets,
    /// Every role.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Steer => "steer",
            Self::Approve => "approve",
            Self::Bypass => "bypass",
            Self::Quarantine => "quarantine",
            Self::Freeze => "freeze",
            Self::StopLine => "stop_line",
            Self::Targets => "targets",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a call acts on; `None` where it does not apply (a build belongs to no target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The service.
    pub service: Option<&'a str>,
    /// The target (cluster, host group, region).
    pub target: Option<&'a str>,
    /// The release channel (a pipeline's stage).
    pub channel: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// A service, on no particular target.
    pub fn service(service: &'a str) -> Self {
        Self { service: Some(service), ..Self::default() }
    }
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [("service", self.service), ("target", self.target), ("channel", self.channel)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
            .collect();
        if parts.is_empty() { f.write_str("anything") } else { f.write_str(&parts.join(", ")) }
    }
}

/// One rule: these principals and groups hold these roles within this scope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    who: Vec<String>,
    roles: Vec<Role>,
    #[serde(default = "everything")]
    services: Vec<String>,
    #[serde(default = "everything")]
    targets: Vec<String>,
    #[serde(default = "everything")]
    channels: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow: Vec<Rule>,
}

/// The rules in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads a policy file's text; errors name the rule and field (`allow[2].roles[0]`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let de = toml::Deserializer::parse(text).map_err(|e| Error::Config(format!("policy: {}", e.message())))?;
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| Error::Config(format!("policy: {}: {}", e.path(), e.inner().message())))?;
        if file.allow.len() > MAX_RULES {
            return Err(Error::Config(format!("policy: allow: must hold at most {MAX_RULES} rules")));
        }
        let mut rules = Vec::with_capacity(file.allow.len());
        for (i, mut rule) in file.allow.into_iter().enumerate() {
            for (field, list) in [("who", &rule.who), ("services", &rule.services), ("targets", &rule.targets), ("channels", &rule.channels)] {
                if list.is_empty() || list.len() > MAX_ENTRIES {
                    return Err(Error::Config(format!("policy: allow[{i}].{field}: must hold 1 to {MAX_ENTRIES} entries")));
                }
                if let Some(j) = list.iter().position(|p| p.trim().is_empty()) {
                    return Err(Error::Config(format!("policy: allow[{i}].{field}[{j}]: must not be empty")));
                }
            }
            if rule.roles.is_empty() {
                return Err(Error::Config(format!("policy: allow[{i}].roles: must name at least one role")));
            }
            rule.who = rule.who.iter().map(|w| canonical(w)).collect();
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Whether `who` holds `role` within `scope`.
    pub fn allows(&self, who: &Principal, role: Role, scope: &Scope<'_>) -> bool {
        self.rules.iter().any(|rule| {
            rule.who.iter().any(|w| names(w, who))
                && rule.roles.iter().any(|&r| r == role || r == Role::Admin)
                && within(&rule.services, scope.service)
                && within(&rule.targets, scope.target)
                && within(&rule.channels, scope.channel)
        })
    }
}

/// Whether a rule's `who` entry names `p`: its identity, or `group:<g>` for one of its groups.
fn names(entry: &str, p: &Principal) -> bool {
    match entry.strip_prefix("group:") {
        Some(group) => p.groups.iter().any(|g| g == group),
        None => entry == p.id,
    }
}

/// Whether `value` is within `patterns` (`*`, an exact name, or a prefix ending in `*`); a
/// scope without the dimension is within any rule.
fn within(patterns: &[String], value: Option<&str>) -> bool {
    let Some(value) = value else { return true };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => p == value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Via;

    fn who(id: &str, groups: &[&str]) -> Principal {
        Principal { id: id.into(), groups: groups.iter().map(|g| (*g).into()).collect(), via: Via::Token }
    }

    const POLICY: &str = r#"
        [[allow]]
        who = ["Alice@Example.com", "group:deployers"]
        roles = ["start", "steer"]
        services = ["checkout", "payments-*"]

        [[allow]]
        who = ["bob@example.com"]
        roles = ["approve"]
        targets = ["eu-*"]

        [[allow]]
        who = ["group:sre"]
        roles = ["admin"]
    "#;

    #[test]
    fn a_role_is_granted_within_its_scope_only() {
        let policy = Policy::parse(POLICY).unwrap();
        let alice = who("alice@example.com", &[]);
        assert!(policy.allows(&alice, Role::Start, &Scope::service("checkout")));
        assert!(policy.allows(&alice, Role::Steer, &Scope { service: Some("payments-eu"), target: Some("eu-1"), channel: None }));
        assert!(!policy.allows(&alice, Role::Start, &Scope::service("ledger")), "a service outside the rule");
        assert!(!policy.allows(&alice, Role::Approve, &Scope::service("checkout")), "a role the rule does not grant");
        let bob = who("bob@example.com", &[]);
        assert!(policy.allows(&bob, Role::Approve, &Scope { service: Some("ledger"), target: Some("eu-2"), channel: None }));
        assert!(!policy.allows(&bob, Role::Approve, &Scope { service: Some("ledger"), target: Some("us-1"), channel: None }));
    }

    #[test]
    fn groups_and_admin_grant_too() {
        let policy = Policy::parse(POLICY).unwrap();
        assert!(policy.allows(&who("carol@example.com", &["deployers"]), Role::Start, &Scope::service("checkout")));
        assert!(!policy.allows(&who("carol@example.com", &["deployers"]), Role::Bypass, &Scope::service("checkout")));
        let sre = who("dave@example.com", &["sre"]);
        assert!(policy.allows(&sre, Role::Bypass, &Scope::service("anything")));
        assert!(policy.allows(&sre, Role::Targets, &Scope::default()));
        assert!(!Policy::default().allows(&sre, Role::Start, &Scope::service("checkout")), "an empty policy allows nothing");
    }

    #[test]
    fn a_bad_policy_names_the_rule_and_field() {
        let err = Policy::parse("[[allow]]\nwho = [\"a\"]\nroles = [\"deploy\"]\n").unwrap_err().to_string();
        assert!(err.contains("allow[0].roles[0]") && err.contains("unknown variant"), "{err}");
        let err = Policy::parse("[[allow]]\nwho = []\nroles = [\"start\"]\n").unwrap_err().to_string();
        assert!(err.contains("allow[0].who: must hold 1 to"), "{err}");
        let err = Policy::parse("[[allow]]\nwho = [\"a\"]\nroles = [\"start\"]\nservice = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `service`"), "{err}");
        let err = Policy::parse("[[allow]]\nwho = [\"a\"]\nroles = []\n").unwrap_err().to_string();
        assert!(err.contains("allow[0].roles: must name at least one role"), "{err}");
    }
}
