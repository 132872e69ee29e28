//! How operators find and read deploys in the Temporal UI: custom search attributes (registered
//! with the server by the set-up) and a memo holding the config snapshot's summary.

use serde::{Deserialize, Serialize};
use temporalio_common::search_attributes::{SearchAttributeKey, SearchAttributes};

use signalbox_domain::{BatchStep, DeployRequest, Phase, ReleaseRequest, Strategy};

/// The deployed service.
pub const SERVICE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxService");
/// The target environment: the target deployed to (for the local kind, the fleet).
pub const ENVIRONMENT: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxEnvironment");
/// The strategy: `rolling`, `canary`, `blue_green`.
pub const STRATEGY: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxStrategy");
/// The artifact's content digest.
pub const ARTIFACT_DIGEST: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxArtifactDigest");
/// The commit the artifact was built from.
pub const GIT_SHA: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxGitSha");
/// The deploy's current phase, kept up to date by the workflow.
pub const PHASE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxPhase");
/// Who started the deploy.
pub const DEPLOYER: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxDeployer");

/// The release a workflow belongs to: a release's own id, set on the release and on each of
/// its deploys, so `SignalboxRelease = "release/web/r1"` lists the whole tree.
pub const RELEASE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxRelease");
/// The pipeline of a release (and of its deploys).
pub const PIPELINE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxPipeline");
/// The stage a release is in (kept up to date by the release), or a release deploy's stage.
pub const STAGE: SearchAttributeKey<String> = SearchAttributeKey::keyword("SignalboxStage");
/// Every service of a release.
pub const SERVICES: SearchAttributeKey<Vec<String>> = SearchAttributeKey::keyword_list("SignalboxServices");

/// Every search attribute with its Temporal type, for registration with the server.
pub const REGISTERED: [(&str, &str); 11] = [
    ("SignalboxService", "Keyword"),
    ("SignalboxEnvironment", "Keyword"),
    ("SignalboxStrategy", "Keyword"),
    ("SignalboxArtifactDigest", "Keyword"),
    ("SignalboxGitSha", "Keyword"),
    ("SignalboxPhase", "Keyword"),
    ("SignalboxDeployer", "Keyword"),
    ("SignalboxRelease", "Keyword"),
    ("SignalboxPipeline", "Keyword"),
    ("SignalboxStage", "Keyword"),
    ("SignalboxServices", "KeywordList"),
];

/// The value of [`PHASE`] for a phase.
pub fn phase_value(phase: Phase) -> String {
    format!("{phase:?}")
}

/// The search attributes a deploy starts with.
pub fn initial(req: &DeployRequest) -> SearchAttributes {
    SearchAttributes::new([
        SERVICE.value_set(req.service.clone()),
        ENVIRONMENT.value_set(req.target.name.clone()),
        STRATEGY.value_set(req.strategy.name().to_owned()),
        ARTIFACT_DIGEST.value_set(req.artifact.digest.to_string()),
        GIT_SHA.value_set(req.artifact.git_sha.clone()),
        PHASE.value_set(phase_value(Phase::Preflight)),
        DEPLOYER.value_set(req.deployer.clone()),
    ])
}

/// The search attributes a release starts with; its stage is set as it reaches each.
pub fn release(id: &str, req: &ReleaseRequest) -> SearchAttributes {
    SearchAttributes::new([
        RELEASE.value_set(id.to_owned()),
        PIPELINE.value_set(req.pipeline.name.clone()),
        SERVICES.value_set(req.services.iter().map(|s| s.service.clone()).collect()),
        DEPLOYER.value_set(req.deployer.clone()),
    ])
}

/// The search attributes of a release's deploy: a deploy's, and its release's and stage.
pub fn release_deploy(req: &DeployRequest, release: &str, pipeline: &str, stage: &str) -> SearchAttributes {
    let mut attrs = initial(req);
    attrs.apply(RELEASE.value_set(release.to_owned()));
    attrs.apply(PIPELINE.value_set(pipeline.to_owned()));
    attrs.apply(STAGE.value_set(stage.to_owned()));
    attrs
}

/// The config snapshot's summary, kept in the deploy's memo: what a reader of the UI needs to
/// know how the deploy was set up, without opening its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// `service version (digest short) from git SHA`.
    pub build: String,
    /// The strategy and its plan in words, e.g. `rolling 1% -> 10% -> 50% -> 100%`.
    pub batches: String,
    /// Bake per batch.
    pub bake: String,
    /// How every step is judged, in words.
    pub health: String,
    /// Who started it, and whether it is a rehearsal.
    pub started_by: String,
}

impl ConfigSummary {
    /// The summary of `req`.
    pub fn of(req: &DeployRequest) -> Self {
        let percents = |steps: &[f64]| steps.iter().map(|p| format!("{p}%")).collect::<Vec<_>>().join(" -> ");
        let batches = match &req.strategy {
            Strategy::Rolling => {
                let steps: Vec<String> = req
                    .batch_plan
                    .steps
                    .iter()
                    .map(|s| match s {
                        BatchStep::Percent(p) => format!("{p}%"),
                        BatchStep::Count(c) => format!("{c} instances"),
                    })
                    .collect();
                format!("rolling {}", steps.join(" -> "))
            }
            Strategy::Canary(c) => format!("canary on {}: {}", c.lb.backend, percents(&c.steps)),
            Strategy::BlueGreen(b) => format!("blue/green on {}, verified at {} rps per instance", b.lb.backend, b.verify_rps),
        };
        let h = &req.health;
        let health = match &req.analysis {
            Some(p) => format!("analysis policy over {} metrics, windows of {} ms", p.metrics.len(), h.sample_interval_ms),
            None => format!(
                "fail on {} consecutive bad windows of {} ms: error rate +{:.0}% (and +{:.1} points) or p99 +{} ms",
                h.consecutive_bad_samples,
                h.sample_interval_ms,
                h.max_error_rate_increase * 100.0,
                h.min_error_rate_delta * 100.0,
                h.max_p99_increase_ms
            ),
        };
        Self {
            build: format!("{} {} ({}) from {}", req.service, req.artifact.version, req.artifact.digest.short(), req.artifact.git_sha),
            batches,
            bake: format!("{} ms", req.bake_ms),
            health,
            started_by: format!("{}{}", req.deployer, if req.dry_run { " (dry run)" } else { "" }),
        }
    }
}
