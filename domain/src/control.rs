//! Operator control of a running deploy: what an operator sends, the audit trail it leaves, and
//! the rules that accept or refuse it.
//!
//! The rules are pure functions of the deploy's [`DeployStatus`]; the workflow's update
//! validators call them, so a refusal reaches the caller with its reason before anything is
//! recorded in the deploy's history.
//!
//! | operation  | kind   | effect                                                                    |
//! |------------|--------|---------------------------------------------------------------------------|
//! | `pause`    | signal | hold before the next batch (`paused: true`); the phase keeps saying where |
//! | `resume`   | signal | lift a pause or a halt                                                    |
//! | `halt`     | update | freeze the fleet now (`halted: true`): no instance changes, no rollback   |
//! | `abort`    | update | roll back now; ends `RolledBack`, reason `aborted by <who>: <why>`        |
//! | `rollback` | update | like abort while running; after success, within the rollback window       |
//! | `bypass`   | update | skip every remaining gate (approvals, health) and bake timer              |
//! | `approve`  | update | an approval of the open gate (see [`crate::approval`])                    |

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounds::{MAX_TEXT, check_principal, check_text};
use crate::{DeployStatus, Phase};

/// What an operator sends with every control operation but `approve`:
/// `{"by": "alice", "reason": "error budget burnt"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Command {
    /// Who asks (a person or a system), recorded in the audit trail.
    pub by: String,
    /// Why, recorded in the audit trail; required by halt, abort, rollback and bypass.
    pub reason: String,
    /// The API's proof that it authenticated `by` and let the operation through
    /// ([`crate::grant`]); a deploy the API started takes no operation without it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub grant: String,
}

impl Command {
    /// A command by `by` for `reason`.
    pub fn new(by: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { by: by.into(), reason: reason.into(), grant: String::new() }
    }
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The deploy was paused.
    Pause,
    /// A pause or halt was lifted.
    Resume,
    /// The fleet was frozen.
    Halt,
    /// The deploy was aborted (rolled back).
    Abort,
    /// A manual rollback was asked for.
    Rollback,
    /// The remaining gates and bake timers were bypassed.
    Bypass,
    /// An approver approved the open gate.
    Approve,
    /// An approval gate expired without quorum; `reason` says what followed.
    ApprovalExpired,
    /// An operation was refused and changed nothing (a signal without the API's grant);
    /// `reason` says which and why.
    Refused,
}

/// One entry of a deploy's audit trail: who did what, when (workflow time), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// What was done.
    pub action: Action,
    /// Who did it; `signalbox` for decisions the deploy took itself (an expiry).
    pub by: String,
    /// When, in workflow time (deterministic on replay).
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

impl AuditEntry {
    /// The entry of `action` asked by `cmd` at `at`.
    pub fn of(action: Action, cmd: &Command, at: DateTime<Utc>) -> Self {
        Self { action, by: cmd.by.trim().to_owned(), at, reason: cmd.reason.trim().to_owned() }
    }
}

/// Who signs the decisions the deploy takes by itself.
pub const SYSTEM: &str = "signalbox";

/// Workflow time as a timestamp; a missing workflow time (never seen in practice) is the epoch.
pub fn timestamp(t: Option<SystemTime>) -> DateTime<Utc> {
    t.map_or(DateTime::UNIX_EPOCH, DateTime::<Utc>::from)
}

/// Why an operation was refused; the message is what the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

pub(crate) fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// Result of a rule.
pub type Ruling = Result<(), Refusal>;

pub(crate) fn needs_operator(cmd: &Command, reason_required: bool, what: &str) -> Ruling {
    if cmd.by.trim().is_empty() {
        return refuse("by: must name who asks");
    }
    check_command(cmd)?;
    if reason_required && cmd.reason.trim().is_empty() {
        return refuse(format!("reason: {what} needs a reason"));
    }
    Ok(())
}

/// Whether a command is within bounds: `by` one line of at most 128 characters, `reason` at
/// most 1024. Signals (pause, resume) have no validator; their handlers ignore a command this
/// refuses, so an oversized or garbled one changes nothing.
pub fn check_command(cmd: &Command) -> Ruling {
    let bounded = check_principal("by", &cmd.by).and_then(|()| check_text("reason", &cmd.reason, MAX_TEXT));
    bounded.map_err(|e| Refusal(e.to_string()))
}

/// Refuses when the deploy has ended or is being rolled back: nothing left to steer.
fn needs_running(status: &DeployStatus, what: &str) -> Ruling {
    if status.stopping() {
        return refuse(format!("cannot {what}: the deploy is being rolled back ({})", status.reason.as_deref().unwrap_or("")));
    }
    match status.phase {
        Phase::Succeeded => refuse(format!("cannot {what}: the deploy already succeeded")),
        Phase::RolledBack => refuse(format!("cannot {what}: the deploy was already rolled back ({})", status.reason.as_deref().unwrap_or(""))),
        Phase::Failed => refuse(format!("cannot {what}: the deploy failed ({})", status.reason.as_deref().unwrap_or(""))),
        _ => Ok(()),
    }
}

/// Whether a halt may freeze the deploy.
pub fn check_halt(status: &DeployStatus, cmd: &Command) -> Ruling {
    needs_operator(cmd, true, "a halt")?;
    needs_running(status, "halt")?;
    if status.halted {
        return refuse("the deploy is already halted; resume or abort it");
    }
    Ok(())
}

/// Whether an abort may roll the deploy back.
pub fn check_abort(status: &DeployStatus, cmd: &Command) -> Ruling {
    needs_operator(cmd, true, "an abort")?;
    if status.phase == Phase::Succeeded && status.rollback_window_until.is_some() && !status.stopping() {
        return refuse("cannot abort: the deploy already succeeded; ask for a rollback while its window is open");
    }
    needs_running(status, "abort")
}

/// Whether a manual rollback may start: while the deploy runs (same as an abort), or after it
/// succeeded while its rollback window is open.
pub fn check_rollback(status: &DeployStatus, cmd: &Command) -> Ruling {
    needs_operator(cmd, true, "a rollback")?;
    if status.phase == Phase::Succeeded && !status.stopping() {
        return match status.rollback_window_until {
            Some(_) => Ok(()),
            None => refuse("cannot roll back: the deploy succeeded and its rollback window is closed"),
        };
    }
    needs_running(status, "roll back")
}

/// Whether the emergency bypass may be granted. A reason is mandatory: it is the one record of
/// why every remaining gate was skipped.
pub fn check_bypass(status: &DeployStatus, cmd: &Command) -> Ruling {
    needs_operator(cmd, true, "an emergency bypass")?;
    needs_running(status, "bypass the gates")?;
    if let Some(b) = &status.bypass {
        return refuse(format!("the gates are already bypassed (by {} at {})", b.by, b.at.to_rfc3339()));
    }
    Ok(())
}

/// The reason a deploy ends with after an abort.
pub fn aborted(cmd: &Command) -> String {
    format!("aborted by {}: {}", cmd.by.trim(), cmd.reason.trim())
}

/// The reason a deploy ends with after a manual rollback.
pub fn rolled_back(cmd: &Command) -> String {
    format!("rolled back by {}: {}", cmd.by.trim(), cmd.reason.trim())
}

/// `ms` milliseconds after `t`: when a rollback window or an approval gate opened at `t` closes.
pub fn after_ms(t: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    let delta = chrono::TimeDelta::try_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(chrono::TimeDelta::MAX);
    t.checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What the run holds of its operators' requests: the input of the steering rules below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steering {
    /// A pause is in effect.
    pub paused: bool,
    /// A halt is in effect.
    pub halted: bool,
    /// An abort or rollback was accepted: the deploy stops at its next point of attention.
    pub stopping: bool,
    /// This deploy set its target's halt mark and has not lifted it.
    pub frozen: bool,
    /// The emergency bypass was granted.
    pub bypassed: bool,
}

/// A step in progress that operators may interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Changing instances: never cancelled (the rollback needs to know what it did), only
    /// frozen under by the target's halt mark.
    Advance,
    /// A bake timer: cancelled by an abort or the bypass.
    Bake,
    /// A health judgement: cancelled by an abort or the bypass.
    Evaluate,
}

/// Where the run checks whether it must hold: a pause holds only before a step, a halt
/// everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Before a step's change (a batch's advance, a traffic shift): pause and halt hold here.
    BeforeStep,
    /// Between the parts of a step: only a halt holds here.
    WithinStep,
}

/// The target must be frozen now: a halt not yet in force, or an abort under a change in
/// flight (so the change stops before its next instance).
pub fn must_freeze(s: Steering, step: Option<Step>) -> bool {
    !s.frozen && (s.halted || (step == Some(Step::Advance) && s.stopping))
}

/// The step in progress must be interrupted: frozen under, or cancelled (a bake or a judgement
/// by an abort or the bypass).
pub fn interrupts(s: Steering, step: Step) -> bool {
    must_freeze(s, Some(step)) || (step != Step::Advance && (s.stopping || s.bypassed))
}

/// The run holds at `at`.
pub fn holds(s: Steering, at: Boundary) -> bool {
    s.halted || (s.paused && at == Boundary::BeforeStep)
}

/// Something changed that a holding run must look at: an accepted stop, the hold lifted, or a
/// freeze to set.
pub fn unholds(s: Steering, at: Boundary) -> bool {
    s.stopping || !holds(s, at) || must_freeze(s, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase) -> DeployStatus {
        let mut s = DeployStatus::starting();
        s.phase = phase;
        s
    }

    fn cmd() -> Command {
        Command::new("alice", "error budget burnt")
    }

    fn refusal(v: Ruling) -> String {
        v.expect_err("refused").0
    }

    #[test]
    fn every_operation_names_who_and_the_risky_ones_why() {
        let running = at(Phase::Baking);
        assert!(refusal(check_halt(&running, &Command::new(" ", "x"))).starts_with("by:"));
        for check in [check_halt, check_abort, check_rollback, check_bypass] {
            assert!(refusal(check(&running, &Command::new("alice", "  "))).starts_with("reason:"));
            check(&running, &cmd()).unwrap();
        }
        assert_eq!(refusal(check_bypass(&running, &Command::new("alice", ""))), "reason: an emergency bypass needs a reason");
    }

    #[test]
    fn nothing_is_steered_once_the_deploy_ended_or_rolls_back() {
        for phase in [Phase::Succeeded, Phase::RolledBack, Phase::Failed, Phase::RollingBack] {
            let s = at(phase);
            assert!(check_halt(&s, &cmd()).is_err(), "{phase:?}");
            assert!(check_abort(&s, &cmd()).is_err(), "{phase:?}");
            assert!(check_bypass(&s, &cmd()).is_err(), "{phase:?}");
        }
        let mut aborting = at(Phase::Rolling);
        aborting.reason = Some(aborted(&cmd()));
        assert!(refusal(check_abort(&aborting, &cmd())).contains("being rolled back"));
        assert!(refusal(check_rollback(&aborting, &cmd())).contains("being rolled back"));
    }

    #[test]
    fn a_second_halt_or_bypass_is_refused() {
        let mut s = at(Phase::Evaluating);
        s.halted = true;
        assert!(refusal(check_halt(&s, &cmd())).contains("already halted"));
        s.bypass = Some(AuditEntry::of(Action::Bypass, &cmd(), DateTime::UNIX_EPOCH));
        assert!(refusal(check_bypass(&s, &cmd())).contains("already bypassed (by alice"));
    }

    #[test]
    fn rollback_after_success_only_while_the_window_is_open() {
        let mut done = at(Phase::Succeeded);
        assert!(refusal(check_rollback(&done, &cmd())).contains("rollback window is closed"));
        let now = DateTime::UNIX_EPOCH;
        done.rollback_window_until = Some(after_ms(now, 3_600_000));
        check_rollback(&done, &cmd()).unwrap();
        assert!(refusal(check_abort(&done, &cmd())).contains("ask for a rollback"));
        done.reason = Some(rolled_back(&cmd()));
        assert!(refusal(check_rollback(&done, &cmd())).contains("being rolled back"));
        let mut undone = at(Phase::RolledBack);
        undone.reason = Some("rolled back by bob: bad".into());
        assert!(refusal(check_rollback(&undone, &cmd())).contains("already rolled back (rolled back by bob: bad)"));
        // Before the deploy ended a rollback is an abort.
        check_rollback(&at(Phase::Rolling), &cmd()).unwrap();
    }

    #[test]
    fn window_end_and_reasons_read_well() {
        let now = DateTime::UNIX_EPOCH;
        assert_eq!(after_ms(now, 90_000).to_rfc3339(), "1970-01-01T00:01:30+00:00");
        assert_eq!(aborted(&Command::new(" alice ", " bad canary ")), "aborted by alice: bad canary");
        assert_eq!(rolled_back(&cmd()), "rolled back by alice: error budget burnt");
    }

    #[test]
    fn commands_parse_from_the_json_an_operator_types() {
        let c: Command = serde_json::from_str(r#"{"by":"alice","reason":"why"}"#).unwrap();
        assert_eq!(c, Command::new("alice", "why"));
        let empty: Command = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Command::default());
        let entry = AuditEntry::of(Action::ApprovalExpired, &Command::new(SYSTEM, "x"), DateTime::UNIX_EPOCH);
        assert_eq!(serde_json::to_value(&entry).unwrap()["action"], "approval_expired");
    }

    #[test]
    fn oversized_or_garbled_commands_are_refused_by_field() {
        let long = Command::new("alice", "x".repeat(MAX_TEXT + 1));
        assert!(refusal(check_abort(&at(Phase::Rolling), &long)).starts_with("reason: must be at most 1024 characters"));
        assert!(refusal(check_command(&Command::new("a\nb", "why"))).starts_with("by: must be one line"));
        check_command(&cmd()).unwrap();
    }

    #[test]
    fn a_pause_holds_before_a_step_and_a_halt_everywhere() {
        let paused = Steering { paused: true, ..Steering::default() };
        assert!(holds(paused, Boundary::BeforeStep) && !holds(paused, Boundary::WithinStep));
        let halted = Steering { halted: true, ..Steering::default() };
        assert!(holds(halted, Boundary::BeforeStep) && holds(halted, Boundary::WithinStep));
        assert!(!holds(Steering::default(), Boundary::BeforeStep));
    }

    #[test]
    fn a_halt_freezes_once_and_an_abort_freezes_only_under_a_change() {
        let halted = Steering { halted: true, ..Steering::default() };
        assert!(must_freeze(halted, None) && must_freeze(halted, Some(Step::Bake)));
        assert!(!must_freeze(Steering { frozen: true, ..halted }, None), "already frozen");
        let stopping = Steering { stopping: true, ..Steering::default() };
        assert!(must_freeze(stopping, Some(Step::Advance)));
        assert!(!must_freeze(stopping, Some(Step::Evaluate)) && !must_freeze(stopping, None));
    }

    #[test]
    fn an_abort_or_the_bypass_cancels_waits_but_never_a_change() {
        let stopping = Steering { stopping: true, ..Steering::default() };
        let bypassed = Steering { bypassed: true, ..Steering::default() };
        for s in [stopping, bypassed] {
            assert!(interrupts(s, Step::Bake) && interrupts(s, Step::Evaluate));
        }
        assert!(interrupts(stopping, Step::Advance), "frozen under, not cancelled");
        assert!(!interrupts(bypassed, Step::Advance));
        assert!(!interrupts(Steering::default(), Step::Bake));
    }

    #[test]
    fn a_held_run_wakes_for_a_stop_a_lift_or_a_freeze() {
        let paused = Steering { paused: true, ..Steering::default() };
        assert!(!unholds(paused, Boundary::BeforeStep));
        assert!(unholds(Steering { stopping: true, ..paused }, Boundary::BeforeStep));
        assert!(unholds(Steering::default(), Boundary::BeforeStep));
        let halted = Steering { halted: true, ..Steering::default() };
        assert!(unholds(halted, Boundary::WithinStep), "the freeze is still to be set");
        assert!(!unholds(Steering { frozen: true, ..halted }, Boundary::WithinStep));
    }
}
