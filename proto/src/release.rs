//! Releases across the wire: the start request a server accepts, and the status it answers.

use signalbox_domain::request::check_request_id;
use signalbox_domain::{Artifact, DeployState, Error, Pipeline, ReleaseDeploy, ReleasePhase, ReleaseRequest, ReleaseStatus, Result, ServiceBuild, StagePhase, StageStatus, Target};
use signalbox_domain::release_control::StageBypass;

use crate::control::timestamp;
use crate::pb;

/// The wire field of the pipeline.
const PIPELINE_JSON: &str = "pipeline_json";

/// Largest pipeline accepted, in bytes of JSON.
const MAX_PIPELINE_JSON: usize = 256 * 1024;

/// A release start as the domain sees it: the release, and the caller's request id if any.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRelease {
    /// The release.
    pub request: ReleaseRequest,
    /// The caller's id of the request, which the release's id ends with.
    pub request_id: Option<String>,
}

/// Reads the pipeline file's JSON and the services; the domain's rules are
/// [`ReleaseRequest::validate`]'s, whose `pipeline.*` fields a server reports under
/// [`release_wire_field`].
impl TryFrom<pb::StartReleaseRequest> for StartRelease {
    type Error = Error;

    fn try_from(req: pb::StartReleaseRequest) -> Result<Self> {
        if req.pipeline_json.trim().is_empty() {
            return Err(Error::invalid(PIPELINE_JSON, "is required: the pipeline file's JSON"));
        }
        if req.pipeline_json.len() > MAX_PIPELINE_JSON {
            return Err(Error::invalid(PIPELINE_JSON, format!("must be at most {MAX_PIPELINE_JSON} bytes (has {})", req.pipeline_json.len())));
        }
        let pipeline: Pipeline =
            serde_json::from_str(&req.pipeline_json).map_err(|e| Error::invalid(PIPELINE_JSON, format!("not a valid pipeline: {e}")))?;
        let services = req
            .services
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let artifact = s.artifact.ok_or_else(|| Error::invalid(format!("services[{i}].artifact"), "is required"))?;
                let digest = artifact.digest.parse().map_err(|e: Error| {
                    let Error::Invalid { rule, .. } = e;
                    Error::invalid(format!("services[{i}].artifact.digest"), rule)
                })?;
                Ok(ServiceBuild { service: s.service, artifact: Artifact { digest, git_sha: artifact.git_sha, version: artifact.version }, depends_on: s.depends_on })
            })
            .collect::<Result<_>>()?;
        let request_id = match req.request_id.as_str() {
            "" => None,
            id => {
                check_request_id("request_id", id)?;
                Some(id.to_owned())
            }
        };
        Ok(Self { request: ReleaseRequest { pipeline, services, deployer: req.deployer, dry_run: req.dry_run, control: Default::default() }, request_id })
    }
}

/// The wire path of a field the domain names in a release request: the pipeline is the
/// `pipeline_json` field's JSON (`pipeline.stages[0].targets` is
/// `pipeline_json.stages[0].targets`).
pub fn release_wire_field(field: &str) -> String {
    match field.strip_prefix("pipeline") {
        Some(inside) if inside.is_empty() || inside.starts_with('.') => format!("{PIPELINE_JSON}{inside}"),
        _ => field.to_owned(),
    }
}

impl From<ReleasePhase> for pb::ReleasePhase {
    fn from(p: ReleasePhase) -> Self {
        match p {
            ReleasePhase::Checking => Self::Checking,
            ReleasePhase::Deploying => Self::Deploying,
            ReleasePhase::Soaking => Self::Soaking,
            ReleasePhase::AwaitingApproval => Self::AwaitingApproval,
            ReleasePhase::Stopping => Self::Stopping,
            ReleasePhase::Succeeded => Self::Succeeded,
            ReleasePhase::Failed => Self::Failed,
            ReleasePhase::Aborted => Self::Aborted,
            ReleasePhase::RollingBack => Self::RollingBack,
            ReleasePhase::RolledBack => Self::RolledBack,
        }
    }
}

impl From<StagePhase> for pb::StagePhase {
    fn from(p: StagePhase) -> Self {
        match p {
            StagePhase::Waiting => Self::Waiting,
            StagePhase::AwaitingApproval => Self::AwaitingApproval,
            StagePhase::Deploying => Self::Deploying,
            StagePhase::Soaking => Self::Soaking,
            StagePhase::Passed => Self::Passed,
            StagePhase::Failed => Self::Failed,
            StagePhase::Aborted => Self::Aborted,
        }
    }
}

impl From<DeployState> for pb::ReleaseDeployState {
    fn from(s: DeployState) -> Self {
        match s {
            DeployState::Waiting => Self::Waiting,
            DeployState::Running => Self::Running,
            DeployState::Succeeded => Self::Succeeded,
            DeployState::RolledBack => Self::RolledBack,
            DeployState::Failed => Self::Failed,
        }
    }
}

fn target(t: Target) -> pb::Target {
    pb::Target { name: t.name, kind: t.kind }
}

impl From<ReleaseDeploy> for pb::ReleaseDeploy {
    fn from(d: ReleaseDeploy) -> Self {
        Self { service: d.service, target: Some(target(d.target)), deploy_id: d.deploy_id, state: pb::ReleaseDeployState::from(d.state).into(), reason: d.reason }
    }
}

impl From<StageBypass> for pb::StageBypass {
    fn from(b: StageBypass) -> Self {
        Self { by: b.by, reason: b.reason, at: Some(timestamp(b.at)), expires_at: Some(timestamp(b.expires_at)), override_failed_verdict: b.override_failed_verdict }
    }
}

impl From<StageStatus> for pb::StageStatus {
    fn from(s: StageStatus) -> Self {
        Self {
            name: s.name,
            phase: pb::StagePhase::from(s.phase).into(),
            soak_until: s.soak_until.map(timestamp),
            gate: s.gate.map(Into::into),
            bypass: s.bypass.map(Into::into),
            deploys: s.deploys.into_iter().map(Into::into).collect(),
            soak_restarts: s.soak_restarts,
            last_regression: s.last_regression,
            awaits: s.awaits,
        }
    }
}

impl From<ReleaseStatus> for pb::ReleaseStatus {
    fn from(s: ReleaseStatus) -> Self {
        Self {
            pipeline: s.pipeline,
            phase: pb::ReleasePhase::from(s.phase).into(),
            stage: s.stage,
            stages: s.stages.into_iter().map(Into::into).collect(),
            reason: s.reason,
            quarantined: s.quarantined.iter().map(ToString::to_string).collect(),
            audit: s.audit.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pipeline_json: &str) -> pb::StartReleaseRequest {
        pb::StartReleaseRequest {
            pipeline_json: pipeline_json.into(),
            services: vec![pb::ReleaseServiceBuild {
                service: "web".into(),
                artifact: Some(pb::Artifact { digest: format!("sha256:{}", "a".repeat(64)), git_sha: String::new(), version: String::new() }),
                depends_on: vec![],
            }],
            deployer: "alice".into(),
            dry_run: false,
            request_id: String::new(),
        }
    }

    fn refusal(r: Result<StartRelease>) -> (String, String) {
        let Err(Error::Invalid { field, rule }) = r else { panic!("refused") };
        (field, rule)
    }

    #[test]
    fn a_pipeline_file_that_cannot_be_read_is_refused_as_pipeline_json() {
        assert_eq!(refusal(StartRelease::try_from(request(""))).0, "pipeline_json");
        let (field, rule) = refusal(StartRelease::try_from(request(r#"{"name": "web", "stages": [], "colour": 1}"#)));
        assert_eq!(field, "pipeline_json");
        assert!(rule.contains("unknown field `colour`"), "{rule}");
    }

    #[test]
    fn a_bad_digest_names_its_service() {
        let mut req = request(r#"{"name": "web", "stages": [{"name": "test", "targets": [{"target": {"name": "test"}, "instances": 4}]}]}"#);
        req.services[0].artifact.as_mut().unwrap().digest = "sha256:xyz".into();
        assert_eq!(refusal(StartRelease::try_from(req)).0, "services[0].artifact.digest");
    }

    #[test]
    fn a_readable_request_becomes_the_domains_and_its_fields_map_back_to_the_wire() {
        let ok = StartRelease::try_from(request(r#"{"name": "web", "stages": [{"name": "test", "targets": [{"target": {"name": "test"}, "instances": 4}]}]}"#))
            .expect("readable");
        assert_eq!(ok.request.pipeline.stages[0].targets[0].instances, 4);
        assert_eq!(ok.request.validate(), Ok(()));
        assert_eq!(release_wire_field("pipeline.stages[0].targets"), "pipeline_json.stages[0].targets");
        assert_eq!(release_wire_field("pipeline_json"), "pipeline_json");
        assert_eq!(release_wire_field("services[1].depends_on[0]"), "services[1].depends_on[0]");
    }
}
