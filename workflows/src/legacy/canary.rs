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

use std::time::Duration;

use signalbox_contract::Received;
use signalbox_contract::activities::{BaselineInput, EvaluateHealth, EvaluateInput, SampleBaseline};
use signalbox_contract::legacy::{CanaryRequest, CanaryRun, CanaryStatus, TrafficPhase, TrafficStatus};
use signalbox_domain::traffic::{CanaryPlan, Promotion, plan_canary};
use signalbox_domain::{BatchPlan, BatchStep, GroupFigures};
use signalbox_domain::analysis::Decision;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{TimerOptions, TimerResult, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::shared::options::{long, windows};
use crate::shared::saga::{Compensation, Saga};
use crate::shared::steps::{self, Update};
use crate::shared::stop::{Stop, refuse};

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
    pub async fn run(ctx: &mut WorkflowContext<Self>, req: Received<CanaryRequest>) -> WorkflowResult<TrafficStatus> {
        let req = req.into_result().map_err(|e| refuse(e.to_string()))?;
        if let Err(e) = req.validate() {
            return Err(refuse(e.to_string()));
        }
        // Nothing has changed yet: a refusal here fails the deploy without a rollback.
        let prepared = async {
            let stats = steps::read_stats(ctx, &req.lb).await?;
            let whole = BatchPlan { steps: vec![BatchStep::Percent(100.0)] };
            let pre = steps::preflight(ctx, &req.service, &req.artifact, &req.fleet, &whole, "preflight: check artifact and fleet").await?;
            let plan = plan_canary("", &stats.weights(), &req.canary, &req.steps).map_err(|e| Stop(e.to_string()))?;
            steps::check_servers(&pre, &stats, plan.original.keys()).map_err(|signalbox_domain::Error::Invalid { rule, .. }| Stop(rule))?;
            Ok::<_, Stop>((pre, plan))
        }
        .await;
        let (pre, plan) = match prepared {
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
        let Err(Stop(reason)) = Self::roll_out(ctx, &req, &pre, &plan, &mut undos).await else {
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
    async fn roll_out(ctx: &mut WorkflowContext<Self>, req: &CanaryRequest, pre: &signalbox_contract::activities::PreflightOutput, plan: &CanaryPlan, undos: &mut Saga) -> Result<(), Stop> {
        let policy = &req.health;
        let window = Duration::from_millis(policy.sample_interval_ms);
        steps::push(ctx, undos, &req.artifact, &pre.regions, false).await?;
        let serving: Vec<String> = plan.original.keys().cloned().collect();
        let baseline_input = BaselineInput { fleet: req.fleet.clone(), instances: serving, policy: policy.clone(), dry_run: false };
        let summary = "sample the serving servers before anything changes";
        let baseline: GroupFigures =
            ctx.execute_activity(SampleBaseline, baseline_input, long(summary, windows(window, policy.consecutive_bad_samples))).await?;

        undos.push(Compensation::weights(&req.lb, &plan.original, false));
        steps::set_weights(ctx, &req.lb, &plan.off, false, "take the canaries out of rotation").await?;
        ctx.state_mut(|s| s.status.weights.extend(plan.off.clone()));

        ctx.state_mut(|s| s.status.phase = TrafficPhase::Updating);
        let summary = format!("update {} canaries to {}", req.canary.len(), req.artifact.version);
        let deploy_id = ctx.workflow_id().to_owned();
        steps::update(ctx, undos, Update::plan(&deploy_id, pre, &req.fleet, &req.artifact, &req.canary, false), summary).await?;
        // From here on, a rollback takes traffic off the canaries before it reverts them.
        undos.push(Compensation::weights(&req.lb, &plan.off, false));

        let total = plan.steps.len();
        for (i, (percent, weights)) in plan.steps.iter().enumerate() {
            let step = i + 1;
            ctx.state_mut(|s| {
                s.status.phase = TrafficPhase::Shifting;
                s.status.step = step as u32;
            });
            steps::set_weights(ctx, &req.lb, weights, false, format!("step {step}/{total}: {percent}% of traffic to the canaries")).await?;
            ctx.state_mut(|s| {
                s.status.weights.extend(weights.clone());
                s.status.new_share_percent = *percent;
            });
            if req.bake_ms > 0 {
                ctx.state_mut(|s| s.status.phase = TrafficPhase::Baking);
                let bake = TimerOptions::builder(Duration::from_millis(req.bake_ms)).summary(format!("bake step {step}/{total} ({percent}%)")).build();
                if let TimerResult::Cancelled = ctx.timer(bake).await {
                    return Err(Stop(format!("aborted while baking step {step} ({percent}%)")));
                }
            }
            ctx.state_mut(|s| s.status.phase = TrafficPhase::Evaluating);
            // At 100% the baseline takes no traffic: the canaries are judged against the baseline figures.
            let control = if *percent < 100.0 { plan.baseline.clone() } else { Vec::new() };
            let evaluate = EvaluateInput { fleet: req.fleet.clone(), canary: req.canary.clone(), control, baseline, policy: policy.clone(), dry_run: false };
            let summary = format!("judge step {step}/{total}: canaries at {percent}% against the baseline");
            let report = ctx.execute_activity(EvaluateHealth, evaluate, long(summary, windows(window, policy.samples.saturating_add(1)))).await?;
            let (verdict, summary) = (report.verdict, report.summary.clone());
            ctx.state_mut(|s| s.status.last_verdict = Some(report));
            match verdict {
                Decision::Pass => {}
                Decision::Fail => return Err(Stop(format!("step {step} ({percent}%): unhealthy: {summary}"))),
                // Never promote on missing evidence.
                Decision::Inconclusive | Decision::Continue => return Err(Stop(format!("step {step} ({percent}%): {summary}"))),
            }
        }

        if req.promotion == Promotion::UpdateRest {
            ctx.state_mut(|s| s.status.phase = TrafficPhase::Promoting);
            let summary = format!("promote: update {} baseline instances while they take no traffic", plan.baseline.len());
            steps::update(ctx, undos, Update::plan(&deploy_id, pre, &req.fleet, &req.artifact, &plan.baseline, false), summary).await?;
            steps::set_weights(ctx, &req.lb, &plan.original, false, "promote: every server back to its original weight").await?;
            ctx.state_mut(|s| s.status.weights.extend(plan.original.clone()));
        }
        Ok(())
    }

    /// Where the canary stands: phase, step, weights, last verdict.
    #[query(name = CanaryStatus::NAME)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> TrafficStatus {
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::{QueryDefinition, WorkflowDefinition};

    use super::*;

    #[test]
    fn the_workflow_answers_to_the_contract_name() {
        assert_eq!(CanaryWorkflow::run.name(), CanaryRun.name());
        assert_eq!(CanaryRun::NAME, "signalbox.canary");
        assert_eq!(CanaryWorkflow::status.name(), CanaryStatus.name());
    }
}
