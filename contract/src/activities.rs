//! The activities: pinned wire names with their input and output types.
//!
//! Workflows call activities through these marker types; the activities crate implements them
//! with `#[activity(definition = ...)]`, which checks at compile time that both sides agree.
//!
//! Inputs name the target `fleet`, as they did before targets had kinds: a JSON `{"name": ...}`
//! still reads as a local fleet, so an activity scheduled by an older worker runs on a newer one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use signalbox_domain::analysis::{AnalysisInput, AnalysisReport, Policy, Sample};
use signalbox_domain::traffic::{LbStats, LbTarget, Weights};
use signalbox_domain::{Artifact, BatchPlan, Digest, GroupFigures, HealthPolicy, HealthReport, ReleaseRequest, Target};

/// The failure type of an activity that refused a field of the request (its message is
/// `<field>: <rule>`): the workflow reports it as bad input, not as a fault.
pub const INVALID_ARGUMENT: &str = "InvalidArgument";

activity!(
    /// Checks the request against the world (artifact known, target not empty, plan fits),
    /// reads the target as it is and the artifact's record in the store. Changes nothing.
    Preflight = "deploy.preflight": PreflightInput => PreflightOutput
);
activity!(
    /// Copies the artifact into each region's cache and verifies it there.
    PushArtifact = "artifact.push": PushInput => PushOutput
);
activity!(
    /// Undoes [`PushArtifact`]: removes what that push added to the regional caches.
    EvictArtifact = "artifact.evict": EvictInput => ()
);
activity!(
    /// Quarantines a build a release caught failing: every later deploy or release of it is
    /// refused until someone lifts it. Answers whether it took effect (a build already in
    /// quarantine keeps its first quarantine, so a retry changes nothing).
    QuarantineArtifact = "artifact.quarantine": QuarantineInput => bool
);
activity!(
    /// Samples the whole fleet before anything changes: the reference for later verdicts.
    SampleBaseline = "health.baseline": BaselineInput => GroupFigures
);
activity!(
    /// Reads every instance of each target over one window (its `sample_interval_ms` x
    /// `consecutive_bad_samples`), the targets at once: a release's view of a stage's targets
    /// before their deploys and while the stage soaks. Heartbeats; changes nothing.
    SampleTargets = "health.targets": Vec<TargetHealthInput> => Vec<GroupFigures>
);
activity!(
    /// The analysis engine's live A/A period: reads the instances a step is about to change next
    /// to those it leaves, window by window with both groups' requests, before it changes
    /// anything. The samples become the step's analysis's baseline. Heartbeats a
    /// `SamplingProgress`.
    SampleAaPeriod = "health.aa_period": AaPeriodInput => Vec<Sample>
);
activity!(
    /// Moves one batch of instances to the target artifact.
    AdvanceBatch = "fleet.advance_batch": AdvanceInput => AdvanceOutput
);
activity!(
    /// Undoes [`AdvanceBatch`]: returns instances to the version they ran before.
    RollbackInstances = "fleet.rollback": RollbackInput => RollbackOutput
);
activity!(
    /// The first-version gate's judgement of a batch, as deploys scheduled it before the engine
    /// judged every step: the same sampling and engine under the gate preset, answered in the
    /// gate's report. Kept for activities scheduled by older code.
    EvaluateHealth = "health.evaluate": EvaluateInput => HealthReport
);
activity!(
    /// Judges a step with the analysis engine: samples the updated instances against the rest
    /// each window (driving a verification load at both when asked), feeds the engine, and
    /// returns its verdict with what it judged. The one health judgement of every strategy.
    AnalyzeHealth = "health.analyze": AnalyzeInput => AnalyzeOutput
);
activity!(
    /// Freezes the fleet: an advance in flight stops before touching another instance (it fails
    /// as halted), and later advances are refused until [`ReleaseFleet`]. Rollbacks still run.
    HaltFleet = "fleet.halt": HaltInput => ()
);
activity!(
    /// Lifts a [`HaltFleet`]. Idempotent.
    ReleaseFleet = "fleet.release": ReleaseInput => ()
);
activity!(
    /// Says which deploy last changed each of the given instances: a rollback only undoes what
    /// is still its own.
    ReadOwners = "fleet.owners": OwnersInput => OwnersOutput
);
activity!(
    /// Does nothing: the yardstick of the orchestration-overhead benchmark.
    Noop = "bench.noop": u32 => u32
);
activity!(
    /// The deploy holding a lane, if any (its workflow id). Changes nothing.
    LaneHolder = "lane.holder": LaneInput => Option<String>
);
activity!(
    /// Waits, heartbeating, until a lane is free or `at_most_ms` passed; returns whether it is
    /// free (recorded for a reader of the history: the deploy tries the lane either way).
    AwaitLane = "lane.await": AwaitLaneInput => bool
);
activity!(
    /// Checks a release against the world before anything starts: every target of every stage
    /// exists and has instances, every build is in the store and not quarantined. Refuses
    /// (non-retryable, `InvalidArgument`) naming the field, e.g.
    /// `pipeline.stages[1].targets[0].target: ...`. Changes nothing.
    CheckRelease = "release.check": ReleaseRequest => ()
);
activity!(
    /// Sends the emergency bypass to each of a release's deploys still running, so that their
    /// health judgements are skipped; returns the deploys that took it. A deploy already
    /// bypassed or ended is left as it is: a retry redoes nothing.
    BypassDeploys = "release.bypass_deploys": SteerDeploysInput => Vec<String>
);
activity!(
    /// Asks each of a release's deploys for a rollback (an abort while it runs; in its rollback
    /// window, the undo of every step); answers per deploy `None` when it is rolling back or
    /// already rolled back, else why it refused. A retry asks again and finds them rolling back.
    RollBackDeploys = "release.roll_back_deploys": SteerDeploysInput => BTreeMap<String, Option<String>>
);
activity!(
    /// Reads the backend's servers as the balancer reports them. Changes nothing.
    ReadStats = "lb.read_stats": LbTarget => LbStats
);
activity!(
    /// Sets the weights of the named servers (others keep theirs); returns the weights they had.
    /// Setting the returned weights undoes it.
    SetWeights = "lb.set_weights": SetWeightsInput => SetWeightsOutput
);
activity!(
    /// Drives a verification load at idle instances and a serving reference group and judges
    /// them like [`EvaluateHealth`]. Kept for activities scheduled by the legacy blue/green
    /// workflow; the deploy workflow verifies with [`AnalyzeHealth`] and its `load_rps`.
    VerifyInstances = "health.verify": VerifyInput => HealthReport
);

/// One instance as preflight found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// Instance id, unique in its fleet.
    pub id: String,
    /// Region the instance lives in.
    pub region: String,
    /// Version it runs.
    pub version: String,
    /// Digest of the artifact it runs.
    pub digest: Digest,
    /// The deploy that last changed it, when the substrate knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// Input of [`Preflight`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreflightInput {
    /// Service being deployed.
    pub service: String,
    /// The artifact to roll out.
    pub artifact: Artifact,
    /// The fleet to roll it out to.
    pub fleet: Target,
    /// The requested plan, checked against the fleet's size.
    pub batch_plan: BatchPlan,
}

/// Output of [`Preflight`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreflightOutput {
    /// Every instance, in rollout order.
    pub instances: Vec<InstanceState>,
    /// Regions of the fleet, sorted.
    pub regions: Vec<String>,
    /// Cumulative instance counts after each batch.
    pub batches: Vec<u32>,
    /// The artifact with version and git SHA from the store's record (`None` in results
    /// recorded before the store kept records: the request's artifact was complete then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

/// Input of [`PushArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushInput {
    /// The deploy pushing it: the caches it fills are recorded as its own, so its undo evicts
    /// those and no other (empty in pushes recorded before).
    #[serde(default)]
    pub deploy_id: String,
    /// Artifact to push.
    pub digest: Digest,
    /// Regions whose caches must hold it.
    pub regions: Vec<String>,
    /// Verify the source only, copy nothing.
    pub dry_run: bool,
}

/// Output of [`PushArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushOutput {
    /// Regions that did not hold the artifact before this push (what eviction must undo).
    pub newly_cached: Vec<String>,
}

/// Input of [`EvictArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvictInput {
    /// The deploy whose push filled the caches: only its fills are evicted (empty in evictions
    /// recorded before, which remove the artifact from every named region).
    #[serde(default)]
    pub deploy_id: String,
    /// Artifact to evict.
    pub digest: Digest,
    /// Regions to evict it from.
    pub regions: Vec<String>,
    /// A rehearsal: evicts nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Input of [`QuarantineArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineInput {
    /// The build.
    pub digest: Digest,
    /// Who quarantines it: the release that caught it.
    pub by: String,
    /// Why: the verdict that failed.
    pub reason: String,
    /// When, in workflow time.
    pub at: chrono::DateTime<chrono::Utc>,
    /// A rehearsal: quarantines nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One target of [`SampleTargets`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHealthInput {
    /// The target.
    pub target: Target,
    /// The window's length (and the traffic it needs, which the caller judges).
    pub policy: HealthPolicy,
}

/// Input of [`SampleBaseline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineInput {
    /// Fleet to sample.
    pub fleet: Target,
    /// Instances to sample.
    pub instances: Vec<String>,
    /// Sampling policy (window length, number of windows).
    pub policy: HealthPolicy,
    /// Sample nothing; return empty figures.
    pub dry_run: bool,
}

/// Input of [`SampleAaPeriod`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AaPeriodInput {
    /// Fleet to sample.
    pub fleet: Target,
    /// Service name, for the metric source's groups.
    pub service: String,
    /// The instances that change first: the canary-to-be.
    pub canary: Vec<String>,
    /// The instances that do not, read alongside.
    pub stable: Vec<String>,
    /// The engine's policy: the metrics to read.
    pub policy: Policy,
    /// Length of one window, in milliseconds.
    pub window_ms: u64,
    /// Windows to read.
    pub windows: u32,
    /// Sample nothing; return no windows.
    pub dry_run: bool,
    /// Requests per second driven straight at each instance of both groups while reading, as
    /// the step's judgement will drive them (blue/green's idle green set); `None`: live traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_rps: Option<u32>,
}

/// Input of [`AdvanceBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvanceInput {
    /// Deploy (workflow) id, recorded in the substrate's operation and audit logs.
    pub deploy_id: String,
    /// Fleet to act on.
    pub fleet: Target,
    /// Instances of this batch.
    pub instances: Vec<String>,
    /// What they must run afterwards.
    pub target: Artifact,
    /// Report what would change without changing it.
    pub dry_run: bool,
}

/// A change made to one instance: enough to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceChange {
    /// Instance id.
    pub instance: String,
    /// Version before.
    pub from_version: String,
    /// Artifact before.
    pub from_digest: Digest,
    /// Version after.
    pub to_version: String,
    /// Artifact after.
    pub to_digest: Digest,
}

/// Output of [`AdvanceBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvanceOutput {
    /// One entry per instance of the batch, in the order they completed.
    pub changes: Vec<InstanceChange>,
}

/// Input of [`RollbackInstances`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackInput {
    /// Deploy (workflow) id, recorded in the logs.
    pub deploy_id: String,
    /// Fleet to act on.
    pub fleet: Target,
    /// Changes to undo, in the order to undo them (most recent first).
    pub changes: Vec<InstanceChange>,
    /// Report what would be undone without undoing it.
    pub dry_run: bool,
}

/// Output of [`RollbackInstances`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackOutput {
    /// Instances returned to their previous version by this call (0 for already-reverted ones).
    pub reverted: u32,
}

/// Input of [`EvaluateHealth`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateInput {
    /// Fleet to sample.
    pub fleet: Target,
    /// Updated instances.
    pub canary: Vec<String>,
    /// Not-yet-updated instances (empty on the last batch).
    pub control: Vec<String>,
    /// The pre-deploy baseline.
    pub baseline: GroupFigures,
    /// The gate's policy.
    pub policy: HealthPolicy,
    /// Sample nothing and pass.
    pub dry_run: bool,
}

/// Input of [`HaltFleet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaltInput {
    /// Deploy (workflow) id, recorded in the audit log.
    pub deploy_id: String,
    /// Fleet to freeze.
    pub fleet: Target,
    /// Why, recorded in the audit log.
    pub reason: String,
    /// A rehearsal freezes nothing: other deploys of the fleet go on.
    pub dry_run: bool,
}

/// Input of [`ReleaseFleet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseInput {
    /// Deploy (workflow) id, recorded in the audit log.
    pub deploy_id: String,
    /// Fleet to release.
    pub fleet: Target,
    /// A rehearsal froze nothing and releases nothing.
    pub dry_run: bool,
}

/// Input of [`AnalyzeHealth`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeInput {
    /// Fleet to sample.
    pub fleet: Target,
    /// Service name, for the metric source's groups.
    pub service: String,
    /// Updated instances: the canary.
    pub canary: Vec<String>,
    /// Not-yet-updated instances, measured alongside as the stable version (empty on the last
    /// batch: then only the baseline speaks for the old version).
    pub stable: Vec<String>,
    /// The pre-deploy figures, the engine's starting baseline.
    pub baseline: GroupFigures,
    /// How long the pre-deploy figures were measured over, in milliseconds.
    pub baseline_span_ms: u64,
    /// The engine's policy.
    pub policy: Policy,
    /// Length of one window, in milliseconds.
    pub window_ms: u64,
    /// Most windows to sample; a stream that ends undecided is inconclusive.
    pub windows: u32,
    /// Sample nothing and pass.
    pub dry_run: bool,
    /// Requests per second driven straight at each instance of both groups while sampling, for
    /// instances the balancer sends nothing (blue/green's green set); `None`: live traffic only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_rps: Option<u32>,
    /// The live A/A period read before the step changed anything ([`SampleAaPeriod`]; before
    /// the first change only, in runs recorded before every step read its own), when the
    /// policy asked for one: each metric's baseline is then its windows, the stable group's readings
    /// as values and the canary group's beside them, with both groups' requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aa: Vec<Sample>,
}

/// Output of [`AnalyzeHealth`]: the verdict, and the engine's input as it judged it.
///
/// On the wire the report's fields sit at the top level, next to `input`: a result recorded
/// before `input` existed is a bare [`AnalysisReport`], and still reads (without input), so
/// its history replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeOutput {
    /// The verdict, for the deploy's decision and status.
    #[serde(flatten)]
    pub report: AnalysisReport,
    /// The policy, the baselines and every judged sample (canary and stable readings, traffic,
    /// times) exactly as the engine saw them; `signalbox backtest` judges it again to the same
    /// verdict. `None` for a dry run, and in results recorded before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AnalysisInput>,
}


/// Input of [`ReadOwners`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnersInput {
    /// The target.
    pub fleet: Target,
    /// Instances to ask about.
    pub instances: Vec<String>,
}

/// Output of [`ReadOwners`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnersOutput {
    /// Per instance: the deploy that last changed it (`None` when the substrate does not know).
    pub changed_by: BTreeMap<String, Option<String>>,
}

/// Input of [`BypassDeploys`] and [`RollBackDeploys`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerDeploysInput {
    /// The deploys' workflow ids.
    pub deploys: Vec<String>,
    /// Who steers them and why, as recorded in each deploy's audit trail.
    pub command: signalbox_domain::Command,
}

/// Input of [`LaneHolder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneInput {
    /// The lane's workflow id.
    pub lane: String,
}

/// Input of [`AwaitLane`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitLaneInput {
    /// The lane's workflow id.
    pub lane: String,
    /// Longest to wait before answering "still held", in milliseconds.
    pub at_most_ms: u64,
}

/// Input of [`SetWeights`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeightsInput {
    /// Balancer and backend.
    pub lb: LbTarget,
    /// New weights of the named servers.
    pub weights: Weights,
    /// A rehearsal: checks the servers and answers the weights they have, writing nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Output of [`SetWeights`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeightsOutput {
    /// Weights the named servers had before the call.
    pub previous: Weights,
}

/// Input of [`VerifyInstances`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyInput {
    /// Fleet the instances belong to.
    pub fleet: Target,
    /// Instances under test (idle: the balancer sends them nothing).
    pub instances: Vec<String>,
    /// Serving instances they are compared with; they get the same synthetic load.
    pub reference: Vec<String>,
    /// Requests per second sent to each instance of both groups.
    pub rps_per_instance: u32,
    /// Windows and thresholds.
    pub policy: HealthPolicy,
}

#[cfg(test)]
mod tests {
    use signalbox_analysis::{Decision, Rule};

    use super::*;

    /// A `health.analyze` result as recorded before the engine's input was kept
    /// (tests/histories/analysis_engine_bad.json).
    const RECORDED_BEFORE_INPUT: &str = r#"{"decision":"fail","summary":"Fail (ConsecutiveFailures): 3 samples, 0 pass, 3 fail, 0 inconclusive, 0 error; sample 2 Fail score 50.0","metrics":["error_rate: High value 0.25","p99_ms: Pass value 9.9375"]}"#;

    #[test]
    fn an_analysis_result_from_before_the_input_still_reads() {
        let old: AnalyzeOutput = serde_json::from_str(RECORDED_BEFORE_INPUT).unwrap();
        assert_eq!((old.report.decision, old.report.rule, old.input), (Decision::Fail, None, None));
        assert_eq!(old.report.metrics.len(), 2);
    }

    #[test]
    fn an_analysis_result_survives_history_with_its_input() {
        let policy: Policy = serde_json::from_str(r#"{"metrics": [{"name": "error_rate"}]}"#).unwrap();
        let input: AnalysisInput = serde_json::from_value(serde_json::json!({
            "policy": policy,
            "timestamps": [1, 2],
            "traffic": [40, 41],
            "metrics": [{"name": "error_rate", "baseline": {"values": [0.1]}, "canary": [0.30000000000000004, null], "stable": [{"error": "timed out"}, 0.1]}]
        }))
        .unwrap();
        let report = AnalysisReport { decision: Decision::Fail, rule: Some(Rule::ConsecutiveFailures), summary: "Fail".into(), metrics: vec!["error_rate: High".into()] };
        let output = AnalyzeOutput { report, input: Some(input) };
        let json = serde_json::to_string(&output).unwrap();
        assert!(json.starts_with(r#"{"decision":"fail","rule":"consecutive_failures""#), "{json}");
        assert_eq!(serde_json::from_str::<AnalyzeOutput>(&json).unwrap(), output, "bit for bit, through the flattened report");
    }
}
