//! Where a deploy stands: what the `status` query answers and what the workflow returns.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::HealthReport;
use crate::traffic::Weights;
use crate::analysis::AnalysisReport;
use crate::approval::Gate;
use crate::control::AuditEntry;

/// The deploy's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Checking the request against the world.
    Preflight,
    /// Waiting for another deploy of the service to leave the target (`held_by` says
    /// which); nothing has changed yet.
    Queued,
    /// Copying the artifact into the regional caches.
    Pushing,
    /// Waiting for approvers before the next batch; the last of `gates` says which batch.
    AwaitingApproval,
    /// Updating the instances of the current batch (or a canary's, blue/green's green set).
    Rolling,
    /// Changing load-balancer weights: a canary's traffic step, blue/green's flip.
    Shifting,
    /// Waiting before judging the current batch.
    Baking,
    /// Sampling health and judging the current batch.
    Evaluating,
    /// Undoing every change, most recent first.
    RollingBack,
    /// Every instance runs the new version.
    Succeeded,
    /// The deploy was undone; `reason` says why.
    RolledBack,
    /// The deploy could not start or could not be undone cleanly; `reason` says why.
    Failed,
}

impl Phase {
    /// Whether the deploy has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::RolledBack | Self::Failed)
    }
}

/// A deploy's status: the answer to the `status` query and the workflow's result.
///
/// A pause or a halt does not change the phase, which keeps saying where the deploy stopped
/// (e.g. `Evaluating` of batch 2); `paused` and `halted` say that it holds. A succeeded deploy
/// whose rollback window is open is already `Succeeded` (the rollout is done), with
/// `rollback_window_until` set; a manual rollback then takes it to `RollingBack`, `RolledBack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployStatus {
    /// Current phase.
    pub phase: Phase,
    /// 1-based index of the batch in progress or last done; 0 before the first.
    pub current_batch: u32,
    /// Number of batches in the plan for this fleet (0 until planned).
    pub total_batches: u32,
    /// Instances in the fleet.
    pub fleet_size: u32,
    /// How many instances run each version, by version name.
    pub instances_per_version: BTreeMap<String, u32>,
    /// The most recent health verdict, with its figures.
    pub last_verdict: Option<HealthReport>,
    /// Why the deploy rolled back or failed; set as soon as an abort or rollback is accepted.
    pub reason: Option<String>,
    /// A pause is in effect: the deploy holds before its next batch until resumed.
    #[serde(default)]
    pub paused: bool,
    /// A halt is in effect: the fleet is frozen, nothing changes and nothing rolls back until
    /// the deploy is resumed or aborted.
    #[serde(default)]
    pub halted: bool,
    /// The emergency bypass of the remaining gates and bake timers, if one was granted.
    #[serde(default)]
    pub bypass: Option<AuditEntry>,
    /// The approval gates met so far, oldest first; an open one is last.
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// While a succeeded deploy can still be rolled back: when that window closes.
    #[serde(default)]
    pub rollback_window_until: Option<DateTime<Utc>>,
    /// Every operator action and gate decision: who, when (workflow time), why. Oldest first,
    /// at most [`AUDIT_KEPT`] of them: past that, the first [`AUDIT_HEAD`] stay and the oldest
    /// after them give way (counted in `audit_elided`; the workflow history still holds them).
    #[serde(default)]
    pub audit: Vec<AuditEntry>,
    /// Entries of the audit trail dropped from `audit`, right after its first [`AUDIT_HEAD`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_elided: u64,
    /// The most recent verdict of the analysis engine, which judges every step (deploys
    /// recorded before that have `last_verdict` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisReport>,
    /// The strategy: `rolling`, `canary` or `blue_green`.
    #[serde(default = "rolling")]
    pub strategy: String,
    /// Load-balancer weights and shares, for the traffic strategies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficState>,
    /// The deploy that holds the target while this one is `Queued`, or held it when this one
    /// was refused for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// The field of the request that the world refused (an unknown artifact, a target that
    /// does not exist or has no instances); the deploy failed before changing anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<InvalidField>,
    /// The deploy was refused before it changed anything (`Failed` with the reason: a field,
    /// the lane, or the world it reads), rather than failing to roll back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The health sampling in progress (an A/A period or a step's analysis), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
}

/// Most audit entries a status carries: its answers stay bounded however many operator
/// actions a deploy saw (a thousand pause/resume cycles included).
pub const AUDIT_KEPT: usize = 200;

/// Audit entries at the start of the trail that are always kept: how the deploy began (its
/// first approvals, pauses, a bypass) stays in the status when the middle gives way.
pub const AUDIT_HEAD: usize = 20;

impl DeployStatus {
    /// Appends `entry` to the audit trail; when `bounded`, drops the oldest entry after the
    /// first [`AUDIT_HEAD`] once more than [`AUDIT_KEPT`] are kept.
    pub fn audit(&mut self, entry: AuditEntry, bounded: bool) {
        self.audit.push(entry);
        if bounded && self.audit.len() > AUDIT_KEPT {
            self.audit.remove(AUDIT_HEAD);
            self.audit_elided += 1;
        }
    }

    /// The audit entries whose place in the whole trail (elided ones counted) is `from` or
    /// later, oldest first, with that place: what a watcher that saw `from` entries has not.
    pub fn audit_since(&self, from: u64) -> impl Iterator<Item = (u64, &AuditEntry)> {
        let elided = self.audit_elided;
        self.audit
            .iter()
            .enumerate()
            .map(move |(i, e)| (if i < AUDIT_HEAD { i as u64 } else { i as u64 + elided }, e))
            .filter(move |(place, _)| *place >= from)
    }

    /// How many entries the whole trail holds, elided ones counted.
    pub fn audit_total(&self) -> u64 {
        self.audit.len() as u64 + self.audit_elided
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn rolling() -> String {
    "rolling".to_owned()
}

/// A request field refused, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidField {
    /// The field's path, e.g. `artifact.digest`.
    pub field: String,
    /// The rule, in words.
    pub rule: String,
}

/// What a deploy is sampling now. The workflow knows what it asked for; how far the sampling
/// got comes from the activity's heartbeat ([`SamplingProgress`]), which the status read adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampling {
    /// The step it is for, as the verdicts name it (`batch 2`, `step 3 (25%)`, `green`).
    pub step: String,
    /// An A/A period before the step changes anything, rather than the step's judgement.
    pub aa_period: bool,
    /// Samples it takes at most: an A/A period reads exactly this many; a judgement ends
    /// sooner once its rules decide, and inconclusive (never promoting) if they have not by then.
    pub max_samples: u32,
    /// One sample's window, in milliseconds.
    pub window_ms: u64,
    /// When it started (workflow time).
    pub started_at: DateTime<Utc>,
    /// Samples taken so far, from the activity's last heartbeat (0 before the first).
    #[serde(default)]
    pub samples: u32,
    /// Passes the judgement still needs to promote, as of its last sample; `None` before the
    /// first sample, for an A/A period, or for a policy that promotes on its score alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes_needed: Option<u32>,
}

impl Sampling {
    /// Sampling for `step` that has not taken a sample yet.
    pub fn started(step: impl Into<String>, aa_period: bool, max_samples: u32, window_ms: u64, started_at: DateTime<Utc>) -> Self {
        Self { step: step.into(), aa_period, max_samples, window_ms, started_at, samples: 0, passes_needed: None }
    }

    /// Samples left at most.
    pub fn samples_left(&self) -> u32 {
        self.max_samples.saturating_sub(self.samples)
    }

    /// Takes in a heartbeat's progress.
    pub fn progressed(&mut self, progress: SamplingProgress) {
        self.samples = progress.samples.min(self.max_samples);
        self.passes_needed = progress.passes_needed;
    }
}

/// How far a sampling activity got: its heartbeat details.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplingProgress {
    /// Samples taken.
    pub samples: u32,
    /// Passes still needed to promote, as of the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes_needed: Option<u32>,
}

/// Where the traffic of a canary or blue/green deploy stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficState {
    /// Configured share of the requests on the new set now, in percent.
    pub new_share_percent: f64,
    /// The weights the deploy last set (or read), by server.
    pub weights: Weights,
    /// The new set: canary or green instances.
    pub new_set: Vec<String>,
    /// The old set: baseline or blue instances.
    pub old_set: Vec<String>,
}

impl DeployStatus {
    /// The status of a deploy that has not done anything yet.
    pub fn starting() -> Self {
        Self {
            phase: Phase::Preflight,
            current_batch: 0,
            total_batches: 0,
            fleet_size: 0,
            instances_per_version: BTreeMap::new(),
            last_verdict: None,
            reason: None,
            paused: false,
            halted: false,
            bypass: None,
            gates: Vec::new(),
            rollback_window_until: None,
            audit: Vec::new(),
            audit_elided: 0,
            last_analysis: None,
            strategy: rolling(),
            traffic: None,
            held_by: None,
            invalid: None,
            refused: false,
            sampling: None,
        }
    }

    /// Whether an abort or rollback was accepted and the deploy is (about to be) undone.
    pub fn stopping(&self) -> bool {
        match self.phase {
            Phase::RollingBack => true,
            Phase::RolledBack | Phase::Failed => false,
            _ => self.reason.is_some(),
        }
    }

    /// The approval gate that awaits approval now, if any.
    pub fn open_gate(&self) -> Option<&Gate> {
        self.gates.last().filter(|g| g.is_open())
    }

    /// Moves `n` instances from version `from` to version `to` in the per-version counts.
    pub fn move_instances(&mut self, from: &str, to: &str, n: u32) {
        if n == 0 || from == to {
            return;
        }
        if let Some(c) = self.instances_per_version.get_mut(from) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.instances_per_version.remove(from);
            }
        }
        *self.instances_per_version.entry(to.to_owned()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Action;

    fn numbered(n: usize) -> AuditEntry {
        AuditEntry { action: Action::Pause, by: "ops".into(), at: DateTime::UNIX_EPOCH, reason: n.to_string() }
    }

    #[test]
    fn a_bounded_audit_keeps_its_head_and_its_latest_and_counts_the_rest() {
        let mut s = DeployStatus::starting();
        for n in 0..1_000 {
            s.audit(numbered(n), true);
        }
        assert_eq!((s.audit.len(), s.audit_elided, s.audit_total()), (AUDIT_KEPT, (1_000 - AUDIT_KEPT) as u64, 1_000));
        let reasons: Vec<usize> = s.audit.iter().map(|e| e.reason.parse().unwrap()).collect();
        let expected: Vec<usize> = (0..AUDIT_HEAD).chain(1_000 - (AUDIT_KEPT - AUDIT_HEAD)..1_000).collect();
        assert_eq!(reasons, expected);
        // A watcher that saw 990 entries is shown the last ten, each with its place.
        let since: Vec<(u64, usize)> = s.audit_since(990).map(|(place, e)| (place, e.reason.parse().unwrap())).collect();
        assert_eq!(since, (990..1_000).map(|n| (n as u64, n)).collect::<Vec<_>>());
        // One that saw the head only is shown what is kept after it.
        assert_eq!(s.audit_since(AUDIT_HEAD as u64).count(), AUDIT_KEPT - AUDIT_HEAD);
    }

    #[test]
    fn an_unbounded_audit_keeps_everything_as_runs_recorded_before_did() {
        let mut s = DeployStatus::starting();
        for n in 0..500 {
            s.audit(numbered(n), false);
        }
        assert_eq!((s.audit.len(), s.audit_elided), (500, 0));
        assert!(!serde_json::to_string(&s).unwrap().contains("audit_elided"), "a status with nothing elided serialises as before");
    }

    #[test]
    fn a_status_without_the_control_fields_still_parses() {
        let old = r#"{"phase":"Succeeded","current_batch":4,"total_batches":4,"fleet_size":20,
            "instances_per_version":{"1.1.0":20},"last_verdict":null,"reason":null}"#;
        let s: DeployStatus = serde_json::from_str(old).unwrap();
        assert!(!s.paused && !s.halted && s.gates.is_empty() && s.audit.is_empty() && s.rollback_window_until.is_none());
    }

    #[test]
    fn stopping_means_an_accepted_abort_not_yet_ended() {
        let mut s = DeployStatus::starting();
        assert!(!s.stopping());
        s.reason = Some("aborted by alice: why".into());
        assert!(s.stopping());
        s.phase = Phase::RolledBack;
        assert!(!s.stopping());
    }
}
