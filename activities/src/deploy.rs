//! The deploy activities: the contract of `signalbox_contract::activities`, carried out on the
//! artifact store and its regional caches, and on targets reached through the substrate
//! registry by their kind (never a substrate directly, so a new kind touches nothing here).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use signalbox_contract::activities::{
    self as contract, AaPeriodInput, AdvanceInput, AdvanceOutput, AnalyzeInput, AnalyzeOutput, BaselineInput, EvaluateInput, EvictInput, HaltInput, InstanceChange,
    OwnersInput, OwnersOutput, PreflightInput, QuarantineInput, PreflightOutput, PushInput, PushOutput, ReleaseInput, RollbackInput, RollbackOutput, TargetHealthInput, VerifyInput,
};
use signalbox_domain::analysis::Sample;
use signalbox_domain::{Artifact, GroupFigures, HealthReport, ReleaseRequest};
use signalbox_store::Home;
use signalbox_substrate::{Registry, Substrate};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument};

use crate::heartbeat::{Sampled, until_cancelled, with_heartbeat};
use crate::sampling::Sampler;
use crate::{Error, Result};

/// The deploy activities, sharing one store, its caches and one substrate registry.
#[derive(Clone)]
pub struct DeployActivities {
    home: Home,
    substrates: Registry,
    sampler: Sampler,
}

impl std::fmt::Debug for DeployActivities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployActivities").field("home", &self.home).field("substrates", &self.substrates).finish()
    }
}

impl DeployActivities {
    /// Activities on the store and caches under `home`, reaching targets through `substrates`.
    pub fn new(home: Home, substrates: Registry) -> Self {
        Self { home, substrates, sampler: Sampler::default() }
    }

    fn open(&self, target: &signalbox_domain::Target) -> Result<Arc<dyn Substrate>> {
        Ok(self.substrates.open(target)?)
    }

    /// Checks a deploy against the world without changing it: the artifact is in the store (its
    /// version and git SHA taken from, or checked against, the store's record), the target exists
    /// and has instances, the plan reaches all of them.
    async fn preflight_impl(&self, input: PreflightInput) -> Result<PreflightOutput> {
        input.artifact.validate("artifact")?;
        let digest = &input.artifact.digest;
        let store = self.home.store()?;
        if !store.contains(digest).await? {
            return Err(signalbox_store::Error::UnknownArtifact(digest.clone()).into());
        }
        store.check_not_quarantined(digest).await?;
        let recorded = store.record(digest).await?.map_or_else(
            || Artifact { digest: digest.clone(), git_sha: String::new(), version: String::new() },
            |r| r.artifact(digest),
        );
        let artifact = input.artifact.resolve(&recorded, "artifact")?;
        let instances = self.open(&input.fleet)?.describe().await?;
        if instances.is_empty() {
            return Err(signalbox_substrate::Error::Target(format!("target {} has no instances", input.fleet)).into());
        }
        let batches = input.batch_plan.cumulative_counts(instances.len() as u32)?;
        let mut regions: Vec<String> = instances.iter().map(|i| i.region.clone()).collect();
        regions.sort();
        regions.dedup();
        Ok(PreflightOutput { instances, regions, batches, artifact: Some(artifact) })
    }

    /// See [`contract::CheckRelease`]. The store's own refusal keeps its words under the
    /// release's field.
    async fn check_release_impl(&self, req: ReleaseRequest) -> Result<()> {
        let store = self.home.store()?;
        for (i, build) in req.services.iter().enumerate() {
            let field = format!("services[{i}].artifact.digest");
            let digest = &build.artifact.digest;
            if !store.contains(digest).await? {
                return Err(signalbox_domain::Error::invalid(field, format!("build {digest} is not in the artifact store; push it first")).into());
            }
            if let Err(e) = store.check_not_quarantined(digest).await {
                let said = e.to_string();
                let rule = said.strip_prefix("artifact.digest: ").unwrap_or(&said);
                return Err(signalbox_domain::Error::invalid(field, rule).into());
            }
        }
        for (i, stage) in req.pipeline.stages.iter().enumerate() {
            for (j, t) in stage.targets.iter().enumerate() {
                let field = format!("pipeline.stages[{i}].targets[{j}].target");
                let refused = |rule: String| -> Error { signalbox_domain::Error::invalid(field.clone(), rule).into() };
                let substrate = self.open(&t.target).map_err(|e| refused(e.to_string()))?;
                match substrate.describe().await {
                    Ok(instances) if instances.is_empty() => return Err(refused(format!("target {} has no instances", t.target))),
                    Ok(_) => {}
                    Err(e) if !e.is_retryable() => return Err(refused(e.to_string())),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn push_impl(&self, input: PushInput) -> Result<PushOutput> {
        let store = self.home.store()?;
        if !store.contains(&input.digest).await? {
            return Err(signalbox_store::Error::UnknownArtifact(input.digest).into());
        }
        let mut newly_cached = Vec::new();
        for region in &input.regions {
            let cache = self.home.region_cache(region)?;
            let fresh = match (input.dry_run, input.deploy_id.as_str()) {
                (true, _) => !cache.contains(&input.digest).await?,
                (false, "") => cache.copy_from(&store, &input.digest).await?,
                (false, by) => cache.fill_from(&store, &input.digest, by).await?,
            };
            if fresh {
                newly_cached.push(region.clone());
            }
        }
        Ok(PushOutput { newly_cached })
    }

    async fn advance_impl(&self, ctx: &ActivityContext, input: AdvanceInput) -> Result<AdvanceOutput> {
        let target = self.open(&input.fleet)?;
        if input.dry_run {
            let states = target.describe().await?;
            let changes = input
                .instances
                .iter()
                .filter_map(|id| states.iter().find(|s| &s.id == id))
                .map(|s| InstanceChange {
                    instance: s.id.clone(),
                    from_version: s.version.clone(),
                    from_digest: s.digest.clone(),
                    to_version: input.target.version.clone(),
                    to_digest: input.target.digest.clone(),
                })
                .collect();
            return Ok(AdvanceOutput { changes });
        }
        let progress = AtomicUsize::new(0);
        let report = |n: usize| progress.store(n, Ordering::Relaxed);
        let changes = with_heartbeat(ctx, &progress, target.apply(&input.deploy_id, &input.instances, &input.target, &report)).await?;
        Ok(AdvanceOutput { changes })
    }

    async fn rollback_impl(&self, ctx: &ActivityContext, input: RollbackInput) -> Result<RollbackOutput> {
        if input.dry_run {
            return Ok(RollbackOutput { reverted: 0 });
        }
        let target = self.open(&input.fleet)?;
        let progress = AtomicUsize::new(0);
        let report = |n: usize| progress.store(n, Ordering::Relaxed);
        let reverted = with_heartbeat(ctx, &progress, target.rollback(&input.deploy_id, &input.changes, &report)).await?;
        Ok(RollbackOutput { reverted })
    }

    async fn owners_impl(&self, input: OwnersInput) -> Result<OwnersOutput> {
        let states = self.open(&input.fleet)?.describe().await?;
        let changed_by = input
            .instances
            .into_iter()
            .map(|id| {
                let by = states.iter().find(|s| s.id == id).and_then(|s| s.changed_by.clone());
                (id, by)
            })
            .collect();
        Ok(OwnersOutput { changed_by })
    }
}

#[activities]
impl DeployActivities {
    /// See [`contract::Preflight`].
    #[activity(definition = contract::Preflight)]
    #[instrument(skip_all, fields(service = %input.service, target = %input.fleet))]
    pub async fn preflight(self: Arc<Self>, _ctx: ActivityContext, input: PreflightInput) -> Result<PreflightOutput, ActivityError> {
        self.preflight_impl(input).await.map_err(Error::into_activity)
    }

    /// See [`contract::PushArtifact`].
    #[activity(definition = contract::PushArtifact)]
    #[instrument(skip_all, fields(digest = %input.digest))]
    pub async fn push_artifact(self: Arc<Self>, _ctx: ActivityContext, input: PushInput) -> Result<PushOutput, ActivityError> {
        self.push_impl(input).await.map_err(Error::into_activity)
    }

    /// See [`contract::EvictArtifact`].
    #[activity(definition = contract::EvictArtifact)]
    #[instrument(skip_all, fields(digest = %input.digest))]
    pub async fn evict_artifact(self: Arc<Self>, _ctx: ActivityContext, input: EvictInput) -> Result<(), ActivityError> {
        if input.dry_run {
            return Ok(());
        }
        for region in &input.regions {
            let cache = self.home.region_cache(region).map_err(|e| Error::from(e).into_activity())?;
            let evicted = match input.deploy_id.as_str() {
                "" => cache.remove(&input.digest).await,
                by => cache.evict_fill(&input.digest, by).await.map(|_| ()),
            };
            evicted.map_err(|e| Error::from(e).into_activity())?;
        }
        Ok(())
    }

    /// See [`contract::QuarantineArtifact`].
    #[activity(definition = contract::QuarantineArtifact)]
    #[instrument(skip_all, fields(digest = %input.digest, by = %input.by))]
    pub async fn quarantine_artifact(self: Arc<Self>, _ctx: ActivityContext, input: QuarantineInput) -> Result<bool, ActivityError> {
        if input.dry_run {
            return Ok(false);
        }
        let store = self.home.store().map_err(|e| Error::from(e).into_activity())?;
        let took = store.quarantine(&input.digest, &input.by, &input.reason, input.at).await.map_err(|e| Error::from(e).into_activity())?;
        info!(took, reason = %input.reason, "build quarantined");
        Ok(took)
    }

    /// See [`contract::SampleBaseline`].
    #[activity(definition = contract::SampleBaseline)]
    #[instrument(skip_all, fields(target = %input.fleet))]
    pub async fn sample_baseline(self: Arc<Self>, ctx: ActivityContext, input: BaselineInput) -> Result<GroupFigures, ActivityError> {
        let progress = AtomicUsize::new(0);
        let work = async { self.sampler.baseline(self.open(&input.fleet)?.as_ref(), &input).await };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::CheckRelease`].
    #[activity(definition = contract::CheckRelease)]
    #[instrument(skip_all, fields(pipeline = %req.pipeline.name))]
    pub async fn check_release(self: Arc<Self>, _ctx: ActivityContext, req: ReleaseRequest) -> Result<(), ActivityError> {
        self.check_release_impl(req).await.map_err(Error::into_activity)
    }

    /// See [`contract::SampleTargets`]: every instance each target describes, as one group.
    #[activity(definition = contract::SampleTargets)]
    #[instrument(skip_all, fields(targets = input.len()))]
    pub async fn sample_targets(self: Arc<Self>, ctx: ActivityContext, input: Vec<TargetHealthInput>) -> Result<Vec<GroupFigures>, ActivityError> {
        let progress = AtomicUsize::new(0);
        let one = |t: &TargetHealthInput| {
            let t = t.clone();
            let me = Arc::clone(&self);
            async move {
                let substrate = me.open(&t.target)?;
                let instances = substrate.describe().await?.into_iter().map(|i| i.id).collect();
                let baseline = BaselineInput { fleet: t.target.clone(), instances, policy: t.policy.clone(), dry_run: false };
                me.sampler.baseline(substrate.as_ref(), &baseline).await
            }
        };
        let work = async { futures::future::join_all(input.iter().map(one)).await.into_iter().collect::<Result<Vec<_>>>() };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::SampleAaPeriod`]. Heartbeats the number of windows read.
    #[activity(definition = contract::SampleAaPeriod)]
    #[instrument(skip_all, fields(target = %input.fleet, windows = input.windows))]
    pub async fn sample_aa_period(self: Arc<Self>, ctx: ActivityContext, input: AaPeriodInput) -> Result<Vec<Sample>, ActivityError> {
        let progress = Sampled::default();
        let work = async { self.sampler.aa_period(self.open(&input.fleet)?.as_ref(), &input, &progress).await };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::AdvanceBatch`].
    #[activity(definition = contract::AdvanceBatch)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, instances = input.instances.len()))]
    pub async fn advance_batch(self: Arc<Self>, ctx: ActivityContext, input: AdvanceInput) -> Result<AdvanceOutput, ActivityError> {
        self.advance_impl(&ctx, input).await.map_err(Error::into_activity)
    }

    /// See [`contract::RollbackInstances`].
    #[activity(definition = contract::RollbackInstances)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, instances = input.changes.len()))]
    pub async fn rollback(self: Arc<Self>, ctx: ActivityContext, input: RollbackInput) -> Result<RollbackOutput, ActivityError> {
        self.rollback_impl(&ctx, input).await.map_err(Error::into_activity)
    }

    /// See [`contract::AnalyzeHealth`]. Heartbeats the number of windows judged.
    #[activity(definition = contract::AnalyzeHealth)]
    #[instrument(skip_all, fields(target = %input.fleet, canary = input.canary.len(), stable = input.stable.len()))]
    pub async fn analyze_health(self: Arc<Self>, ctx: ActivityContext, input: AnalyzeInput) -> Result<AnalyzeOutput, ActivityError> {
        let progress = Sampled::default();
        let work = async { self.sampler.analyze(self.open(&input.fleet)?.as_ref(), input, &progress).await };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::EvaluateHealth`]: the gate preset on the same loop.
    #[activity(definition = contract::EvaluateHealth)]
    #[instrument(skip_all, fields(target = %input.fleet, canary = input.canary.len(), control = input.control.len()))]
    pub async fn evaluate_health(self: Arc<Self>, ctx: ActivityContext, input: EvaluateInput) -> Result<HealthReport, ActivityError> {
        let progress = Sampled::default();
        let work = async { self.sampler.evaluate(self.open(&input.fleet)?.as_ref(), input, &progress).await };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::VerifyInstances`]: the gate preset on the same loop, under load.
    #[activity(definition = contract::VerifyInstances)]
    #[instrument(skip_all, fields(target = %input.fleet, instances = input.instances.len(), reference = input.reference.len()))]
    pub async fn verify(self: Arc<Self>, ctx: ActivityContext, input: VerifyInput) -> Result<HealthReport, ActivityError> {
        let progress = Sampled::default();
        let work = async { self.sampler.verify(self.open(&input.fleet)?.as_ref(), input, &progress).await };
        until_cancelled(&ctx, &progress, work).await?.map_err(Error::into_activity)
    }

    /// See [`contract::HaltFleet`]. Writes the target's halt mark: a change in flight fails
    /// with `Halted` (non-retryable) before touching another instance.
    #[activity(definition = contract::HaltFleet)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, target = %input.fleet))]
    pub async fn halt_fleet(self: Arc<Self>, _ctx: ActivityContext, input: HaltInput) -> Result<(), ActivityError> {
        if input.dry_run {
            return Ok(());
        }
        let work = async { Ok::<_, Error>(self.open(&input.fleet)?.halt(&input.deploy_id, &input.reason).await?) };
        work.await.map_err(Error::into_activity)?;
        info!(reason = %input.reason, "target halted");
        Ok(())
    }

    /// See [`contract::ReleaseFleet`].
    #[activity(definition = contract::ReleaseFleet)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, target = %input.fleet))]
    pub async fn release_fleet(self: Arc<Self>, _ctx: ActivityContext, input: ReleaseInput) -> Result<(), ActivityError> {
        if input.dry_run {
            return Ok(());
        }
        let work = async { Ok::<_, Error>(self.open(&input.fleet)?.release(&input.deploy_id).await?) };
        work.await.map_err(Error::into_activity)?;
        info!("target released");
        Ok(())
    }

    /// See [`contract::ReadOwners`].
    #[activity(definition = contract::ReadOwners)]
    #[instrument(skip_all, fields(target = %input.fleet, instances = input.instances.len()))]
    pub async fn read_owners(self: Arc<Self>, _ctx: ActivityContext, input: OwnersInput) -> Result<OwnersOutput, ActivityError> {
        self.owners_impl(input).await.map_err(Error::into_activity)
    }

    /// See [`contract::Noop`].
    #[activity(definition = contract::Noop)]
    pub async fn noop(self: Arc<Self>, _ctx: ActivityContext, input: u32) -> Result<u32, ActivityError> {
        Ok(input)
    }
}
