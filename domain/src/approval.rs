//! Approval gates: named people must approve before chosen batches roll out.
//!
//! A gate opens before each gated batch and closes on the first of: quorum reached (`Approved`),
//! the emergency bypass (`Bypassed`), an abort (`Aborted`), or its expiry, after which the
//! policy decides (`Expired(Abort)` rolls back, `Expired(Proceed)` goes on). Which of those
//! applies is [`settle`]'s decision; who may approve is [`check_approve`]'s.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounds::{MAX_ITEMS, MAX_TEXT, check_count, check_principal, check_text};
use crate::control::{AuditEntry, Refusal, Ruling};
use crate::{Error, Result};

/// Longest an approval gate may stay open: a week.
const MAX_EXPIRY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// What happens when a gate expires without quorum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// Roll back what was rolled out: nothing goes further without approval (the default).
    #[default]
    Abort,
    /// Go on as if approved: the gate was a chance to object, not a requirement.
    Proceed,
}

/// Who must approve before which steps (batches of a rolling deploy, traffic steps of a canary,
/// the flip of blue/green).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// 1-based indices of the batches that wait for approval before they roll out. A gate past
    /// the fleet's last batch (a small fleet drops empty steps) guards the last batch.
    pub before_batches: Vec<u32>,
    /// Who may approve.
    pub approvers: Vec<String>,
    /// How many distinct approvals open a gate; default 1.
    #[serde(default = "one")]
    pub quorum: u32,
    /// Whether the deployer may approve their own deploy; default no.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// How long a gate waits, in milliseconds; default one day.
    #[serde(default = "one_day_ms")]
    pub expiry_ms: u64,
    /// What an expired gate does; default abort.
    #[serde(default)]
    pub on_expiry: OnExpiry,
}

pub(crate) fn one() -> u32 {
    1
}

pub(crate) fn one_day_ms() -> u64 {
    24 * 60 * 60 * 1000
}

impl ApprovalPolicy {
    /// Checks the policy for a deploy by `deployer` whose plan has `steps` steps; errors name the
    /// field under `approval`.
    pub fn validate(&self, deployer: &str, steps: usize) -> Result<()> {
        if self.before_batches.is_empty() {
            return Err(Error::invalid("approval.before_batches", "must name at least one batch (1-based)"));
        }
        check_count("approval.before_batches", self.before_batches.len(), MAX_ITEMS)?;
        check_count("approval.approvers", self.approvers.len(), MAX_ITEMS)?;
        let mut seen = BTreeSet::new();
        for (i, &b) in self.before_batches.iter().enumerate() {
            if b == 0 || b as usize > steps {
                return Err(Error::invalid(format!("approval.before_batches[{i}]"), format!("must be a batch of the plan, 1 to {steps}")));
            }
            if !seen.insert(b) {
                return Err(Error::invalid(format!("approval.before_batches[{i}]"), "names a batch twice"));
            }
        }
        let mut names = BTreeSet::new();
        for (i, a) in self.approvers.iter().enumerate() {
            if a.trim().is_empty() || a.trim() != a {
                return Err(Error::invalid(format!("approval.approvers[{i}]"), "must be a name without surrounding spaces"));
            }
            check_principal(&format!("approval.approvers[{i}]"), a)?;
            if !names.insert(a.as_str()) {
                return Err(Error::invalid(format!("approval.approvers[{i}]"), "names an approver twice"));
            }
        }
        let eligible = self.approvers.iter().filter(|a| self.allow_self_approval || a.as_str() != deployer).count();
        if self.quorum == 0 || self.quorum as usize > eligible {
            return Err(Error::invalid(
                "approval.quorum",
                format!("must be 1 to {eligible}: the approvers who may approve a deploy by {deployer}"),
            ));
        }
        if !(1_000..=MAX_EXPIRY_MS).contains(&self.expiry_ms) {
            return Err(Error::invalid("approval.expiry_ms", "must be 1000 (a second) to 604800000 (a week)"));
        }
        Ok(())
    }

    /// The batches (1-based) that wait for approval on a rollout of `total` batches.
    pub fn gated_batches(&self, total: u32) -> BTreeSet<u32> {
        self.before_batches.iter().map(|&b| b.min(total)).filter(|&b| b >= 1).collect()
    }
}

/// An approval, as an approver sends it: `{"approver": "bob", "reason": "canary looks fine"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Approve {
    /// Who approves; must be one of the policy's approvers.
    pub approver: String,
    /// Why (recorded).
    pub reason: String,
    /// The API's proof of the approver ([`crate::grant`]).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub grant: String,
}

/// How a gate closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// Quorum reached.
    Approved,
    /// Skipped by the emergency bypass.
    Bypassed,
    /// The deploy was aborted while the gate was open.
    Aborted,
    /// Expired without quorum; the policy's choice followed.
    Expired(OnExpiry),
}

/// One approval gate of a deploy, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The batch (1-based) that waits for it.
    pub before_batch: u32,
    /// When it opened (workflow time).
    pub opened_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Approvals so far: who, when, why.
    pub approvals: Vec<AuditEntry>,
    /// How it closed; `None` while it awaits approval.
    pub outcome: Option<GateOutcome>,
}

impl Gate {
    /// A gate before `batch`, opened at `now`, expiring after the policy's expiry.
    pub fn open(batch: u32, now: DateTime<Utc>, policy: &ApprovalPolicy) -> Self {
        let expires_at = crate::control::after_ms(now, policy.expiry_ms);
        Self { before_batch: batch, opened_at: now, expires_at, approvals: Vec::new(), outcome: None }
    }

    /// Whether it still awaits approval.
    pub fn is_open(&self) -> bool {
        self.outcome.is_none()
    }
}

/// What a gate holds back, for the words of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gated<'a> {
    /// A deploy's batch (or step).
    Deploy,
    /// A release's stage, by name.
    Release(&'a str),
}

impl Gated<'_> {
    fn noun(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Release(_) => "release",
        }
    }

    fn gate(self, gate: &Gate) -> String {
        match self {
            Self::Deploy => format!("the gate before batch {}", gate.before_batch),
            Self::Release(stage) => format!("the gate of stage {stage}"),
        }
    }
}

/// Whether `approve` may be counted on the deploy's gates (the last one is the open one, if any).
pub fn check_approve(policy: Option<&ApprovalPolicy>, deployer: &str, gates: &[Gate], approve: &Approve) -> Ruling {
    check_approve_of(Gated::Deploy, policy, deployer, gates, approve)
}

/// [`check_approve`] for what `gated` names: the same rules, its words.
pub fn check_approve_of(gated: Gated<'_>, policy: Option<&ApprovalPolicy>, deployer: &str, gates: &[Gate], approve: &Approve) -> Ruling {
    let who = approve.approver.trim();
    if who.is_empty() {
        return Err(Refusal("approver: must name who approves".into()));
    }
    check_principal("approver", &approve.approver).and_then(|()| check_text("reason", &approve.reason, MAX_TEXT)).map_err(|e| Refusal(e.to_string()))?;
    let (Some(policy), Some(gate)) = (policy, gates.last().filter(|g| g.is_open())) else {
        return Err(Refusal("nothing awaits approval".into()));
    };
    if !policy.approvers.iter().any(|a| same_principal(a, who)) {
        return Err(Refusal(format!("{who} is not an approver of this {} (approvers: {})", gated.noun(), policy.approvers.join(", "))));
    }
    if same_principal(who, deployer) && !policy.allow_self_approval {
        return Err(Refusal(format!("{who} started this {} and may not approve it", gated.noun())));
    }
    if gate.approvals.iter().any(|a| same_principal(&a.by, who)) {
        return Err(Refusal(format!("{who} already approved {}", gated.gate(gate))));
    }
    Ok(())
}

/// Whether two names are one principal: compared trimmed and in lower case, so `"Alice "` may
/// not approve what `alice` started, nor approve twice as `ALICE`.
pub fn same_principal(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Who an open gate still waits for, in words: `1 more approval from bob, ci` (the deployer
/// left out unless self-approval is allowed).
pub fn awaiting(policy: &ApprovalPolicy, deployer: &str, gate: &Gate) -> String {
    let needed = (policy.quorum as usize).saturating_sub(gate.approvals.len());
    let who: Vec<&str> = policy
        .approvers
        .iter()
        .map(String::as_str)
        .filter(|a| (policy.allow_self_approval || *a != deployer) && !gate.approvals.iter().any(|e| e.by == *a))
        .collect();
    let plural = if needed == 1 { "" } else { "s" };
    format!("{needed} more approval{plural} from {}", who.join(", "))
}

/// How an open gate closes now, or `None` while it must go on waiting. An abort wins over
/// everything; quorum wins over the bypass and the expiry that come in the same moment.
pub fn settle(policy: &ApprovalPolicy, gate: &Gate, bypassed: bool, aborted: bool, expired: bool) -> Option<GateOutcome> {
    if aborted {
        Some(GateOutcome::Aborted)
    } else if gate.approvals.len() >= policy.quorum as usize {
        Some(GateOutcome::Approved)
    } else if bypassed {
        Some(GateOutcome::Bypassed)
    } else if expired {
        Some(GateOutcome::Expired(policy.on_expiry))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Action, Command};

    fn policy() -> ApprovalPolicy {
        ApprovalPolicy {
            before_batches: vec![2],
            approvers: vec!["alice".into(), "bob".into(), "dave".into()],
            quorum: 2,
            allow_self_approval: false,
            expiry_ms: 60_000,
            on_expiry: OnExpiry::Abort,
        }
    }

    fn approve(who: &str) -> Approve {
        Approve { approver: who.into(), reason: "looks fine".into(), grant: String::new() }
    }

    fn gate_with(approvers: &[&str]) -> Gate {
        let mut g = Gate::open(2, DateTime::UNIX_EPOCH, &policy());
        g.approvals = approvers.iter().map(|a| AuditEntry::of(Action::Approve, &Command::new(*a, "ok"), DateTime::UNIX_EPOCH)).collect();
        g
    }

    fn refusal(r: Ruling) -> String {
        r.expect_err("refused").0
    }

    #[test]
    fn approvals_are_refused_with_their_reason() {
        let p = policy();
        let open = [gate_with(&["alice"])];
        assert_eq!(refusal(check_approve(Some(&p), "dave", &[], &approve("bob"))), "nothing awaits approval");
        assert_eq!(refusal(check_approve(None, "dave", &open, &approve("bob"))), "nothing awaits approval");
        let mut closed = gate_with(&["alice", "bob"]);
        closed.outcome = Some(GateOutcome::Approved);
        assert_eq!(refusal(check_approve(Some(&p), "dave", &[closed], &approve("bob"))), "nothing awaits approval");
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve("mallory"))).starts_with("mallory is not an approver"));
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve("dave"))).contains("may not approve it"));
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve("alice"))).contains("already approved the gate before batch 2"));
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve(" "))).starts_with("approver:"));
        check_approve(Some(&p), "dave", &open, &approve("bob")).unwrap();
        let selfish = ApprovalPolicy { allow_self_approval: true, ..policy() };
        check_approve(Some(&selfish), "dave", &open, &approve("dave")).unwrap();
        assert_eq!(awaiting(&p, "dave", &open[0]), "1 more approval from bob", "alice approved; dave started it");
        let release = Gated::Release("production");
        assert_eq!(refusal(check_approve_of(release, Some(&p), "dave", &open, &approve("alice"))), "alice already approved the gate of stage production");
        assert!(refusal(check_approve_of(release, Some(&p), "dave", &open, &approve("erin"))).starts_with("erin is not an approver of this release"));
    }

    #[test]
    fn four_eyes_compares_names_canonically() {
        let p = policy();
        let open = [gate_with(&["alice"])];
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve("Dave "))).contains("may not approve it"), "the deployer under another spelling");
        assert!(refusal(check_approve(Some(&p), "Dave", &open, &approve("dave"))).contains("may not approve it"));
        assert!(refusal(check_approve(Some(&p), "dave", &open, &approve("ALICE"))).contains("already approved"), "a second approval under another spelling");
        check_approve(Some(&p), "dave", &open, &approve("Bob")).unwrap();
    }

    #[test]
    fn quorum_bypass_abort_and_expiry_settle_a_gate() {
        let p = policy();
        assert_eq!(settle(&p, &gate_with(&["alice"]), false, false, false), None);
        assert_eq!(settle(&p, &gate_with(&["alice", "bob"]), false, false, false), Some(GateOutcome::Approved));
        assert_eq!(settle(&p, &gate_with(&["alice", "bob"]), true, false, true), Some(GateOutcome::Approved));
        assert_eq!(settle(&p, &gate_with(&["alice"]), true, false, false), Some(GateOutcome::Bypassed));
        assert_eq!(settle(&p, &gate_with(&["alice", "bob"]), false, true, false), Some(GateOutcome::Aborted));
        assert_eq!(settle(&p, &gate_with(&["alice"]), false, false, true), Some(GateOutcome::Expired(OnExpiry::Abort)));
        let proceed = ApprovalPolicy { on_expiry: OnExpiry::Proceed, ..policy() };
        assert_eq!(settle(&proceed, &gate_with(&[]), false, false, true), Some(GateOutcome::Expired(OnExpiry::Proceed)));
    }

    #[test]
    fn a_policy_must_be_satisfiable() {
        policy().validate("dave", 4).unwrap();
        let field = |p: ApprovalPolicy| p.validate("dave", 4).unwrap_err().field().to_owned();
        assert_eq!(field(ApprovalPolicy { before_batches: vec![], ..policy() }), "approval.before_batches");
        assert_eq!(field(ApprovalPolicy { before_batches: vec![0], ..policy() }), "approval.before_batches[0]");
        assert_eq!(field(ApprovalPolicy { before_batches: vec![2, 5], ..policy() }), "approval.before_batches[1]");
        assert_eq!(field(ApprovalPolicy { before_batches: vec![2, 2], ..policy() }), "approval.before_batches[1]");
        assert_eq!(field(ApprovalPolicy { approvers: vec!["alice".into(), "alice".into()], ..policy() }), "approval.approvers[1]");
        // Without self-approval only alice and bob can approve a deploy by dave: a quorum of 3 never comes.
        let err = ApprovalPolicy { quorum: 3, ..policy() }.validate("dave", 4).unwrap_err();
        assert_eq!(err.field(), "approval.quorum");
        assert!(err.to_string().contains("1 to 2"), "{err}");
        ApprovalPolicy { quorum: 3, allow_self_approval: true, ..policy() }.validate("dave", 4).unwrap();
        assert_eq!(field(ApprovalPolicy { expiry_ms: 10, ..policy() }), "approval.expiry_ms");
    }

    #[test]
    fn gates_past_the_last_batch_guard_the_last_batch() {
        let p = ApprovalPolicy { before_batches: vec![2, 4], ..policy() };
        assert_eq!(p.gated_batches(4), BTreeSet::from([2, 4]));
        assert_eq!(p.gated_batches(3), BTreeSet::from([2, 3]));
        assert_eq!(p.gated_batches(1), BTreeSet::from([1]));
    }

    #[test]
    fn defaults_fill_what_an_operator_leaves_out() {
        let p: ApprovalPolicy = serde_json::from_str(r#"{"before_batches":[2],"approvers":["bob"]}"#).unwrap();
        assert_eq!((p.quorum, p.allow_self_approval, p.expiry_ms, p.on_expiry), (1, false, 86_400_000, OnExpiry::Abort));
        let p: ApprovalPolicy = serde_json::from_str(r#"{"before_batches":[2],"approvers":["bob"],"on_expiry":"proceed"}"#).unwrap();
        assert_eq!(p.on_expiry, OnExpiry::Proceed);
        assert_eq!(serde_json::to_value(GateOutcome::Expired(OnExpiry::Proceed)).unwrap(), serde_json::json!({"expired": "proceed"}));
    }
}
