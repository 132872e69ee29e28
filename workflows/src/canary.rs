//! `CanaryWorkflow`: a new build on a few instances, taking a growing share of real traffic by
//! load-balancer weights, judged against the rest at every step.
//!
//! Canaries out of rotation (weight 0) -> update them -> for each step (1% -> 5% -> 25% -> 50%
//! -> 100% by default): set the weights that give the canary group that share, bake, compare
//! canary and baseline instances -> promote. At 100% the default promotion updates the baseline
//! instances while they take no traffic, then gives every server its original weight back; the
//! alternative keeps the canaries serving alone with the baseline idle on the old build.
//!
//! A bad verdict, a failed step or an abort undoes it all: traffic off the canaries first, then
//! the canaries back to the old build, then the original weights.

use signalbox_domain::contract::{BaselineInput, EvaluateHealth, EvaluateInput, SampleBaseline};
use signalbox_domain::traffic::{CanaryPlan, CanaryRequest, CanaryRun, Promotion, STATUS_QUERY, TrafficPhase, TrafficStatus, plan_canary};
use signalbox_domain::{GroupFigures, Verdict};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{TimerOptions, TimerResult, WorkflowContext, WorkflowContextView, WorkflowResult};

use self::steps::{Prepared, Stop, long, refuse};
use crate::saga::{Compensation, Saga};

/// The canary workflow's state: what the `status` query answers.
#[workflow]
pub struct CanaryWorkflow {
    status: TrafficStatus,
}

impl Default for CanaryWorkflow {
    fn default() -> Self {
        Self { status: TrafficStatus::starting() }
    }
}

#[workflow_methods]
impl CanaryWorkflow {
    /// Runs the canary; returns its final status (`Succeeded` or `RolledBack`).
    #[run(name = CanaryRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, req: CanaryRequest) -> WorkflowResult<TrafficStatus> {
        if let Err(e) = req.validate() {
            return Err(refuse(e.to_string()));
        }
        // Nothing has changed yet: a refusal here fails the deploy without a rollback.
        let prepared = steps::prepare(ctx, &req.lb, &req.service, &req.artifact, &req.fleet).await.and_then(|p| {
            let plan = plan_canary(&p.stats.weights(), &req.canary, &req.steps).map_err(|e| Stop(e.to_string()))?;
            p.check_servers(plan.original.keys())?;
            Ok((p, plan))
        });
        let (prepared, plan) = match prepared {
            Ok(x) => x,
            Err(Stop(reason)) => {
                ctx.state_mut(|s| {
                    s.status.phase = TrafficPhase::Failed;
                    s.status.reason = Some(reason.clone());
                });
                return Err(refuse(reason));
            }
        };
        ctx.state_mut(|s| {
            s.status.total_steps = plan.steps.len() as u32;
            s.status.new_set = req.canary.clone();
            s.status.old_set = plan.baseline.clone();
            s.status.weights = plan.original.clone();
        });

        let mut undos = Saga::default();
        let Err(Stop(reason)) = Self::roll_out(ctx, &req, &prepared, &plan, &mut undos).await else {
            ctx.state_mut(|s| s.status.phase = TrafficPhase::Succeeded);
            return Ok(ctx.state(|s| s.status.clone()));
        };
        ctx.state_mut(|s| {
            s.status.phase = TrafficPhase::RollingBack;
            s.status.reason = Some(reason.clone());
        });
        let undone = undos
            .compensate(ctx, |u| {
                if let Compensation::Weights(w) = u {
                    ctx.state_mut(|s| s.status.weights.extend(w.weights.clone()));
                }
            })
            .await;
        ctx.state_mut(|s| match undone {
            Ok(()) => {
                s.status.phase = TrafficPhase::RolledBack;
                s.status.new_share_percent = 0.0;
            }
            Err(e) => {
                s.status.phase = TrafficPhase::Failed;
                s.status.reason = Some(format!("{reason}; rollback incomplete: {e}"));
            }
        });
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// The canary proper; every world-changing step registers its undo in `undos` first.
    async fn roll_out(ctx: &mut WorkflowContext<Self>, req: &CanaryRequest, prepared: &Prepared, plan: &CanaryPlan, undos: &mut Saga) -> Result<(), Stop> {
        let policy = &req.health;
        let window = std::time::Duration::from_millis(policy.sample_interval_ms);
        steps::push(ctx, undos, &req.artifact, &prepared.preflight.regions).await?;
        let serving: Vec<String> = plan.original.keys().cloned().collect();
        let baseline_input = BaselineInput { fleet: req.fleet.clone(), instances: serving, policy: policy.clone(), dry_run: false };
        let baseline: GroupFigures =
            ctx.execute_activity(SampleBaseline, baseline_input, long("sample the serving servers before anything changes", window * policy.consecutive_bad_samples)).await?;

        undos.push(Compensation::weights(&req.lb, &plan.original));
        steps::set_weights(ctx, &req.lb, &plan.off, "take the canaries out of rotation").await?;
        ctx.state_mut(|s| s.status.weights.extend(plan.off.clone()));

        ctx.state_mut(|s| s.status.phase = TrafficPhase::Updating);
        let summary = format!("update {} canaries to {}", req.canary.len(), req.artifact.version);
        steps::advance(ctx, undos, &prepared.preflight, &req.fleet, &req.artifact, &req.canary, summary).await?;
        // From here on, a rollback takes traffic off the canaries before it reverts them.
        undos.push(Compensation::weights(&req.lb, &plan.off));

        let total = plan.steps.len();
        for (i, (percent, weights)) in plan.steps.iter().enumerate() {
            let step = i + 1;
            ctx.state_mut(|s| {
                s.status.phase = TrafficPhase::Shifting;
                s.status.step = step as u32;
            });
            steps::set_weights(ctx, &req.lb, weights, format!("step {step}/{total}: {percent}% of traffic to the canaries")).await?;
            ctx.state_mut(|s| {
                s.status.weights.extend(weights.clone());
                s.status.new_share_percent = *percent;
            });
            if req.bake_ms > 0 {
                ctx.state_mut(|s| s.status.phase = TrafficPhase::Baking);
                let bake = TimerOptions::builder(std::time::Duration::from_millis(req.bake_ms)).summary(format!("bake step {step}/{total} ({percent}%)")).build();
                if let TimerResult::Cancelled = ctx.timer(bake).await {
                    return Err(Stop(format!("aborted while baking step {step} ({percent}%)")));
                }
            }
            ctx.state_mut(|s| s.status.phase = TrafficPhase::Evaluating);
            // At 100% the baseline takes no traffic: the canaries are judged against the baseline figures.
            let control = if *percent < 100.0 { plan.baseline.clone() } else { Vec::new() };
            let evaluate = EvaluateInput { fleet: req.fleet.clone(), canary: req.canary.clone(), control, baseline, policy: policy.clone(), dry_run: false };
            let summary = format!("judge step {step}/{total}: canaries at {percent}% against the baseline");
            let report = ctx.execute_activity(EvaluateHealth, evaluate, long(summary, window * (policy.samples + 1))).await?;
            let (verdict, summary) = (report.verdict, report.summary.clone());
            ctx.state_mut(|s| s.status.last_verdict = Some(report));
            match verdict {
                Verdict::Pass => {}
                Verdict::Fail => return Err(Stop(format!("step {step} ({percent}%): unhealthy: {summary}"))),
                // Never promote on missing evidence.
                Verdict::Inconclusive => return Err(Stop(format!("step {step} ({percent}%): {summary}"))),
            }
        }

        if req.promotion == Promotion::UpdateRest {
            ctx.state_mut(|s| s.status.phase = TrafficPhase::Promoting);
            let summary = format!("promote: update {} baseline instances while they take no traffic", plan.baseline.len());
            steps::advance(ctx, undos, &prepared.preflight, &req.fleet, &req.artifact, &plan.baseline, summary).await?;
            steps::set_weights(ctx, &req.lb, &plan.original, "promote: every server back to its original weight").await?;
            ctx.state_mut(|s| s.status.weights.extend(plan.original.clone()));
        }
        Ok(())
    }

    /// Where the canary stands: phase, step, weights, last verdict.
    #[query(name = STATUS_QUERY)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> TrafficStatus {
        self.status.clone()
    }
}

/// Steps and undos shared by the traffic strategies (canary and blue/green).
pub(crate) mod steps {
    use std::time::Duration;

    use signalbox_domain::contract::{
        AdvanceBatch, AdvanceInput, EvictInput, InstanceChange, Preflight, PreflightInput, PreflightOutput, PushArtifact, PushInput,
        RollbackInput,
    };
    use signalbox_domain::traffic::{LbStats, LbTarget, ReadStats, SetWeights, SetWeightsInput, Weights};
    use signalbox_domain::{Artifact, BatchPlan, BatchStep, FleetTarget};
    use temporalio_common::error::ApplicationFailure;
    use temporalio_sdk::{ActivityExecutionError, WorkflowContext, WorkflowTermination};

    use crate::deploy::failure_message;
    use crate::saga::{Compensation, Saga};

    /// Why a strategy stopped: a failed step, a bad verdict, an abort or a flip back, in words.
    pub(crate) struct Stop(pub(crate) String);

    impl From<ActivityExecutionError> for Stop {
        fn from(e: ActivityExecutionError) -> Self {
            match e {
                ActivityExecutionError::Cancelled(_) => Stop("aborted while a step was running".into()),
                other => Stop(failure_message(&other)),
            }
        }
    }

    /// The workflow failure for a request refused before anything changed.
    pub(crate) fn refuse(reason: String) -> WorkflowTermination {
        WorkflowTermination::failed_application(ApplicationFailure::non_retryable(reason))
    }

    pub(crate) use crate::deploy::{long, quick};

    /// What a strategy reads before it changes anything.
    pub(crate) struct Prepared {
        /// The balancer's backend as it is.
        pub(crate) stats: LbStats,
        /// The fleet as it is (and the artifact checked).
        pub(crate) preflight: PreflightOutput,
    }

    impl Prepared {
        /// Every server the strategy touches must be a fleet instance: it is updated and scraped.
        pub(crate) fn check_servers<'a>(&self, servers: impl IntoIterator<Item = &'a String>) -> Result<(), Stop> {
            for s in servers {
                if !self.preflight.instances.iter().any(|i| &i.id == s) {
                    return Err(Stop(format!("server {s} of backend {} is not an instance of the fleet", self.stats.backend)));
                }
            }
            Ok(())
        }
    }

    /// Reads the balancer and checks the artifact and the fleet. Changes nothing.
    pub(crate) async fn prepare<W>(ctx: &WorkflowContext<W>, lb: &LbTarget, service: &str, artifact: &Artifact, fleet: &FleetTarget) -> Result<Prepared, Stop> {
        let stats = ctx.execute_activity(ReadStats, lb.clone(), quick(format!("read backend {}", lb.backend))).await?;
        let input = PreflightInput {
            service: service.to_owned(),
            artifact: artifact.clone(),
            fleet: fleet.clone(),
            batch_plan: BatchPlan { steps: vec![BatchStep::Percent(100.0)] },
        };
        let preflight = ctx.execute_activity(Preflight, input, quick("preflight: check artifact and fleet")).await?;
        Ok(Prepared { stats, preflight })
    }

    /// Copies the artifact into the fleet's regional caches; undone by evicting what it added.
    pub(crate) async fn push<W>(ctx: &WorkflowContext<W>, undos: &mut Saga, artifact: &Artifact, regions: &[String]) -> Result<(), Stop> {
        let evict = |regions: Vec<String>| Compensation::Evict(EvictInput { digest: artifact.digest.clone(), regions });
        let at = undos.push(evict(regions.to_vec()));
        let push = PushInput { digest: artifact.digest.clone(), regions: regions.to_vec(), dry_run: false };
        let pushed = ctx.execute_activity(PushArtifact, push, quick(format!("push {} to {} regions", artifact.digest.short(), regions.len()))).await?;
        undos.replace(at, evict(pushed.newly_cached));
        Ok(())
    }

    /// Updates `instances` to `artifact`; the rollback is registered before the step, so a step
    /// that fails halfway is still undone.
    pub(crate) async fn advance<W>(
        ctx: &WorkflowContext<W>,
        undos: &mut Saga,
        pre: &PreflightOutput,
        fleet: &FleetTarget,
        artifact: &Artifact,
        instances: &[String],
        summary: String,
    ) -> Result<(), Stop> {
        let deploy_id = ctx.workflow_id().to_owned();
        let planned: Vec<InstanceChange> = instances
            .iter()
            .rev()
            .filter_map(|id| pre.instances.iter().find(|i| &i.id == id))
            .map(|i| InstanceChange {
                instance: i.id.clone(),
                from_version: i.version.clone(),
                from_digest: i.digest.clone(),
                to_version: artifact.version.clone(),
                to_digest: artifact.digest.clone(),
            })
            .collect();
        let rollback = |changes| Compensation::Rollback(RollbackInput { deploy_id: deploy_id.clone(), fleet: fleet.clone(), changes, dry_run: false });
        let at = undos.push(rollback(planned));
        let input = AdvanceInput { deploy_id: deploy_id.clone(), fleet: fleet.clone(), instances: instances.to_vec(), target: artifact.clone(), dry_run: false };
        let out = ctx.execute_activity(AdvanceBatch, input, long(summary, Duration::from_secs(30 * 60))).await?;
        undos.replace(at, rollback(out.changes.into_iter().rev().collect()));
        Ok(())
    }

    /// Sets weights on the balancer.
    pub(crate) async fn set_weights<W>(ctx: &WorkflowContext<W>, lb: &LbTarget, weights: &Weights, summary: impl Into<String>) -> Result<(), Stop> {
        let input = SetWeightsInput { lb: lb.clone(), weights: weights.clone() };
        ctx.execute_activity(SetWeights, input, quick(summary)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::WorkflowDefinition;

    use super::*;

    #[test]
    fn the_workflow_answers_to_the_contract_name() {
        assert_eq!(CanaryWorkflow::run.name(), CanaryRun.name());
        assert_eq!(CanaryRun::NAME, "signalbox.canary");
    }
}
