//! Operator control of a release: a stage's approvals, the emergency bypass of a stage, and
//! the abort of the whole release. The rules are here; the release workflow records and
//! applies them.
//!
//! A stage's approval gate opens before its deploys start and closes like a deploy's gate
//! ([`crate::approval::settle`]): quorum, the bypass, an abort, or its expiry. The bypass of a
//! stage skips its gate and its soak while it lasts; a failed verdict still stops the release
//! unless the bypass also names `override_failed_verdict`, which bypasses the health judgement
//! of the stage's deploys as well.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalPolicy, OnExpiry, one, one_day_ms};
use crate::control::{Command, Refusal, Ruling, needs_operator, refuse};
use crate::release::{ReleasePhase, ReleaseStatus, StagePhase};
use crate::{Error, Result};

/// Longest a bypass may last: a day, so that a forgotten one cannot skip a later release's
/// gates.
pub const MAX_BYPASS_MS: u64 = 24 * 60 * 60 * 1000;

/// Who must approve before a stage's deploys start.
///
/// ```json
/// {"approvers": ["alice", "bob"], "quorum": 1, "expiry_ms": 3600000, "on_expiry": "abort"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageApproval {
    /// Who may approve.
    pub approvers: Vec<String>,
    /// How many distinct approvals open the gate; default 1.
    #[serde(default = "one")]
    pub quorum: u32,
    /// Whether the release's deployer may approve; default no.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// How long the gate waits, in milliseconds; default one day.
    #[serde(default = "one_day_ms")]
    pub expiry_ms: u64,
    /// What an expired gate does: `abort` stops the release (the default), `proceed` goes on.
    #[serde(default)]
    pub on_expiry: OnExpiry,
}

impl StageApproval {
    /// The same rules as a deploy's approval policy with one gate: the stage's.
    pub fn policy(&self) -> ApprovalPolicy {
        ApprovalPolicy {
            before_batches: vec![1],
            approvers: self.approvers.clone(),
            quorum: self.quorum,
            allow_self_approval: self.allow_self_approval,
            expiry_ms: self.expiry_ms,
            on_expiry: self.on_expiry,
        }
    }

    /// Checks the approval of a release by `deployer` (`None`: nobody is excluded yet); errors
    /// name the field under `prefix`.
    pub fn validate(&self, prefix: &str, deployer: Option<&str>) -> Result<()> {
        let deployer = deployer.unwrap_or("");
        self.policy().validate(deployer, 1).map_err(|Error::Invalid { field, rule }| {
            let field = field.strip_prefix("approval.").unwrap_or(&field).to_owned();
            Error::invalid(format!("{prefix}.{field}"), rule)
        })
    }
}

/// The emergency bypass of a stage, as an operator sends it:
/// `{"by": "alice", "reason": "SEV1 fix", "expiry_ms": 3600000}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BypassStage {
    /// Who asks; recorded.
    pub by: String,
    /// Why; mandatory, recorded.
    pub reason: String,
    /// The stage bypassed; empty: the stage under way (or the next one, while one soaks).
    pub stage: String,
    /// How long the bypass lasts, in milliseconds, 1000 to a day; a stage reached after it
    /// expired is not bypassed.
    pub expiry_ms: u64,
    /// Also bypass the health judgement of the stage's deploys: a bad verdict no longer stops
    /// them. Named apart so that skipping a soak never skips a verdict by accident.
    pub override_failed_verdict: bool,
    /// The API's proof of who asks ([`crate::grant`]).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub grant: String,
}

/// A bypass granted to a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageBypass {
    /// Who asked.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it was granted (workflow time).
    pub at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// Whether the stage's deploys' verdicts are bypassed too.
    pub override_failed_verdict: bool,
}

impl StageBypass {
    /// Whether the bypass is in force at `now`.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// The command each deploy of the stage is bypassed with, when the verdicts are.
    pub fn command(&self, stage: &str) -> Command {
        Command::new(self.by.clone(), format!("release bypass of stage {stage}: {}", self.reason))
    }
}

fn needs_running(status: &ReleaseStatus, what: &str) -> Ruling {
    if status.phase.is_final() {
        return refuse(format!("cannot {what}: the release already ended {:?}", status.phase));
    }
    if status.phase == ReleasePhase::Stopping {
        return refuse(format!("cannot {what}: the release is stopping ({})", status.reason.as_deref().unwrap_or("")));
    }
    Ok(())
}

/// Whether an abort may stop the release.
pub fn check_abort(status: &ReleaseStatus, cmd: &Command) -> Ruling {
    needs_operator(cmd, true, "an abort")?;
    needs_running(status, "abort")
}

/// The stage a bypass goes to: the one it names, else the one under way, else (while the
/// release soaks or waits between stages) the next one.
pub fn bypassed_stage(status: &ReleaseStatus, b: &BypassStage) -> std::result::Result<usize, Refusal> {
    if !b.stage.is_empty() {
        return status.stages.iter().position(|s| s.name == b.stage).ok_or_else(|| {
            let names: Vec<&str> = status.stages.iter().map(|s| s.name.as_str()).collect();
            Refusal(format!("stage: {} is not a stage of this release (stages: {})", b.stage, names.join(", ")))
        });
    }
    let at = status.stages.iter().position(|s| matches!(s.phase, StagePhase::Deploying | StagePhase::AwaitingApproval | StagePhase::Soaking));
    at.or_else(|| status.stages.iter().position(|s| s.phase == StagePhase::Waiting)).ok_or_else(|| Refusal("stage: no stage is left to bypass".into()))
}

/// Whether the bypass may be granted.
pub fn check_bypass(status: &ReleaseStatus, b: &BypassStage, now: DateTime<Utc>) -> Ruling {
    needs_operator(&Command::new(b.by.clone(), b.reason.clone()), true, "an emergency bypass")?;
    needs_running(status, "bypass a stage")?;
    if !(1_000..=MAX_BYPASS_MS).contains(&b.expiry_ms) {
        return refuse("expiry_ms: must be 1000 (a second) to 86400000 (a day)");
    }
    let stage = &status.stages[bypassed_stage(status, b)?];
    if matches!(stage.phase, StagePhase::Passed | StagePhase::Failed | StagePhase::Aborted) {
        return refuse(format!("stage: stage {} already ended ({:?})", stage.name, stage.phase));
    }
    if let Some(held) = stage.bypass.as_ref().filter(|held| held.holds(now))
        && (held.override_failed_verdict || !b.override_failed_verdict)
    {
        return refuse(format!("stage {} is already bypassed (by {} until {})", stage.name, held.by, held.expires_at.to_rfc3339()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::StageStatus;

    fn status(phases: &[StagePhase]) -> ReleaseStatus {
        let mut s = ReleaseStatus::refused("web", String::new());
        s.phase = ReleasePhase::Deploying;
        s.reason = None;
        s.stages = phases
            .iter()
            .enumerate()
            .map(|(i, &phase)| StageStatus { name: format!("s{i}"), phase, soak_until: None, soak_restarts: 0, last_regression: None, gate: None, awaits: None, bypass: None, deploys: Vec::new() })
            .collect();
        s
    }

    fn bypass(stage: &str) -> BypassStage {
        BypassStage { by: "alice".into(), reason: "SEV1".into(), stage: stage.into(), expiry_ms: 60_000, override_failed_verdict: false, grant: String::new() }
    }

    fn refusal(r: Ruling) -> String {
        r.expect_err("refused").0
    }

    #[test]
    fn a_bypass_needs_who_why_and_a_bounded_expiry() {
        let s = status(&[StagePhase::Deploying]);
        let now = DateTime::UNIX_EPOCH;
        assert_eq!(refusal(check_bypass(&s, &BypassStage { by: String::new(), ..bypass("") }, now)), "by: must name who asks");
        assert_eq!(refusal(check_bypass(&s, &BypassStage { reason: " ".into(), ..bypass("") }, now)), "reason: an emergency bypass needs a reason");
        assert!(refusal(check_bypass(&s, &BypassStage { expiry_ms: 0, ..bypass("") }, now)).starts_with("expiry_ms: "));
        assert!(refusal(check_bypass(&s, &BypassStage { expiry_ms: MAX_BYPASS_MS + 1, ..bypass("") }, now)).starts_with("expiry_ms: "));
        assert_eq!(check_bypass(&s, &bypass(""), now), Ok(()));
    }

    #[test]
    fn a_bypass_goes_to_the_named_or_current_stage_and_not_to_one_that_ended() {
        let s = status(&[StagePhase::Passed, StagePhase::Soaking, StagePhase::Waiting]);
        assert_eq!(bypassed_stage(&s, &bypass("")), Ok(1));
        assert_eq!(bypassed_stage(&s, &bypass("s2")), Ok(2));
        assert!(refusal(check_bypass(&s, &bypass("nope"), DateTime::UNIX_EPOCH)).starts_with("stage: nope is not a stage of this release"));
        assert_eq!(refusal(check_bypass(&s, &bypass("s0"), DateTime::UNIX_EPOCH)), "stage: stage s0 already ended (Passed)");
        let between = status(&[StagePhase::Passed, StagePhase::Waiting]);
        assert_eq!(bypassed_stage(&between, &bypass("")), Ok(1));
    }

    #[test]
    fn a_stage_bypassed_once_is_refused_again_until_it_expires_or_the_verdict_is_added() {
        let mut s = status(&[StagePhase::Deploying]);
        let at = DateTime::UNIX_EPOCH;
        s.stages[0].bypass = Some(StageBypass { by: "bob".into(), reason: "x".into(), at, expires_at: crate::control::after_ms(at, 60_000), override_failed_verdict: false });
        assert!(refusal(check_bypass(&s, &bypass(""), at)).starts_with("stage s0 is already bypassed (by bob"));
        let stronger = BypassStage { override_failed_verdict: true, ..bypass("") };
        assert_eq!(check_bypass(&s, &stronger, at), Ok(()));
        assert_eq!(check_bypass(&s, &bypass(""), crate::control::after_ms(at, 60_000)), Ok(()));
    }

    #[test]
    fn an_ended_or_stopping_release_takes_no_abort() {
        let mut s = status(&[StagePhase::Deploying]);
        assert_eq!(check_abort(&s, &Command::new("alice", "")), Err(Refusal("reason: an abort needs a reason".into())));
        s.phase = ReleasePhase::Stopping;
        s.reason = Some("aborted by bob: bad".into());
        assert_eq!(refusal(check_abort(&s, &Command::new("alice", "again"))), "cannot abort: the release is stopping (aborted by bob: bad)");
        s.phase = ReleasePhase::Succeeded;
        assert_eq!(refusal(check_abort(&s, &Command::new("alice", "late"))), "cannot abort: the release already ended Succeeded");
    }

    #[test]
    fn a_stage_approval_is_checked_like_a_deploy_approval_under_its_own_path() {
        let a = StageApproval { approvers: vec!["alice".into()], quorum: 1, allow_self_approval: false, expiry_ms: 60_000, on_expiry: OnExpiry::Abort };
        assert_eq!(a.validate("pipeline.stages[1].approval", None), Ok(()));
        let Err(Error::Invalid { field, rule }) = a.validate("pipeline.stages[1].approval", Some("alice")) else { panic!("refused") };
        assert_eq!(field, "pipeline.stages[1].approval.quorum");
        assert!(rule.contains("approvers who may approve a deploy by alice"), "{rule}");
        let short = StageApproval { expiry_ms: 10, ..a };
        let Err(Error::Invalid { field, .. }) = short.validate("p", None) else { panic!("refused") };
        assert_eq!(field, "p.expiry_ms");
    }
}
