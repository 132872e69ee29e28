//! `BlueGreenWorkflow`: two instance sets behind one backend; blue serves, green idles at weight
//! 0. Green gets the new build and is verified under a verification load while it still takes
//! no traffic; then the weights flip (green all, blue none) in one balancer call.
//!
//! Blue keeps running the old build for `keep_blue_ms`: during that window the `flip_back`
//! update puts all traffic back on blue at once (then green returns to the old build). After
//! it, blue idles at weight 0 on the old build: the green set of the next deploy. The rollback
//! of any failure is the same flip back.

use std::time::Duration;

use signalbox_contract::Received;
use signalbox_contract::activities::{PreflightOutput, VerifyInput, VerifyInstances};
use signalbox_contract::legacy::{BlueGreenRequest, BlueGreenRun, BlueGreenStatus, FlipBack, TrafficPhase, TrafficStatus};
use signalbox_domain::analysis::Decision;
use signalbox_domain::traffic::{BlueGreenPlan, plan_blue_green};
use signalbox_domain::{BatchPlan, BatchStep};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{TimerOptions, TimerResult, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::shared::options::{long, windows};
use crate::shared::saga::{Compensation, Saga};
use crate::shared::steps::{self, Update};
use crate::shared::stop::{Stop, refuse};

/// The blue/green workflow's state.
#[workflow]
pub struct BlueGreenWorkflow {
    status: TrafficStatus,
    /// Set by `flip_back`: its reason.
    flip_back: Option<String>,
    /// Blue takes all traffic again after a flip back.
    back_on_blue: bool,
}

impl Default for BlueGreenWorkflow {
    fn default() -> Self {
        Self { status: TrafficStatus::starting(), flip_back: None, back_on_blue: false }
    }
}

#[workflow_methods]
impl BlueGreenWorkflow {
    /// Runs the deploy; returns its final status (`Succeeded` or `RolledBack`).
    #[run(name = BlueGreenRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, req: Received<BlueGreenRequest>) -> WorkflowResult<TrafficStatus> {
        let req = req.into_result().map_err(|e| refuse(e.to_string()))?;
        if let Err(e) = req.validate() {
            return Err(refuse(e.to_string()));
        }
        let prepared = async {
            let stats = steps::read_stats(ctx, &req.lb).await?;
            let whole = BatchPlan { steps: vec![BatchStep::Percent(100.0)] };
            let pre = steps::preflight(ctx, &req.service, &req.artifact, &req.fleet, &whole, "preflight: check artifact and fleet").await?;
            let plan = plan_blue_green("lb", &stats.weights()).map_err(|e| Stop(e.to_string()))?;
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
            s.status.total_steps = 1;
            s.status.new_set = plan.green.clone();
            s.status.old_set = plan.blue.clone();
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
        // The weights undo is the flip back: the moment it completes, blue serves everything.
        let undone = undos
            .compensate(ctx, |u| {
                if let Compensation::Weights(w) = u {
                    ctx.state_mut(|s| {
                        s.status.weights.extend(w.weights.clone());
                        s.status.new_share_percent = 0.0;
                        s.back_on_blue = true;
                    });
                }
            })
            .await;
        ctx.state_mut(|s| match undone {
            Ok(()) => s.status.phase = TrafficPhase::RolledBack,
            Err(e) => {
                s.status.phase = TrafficPhase::Failed;
                s.status.reason = Some(format!("{reason}; rollback incomplete: {e}"));
            }
        });
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Update green, verify it, flip, keep blue; every change registers its undo first.
    async fn roll_out(ctx: &mut WorkflowContext<Self>, req: &BlueGreenRequest, pre: &PreflightOutput, plan: &BlueGreenPlan, undos: &mut Saga) -> Result<(), Stop> {
        steps::push(ctx, undos, &req.artifact, &pre.regions, false).await?;

        ctx.state_mut(|s| s.status.phase = TrafficPhase::Updating);
        let summary = format!("update {} green instances to {}", plan.green.len(), req.artifact.version);
        let deploy_id = ctx.workflow_id().to_owned();
        steps::update(ctx, undos, Update::plan(&deploy_id, pre, &req.fleet, &req.artifact, &plan.green, false), summary).await?;

        ctx.state_mut(|s| s.status.phase = TrafficPhase::Verifying);
        let policy = &req.health;
        let verify = VerifyInput {
            fleet: req.fleet.clone(),
            instances: plan.green.clone(),
            reference: plan.blue.clone(),
            rps_per_instance: req.verify_rps,
            policy: policy.clone(),
        };
        let window = Duration::from_millis(policy.sample_interval_ms);
        let summary = format!("verify {} green instances against {} blue under {} rps each", plan.green.len(), plan.blue.len(), req.verify_rps);
        let report = ctx.execute_activity(VerifyInstances, verify, long(summary, windows(window, policy.samples.saturating_add(1)))).await?;
        let (verdict, summary) = (report.verdict, report.summary.clone());
        ctx.state_mut(|s| s.status.last_verdict = Some(report));
        if verdict != Decision::Pass {
            return Err(Stop(format!("green not verified: {summary}")));
        }

        ctx.state_mut(|s| {
            s.status.phase = TrafficPhase::Shifting;
            s.status.step = 1;
        });
        undos.push(Compensation::weights(&req.lb, &plan.original, false));
        steps::set_weights(ctx, &req.lb, &plan.flipped, false, format!("flip: {} green serve, {} blue idle", plan.green.len(), plan.blue.len())).await?;
        ctx.state_mut(|s| {
            s.status.weights.extend(plan.flipped.clone());
            s.status.new_share_percent = 100.0;
            s.status.phase = TrafficPhase::Flipped;
        });

        if req.keep_blue_ms > 0 {
            let keep = TimerOptions::builder(Duration::from_millis(req.keep_blue_ms)).summary("keep blue ready for a flip back".to_owned()).build();
            temporalio_sdk::workflows::select! {
                fired = ctx.timer(keep) => {
                    if let TimerResult::Cancelled = fired {
                        return Err(Stop("aborted while keeping blue".into()));
                    }
                }
                asked = ctx.wait_condition(|s: &Self| s.flip_back.is_some()) => {
                    if asked.is_err() {
                        return Err(Stop("aborted while keeping blue".into()));
                    }
                }
            }
        }
        // Checked after either branch: a flip back accepted together with the timer still wins.
        if let Some(reason) = ctx.state(|s| s.flip_back.clone()) {
            return Err(Stop(format!("flipped back: {reason}")));
        }
        Ok(())
    }

    /// Where the deploy stands: phase, weights, green's verdict.
    #[query(name = BlueGreenStatus::NAME)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> TrafficStatus {
        self.status.clone()
    }

    /// Only while blue is kept, once, and with a reason.
    #[update_validator(flip_back)]
    #[allow(clippy::ptr_arg)]
    fn validate_flip_back(&self, _ctx: &WorkflowContextView, reason: &String) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.status.phase != TrafficPhase::Flipped {
            return Err(format!("nothing to flip back: the deploy is {:?}", self.status.phase).into());
        }
        if self.flip_back.is_some() {
            return Err("a flip back is already under way".into());
        }
        if reason.trim().is_empty() {
            return Err("a flip back needs a reason".into());
        }
        Ok(())
    }

    /// Puts all traffic back on blue; completes once blue takes it (green's own rollback to the
    /// old build follows in the background of the workflow).
    #[update(name = FlipBack::NAME)]
    pub async fn flip_back(ctx: &mut WorkflowContext<Self>, reason: String) -> TrafficStatus {
        ctx.state_mut(|s| s.flip_back = Some(reason));
        let _ = ctx.wait_condition(|s: &Self| s.back_on_blue || s.status.phase.is_final()).await;
        ctx.state(|s| s.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::{QueryDefinition, UpdateDefinition, WorkflowDefinition};

    use super::*;

    #[test]
    fn the_workflow_answers_to_the_contract_name() {
        assert_eq!(BlueGreenWorkflow::run.name(), BlueGreenRun.name());
        assert_eq!(BlueGreenRun::NAME, "signalbox.bluegreen");
        assert_eq!(BlueGreenWorkflow::status.name(), BlueGreenStatus.name());
        assert_eq!(BlueGreenWorkflow::flip_back.name(), FlipBack.name());
    }
}
