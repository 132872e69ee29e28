//! The steps every strategy takes, each one call: read the balancer, check the request against
//! the world, push the build with its evict undo, plan the changes an update makes (its undo),
//! set weights. Strategies sequence these; none borrows another's.

use std::time::Duration;

use signalbox_contract::activities::{
    AdvanceBatch, AdvanceInput, EvictInput, InstanceChange, Preflight, PreflightInput, PreflightOutput, PushArtifact, PushInput, ReadStats,
    RollbackInput, SetWeights, SetWeightsInput,
};
use signalbox_domain::traffic::{LbStats, LbTarget, Weights};
use signalbox_domain::{Artifact, BatchPlan, Target};
use temporalio_sdk::{ActivityExecutionError, WorkflowContext};

use super::options::{long, quick};
use super::saga::{Compensation, Saga};
use super::stop::Stop;

/// Reads the balancer's backend as it is. Changes nothing.
pub(crate) async fn read_stats<W>(ctx: &WorkflowContext<W>, lb: &LbTarget) -> Result<LbStats, ActivityExecutionError> {
    ctx.execute_activity(ReadStats, lb.clone(), quick(format!("read backend {}", lb.backend))).await
}

/// Checks the request against the world and reads the target. Changes nothing.
pub(crate) async fn preflight<W>(
    ctx: &WorkflowContext<W>,
    service: &str,
    artifact: &Artifact,
    target: &Target,
    batch_plan: &BatchPlan,
    summary: &str,
) -> Result<PreflightOutput, ActivityExecutionError> {
    let input = PreflightInput { service: service.to_owned(), artifact: artifact.clone(), fleet: target.clone(), batch_plan: batch_plan.clone() };
    ctx.execute_activity(Preflight, input, quick(summary)).await
}

/// Every server the strategy touches must be an instance of the target: it is updated and read.
/// A server that is not is a fault of the request's backend (`strategy.lb.backend`).
pub(crate) fn check_servers<'a>(pre: &PreflightOutput, stats: &LbStats, servers: impl IntoIterator<Item = &'a String>) -> Result<(), signalbox_domain::Error> {
    for s in servers {
        if !pre.instances.iter().any(|i| &i.id == s) {
            let rule = format!("server {s} of backend {} is not an instance of the target", stats.backend);
            return Err(signalbox_domain::Error::invalid("strategy.lb.backend", rule));
        }
    }
    Ok(())
}

/// Copies the artifact into the target's regional caches; undone by evicting what it added
/// (a cache that already held the artifact keeps it).
pub(crate) async fn push<W>(ctx: &WorkflowContext<W>, saga: &mut Saga, artifact: &Artifact, regions: &[String], dry_run: bool) -> Result<(), Stop> {
    let deploy_id = ctx.workflow_id().to_owned();
    let evict = |regions: Vec<String>| Compensation::Evict(EvictInput { deploy_id: deploy_id.clone(), digest: artifact.digest.clone(), regions, dry_run });
    let at = saga.push(evict(regions.to_vec()));
    let push = PushInput { deploy_id: deploy_id.clone(), digest: artifact.digest.clone(), regions: regions.to_vec(), dry_run };
    let pushed = ctx.execute_activity(PushArtifact, push, quick(format!("push {} to {} regions", artifact.digest.short(), regions.len()))).await?;
    saga.replace(at, evict(pushed.newly_cached));
    Ok(())
}

/// An update of `instances` to `artifact`, and its undo as planned from what preflight read:
/// registered before the step, so a step that fails halfway is still undone. Once the step
/// returns, [`Update::undo`] of its actual changes replaces the plan.
pub(crate) struct Update {
    /// The activity's input.
    pub(crate) input: AdvanceInput,
    /// What undoes it.
    rollback: RollbackInput,
}

impl Update {
    /// Plans updating `instances` (preflight read them as `pre`) of `target` to `artifact`.
    pub(crate) fn plan(deploy_id: &str, pre: &PreflightOutput, target: &Target, artifact: &Artifact, instances: &[String], dry_run: bool) -> Self {
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
        let input = AdvanceInput { deploy_id: deploy_id.to_owned(), fleet: target.clone(), instances: instances.to_vec(), target: artifact.clone(), dry_run };
        let rollback = RollbackInput { deploy_id: deploy_id.to_owned(), fleet: target.clone(), changes: planned, dry_run };
        Self { input, rollback }
    }

    /// The planned undo.
    pub(crate) fn planned_undo(&self) -> Compensation {
        Compensation::Rollback(self.rollback.clone())
    }

    /// The undo of what the step did: its `changes` in reverse completion order.
    pub(crate) fn undo(&self, changes: &[InstanceChange]) -> Compensation {
        Compensation::Rollback(RollbackInput { changes: changes.iter().rev().cloned().collect(), ..self.rollback.clone() })
    }
}

/// How long an update of a batch may take.
pub(crate) const UPDATE_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// Updates `instances` to `artifact` without operator control (the legacy workflows).
pub(crate) async fn update<W>(ctx: &WorkflowContext<W>, saga: &mut Saga, update: Update, summary: String) -> Result<(), Stop> {
    let at = saga.push(update.planned_undo());
    let out = ctx.execute_activity(AdvanceBatch, update.input.clone(), long(summary, UPDATE_AT_MOST)).await?;
    saga.replace(at, update.undo(&out.changes));
    Ok(())
}

/// Sets weights on the balancer; a rehearsal (`dry_run`) only checks them.
pub(crate) async fn set_weights<W>(ctx: &WorkflowContext<W>, lb: &LbTarget, weights: &Weights, dry_run: bool, summary: impl Into<String>) -> Result<(), Stop> {
    let input = SetWeightsInput { lb: lb.clone(), weights: weights.clone(), dry_run };
    ctx.execute_activity(SetWeights, input, quick(summary)).await?;
    Ok(())
}
