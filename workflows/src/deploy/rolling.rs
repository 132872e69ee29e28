//! The rolling strategy: batches of instances updated in place, each judged before the next.
//!
//! Per batch: approval gate (if the policy has one there) -> hold (pause, halt) -> the live A/A
//! period, when the analysis policy asks for one (the batch's instances read next to those that
//! stay on the old build, both still on it) -> update the batch -> bake -> judge the updated
//! instances against the ones not yet updated -> go on or stop. Runs recorded before every batch
//! read its own A/A period read the first batch's once, before the first change. Histories
//! recorded before strategies existed are rolling deploys and replay here.

use signalbox_domain::Phase;
use signalbox_domain::control::Boundary;

use super::run::Run;
use crate::shared::stop::Stop;

/// Rolls the build out batch by batch; every change registers its undo in the run's saga first.
pub(crate) async fn roll_out(run: &mut Run<'_>) -> Result<(), Stop> {
    let ids: Vec<String> = run.pre.instances.iter().map(|i| i.id.clone()).collect();
    run.push().await?;
    let baseline = run.baseline(ids.clone(), "sample pre-deploy baseline").await?;

    let batches = run.pre.batches.clone();
    let first = batches.first().map_or(0, |&upto| (upto as usize).min(ids.len()));
    run.first_aa_period(&ids[..first], &ids[first..]).await?;
    let total = batches.len();
    let mut done = 0usize;
    for (i, &upto) in batches.iter().enumerate() {
        let (n, upto) = (i as u32 + 1, upto as usize);
        run.gate(n, total as u32).await?;
        run.hold(Boundary::BeforeStep).await?;
        run.ctx.state_mut(|s| s.status.current_batch = n);
        run.step_aa_period(&ids[done..upto], &ids[upto..], None, &format!("batch {n}")).await?;
        run.enter(Phase::Rolling);
        let summary = format!("batch {n}/{total}: update {} instances ({done} -> {upto} of {})", upto - done, ids.len());
        run.update(&ids[done..upto], summary).await?;
        done = upto;
        run.hold(Boundary::WithinStep).await?;
        run.bake(&format!("batch {n}/{total}"), &format!("batch {n}")).await?;
        run.judge(ids[..upto].to_vec(), ids[upto..].to_vec(), baseline, None, &format!("batch {n}")).await?;
    }
    Ok(())
}
