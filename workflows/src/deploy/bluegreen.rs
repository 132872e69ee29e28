//! The blue/green strategy: the serving servers are blue, the idle ones (weight 0) green.
//! Green gets the new build and is verified under a verification load while it still takes
//! no traffic; an approval gate (step 1) may stand before the flip; then every server's weight
//! flips in one write. Blue keeps the old build: while the rollback window is open, a rollback
//! puts all traffic back on blue at once (the weights' undo runs first), then green returns to
//! the old build.

use signalbox_domain::control::Boundary;
use signalbox_domain::traffic::{BlueGreenPlan, plan_blue_green};
use signalbox_domain::{BlueGreenSpec, GroupFigures, Phase, TrafficState};

use super::run::Run;
use crate::shared::steps;
use crate::shared::stop::{Refused, Stop};

/// Reads the balancer and plans the flip; a backend that has no blue or no green, or servers
/// that are not the target's instances, are refused before anything changes.
pub(crate) async fn prepare(run: &Run<'_>, spec: &BlueGreenSpec) -> Result<BlueGreenPlan, Refused> {
    let stats = steps::read_stats(run.ctx, &spec.lb).await.map_err(|e| Refused::of(&e, "strategy."))?;
    let plan = plan_blue_green("strategy.lb", &stats.weights()).map_err(Refused::field)?;
    steps::check_servers(&run.pre, &stats, plan.original.keys()).map_err(Refused::field)?;
    Ok(plan)
}

/// Updates green, verifies it, flips; every change registers its undo in the run's saga first.
pub(crate) async fn roll_out(run: &mut Run<'_>, spec: &BlueGreenSpec, plan: BlueGreenPlan) -> Result<(), Stop> {
    run.ctx.state_mut(|s| {
        s.status.total_batches = 1;
        s.status.traffic = Some(TrafficState { new_share_percent: 0.0, weights: plan.original.clone(), new_set: plan.green.clone(), old_set: plan.blue.clone() });
    });

    run.push().await?;
    run.checkpoint(Boundary::BeforeStep).await?;
    // Both sets still on the old build, under the load green's verification will drive.
    run.step_aa_period(&plan.green, &plan.blue, Some(spec.verify_rps), "green").await?;
    run.enter(Phase::Rolling);
    run.update(&plan.green, format!("update {} green instances to {}", plan.green.len(), run.req.artifact.version)).await?;
    run.hold(Boundary::WithinStep).await?;
    run.bake("green", "green").await?;
    // Green takes no live traffic: both sets get the same verification load, green judged
    // against blue in the same windows.
    run.judge(plan.green.clone(), plan.blue.clone(), GroupFigures::default(), Some(spec.verify_rps), "green").await?;

    run.gate(1, 1).await?;
    run.hold(Boundary::BeforeStep).await?;
    run.ctx.state_mut(|s| s.status.current_batch = 1);
    run.enter(Phase::Shifting);
    let summary = format!("flip: {} green serve, {} blue idle", plan.green.len(), plan.blue.len());
    run.shift(&spec.lb, &plan.flipped, Some(&plan.original), summary).await?;
    run.traffic(|t| t.new_share_percent = 100.0);
    Ok(())
}
