//! The deploy activities: the contract of `signalbox_domain::contract`, carried out on the
//! local fleet substrate, the artifact store and the instances' metrics.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use signalbox_domain::contract::{
    self, AdvanceInput, AdvanceOutput, AnalyzeInput, AnalyzeOutput, BaselineInput, EvaluateInput, EvictInput, HaltInput, PreflightInput, PreflightOutput, PushInput,
    PushOutput, ReleaseInput, RollbackInput, RollbackOutput,
};
use signalbox_domain::health::{Gate, SampleJudgement, judge_sample};
use signalbox_domain::{GroupFigures, HealthPolicy, HealthReport, Verdict};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument};

use crate::fleet::LocalFleet;
use crate::health::{Counters, Scraper, window};
use crate::home::Home;
use crate::substrate::Substrate;
use crate::{Error, Result};

/// How often long activities tell the server they are alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Runs `work` while heartbeating the progress counter, so the server notices a dead worker
/// within the heartbeat timeout instead of the (long) start-to-close timeout.
async fn with_heartbeat<T>(ctx: &ActivityContext, progress: &AtomicUsize, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let _ = ctx.record_heartbeat(progress.load(Ordering::Relaxed) as u64).await;
            }
        }
    }
}

/// The deploy activities, sharing one signalbox home.
#[derive(Debug, Clone)]
pub struct DeployActivities {
    home: Home,
    scraper: Scraper,
}

impl DeployActivities {
    /// Activities acting on the fleets and store under `home`.
    pub fn new(home: Home) -> Self {
        Self { home, scraper: Scraper::default() }
    }

    fn fleet(&self, name: &str) -> Result<LocalFleet> {
        LocalFleet::open(&self.home, name)
    }

    async fn preflight_impl(&self, input: PreflightInput) -> Result<PreflightOutput> {
        preflight(&self.home, input).await
    }

    async fn push_impl(&self, input: PushInput) -> Result<PushOutput> {
        let store = self.home.store()?;
        if !store.contains(&input.digest).await? {
            return Err(Error::UnknownArtifact(input.digest));
        }
        let mut newly_cached = Vec::new();
        for region in &input.regions {
            let cache = self.home.region_cache(region)?;
            let fresh = if input.dry_run { !cache.contains(&input.digest).await? } else { cache.copy_from(&store, &input.digest).await? };
            if fresh {
                newly_cached.push(region.clone());
            }
        }
        Ok(PushOutput { newly_cached })
    }

    /// Samples one window of the canary and control groups; unreadable canaries count as bad,
    /// an unreadable control group as no data. An error never counts as a pass.
    async fn judge_window(
        &self,
        policy: &HealthPolicy,
        baseline: GroupFigures,
        canary: (Vec<Result<Counters>>, Vec<Result<Counters>>),
        control: Option<(Vec<Result<Counters>>, Vec<Result<Counters>>)>,
    ) -> SampleJudgement {
        let canary = match window(canary.0, canary.1) {
            Ok(c) => c,
            Err(e) => {
                return SampleJudgement { canary: GroupFigures::default(), control: None, bad: Some(true), reasons: vec![format!("canary unreadable: {e}")] };
            }
        };
        let control = match control.map(|(b, a)| window(b, a)).transpose() {
            Ok(c) => c,
            Err(e) => return SampleJudgement { canary, control: None, bad: None, reasons: vec![format!("control unreadable: {e}")] },
        };
        judge_sample(policy, canary, control, baseline)
    }

    async fn evaluate_impl(&self, ctx: &ActivityContext, input: EvaluateInput) -> Result<HealthReport> {
        if input.dry_run {
            return Ok(HealthReport { verdict: Verdict::Pass, summary: "dry run: not sampled".into(), baseline: input.baseline, samples: vec![] });
        }
        let fleet = self.fleet(&input.fleet.name)?;
        let canary = fleet.health_endpoints(&input.canary).await?;
        let control = fleet.health_endpoints(&input.control).await?;
        let policy = &input.policy;
        let mut tick = tokio::time::interval(Duration::from_millis(policy.sample_interval_ms));
        tick.tick().await;
        let mut before = (self.scraper.scrape_all(&canary).await, self.scraper.scrape_all(&control).await);
        let mut gate = Gate::default();
        let mut samples = Vec::new();
        let verdict = loop {
            tick.tick().await;
            let after = (self.scraper.scrape_all(&canary).await, self.scraper.scrape_all(&control).await);
            let next = (clone_results(&after.0), clone_results(&after.1));
            let control_window = (!control.is_empty()).then(|| (std::mem::take(&mut before.1), after.1));
            let sample = self.judge_window(policy, input.baseline, (std::mem::take(&mut before.0), after.0), control_window).await;
            before = next;
            let decided = gate.push(policy, &sample);
            samples.push(sample);
            let _ = ctx.record_heartbeat(samples.len() as u64).await;
            if let Some(v) = decided {
                break v;
            }
        };
        let summary = match verdict {
            Verdict::Fail => {
                let last = samples.last().map(|s| s.reasons.join("; ")).unwrap_or_default();
                format!("{} consecutive bad samples: {last}", policy.consecutive_bad_samples)
            }
            Verdict::Pass => format!("healthy over {} samples", samples.len()),
            Verdict::Inconclusive => format!("inconclusive: fewer than {} samples with enough traffic", policy.consecutive_bad_samples),
        };
        info!(?verdict, %summary, "health evaluated");
        Ok(HealthReport { verdict, summary, baseline: input.baseline, samples })
    }

    async fn baseline_impl(&self, input: BaselineInput) -> Result<GroupFigures> {
        if input.dry_run {
            return Ok(GroupFigures::default());
        }
        let fleet = self.fleet(&input.fleet.name)?;
        let endpoints = fleet.health_endpoints(&input.instances).await?;
        let span = Duration::from_millis(input.policy.sample_interval_ms * u64::from(input.policy.consecutive_bad_samples));
        let before = self.scraper.scrape_all(&endpoints).await;
        let mut tick = tokio::time::interval(span);
        tick.tick().await;
        tick.tick().await;
        let after = self.scraper.scrape_all(&endpoints).await;
        // The baseline is a reference, not a gate: instances that cannot be read are left out.
        let pairs: Vec<_> = before.into_iter().zip(after).filter(|(b, a)| b.is_ok() && a.is_ok()).collect();
        let (b, a): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        window(b, a)
    }
}

/// Checks a deploy against the world without changing it: the artifact is in the store, the
/// fleet exists and has instances, the plan reaches all of them. The API runs this before it
/// starts a workflow, and the workflow's first activity runs it again: the same code both times.
pub async fn preflight(home: &Home, input: PreflightInput) -> Result<PreflightOutput> {
    input.artifact.validate("artifact")?;
    if !home.store()?.contains(&input.artifact.digest).await? {
        return Err(Error::UnknownArtifact(input.artifact.digest));
    }
    let instances = LocalFleet::open(home, &input.fleet.name)?.describe().await?;
    if instances.is_empty() {
        return Err(Error::Fleet(format!("fleet {:?} has no instances", input.fleet.name)));
    }
    let batches = input.batch_plan.cumulative_counts(instances.len() as u32)?;
    let mut regions: Vec<String> = instances.iter().map(|i| i.region.clone()).collect();
    regions.sort();
    regions.dedup();
    Ok(PreflightOutput { instances, regions, batches })
}

fn clone_results(rs: &[Result<Counters>]) -> Vec<Result<Counters>> {
    rs.iter()
        .map(|r| match r {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(Error::Metrics { instance: String::new(), message: e.to_string() }),
        })
        .collect()
}

#[activities]
impl DeployActivities {
    /// See [`contract::Preflight`].
    #[activity(definition = contract::Preflight)]
    #[instrument(skip_all, fields(service = %input.service, fleet = %input.fleet.name))]
    pub async fn preflight(self: Arc<Self>, _ctx: ActivityContext, input: PreflightInput) -> Result<PreflightOutput, ActivityError> {
        Ok(self.preflight_impl(input).await.map_err(Error::into_activity)?)
    }

    /// See [`contract::PushArtifact`].
    #[activity(definition = contract::PushArtifact)]
    #[instrument(skip_all, fields(digest = %input.digest))]
    pub async fn push_artifact(self: Arc<Self>, _ctx: ActivityContext, input: PushInput) -> Result<PushOutput, ActivityError> {
        Ok(self.push_impl(input).await.map_err(Error::into_activity)?)
    }

    /// See [`contract::EvictArtifact`].
    #[activity(definition = contract::EvictArtifact)]
    #[instrument(skip_all, fields(digest = %input.digest))]
    pub async fn evict_artifact(self: Arc<Self>, _ctx: ActivityContext, input: EvictInput) -> Result<(), ActivityError> {
        for region in &input.regions {
            let cache = self.home.region_cache(region).map_err(Error::into_activity)?;
            cache.remove(&input.digest).await.map_err(Error::into_activity)?;
        }
        Ok(())
    }

    /// See [`contract::SampleBaseline`].
    #[activity(definition = contract::SampleBaseline)]
    #[instrument(skip_all, fields(fleet = %input.fleet.name))]
    pub async fn sample_baseline(self: Arc<Self>, ctx: ActivityContext, input: BaselineInput) -> Result<GroupFigures, ActivityError> {
        let progress = AtomicUsize::new(0);
        Ok(with_heartbeat(&ctx, &progress, self.baseline_impl(input)).await.map_err(Error::into_activity)?)
    }

    /// See [`contract::AdvanceBatch`].
    #[activity(definition = contract::AdvanceBatch)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, instances = input.instances.len()))]
    pub async fn advance_batch(self: Arc<Self>, ctx: ActivityContext, input: AdvanceInput) -> Result<AdvanceOutput, ActivityError> {
        let fleet = self.fleet(&input.fleet.name).map_err(Error::into_activity)?;
        if input.dry_run {
            let states = fleet.describe().await.map_err(Error::into_activity)?;
            let changes = input
                .instances
                .iter()
                .filter_map(|id| states.iter().find(|s| &s.id == id))
                .map(|s| contract::InstanceChange {
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
        let changes = with_heartbeat(&ctx, &progress, fleet.apply(&input.deploy_id, &input.instances, &input.target, &report))
            .await
            .map_err(Error::into_activity)?;
        Ok(AdvanceOutput { changes })
    }

    /// See [`contract::RollbackInstances`].
    #[activity(definition = contract::RollbackInstances)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, instances = input.changes.len()))]
    pub async fn rollback(self: Arc<Self>, ctx: ActivityContext, input: RollbackInput) -> Result<RollbackOutput, ActivityError> {
        if input.dry_run {
            return Ok(RollbackOutput { reverted: 0 });
        }
        let fleet = self.fleet(&input.fleet.name).map_err(Error::into_activity)?;
        let progress = AtomicUsize::new(0);
        let report = |n: usize| progress.store(n, Ordering::Relaxed);
        let reverted = with_heartbeat(&ctx, &progress, fleet.rollback(&input.deploy_id, &input.changes, &report))
            .await
            .map_err(Error::into_activity)?;
        Ok(RollbackOutput { reverted })
    }

    /// See [`contract::EvaluateHealth`].
    #[activity(definition = contract::EvaluateHealth)]
    #[instrument(skip_all, fields(fleet = %input.fleet.name, canary = input.canary.len(), control = input.control.len()))]
    pub async fn evaluate_health(self: Arc<Self>, ctx: ActivityContext, input: EvaluateInput) -> Result<HealthReport, ActivityError> {
        Ok(self.evaluate_impl(&ctx, input).await.map_err(Error::into_activity)?)
    }

    /// See [`contract::AnalyzeHealth`]. Heartbeats the number of windows judged.
    #[activity(definition = contract::AnalyzeHealth)]
    #[instrument(skip_all, fields(fleet = %input.fleet.name, canary = input.canary.len(), stable = input.stable.len()))]
    pub async fn analyze_health(self: Arc<Self>, ctx: ActivityContext, input: AnalyzeInput) -> Result<AnalyzeOutput, ActivityError> {
        let fleet = self.fleet(&input.fleet.name).map_err(Error::into_activity)?;
        let progress = AtomicUsize::new(0);
        Ok(with_heartbeat(&ctx, &progress, crate::analyze::analyze(&fleet, input, &progress)).await.map_err(Error::into_activity)?)
    }

    /// See [`contract::HaltFleet`]. Writes the substrate's halt mark: the local fleet checks it
    /// before each instance, so an advance in flight fails with `Halted` (non-retryable) before
    /// touching another instance.
    #[activity(definition = contract::HaltFleet)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, fleet = %input.fleet.name))]
    pub async fn halt_fleet(self: Arc<Self>, _ctx: ActivityContext, input: HaltInput) -> Result<(), ActivityError> {
        if input.dry_run {
            return Ok(());
        }
        let fleet = self.fleet(&input.fleet.name).map_err(Error::into_activity)?;
        fleet.halt(&input.deploy_id, &input.reason).await.map_err(Error::into_activity)?;
        info!(reason = %input.reason, "fleet halted");
        Ok(())
    }

    /// See [`contract::ReleaseFleet`].
    #[activity(definition = contract::ReleaseFleet)]
    #[instrument(skip_all, fields(deploy_id = %input.deploy_id, fleet = %input.fleet.name))]
    pub async fn release_fleet(self: Arc<Self>, _ctx: ActivityContext, input: ReleaseInput) -> Result<(), ActivityError> {
        if input.dry_run {
            return Ok(());
        }
        let fleet = self.fleet(&input.fleet.name).map_err(Error::into_activity)?;
        fleet.release(&input.deploy_id).await.map_err(Error::into_activity)?;
        info!("fleet released");
        Ok(())
    }

    /// See [`contract::Noop`].
    #[activity(definition = contract::Noop)]
    pub async fn noop(self: Arc<Self>, _ctx: ActivityContext, input: u32) -> Result<u32, ActivityError> {
        Ok(input)
    }
}
