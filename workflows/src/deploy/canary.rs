//! The canary strategy: a few instances updated while they take no traffic, then given a
//! growing share of the requests by load-balancer weights (1% -> 5% -> 25% -> 50% -> 100% by
//! default), judged against the other serving servers at every step.
//!
//! At 100% the default promotion updates the others while they take no traffic and gives every
//! server its original weight back; the alternative keeps the canaries serving alone with the
//! others idle on the old build. A bad verdict, a failed step or an abort undoes it all:
//! traffic off the canaries first, then the canaries back to the old build, then the original
//! weights.

use signalbox_domain::control::Boundary;
use signalbox_domain::traffic::{CanaryPlan, Promotion, default_canaries, plan_canary};
use signalbox_domain::{CanarySpec, Phase, TrafficState};

use super::run::Run;
use crate::shared::saga::Compensation;
use crate::shared::steps;
use crate::shared::stop::{Refused, Stop};

/// Patch id of the promotion's own undo (the last step's weights, so a rollback in the window
/// takes the baseline out of rotation before it reverts it). Histories recorded before had none.
const PROMOTION_UNDO: &str = "signalbox-promotion-undo";

/// A canary planned from the balancer as it is, before anything changes.
pub(crate) struct Prepared {
    canary: Vec<String>,
    plan: CanaryPlan,
}

/// Reads the balancer and plans the steps; a plan the balancer cannot take (an unknown backend
/// or server, a canary that leaves no baseline) is refused before anything changes.
pub(crate) async fn prepare(run: &Run<'_>, spec: &CanarySpec) -> Result<Prepared, Refused> {
    let stats = steps::read_stats(run.ctx, &spec.lb).await.map_err(|e| Refused::of(&e, "strategy."))?;
    let current = stats.weights();
    let canary = if spec.canary.is_empty() { default_canaries(&current) } else { spec.canary.clone() };
    let plan = plan_canary("strategy", &current, &canary, &spec.steps).map_err(Refused::field)?;
    steps::check_servers(&run.pre, &stats, plan.original.keys()).map_err(Refused::field)?;
    Ok(Prepared { canary, plan })
}

/// Runs the canary; every change registers its undo in the run's saga first.
pub(crate) async fn roll_out(run: &mut Run<'_>, spec: &CanarySpec, prepared: Prepared) -> Result<(), Stop> {
    let Prepared { canary, plan } = prepared;
    run.ctx.state_mut(|s| {
        s.status.total_batches = plan.steps.len() as u32;
        s.status.traffic = Some(TrafficState { new_share_percent: 0.0, weights: plan.original.clone(), new_set: canary.clone(), old_set: plan.baseline.clone() });
    });

    run.push().await?;
    let serving: Vec<String> = plan.original.keys().cloned().collect();
    let baseline = run.baseline(serving, "sample the serving servers before anything changes").await?;

    run.checkpoint(Boundary::BeforeStep).await?;
    // The canaries still serve on the old build: their noise next to the baseline's.
    run.step_aa_period(&canary, &plan.baseline, None, "the canaries").await?;
    run.shift(&spec.lb, &plan.off, Some(&plan.original), "take the canaries out of rotation".into()).await?;
    run.enter(Phase::Rolling);
    run.update(&canary, format!("update {} canaries to {}", canary.len(), run.req.artifact.version)).await?;
    // From here on, a rollback takes traffic off the canaries before it reverts them.
    run.saga.push(Compensation::weights(&spec.lb, &plan.off, run.req.dry_run));

    let total = plan.steps.len();
    for (i, (percent, weights)) in plan.steps.iter().enumerate() {
        let n = i as u32 + 1;
        run.gate(n, total as u32).await?;
        run.hold(Boundary::BeforeStep).await?;
        run.ctx.state_mut(|s| s.status.current_batch = n);
        run.enter(Phase::Shifting);
        run.shift(&spec.lb, weights, None, format!("step {n}/{total}: {percent}% of traffic to the canaries")).await?;
        run.traffic(|t| t.new_share_percent = *percent);
        run.hold(Boundary::WithinStep).await?;
        let what = format!("step {n} ({percent}%)");
        run.bake(&format!("step {n}/{total} ({percent}%)"), &what).await?;
        // At 100% the baseline takes no traffic: the canaries are judged against the baseline figures.
        let stable = if *percent < 100.0 { plan.baseline.clone() } else { Vec::new() };
        run.judge(canary.clone(), stable, baseline, None, &what).await?;
    }

    if spec.promotion == Promotion::UpdateRest {
        run.hold(Boundary::BeforeStep).await?;
        run.enter(Phase::Rolling);
        let summary = format!("promote: update {} baseline instances while they take no traffic", plan.baseline.len());
        run.update(&plan.baseline, summary).await?;
        run.checkpoint(Boundary::WithinStep).await?;
        run.enter(Phase::Shifting);
        // Undone first: the baseline out of rotation again before it returns to the old build.
        let last = plan.steps.last().map(|(_, weights)| weights).filter(|_| run.ctx.patched(PROMOTION_UNDO));
        run.shift(&spec.lb, &plan.original, last, "promote: every server back to its original weight".into()).await?;
    }
    Ok(())
}
