//! `DeployWorkflow`: a durable rolling deploy.
//!
//! Per batch: advance the batch -> bake (a durable timer) -> evaluate health -> go on or roll
//! back. Every step that changes the world registers its compensation first; a failure, a bad
//! verdict or an abort runs them in reverse, and the workflow ends `RolledBack` with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_domain::contract::{
    AdvanceBatch, AdvanceInput, BaselineInput, EvaluateHealth, EvaluateInput, InstanceChange, InstanceState, Preflight, PreflightInput,
    PreflightOutput, PushArtifact, PushInput, RollbackInput, SampleBaseline,
};
use signalbox_domain::{DeployRequest, DeployStatus, GroupFigures, Phase, Verdict, search};
use temporalio_common::RetryPolicy;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, TimerOptions, TimerResult, WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use crate::saga::{Compensation, Saga};

/// The deploy workflow's state: what the `status` query answers.
#[workflow]
pub struct DeployWorkflow {
    status: DeployStatus,
}

impl Default for DeployWorkflow {
    fn default() -> Self {
        Self { status: DeployStatus::starting() }
    }
}

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
fn quick(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::builder().maximum_attempts(5).maximum_interval(Duration::from_secs(5)).build())
        .summary(summary.into())
        .build()
}

/// Options of a long, heartbeating activity: a dead worker is noticed within the heartbeat
/// timeout and the activity moves to another worker.
fn long(summary: impl Into<String>, run_at_most: Duration) -> ActivityOptions {
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
struct Stop(String);

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
        let Err(Stop(reason)) = outcome else {
            Self::enter(ctx, Phase::Succeeded);
            return Ok(ctx.state(|s| s.status.clone()));
        };
        ctx.state_mut(|s| s.status.reason = Some(reason.clone()));
        Self::enter(ctx, Phase::RollingBack);
        let rolled_back = saga.compensate(ctx).await;
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
    fn enter(ctx: &WorkflowContext<Self>, phase: Phase) {
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
            let out = ctx.execute_activity(AdvanceBatch, advance, long(summary, Duration::from_secs(30 * 60))).await?;
            ctx.state_mut(|s| {
                for c in &out.changes {
                    s.status.move_instances(&c.from_version, &c.to_version, 1);
                }
            });
            saga.replace(undo_at, Compensation::Rollback(rollback(out.changes.into_iter().rev().collect())));
            done = upto;

            if req.bake_ms > 0 {
                Self::enter(ctx, Phase::Baking);
                let bake = TimerOptions::builder(Duration::from_millis(req.bake_ms)).summary(format!("bake batch {}/{total}", i + 1)).build();
                if let TimerResult::Cancelled = ctx.timer(bake).await {
                    return Err(Stop(format!("aborted while baking batch {}", i + 1)));
                }
            }

            Self::enter(ctx, Phase::Evaluating);
            let evaluate = EvaluateInput {
                fleet: req.fleet.clone(),
                canary: ids[..upto].to_vec(),
                control: ids[upto..].to_vec(),
                baseline,
                policy: policy.clone(),
                dry_run: req.dry_run,
            };
            let summary = format!("judge batch {}/{total}: {} updated vs {} not", i + 1, upto, ids.len() - upto);
            let report = ctx.execute_activity(EvaluateHealth, evaluate, long(summary, window * (policy.samples + 1))).await?;
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

    /// Where the deploy stands: phase, batch, instances per version, last verdict.
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> DeployStatus {
        self.status.clone()
    }
}
