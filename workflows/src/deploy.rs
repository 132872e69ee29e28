//! `DeployWorkflow`: a durable rolling deploy.
//!
//! Per batch: approval gate (if the policy has one there) -> advance the batch -> bake (a
//! durable timer) -> evaluate health (the first-version gate, or the analysis engine when the
//! request has an analysis policy) -> go on or roll back. Every step that changes the world
//! registers its compensation first; a failure, a bad verdict or an abort runs them in reverse,
//! and the workflow ends `RolledBack` with the reason. After success the deploy stays open for
//! its rollback window.
//!
//! Operators steer it with the signals and updates below (wire names in
//! [`signalbox_domain::control::names`]); handlers only record what was asked, after the
//! validators in `signalbox_domain::{control, approval}` accepted it. The run acts on it in
//! `crate::control`.

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_domain::approval::{self, ApprovalPolicy, Approve};
use signalbox_domain::contract::{
    AdvanceBatch, AdvanceInput, AnalyzeHealth, AnalyzeInput, BaselineInput, EvaluateHealth, EvaluateInput, InstanceChange, InstanceState, Preflight, PreflightInput,
    PreflightOutput, PushArtifact, PushInput, RollbackInput, SampleBaseline,
};
use signalbox_domain::control::{self, Action, AuditEntry, Command, timestamp};
use signalbox_domain::{DeployRequest, DeployStatus, GroupFigures, Phase, Verdict, search};
use temporalio_common::RetryPolicy;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, SyncWorkflowContext, TimerOptions, TimerResult, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};

use crate::control::{Boundary, Step, attend, gate, hold, release, rollback_window};
use crate::saga::{Compensation, Saga};

/// The deploy workflow's state: what the `status` query answers, and what the handlers'
/// validators and the run need to know of the operators' requests.
#[workflow]
pub struct DeployWorkflow {
    pub(crate) status: DeployStatus,
    /// Who started the deploy (the self-approval rule); set when the run starts.
    deployer: String,
    /// The approval policy (the `approve` validator); set when the run starts.
    approval: Option<ApprovalPolicy>,
    /// An accepted abort or rollback, as the reason the deploy will end with.
    pub(crate) stop: Option<String>,
    /// This deploy set the fleet's halt mark and has not lifted it yet.
    pub(crate) frozen: bool,
}

impl Default for DeployWorkflow {
    fn default() -> Self {
        Self { status: DeployStatus::starting(), deployer: String::new(), approval: None, stop: None, frozen: false }
    }
}

/// The answer of a validator: the domain rule's refusal, in its words.
type Validation = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Patch id of judging batches with the analysis engine (`health.analyze`). Only requests that
/// opt in reach it, and no history before it has one, but a marker costs nothing and keeps the
/// branch explicit in history.
const ANALYSIS_ENGINE: &str = "signalbox-analysis-engine";

/// Patch id of indexing the phase as a search attribute.
const PHASE_SEARCH_ATTRIBUTE: &str = "signalbox-phase-search-attribute";

/// The most useful message of an activity failure: the application error's own words.
pub(crate) fn failure_message(e: &ActivityExecutionError) -> String {
    match e {
        ActivityExecutionError::Failed(_) => e.cause().map_or_else(|| e.to_string(), |c| c.to_string()),
        other => other.to_string(),
    }
}

/// Options of a short, retried activity.
pub(crate) fn quick(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::builder().maximum_attempts(5).maximum_interval(Duration::from_secs(5)).build())
        .summary(summary.into())
        .build()
}

/// Options of a long, heartbeating activity: a dead worker is noticed within the heartbeat
/// timeout and the activity moves to another worker.
pub(crate) fn long(summary: impl Into<String>, run_at_most: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(run_at_most + Duration::from_secs(60))
        .heartbeat_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .build(),
        )
        .summary(summary.into())
        .build()
}

/// Per-version counts of a fleet as preflight found it.
fn versions(instances: &[InstanceState]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for i in instances {
        *counts.entry(i.version.clone()).or_default() += 1;
    }
    counts
}

/// Why a rollout stopped: a failed step, a bad verdict or an abort, in words.
pub(crate) struct Stop(pub(crate) String);

impl From<ActivityExecutionError> for Stop {
    fn from(e: ActivityExecutionError) -> Self {
        match e {
            ActivityExecutionError::Cancelled(_) => Stop("aborted while a step was running".into()),
            other => Stop(failure_message(&other)),
        }
    }
}

#[workflow_methods]
impl DeployWorkflow {
    /// Runs the deploy; returns its final status (`Succeeded` or `RolledBack`).
    #[run(name = "signalbox.deploy")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, req: DeployRequest) -> WorkflowResult<DeployStatus> {
        if let Err(e) = req.validate() {
            return Err(WorkflowTermination::failed_application(ApplicationFailure::non_retryable(e.to_string())));
        }
        let deploy_id = ctx.workflow_id().to_owned();
        ctx.state_mut(|s| {
            s.deployer = req.deployer.clone();
            s.approval = req.approval.clone();
        });
        let preflight_input = PreflightInput {
            service: req.service.clone(),
            artifact: req.artifact.clone(),
            fleet: req.fleet.clone(),
            batch_plan: req.batch_plan.clone(),
        };
        // Nothing has changed yet: a refused preflight fails the deploy without a rollback.
        let pre: PreflightOutput = match ctx.execute_activity(Preflight, preflight_input, quick("preflight: check artifact, fleet and plan")).await {
            Ok(p) => p,
            Err(e) => {
                let reason = failure_message(&e);
                ctx.state_mut(|s| s.status.reason = Some(reason.clone()));
                Self::enter(ctx, Phase::Failed);
                return Err(WorkflowTermination::failed_application(ApplicationFailure::non_retryable(reason)));
            }
        };
        ctx.state_mut(|s| {
            s.status.fleet_size = pre.instances.len() as u32;
            s.status.total_batches = pre.batches.len() as u32;
            s.status.instances_per_version = versions(&pre.instances);
        });

        let mut saga = Saga::default();
        let outcome = Self::roll_out(ctx, &req, &deploy_id, &pre, &mut saga).await;
        let reason = match outcome {
            // An abort accepted as the last step ended still rolls back.
            Ok(()) if ctx.state(|s| s.stop.is_some()) => ctx.state(|s| s.stop.clone()).unwrap_or_default(),
            Ok(()) => {
                ctx.state_mut(|s| s.status.paused = false);
                Self::enter(ctx, Phase::Succeeded);
                match rollback_window(ctx, &req).await {
                    None => return Ok(ctx.state(|s| s.status.clone())),
                    Some(reason) => reason,
                }
            }
            Err(Stop(reason)) => reason,
        };
        ctx.state_mut(|s| s.status.reason = Some(reason.clone()));
        Self::enter(ctx, Phase::RollingBack);
        let rolled_back = saga.compensate(ctx, |_| {}).await;
        // A halt or an abort under an advance froze the fleet; rollbacks ignore the mark, and
        // once they are done it is lifted so the fleet can be deployed to again.
        if ctx.state(|s| s.frozen) {
            release(ctx, &req, &deploy_id).await;
        }
        ctx.state_mut(|s| {
            s.status.paused = false;
            s.status.halted = false;
        });
        match rolled_back {
            Ok(()) => {
                ctx.state_mut(|s| s.status.instances_per_version = versions(&pre.instances));
                Self::enter(ctx, Phase::RolledBack);
            }
            Err(e) => {
                ctx.state_mut(|s| s.status.reason = Some(format!("{reason}; rollback incomplete: {e}")));
                Self::enter(ctx, Phase::Failed);
            }
        }
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Moves the deploy to `phase`, in its status and in the `SignalboxPhase` search attribute
    /// that the Temporal UI filters by.
    pub(crate) fn enter(ctx: &WorkflowContext<Self>, phase: Phase) {
        ctx.state_mut(|s| s.status.phase = phase);
        // Histories recorded before the phase was indexed carry no upserts; they replay as such.
        if ctx.patched(PHASE_SEARCH_ATTRIBUTE) {
            ctx.upsert_search_attributes([search::PHASE.value_set(search::phase_value(phase))]);
        }
    }

    /// The rollout proper; every world-changing step registers its undo in `saga` first.
    async fn roll_out(ctx: &mut WorkflowContext<Self>, req: &DeployRequest, deploy_id: &str, pre: &PreflightOutput, saga: &mut Saga) -> Result<(), Stop> {
        let ids: Vec<String> = pre.instances.iter().map(|i| i.id.clone()).collect();
        let policy = &req.health;
        let window = Duration::from_millis(policy.sample_interval_ms);

        Self::enter(ctx, Phase::Pushing);
        let push = PushInput { digest: req.artifact.digest.clone(), regions: pre.regions.clone(), dry_run: req.dry_run };
        let evict_at = saga.push(Compensation::Evict(signalbox_domain::contract::EvictInput { digest: req.artifact.digest.clone(), regions: pre.regions.clone() }));
        let pushed = ctx.execute_activity(PushArtifact, push, quick(format!("push {} to {} regions", req.artifact.digest.short(), pre.regions.len()))).await?;
        // Only evict what this push added: a cache that already held the artifact keeps it.
        saga.replace(evict_at, Compensation::Evict(signalbox_domain::contract::EvictInput { digest: req.artifact.digest.clone(), regions: pushed.newly_cached }));

        let baseline_input = BaselineInput { fleet: req.fleet.clone(), instances: ids.clone(), policy: policy.clone(), dry_run: req.dry_run };
        let baseline: GroupFigures =
            ctx.execute_activity(SampleBaseline, baseline_input, long("sample pre-deploy baseline", window * policy.consecutive_bad_samples)).await?;

        let total = pre.batches.len();
        let mut done = 0usize;
        for (i, &upto) in pre.batches.iter().enumerate() {
            let upto = upto as usize;
            let batch = &pre.instances[done..upto];
            gate(ctx, req, deploy_id, i as u32 + 1, total as u32).await?;
            hold(ctx, req, deploy_id, Boundary::BeforeBatch).await?;
            ctx.state_mut(|s| s.status.current_batch = i as u32 + 1);
            Self::enter(ctx, Phase::Rolling);
            // Registered before the step: a batch that fails halfway is still undone. The
            // planned list is replaced by the actual completion order once the step returns.
            let planned: Vec<InstanceChange> = batch
                .iter()
                .rev()
                .map(|inst| InstanceChange {
                    instance: inst.id.clone(),
                    from_version: inst.version.clone(),
                    from_digest: inst.digest.clone(),
                    to_version: req.artifact.version.clone(),
                    to_digest: req.artifact.digest.clone(),
                })
                .collect();
            let rollback = |changes| RollbackInput { deploy_id: deploy_id.to_owned(), fleet: req.fleet.clone(), changes, dry_run: req.dry_run };
            let undo_at = saga.push(Compensation::Rollback(rollback(planned)));
            let advance = AdvanceInput {
                deploy_id: deploy_id.to_owned(),
                fleet: req.fleet.clone(),
                instances: batch.iter().map(|b| b.id.clone()).collect(),
                target: req.artifact.clone(),
                dry_run: req.dry_run,
            };
            let summary = format!("batch {}/{total}: update {} instances ({done} -> {upto} of {})", i + 1, batch.len(), ids.len());
            let out = loop {
                let step = ctx.execute_activity(AdvanceBatch, advance.clone(), long(summary.clone(), Duration::from_secs(30 * 60)));
                match attend(ctx, req, deploy_id, Step::Advance, step).await? {
                    Some(Ok(out)) => break out,
                    // Failing while this deploy froze the fleet is the freeze taking effect, not a
                    // fault: hold, and on resume apply the batch again (applying is idempotent;
                    // a real fault shows again then). An abort rolls back the planned batch.
                    Some(Err(_)) if ctx.state(|s| s.frozen) => hold(ctx, req, deploy_id, Boundary::WithinBatch).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => unreachable!("an advance is never skipped"),
                }
            };
            ctx.state_mut(|s| {
                for c in &out.changes {
                    s.status.move_instances(&c.from_version, &c.to_version, 1);
                }
            });
            saga.replace(undo_at, Compensation::Rollback(rollback(out.changes.into_iter().rev().collect())));
            done = upto;

            hold(ctx, req, deploy_id, Boundary::WithinBatch).await?;

            if req.bake_ms > 0 && !ctx.state(|s| s.status.bypass.is_some()) {
                Self::enter(ctx, Phase::Baking);
                let bake = TimerOptions::builder(Duration::from_millis(req.bake_ms)).summary(format!("bake batch {}/{total}", i + 1)).build();
                if let Some(TimerResult::Cancelled) = attend(ctx, req, deploy_id, Step::Bake, ctx.timer(bake)).await? {
                    return Err(Stop(format!("aborted while baking batch {}", i + 1)));
                }
                hold(ctx, req, deploy_id, Boundary::WithinBatch).await?;
            }
            if ctx.state(|s| s.status.bypass.is_some()) {
                continue;
            }

            Self::enter(ctx, Phase::Evaluating);
            if let Some(analysis) = &req.analysis
                && ctx.patched(ANALYSIS_ENGINE)
            {
                let windows = signalbox_domain::analysis::windows(analysis, policy);
                let analyze = AnalyzeInput {
                    fleet: req.fleet.clone(),
                    service: req.service.clone(),
                    canary: ids[..upto].to_vec(),
                    stable: ids[upto..].to_vec(),
                    baseline,
                    baseline_span_ms: policy.sample_interval_ms * u64::from(policy.consecutive_bad_samples),
                    policy: analysis.clone(),
                    window_ms: policy.sample_interval_ms,
                    windows,
                    dry_run: req.dry_run,
                };
                let summary = format!("analyse batch {}/{total}: {} updated vs {} not", i + 1, upto, ids.len() - upto);
                let step = ctx.execute_activity(AnalyzeHealth, analyze, long(summary, window * (windows + 1)));
                let Some(output) = attend(ctx, req, deploy_id, Step::Evaluate, step).await? else {
                    continue;
                };
                // The judged input stays in history only (for `signalbox backtest export`).
                let report = output?.report;
                hold(ctx, req, deploy_id, Boundary::WithinBatch).await?;
                let stop = report.stop_reason(i as u32 + 1);
                ctx.state_mut(|s| s.status.last_analysis = Some(report));
                match stop {
                    None => continue,
                    Some(reason) => return Err(Stop(reason)),
                }
            }
            let evaluate = EvaluateInput {
                fleet: req.fleet.clone(),
                canary: ids[..upto].to_vec(),
                control: ids[upto..].to_vec(),
                baseline,
                policy: policy.clone(),
                dry_run: req.dry_run,
            };
            let summary = format!("judge batch {}/{total}: {} updated vs {} not", i + 1, upto, ids.len() - upto);
            let step = ctx.execute_activity(EvaluateHealth, evaluate, long(summary, window * (policy.samples + 1)));
            let Some(report) = attend(ctx, req, deploy_id, Step::Evaluate, step).await? else {
                continue;
            };
            let report = report?;
            // A halt during the evaluation freezes the deploy before its verdict is acted on.
            hold(ctx, req, deploy_id, Boundary::WithinBatch).await?;
            let verdict = report.verdict;
            let summary = report.summary.clone();
            ctx.state_mut(|s| s.status.last_verdict = Some(report));
            match verdict {
                Verdict::Pass => {}
                Verdict::Fail => return Err(Stop(format!("batch {}: unhealthy: {summary}", i + 1))),
                // Never promote on missing evidence.
                Verdict::Inconclusive => return Err(Stop(format!("batch {}: {summary}", i + 1))),
            }
        }
        Ok(())
    }

    /// Where the deploy stands: phase, batch, instances per version, last verdict, operator
    /// control (paused, halted, bypass, gates, audit trail).
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> DeployStatus {
        self.status.clone()
    }

    /// Holds the deploy before its next batch (fire and forget; ignored once it ended, while it
    /// rolls back, or when already paused).
    #[signal(name = "pause")]
    pub fn pause(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) {
        if self.status.phase.is_final() || self.status.stopping() || self.status.paused {
            return;
        }
        self.status.paused = true;
        self.record(Action::Pause, &cmd, ctx);
    }

    /// Lifts a pause or a halt (fire and forget; ignored when neither is in effect).
    #[signal(name = "resume")]
    pub fn resume(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) {
        if !(self.status.paused || self.status.halted) || self.status.stopping() {
            return;
        }
        self.status.paused = false;
        self.status.halted = false;
        self.record(Action::Resume, &cmd, ctx);
    }

    #[update_validator(halt)]
    fn validate_halt(&self, _ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        Ok(control::check_halt(&self.status, cmd)?)
    }

    /// Freezes the deploy where it stands: the fleet's halt mark stops an advance in flight
    /// before its next instance, nothing else changes and nothing rolls back until `resume` or
    /// `abort`. Answers once the fleet is frozen.
    #[update(name = "halt")]
    pub async fn halt(ctx: &mut WorkflowContext<Self>, cmd: Command) -> DeployStatus {
        let at = timestamp(ctx.workflow_time());
        ctx.state_mut(|s| {
            s.status.halted = true;
            s.status.audit.push(AuditEntry::of(Action::Halt, &cmd, at));
        });
        let _ = ctx.wait_condition(|s| s.frozen || !s.status.halted || s.status.stopping() || s.status.phase.is_final()).await;
        ctx.state(|s| s.status.clone())
    }

    #[update_validator(abort)]
    fn validate_abort(&self, _ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        Ok(control::check_abort(&self.status, cmd)?)
    }

    /// Rolls the deploy back now; it ends `RolledBack` with reason `aborted by <who>: <why>`.
    /// An advance in flight is stopped by freezing the fleet, then undone with the rest.
    #[update(name = "abort")]
    pub fn abort(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.stop_for(Action::Abort, control::aborted(&cmd), &cmd, ctx)
    }

    #[update_validator(rollback)]
    fn validate_rollback(&self, _ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        Ok(control::check_rollback(&self.status, cmd)?)
    }

    /// A manual rollback: while the deploy runs, an abort; after success, while the rollback
    /// window is open, undoes every batch (most recent first). Reason `rolled back by <who>: <why>`.
    #[update(name = "rollback")]
    pub fn rollback(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.stop_for(Action::Rollback, control::rolled_back(&cmd), &cmd, ctx)
    }

    #[update_validator(bypass)]
    fn validate_bypass(&self, _ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        Ok(control::check_bypass(&self.status, cmd)?)
    }

    /// Emergency bypass: skips every remaining approval gate, bake timer and health evaluation
    /// (a bake or evaluation under way is cancelled). Pauses and halts still hold.
    #[update(name = "bypass")]
    pub fn bypass(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> DeployStatus {
        self.status.bypass = Some(self.record(Action::Bypass, &cmd, ctx));
        self.status.clone()
    }

    #[update_validator(approve)]
    fn validate_approve(&self, _ctx: &WorkflowContextView, approve: &Approve) -> Validation {
        if self.status.stopping() {
            return Err("nothing awaits approval: the deploy is being rolled back".into());
        }
        Ok(approval::check_approve(self.approval.as_ref(), &self.deployer, &self.status.gates, approve)?)
    }

    /// Approves the open approval gate; quorum opens it.
    #[update(name = "approve")]
    pub fn approve(&mut self, ctx: &mut SyncWorkflowContext<Self>, approve: Approve) -> DeployStatus {
        let entry = self.record(Action::Approve, &Command::new(approve.approver, approve.reason), ctx);
        if let Some(gate) = self.status.gates.last_mut() {
            gate.approvals.push(entry);
        }
        self.status.clone()
    }
}

impl DeployWorkflow {
    /// Appends `action` by `cmd` to the audit trail, at the workflow's time; returns the entry.
    fn record(&mut self, action: Action, cmd: &Command, ctx: &SyncWorkflowContext<Self>) -> AuditEntry {
        let entry = AuditEntry::of(action, cmd, timestamp(ctx.workflow_time()));
        self.status.audit.push(entry.clone());
        entry
    }

    /// Accepts an abort or rollback: the run stops at its next point of attention and rolls back.
    fn stop_for(&mut self, action: Action, reason: String, cmd: &Command, ctx: &SyncWorkflowContext<Self>) -> DeployStatus {
        self.record(action, cmd, ctx);
        self.stop = Some(reason.clone());
        self.status.reason = Some(reason);
        self.status.clone()
    }
}
