//! How the deploy answers its operators between and during its steps.
//!
//! Handlers only record what was asked (see `deploy.rs`); this module is where the run acts on
//! it, at points that are the same on every replay:
//!
//! - [`hold`] at step boundaries: a pause holds before a batch, a halt everywhere, until
//!   resume; an accepted abort or rollback stops the rollout there.
//! - [`attend`] around a step in progress: a halt freezes the fleet at once (`fleet.halt`) while
//!   the step goes on; an abort cancels a bake or an evaluation, and freezes the fleet under an
//!   advance so the advance stops before its next instance; the bypass cancels a bake or an
//!   evaluation.
//! - [`gate`] before a gated batch: waits for quorum, raced with the gate's durable expiry timer.
//! - [`rollback_window`] after success: stays open for the `rollback` update.
//!
//! A halt is a freeze, never a fault: an advance that fails while this deploy froze the fleet
//! (the local substrate's `Halted`, for the instances it did not reach) registers no failure
//! and triggers no rollback. The deploy holds; on `resume` it lifts the freeze and applies the
//! same batch again (applying is idempotent, so instances already updated are skipped, and a
//! real fault hidden by the freeze shows up then); on `abort` it rolls back the whole batch as
//! planned (rolling back is idempotent too) and everything before it, then lifts the freeze.
//! The mark is per fleet: another deploy's advance on the same fleet is refused as well.
//!
//! With no operator request and no approval policy none of this issues a command, so histories
//! recorded before operator control existed replay unchanged; the rollback window's timer is
//! new on a path every deploy takes, and sits behind [`ROLLBACK_WINDOW_PATCH`].

use std::pin::pin;
use std::time::Duration;

use signalbox_domain::approval::{self, Gate, GateOutcome};
use signalbox_domain::contract::{HaltFleet, HaltInput, ReleaseFleet, ReleaseInput};
use signalbox_domain::control::{self, Action, AuditEntry, timestamp};
use signalbox_domain::{DeployRequest, OnExpiry, Phase};
use temporalio_common::RetryPolicy;
use temporalio_sdk::workflows::select;
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, TimerOptions, TimerResult, WaitConditionOptions, WorkflowCancellationToken, WorkflowContext,
};

use crate::DeployWorkflow;
use crate::deploy::Stop;

/// Patch id of the rollback window after success.
pub(crate) const ROLLBACK_WINDOW_PATCH: &str = "signalbox-rollback-window";

/// A step in progress that operators may interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Updating a batch: never cancelled (the saga needs to know what it did), only frozen.
    Advance,
    /// The bake timer: cancelled by an abort or the bypass.
    Bake,
    /// The health evaluation: cancelled by an abort or the bypass.
    Evaluate,
}

/// Where [`hold`] is called: a pause holds only before a batch, a halt everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boundary {
    /// Before a batch's advance (pause and halt hold here).
    BeforeBatch,
    /// Between the steps of a batch (only a halt holds here).
    WithinBatch,
}

impl DeployWorkflow {
    /// Whether the fleet must be frozen now: a halt, or an abort under an advance in flight.
    fn must_freeze(&self, step: Option<Step>) -> bool {
        !self.frozen && (self.status.halted || (step == Some(Step::Advance) && self.stop.is_some()))
    }

    /// Whether the step in progress must be interrupted (frozen under, or cancelled).
    fn interrupts(&self, step: Step) -> bool {
        self.must_freeze(Some(step)) || (step != Step::Advance && (self.stop.is_some() || self.status.bypass.is_some()))
    }

    /// Whether the run holds at `at`.
    fn holds(&self, at: Boundary) -> bool {
        self.status.halted || (self.status.paused && at == Boundary::BeforeBatch)
    }

    /// Whether something changed that a holding run must look at.
    fn unholds(&self, at: Boundary) -> bool {
        self.stop.is_some() || !self.holds(at) || self.must_freeze(None)
    }

    /// Whether an approval gate is decided, or the fleet must be frozen while it waits.
    fn gate_moves(&self, req: &DeployRequest) -> bool {
        self.must_freeze(None) || self.gate_outcome(req, false).is_some()
    }

    fn gate_outcome(&self, req: &DeployRequest, expired: bool) -> Option<GateOutcome> {
        let (policy, gate) = (req.approval.as_ref()?, self.status.open_gate()?);
        approval::settle(policy, gate, self.status.bypass.is_some(), self.stop.is_some(), expired)
    }
}

/// A wait that only operator requests end: workflow cancellation (the older abort) reaches
/// the step itself, which then ends as before.
fn requests_only() -> WaitConditionOptions {
    WaitConditionOptions::builder().cancellation_token(WorkflowCancellationToken::new()).build()
}

/// Options of a fleet freeze or release: short, retried, and not cancelled with the workflow,
/// so a cancelled deploy still lifts the freeze it set.
fn detached(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::builder().maximum_attempts(10).maximum_interval(Duration::from_secs(5)).build())
        .cancellation_token(WorkflowCancellationToken::new())
        .summary(summary.into())
        .build()
}

/// Sets the fleet's halt mark. The run holds whether or not the mark could be set: a failure is
/// recorded in the audit trail, and no further step starts either way.
async fn freeze(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest, deploy_id: &str) {
    let reason = ctx.state(|s| {
        let halt = s.status.audit.iter().rev().find(|e| e.action == Action::Halt).map(|e| format!("halted by {}: {}", e.by, e.reason));
        s.stop.clone().or(halt).unwrap_or_default()
    });
    let input = HaltInput { deploy_id: deploy_id.to_owned(), fleet: req.fleet.clone(), reason: reason.clone(), dry_run: req.dry_run };
    let done = ctx.execute_activity(HaltFleet, input, detached(format!("freeze fleet {}: {reason}", req.fleet.name))).await;
    let at = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| {
        s.frozen = true;
        if let Err(e) = done {
            let why = format!("the fleet's halt mark could not be set ({}); the deploy holds anyway", crate::deploy::failure_message(&e));
            s.status.audit.push(AuditEntry { action: Action::Halt, by: control::SYSTEM.into(), at, reason: why });
        }
    });
}

/// Lifts the fleet's halt mark set by [`freeze`].
pub(crate) async fn release(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest, deploy_id: &str) {
    let input = ReleaseInput { deploy_id: deploy_id.to_owned(), fleet: req.fleet.clone(), dry_run: req.dry_run };
    let done = ctx.execute_activity(ReleaseFleet, input, detached(format!("release fleet {}", req.fleet.name))).await;
    let at = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| {
        s.frozen = false;
        if let Err(e) = done {
            let why = format!("the fleet's halt mark could not be lifted: {}", crate::deploy::failure_message(&e));
            s.status.audit.push(AuditEntry { action: Action::Resume, by: control::SYSTEM.into(), at, reason: why });
        }
    });
}

/// Holds while paused (before a batch) or halted; lifts this deploy's freeze on resume. An
/// accepted abort or rollback, or a workflow cancellation, ends the hold with [`Stop`].
pub(crate) async fn hold(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest, deploy_id: &str, at: Boundary) -> Result<(), Stop> {
    loop {
        if let Some(reason) = ctx.state(|s| s.stop.clone()) {
            return Err(Stop(reason));
        }
        if ctx.state(|s| s.must_freeze(None)) {
            freeze(ctx, req, deploy_id).await;
            continue;
        }
        if !ctx.state(|s| s.holds(at)) {
            if ctx.state(|s| s.frozen) {
                release(ctx, req, deploy_id).await;
            }
            return Ok(());
        }
        // Inherits workflow cancellation: cancelling a held deploy still aborts it.
        if ctx.wait_condition(move |s: &DeployWorkflow| s.unholds(at)).await.is_err() {
            return Err(Stop("aborted while held".into()));
        }
    }
}

/// Drives `step` to its end while answering operator requests that cannot wait for it.
/// Returns its output, `None` when the bypass skipped it, or [`Stop`] when an abort cancelled it.
pub(crate) async fn attend<F: CancellableFuture>(
    ctx: &WorkflowContext<DeployWorkflow>,
    req: &DeployRequest,
    deploy_id: &str,
    step: Step,
    fut: F,
) -> Result<Option<F::Output>, Stop> {
    let mut fut = pin!(fut);
    loop {
        // The step first: a step that ended in the same moment as a request keeps its result.
        select! {
            out = fut.as_mut() => return Ok(Some(out)),
            _ = ctx.wait_condition_with_options(move |s: &DeployWorkflow| s.interrupts(step), requests_only()) => {}
        }
        if ctx.state(|s| s.must_freeze(Some(step))) {
            freeze(ctx, req, deploy_id).await;
            continue;
        }
        if step == Step::Advance {
            continue;
        }
        fut.cancel();
        let _ = fut.as_mut().await;
        return match ctx.state(|s| s.stop.clone()) {
            Some(reason) => Err(Stop(reason)),
            None => Ok(None),
        };
    }
}

/// The approval gate before `batch` (1-based) of `total`, if the policy has one there and the
/// gates were not bypassed: waits for quorum, the bypass, an abort or the expiry, records the
/// outcome, and goes on or stops as it says. A halt while it waits holds before acting.
pub(crate) async fn gate(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest, deploy_id: &str, batch: u32, total: u32) -> Result<(), Stop> {
    let Some(policy) = &req.approval else { return Ok(()) };
    if !policy.gated_batches(total).contains(&batch) || ctx.state(|s| s.status.bypass.is_some() || s.stop.is_some()) {
        return Ok(());
    }
    let opened = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| s.status.gates.push(Gate::open(batch, opened, policy)));
    DeployWorkflow::enter(ctx, Phase::AwaitingApproval);
    let expiry = TimerOptions::builder(Duration::from_millis(policy.expiry_ms))
        .summary(format!("approval before batch {batch}/{total} expires"))
        .build();
    let mut expiry = pin!(ctx.timer(expiry));
    let outcome = loop {
        // The decision first: an approval that comes with the expiry counts.
        select! {
            _ = ctx.wait_condition_with_options(|s: &DeployWorkflow| s.gate_moves(req), requests_only()) => {}
            fired = expiry.as_mut() => {
                if fired == TimerResult::Cancelled {
                    break GateOutcome::Aborted;
                }
                break ctx.state(|s| s.gate_outcome(req, true)).unwrap_or(GateOutcome::Expired(policy.on_expiry));
            }
        }
        if ctx.state(|s| s.must_freeze(None)) {
            freeze(ctx, req, deploy_id).await;
            continue;
        }
        if let Some(outcome) = ctx.state(|s| s.gate_outcome(req, false)) {
            expiry.cancel();
            break outcome;
        }
    };
    let at = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| {
        if let Some(gate) = s.status.gates.last_mut() {
            gate.outcome = Some(outcome);
        }
        if let GateOutcome::Expired(then) = outcome {
            let then = match then {
                OnExpiry::Abort => "rolling back",
                OnExpiry::Proceed => "proceeding",
            };
            let reason = format!("no quorum before batch {batch} within {} ms; {then}", policy.expiry_ms);
            s.status.audit.push(AuditEntry { action: Action::ApprovalExpired, by: control::SYSTEM.into(), at, reason });
        }
    });
    hold(ctx, req, deploy_id, Boundary::WithinBatch).await?;
    match outcome {
        GateOutcome::Approved | GateOutcome::Bypassed | GateOutcome::Expired(OnExpiry::Proceed) => Ok(()),
        GateOutcome::Expired(OnExpiry::Abort) => Err(Stop(format!("approval before batch {batch} expired without quorum after {} ms", policy.expiry_ms))),
        GateOutcome::Aborted => Err(Stop(ctx.state(|s| s.stop.clone()).unwrap_or_else(|| "aborted while awaiting approval".into()))),
    }
}

/// After success: keeps the deploy open for its rollback window (a durable timer). Returns the
/// reason of a rollback asked for in the window, `None` when the window closed without one. A
/// workflow cancellation closes the window early; the deploy stays `Succeeded`.
pub(crate) async fn rollback_window(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest) -> Option<String> {
    if req.rollback_window_ms == 0 || !ctx.patched(ROLLBACK_WINDOW_PATCH) {
        return None;
    }
    let until = control::after_ms(timestamp(ctx.workflow_time()), req.rollback_window_ms);
    ctx.state_mut(|s| s.status.rollback_window_until = Some(until));
    let window = TimerOptions::builder(Duration::from_millis(req.rollback_window_ms)).summary("rollback window".to_owned()).build();
    let mut window = pin!(ctx.timer(window));
    // The request first: a rollback accepted in the window's last moment is honoured.
    select! {
        _ = ctx.wait_condition_with_options(|s: &DeployWorkflow| s.stop.is_some(), requests_only()) => window.cancel(),
        _ = window.as_mut() => {}
    }
    ctx.state_mut(|s| {
        s.status.rollback_window_until = None;
        s.stop.clone()
    })
}
