//! `DeployWorkflow` (`signalbox.deploy`): a durable deploy of one build of one service to one
//! target, with any strategy: rolling batches, a canary by load-balancer weights, or
//! blue/green.
//!
//! The run: read the request (failing the workflow, naming the field, when it cannot be read or
//! breaks a rule) -> take the lane (one deploy per service and target) -> preflight -> the
//! strategy's steps, every one that changes the world registering its undo first and every
//! step judged by the analysis engine -> on success leave the lane and stay open for the
//! rollback window; on failure, a bad verdict or an abort run the undos in reverse and end
//! `RolledBack` with the reason.
//!
//! Operators steer it with the signals and updates of `signalbox_contract::deploy`; handlers
//! only record what was asked, after the validators in `signalbox_domain::{control, approval}`
//! accepted it. The run acts on it in [`run::Run`].

mod bluegreen;
mod canary;
mod lane;
mod rolling;
pub(crate) mod run;
pub(crate) mod state;
mod window;

use std::collections::BTreeMap;

use signalbox_contract::{Received, search};
use signalbox_contract::activities::{InstanceState, PreflightOutput};
use signalbox_contract::deploy::{Abort, ApproveGate, Bypass, DeployRun, Halt, Pause, PauseUpdate, Resume, ResumeUpdate, Rollback, Status};
use signalbox_domain::approval::{self, Approve};
use signalbox_domain::control::{self, Action, AuditEntry, Boundary, Command, timestamp};
use signalbox_domain::{BatchPlan, BatchStep, DeployRequest, DeployStatus, InvalidField, Phase, Strategy, bounds};
use temporalio_macros::workflow_methods;
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use self::run::{Run, enter};
pub use self::state::DeployWorkflow;
use self::state::RollbackCheck;
use crate::shared::saga::{Compensation, Saga};
use crate::shared::steps;
use crate::shared::stop::{Refused, Stop, refuse};

/// Patch id of lanes: one deploy at a time per service and target. Runs recorded before took
/// none, and accepted any rollback in their window.
const LANES: &str = "signalbox-lanes";

/// Patch id of indexing the git SHA the store records, when the request named none. Histories
/// recorded before kept the request's.
const RESOLVED_GIT_SHA: &str = "signalbox-resolved-git-sha";

/// Patch id of the bounded audit trail in the status: histories recorded before kept every
/// entry.
const BOUNDED_AUDIT: &str = "signalbox-bounded-audit";

/// The answer of a validator: the domain rule's refusal, in its words.
type Validation = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Per-version counts of a target as preflight found it.
fn versions(instances: &[InstanceState]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for i in instances {
        *counts.entry(i.version.clone()).or_default() += 1;
    }
    counts
}

/// Ends the run as refused before anything changed: `Failed`, with the reason and the field.
fn refused(ctx: &WorkflowContext<DeployWorkflow>, reason: String, invalid: Option<InvalidField>) -> temporalio_sdk::WorkflowTermination {
    ctx.state_mut(|s| {
        s.status.reason = Some(reason.clone());
        s.status.invalid = invalid;
        s.status.refused = true;
    });
    enter(ctx, Phase::Failed);
    refuse(reason)
}

/// How a deploy's steps ended.
enum Ended {
    /// Refused before anything changed.
    Refused(Refused),
    /// Stopped (a failure, a bad verdict, an abort) with the reason: what changed is undone.
    Stopped(String),
    /// Every step done.
    Done,
}

/// A deploy's steps, from its lane to the strategy's last one: preflight, the strategy's plan
/// (refused when the world cannot take it), and its rollout.
async fn steps_of(run: &mut Run<'_>) -> Ended {
    // Out of the queue; a deploy halted or paused while it was queued holds here, before it
    // reads anything.
    if run.ctx.state(|s| s.status.phase == Phase::Queued) && run.holds_everywhere() {
        run.enter(Phase::Preflight);
    }
    if let Err(Stop(reason)) = run.checkpoint(Boundary::BeforeStep).await {
        return Ended::Stopped(reason);
    }
    // Nothing has changed yet: a refused preflight fails the deploy without a rollback.
    let ctx = run.ctx;
    let plan = match run.req.strategy {
        Strategy::Rolling => run.req.batch_plan.clone(),
        _ => BatchPlan { steps: vec![BatchStep::Percent(100.0)] },
    };
    let req = &run.req;
    let pre = match steps::preflight(ctx, &req.service, &req.artifact, &req.target, &plan, "preflight: check artifact, fleet and plan").await {
        Ok(pre) => pre,
        Err(e) => return Ended::Refused(Refused::of(&e, "")),
    };
    // Version and git SHA as the store records them (results recorded before the store kept
    // records carry none: the request's artifact was complete then).
    if let Some(artifact) = pre.artifact.clone() {
        // A request that named only the digest learns its commit here; the UI filters by it.
        if artifact.git_sha != run.req.artifact.git_sha && ctx.patched(RESOLVED_GIT_SHA) {
            ctx.upsert_search_attributes([search::GIT_SHA.value_set(artifact.git_sha.clone())]);
        }
        run.req.artifact = artifact;
    }
    ctx.state_mut(|s| {
        s.status.fleet_size = pre.instances.len() as u32;
        s.status.total_batches = pre.batches.len() as u32;
        s.status.instances_per_version = versions(&pre.instances);
    });
    run.pre = pre;

    // Still nothing changed: a traffic strategy plans from the balancer as it is, and a plan it
    // cannot take is refused like a failed preflight.
    let strategy = run.req.strategy.clone();
    let outcome = match &strategy {
        Strategy::Rolling => rolling::roll_out(run).await,
        Strategy::Canary(spec) => match canary::prepare(run, spec).await {
            Ok(prepared) => canary::roll_out(run, spec, prepared).await,
            Err(refused) => return Ended::Refused(refused),
        },
        Strategy::BlueGreen(spec) => match bluegreen::prepare(run, spec).await {
            Ok(plan) => bluegreen::roll_out(run, spec, plan).await,
            Err(refused) => return Ended::Refused(refused),
        },
    };
    match outcome {
        Ok(()) => Ended::Done,
        Err(Stop(reason)) => Ended::Stopped(reason),
    }
}

#[workflow_methods]
impl DeployWorkflow {
    /// Runs the deploy; returns its final status (`Succeeded`, `RolledBack`, or `Failed` when
    /// it could not be undone cleanly).
    #[run(name = DeployRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: Received<DeployRequest>) -> WorkflowResult<DeployStatus> {
        let read = input.into_result().map_err(|e| InvalidField { field: e.field, rule: e.rule });
        let req = match read.and_then(|r| r.validate().map(|()| r).map_err(|signalbox_domain::Error::Invalid { field, rule }| InvalidField { field, rule })) {
            Ok(req) => req,
            Err(invalid) => return Err(refused(ctx, format!("{}: {}", invalid.field, invalid.rule), Some(invalid))),
        };
        let deploy_id = ctx.workflow_id().to_owned();
        let bounded_audit = ctx.patched(BOUNDED_AUDIT);
        ctx.state_mut(|s| {
            s.bounded_audit = bounded_audit;
            s.deployer = req.deployer.clone();
            s.approval = req.approval.clone();
            s.control = req.control;
            s.status.strategy = req.strategy.name().to_owned();
        });

        // A rehearsal changes nothing, so it takes no lane and never holds up a real deploy.
        let mut held = None;
        if !req.dry_run && ctx.patched(LANES) {
            ctx.state_mut(|s| s.lanes = true);
            match lane::take(ctx, &req, req.queue).await {
                Ok(lane) => held = Some(lane),
                Err(lane::Busy::Aborted(reason)) => {
                    ctx.state_mut(|s| s.status.reason = Some(reason));
                    enter(ctx, Phase::RolledBack);
                    return Ok(ctx.state(|s| s.status.clone()));
                }
                Err(busy) => return Err(refused(ctx, busy.reason(&req), None)),
            }
        }

        let mut run = Run { ctx, req, id: deploy_id, pre: PreflightOutput::default(), saga: Saga::default(), aa: Vec::new() };
        let reason = match steps_of(&mut run).await {
            Ended::Refused(Refused { reason, invalid }) => {
                let failure = refused(ctx, reason, invalid);
                if let Some(lane) = held {
                    lane.leave().await;
                }
                return Err(failure);
            }
            // An abort accepted as the last step ended still rolls back.
            Ended::Done if ctx.state(|s| s.stop.is_some()) => ctx.state(|s| s.stop.clone()).unwrap_or_default(),
            // A halt that came during the last step holds the deploy before it succeeds.
            Ended::Done => match run.checkpoint(Boundary::WithinStep).await {
                Err(Stop(reason)) => reason,
                Ok(()) => {
                    ctx.state_mut(|s| {
                        s.status.paused = false;
                        s.status.halted = false;
                    });
                    enter(ctx, Phase::Succeeded);
                    let window = window::open(&run);
                    if let Some(lane) = held.take() {
                        lane.leave().await;
                    }
                    if !window {
                        return Ok(ctx.state(|s| s.status.clone()));
                    }
                    window::tell_release(&run).await;
                    match window::rollback_window(&run).await {
                        None => return Ok(ctx.state(|s| s.status.clone())),
                        Some((reason, lane)) => {
                            held = lane;
                            reason
                        }
                    }
                }
            },
            Ended::Stopped(reason) => reason,
        };
        ctx.state_mut(|s| s.status.reason = Some(reason.clone()));
        enter(ctx, Phase::RollingBack);
        let saga = std::mem::take(&mut run.saga);
        let rolled_back = saga
            .compensate(ctx, |undo| {
                if let Compensation::Weights(w) = undo {
                    run.traffic(|t| t.weights.extend(w.weights.clone()));
                }
            })
            .await;
        // A halt or an abort under a change froze the target; rollbacks ignore the mark, and
        // once they are done it is lifted so the target can be deployed to again.
        if ctx.state(|s| s.frozen) {
            run.release().await;
        }
        ctx.state_mut(|s| {
            s.status.paused = false;
            s.status.halted = false;
        });
        match rolled_back {
            Ok(()) => {
                ctx.state_mut(|s| s.status.instances_per_version = versions(&run.pre.instances));
                run.traffic(|t| t.new_share_percent = 0.0);
                enter(ctx, Phase::RolledBack);
            }
            Err(e) => {
                ctx.state_mut(|s| s.status.reason = Some(format!("{reason}; rollback incomplete: {e}")));
                enter(ctx, Phase::Failed);
            }
        }
        if let Some(lane) = held {
            lane.leave().await;
        }
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Where the deploy stands: phase, step, instances per version, last verdict, operator
    /// control (paused, halted, bypass, gates, audit trail).
    #[query(name = Status::NAME)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> DeployStatus {
        self.status.clone()
    }

    /// Holds the deploy before its next step (fire and forget; ignored once it ended, while it
    /// rolls back, when already paused, or when the command cannot be read or breaks a bound).
    /// A deploy that takes control only through the API refuses it and audits the refusal.
    #[signal(name = Pause::NAME)]
    pub fn pause(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Received<Command>) {
        let Some(cmd) = readable(cmd) else { return };
        let at = timestamp(ctx.workflow_time());
        if self.refuse_signal(Pause::NAME, &cmd, at) {
            return;
        }
        self.hold(&cmd, at);
    }

    /// Lifts a pause or a halt (fire and forget; ignored when neither is in effect, or when
    /// the command cannot be read or breaks a bound). Refused and audited like `pause`.
    #[signal(name = Resume::NAME)]
    pub fn resume(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Received<Command>) {
        let Some(cmd) = readable(cmd) else { return };
        let at = timestamp(ctx.workflow_time());
        if self.refuse_signal(Resume::NAME, &cmd, at) {
            return;
        }
        self.unhold(&cmd, at);
    }

    #[update_validator(pause_update)]
    fn validate_pause_update(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, PauseUpdate::NAME, cmd)?;
        Ok(control::check_command(cmd)?)
    }

    /// `pause` with an answer and the API's grant: what the API sends a deploy it started.
    #[update(name = PauseUpdate::NAME)]
    pub fn pause_update(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.taken.take(&cmd.grant);
        self.hold(&cmd, timestamp(ctx.workflow_time()));
        self.status.clone()
    }

    #[update_validator(resume_update)]
    fn validate_resume_update(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, ResumeUpdate::NAME, cmd)?;
        Ok(control::check_command(cmd)?)
    }

    /// `resume` with an answer and the API's grant.
    #[update(name = ResumeUpdate::NAME)]
    pub fn resume_update(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.taken.take(&cmd.grant);
        self.unhold(&cmd, timestamp(ctx.workflow_time()));
        self.status.clone()
    }

    #[update_validator(halt)]
    fn validate_halt(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, Halt::NAME, cmd)?;
        Ok(control::check_halt(&self.status, cmd)?)
    }

    /// Freezes the deploy where it stands: the target's halt mark stops a change in flight
    /// before its next instance, nothing else changes and nothing rolls back until `resume` or
    /// `abort`. Answers once the target is frozen; a queued deploy, which has changed nothing,
    /// answers at once and holds as soon as it takes the lane.
    #[update(name = Halt::NAME)]
    pub async fn halt(ctx: &mut WorkflowContext<Self>, cmd: Command) -> DeployStatus {
        let at = timestamp(ctx.workflow_time());
        ctx.state_mut(|s| {
            s.taken.take(&cmd.grant);
            s.status.halted = true;
            s.audit(AuditEntry::of(Action::Halt, &cmd, at));
        });
        let _ = ctx
            .wait_condition(|s| s.frozen || !s.status.halted || s.status.stopping() || s.status.phase.is_final() || s.status.phase == Phase::Queued)
            .await;
        ctx.state(|s| s.status.clone())
    }

    #[update_validator(abort)]
    fn validate_abort(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, Abort::NAME, cmd)?;
        Ok(control::check_abort(&self.status, cmd)?)
    }

    /// Rolls the deploy back now; it ends `RolledBack` with reason `aborted by <who>: <why>`.
    /// A change in flight is stopped by freezing the target, then undone with the rest.
    #[update(name = Abort::NAME)]
    pub fn abort(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.taken.take(&cmd.grant);
        self.accept_stop(Action::Abort, control::aborted(&cmd), &cmd, timestamp(ctx.workflow_time()))
    }

    #[update_validator(rollback)]
    fn validate_rollback(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, Rollback::NAME, cmd)?;
        if self.rollback.is_some() {
            return Err("a rollback is already being checked; wait for its answer".into());
        }
        Ok(control::check_rollback(&self.status, cmd)?)
    }

    /// A manual rollback: while the deploy runs, an abort; after success, while the rollback
    /// window is open, undoes every step (most recent first), once the run checked that no
    /// other deploy holds the target or changed its instances since (refused with the reason
    /// otherwise). Reason `rolled back by <who>: <why>`.
    #[update(name = Rollback::NAME)]
    pub async fn rollback(ctx: &mut WorkflowContext<Self>, cmd: Command) -> Result<DeployStatus, Box<dyn std::error::Error + Send + Sync>> {
        ctx.state_mut(|s| s.taken.take(&cmd.grant));
        if !ctx.state(|s| s.lanes && s.status.phase == Phase::Succeeded && !s.status.stopping()) {
            let at = timestamp(ctx.workflow_time());
            return Ok(ctx.state_mut(|s| s.accept_stop(Action::Rollback, control::rolled_back(&cmd), &cmd, at)));
        }
        // Two rollbacks delivered together both pass the validator before either handler runs:
        // the second to get here is refused like the validator refuses one that comes later.
        if ctx.state(|s| s.rollback.is_some()) {
            return Err("a rollback is already being checked; wait for its answer".into());
        }
        ctx.state_mut(|s| s.rollback = Some(RollbackCheck::Asked(cmd)));
        let _ = ctx.wait_condition(|s| matches!(s.rollback, Some(RollbackCheck::Answered(_)))).await;
        match ctx.state_mut(|s| s.rollback.take()) {
            Some(RollbackCheck::Answered(Ok(()))) => Ok(ctx.state(|s| s.status.clone())),
            Some(RollbackCheck::Answered(Err(why))) => Err(why.into()),
            _ => Err("the deploy ended before the rollback could be checked".into()),
        }
    }

    #[update_validator(bypass)]
    fn validate_bypass(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.check_grant(ctx, Bypass::NAME, cmd)?;
        Ok(control::check_bypass(&self.status, cmd)?)
    }

    /// Emergency bypass: skips every remaining approval gate, bake timer and health judgement
    /// (a bake or judgement under way is cancelled). Pauses and halts still hold.
    #[update(name = Bypass::NAME)]
    pub fn bypass(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.taken.take(&cmd.grant);
        self.status.bypass = Some(self.record(Action::Bypass, &cmd, timestamp(ctx.workflow_time())));
        self.status.clone()
    }

    #[update_validator(approve)]
    fn validate_approve(&self, ctx: &WorkflowContextView, approve: &Approve) -> Validation {
        self.taken.check(self.control, ctx.workflow_id(), ApproveGate::NAME, &approve.approver, &approve.reason, &approve.grant)?;
        if self.status.stopping() {
            return Err("nothing awaits approval: the deploy is being rolled back".into());
        }
        Ok(approval::check_approve(self.approval.as_ref(), &self.deployer, &self.status.gates, approve)?)
    }

    /// Approves the open approval gate; quorum opens it.
    #[update(name = ApproveGate::NAME)]
    pub fn approve(&mut self, ctx: &mut SyncWorkflowContext<Self>, approve: Approve) -> DeployStatus {
        self.taken.take(&approve.grant);
        let entry = self.record(Action::Approve, &Command::new(approve.approver, approve.reason), timestamp(ctx.workflow_time()));
        if let Some(gate) = self.status.gates.last_mut() {
            gate.approvals.push(entry);
        }
        self.status.clone()
    }
}

/// Most refusals one deploy's audit trail keeps: the status stays bounded however many
/// signals someone sends.
const MAX_REFUSALS: usize = 100;

impl DeployWorkflow {
    /// Pauses, unless it ended, rolls back or is paused already.
    fn hold(&mut self, cmd: &Command, at: chrono::DateTime<chrono::Utc>) {
        if self.status.phase.is_final() || self.status.stopping() || self.status.paused {
            return;
        }
        self.status.paused = true;
        self.record(Action::Pause, cmd, at);
    }

    /// Lifts a pause or a halt, if one is in effect and the deploy is not rolling back.
    fn unhold(&mut self, cmd: &Command, at: chrono::DateTime<chrono::Utc>) {
        if !(self.status.paused || self.status.halted) || self.status.stopping() {
            return;
        }
        self.status.paused = false;
        self.status.halted = false;
        self.record(Action::Resume, cmd, at);
    }

    /// Whether `signal` must be refused: a deploy that takes control only through the API
    /// cannot tell who sent it. The refusal is audited under the name the sender gave.
    fn refuse_signal(&mut self, signal: &str, cmd: &Command, at: chrono::DateTime<chrono::Utc>) -> bool {
        if self.control.is_open() {
            return false;
        }
        if self.status.audit.iter().filter(|e| e.action == Action::Refused).count() < MAX_REFUSALS {
            let why = format!("signal {signal} refused: this deploy takes control only through the signalbox API");
            self.record(Action::Refused, &Command::new(cmd.by.clone(), why), at);
        }
        true
    }

    /// An update validator's check of the API's grant for `operation`.
    fn check_grant(&self, ctx: &WorkflowContextView, operation: &str, cmd: &Command) -> Result<(), control::Refusal> {
        self.taken.check(self.control, ctx.workflow_id(), operation, &cmd.by, &cmd.reason, &cmd.grant)
    }
}

/// A signal's command, if it can be read and keeps within bounds (`by` may be empty: a pause
/// or resume names nobody unless the sender says): a signal has no answer, so one that cannot
/// is ignored and changes nothing.
fn readable(cmd: Received<Command>) -> Option<Command> {
    let cmd = cmd.into_result().ok()?;
    let named = cmd.by.is_empty() || bounds::check_principal("by", &cmd.by).is_ok();
    (named && bounds::check_text("reason", &cmd.reason, bounds::MAX_TEXT).is_ok()).then_some(cmd)
}

#[cfg(test)]
mod tests {
    use temporalio_common::{QueryDefinition, SignalDefinition, UpdateDefinition, WorkflowDefinition};

    use super::*;

    /// Compile-time: the workflow's own definitions take and give what the contract says.
    fn same_io<A: UpdateDefinition, B: UpdateDefinition<Input = A::Input, Output = A::Output>>(_: A, _: B) {}

    #[test]
    fn the_workflow_answers_to_the_contract_names() {
        assert_eq!(DeployWorkflow::run.name(), DeployRun.name());
        assert_eq!(DeployWorkflow::status.name(), Status.name());
        assert_eq!(DeployWorkflow::pause.name(), Pause.name());
        assert_eq!(DeployWorkflow::resume.name(), Resume.name());
        for (ours, theirs) in [
            (DeployWorkflow::halt.name(), Halt.name()),
            (DeployWorkflow::abort.name(), Abort.name()),
            (DeployWorkflow::rollback.name(), Rollback.name()),
            (DeployWorkflow::bypass.name(), Bypass.name()),
            (DeployWorkflow::approve.name(), ApproveGate.name()),
        ] {
            assert_eq!(ours, theirs);
        }
        same_io(DeployWorkflow::halt, Halt);
        same_io(DeployWorkflow::abort, Abort);
        same_io(DeployWorkflow::rollback, Rollback);
        same_io(DeployWorkflow::bypass, Bypass);
        same_io(DeployWorkflow::approve, ApproveGate);
    }

    #[test]
    fn a_signal_that_cannot_be_read_or_breaks_a_bound_is_ignored() {
        assert!(readable(Received::from_json(br#"{"by": 7}"#)).is_none());
        assert!(readable(Received::Read(Command::new("a\nb", "why"))).is_none());
        assert_eq!(readable(Received::Read(Command::new("alice", "why"))), Some(Command::new("alice", "why")));
        assert_eq!(readable(Received::from_json(b"{}")), Some(Command::default()), "an anonymous pause is what it always was");
        assert!(readable(Received::Read(Command::new("alice", "x".repeat(bounds::MAX_TEXT + 1)))).is_none());
    }
}
