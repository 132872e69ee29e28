//! Deploy requests across the wire: what a server accepts and what a client sends.

use signalbox_domain::analysis::{self, Policy};
use signalbox_domain::request::check_request_id;
use signalbox_domain::traffic::{LbTarget, Promotion, default_canary_steps};
use signalbox_domain::{
    ApprovalPolicy, Artifact, BatchPlan, BatchStep, BlueGreenSpec, CanarySpec, DEFAULT_ROLLBACK_WINDOW_MS, DeployRequest, Error, HealthPolicy,
    OnExpiry, Result, Strategy, Target,
};

use crate::control::within;
use crate::pb;

/// The quorum of a policy that does not say (the domain's serde default; pinned by a test).
const DEFAULT_QUORUM: u32 = 1;
/// The gate expiry of a policy that does not say: a day (the domain's serde default).
const DEFAULT_EXPIRY_MS: u64 = 24 * 60 * 60 * 1000;

/// The wire field of the analysis policy.
const ANALYSIS_POLICY_JSON: &str = "analysis_policy_json";

fn required(field: &str) -> Error {
    Error::invalid(field, "is required")
}

/// The analysis policy in `json`; `None` when empty. The JSON is opaque to protobuf, so this is
/// where its errors get the wire's field path: parse errors name `analysis_policy_json`, the
/// engine's rules the field inside it (`analysis_policy_json.metrics[1].weight: must be > 0`,
/// where the domain says `analysis.metrics[1].weight`).
fn analysis_policy(json: &str, health: &HealthPolicy) -> Result<Option<Policy>> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    if json.len() > MAX_POLICY_JSON {
        return Err(Error::invalid(ANALYSIS_POLICY_JSON, format!("must be at most {MAX_POLICY_JSON} bytes (has {})", json.len())));
    }
    let policy: Policy =
        serde_json::from_str(json).map_err(|e| Error::invalid(ANALYSIS_POLICY_JSON, format!("not a valid analysis policy: {e}")))?;
    analysis::validate(&policy, health).map_err(|e| {
        let Error::Invalid { field, rule } = e;
        let inside = field.strip_prefix("analysis").unwrap_or(&field);
        Error::invalid(format!("{ANALYSIS_POLICY_JSON}{inside}"), rule)
    })?;
    Ok(Some(policy))
}

/// Largest analysis policy accepted, in bytes of JSON.
const MAX_POLICY_JSON: usize = 64 * 1024;

/// A start request as the domain sees it: the deploy, and the caller's request id if any.
#[derive(Debug, Clone, PartialEq)]
pub struct StartDeploy {
    /// The deploy.
    pub request: DeployRequest,
    /// The caller's id of the request, which the deploy's id ends with.
    pub request_id: Option<String>,
}

/// Checks only what the wire leaves open (absent messages, unset oneofs, malformed digests, the
/// analysis policy's JSON and, to name its fields by their wire path, its rules); the rules of
/// the domain are [`DeployRequest::validate`]'s to enforce.
impl TryFrom<pb::StartDeployRequest> for StartDeploy {
    type Error = Error;

    fn try_from(req: pb::StartDeployRequest) -> Result<Self> {
        let artifact = req.artifact.ok_or_else(|| required("artifact"))?;
        let target = match (req.target, req.fleet) {
            (Some(t), None) => Target { name: t.name, kind: if t.kind.is_empty() { signalbox_domain::target::LOCAL.into() } else { t.kind } },
            (None, Some(f)) => Target::local(f.name),
            (Some(_), Some(_)) => return Err(Error::invalid("fleet", "must not be set with target (fleet is the deprecated name of a local target)")),
            (None, None) => return Err(required("target")),
        };
        let request_id = match req.request_id.as_str() {
            "" => None,
            id => {
                check_request_id("request_id", id)?;
                Some(id.to_owned())
            }
        };
        let health = req.health.map(HealthPolicy::from).unwrap_or_default();
        let analysis = analysis_policy(&req.analysis_policy_json, &health)?;
        let request = DeployRequest {
            service: req.service,
            artifact: Artifact {
                // The digest's own error names `digest`; on the wire it is a field of `artifact`.
                digest: artifact.digest.parse().map_err(|e: Error| Error::invalid("artifact.digest", rule_of(e)))?,
                git_sha: artifact.git_sha,
                version: artifact.version,
            },
            target,
            strategy: req.strategy.map(strategy).transpose()?.unwrap_or_default(),
            batch_plan: req.batch_plan.map(batch_plan).transpose()?.unwrap_or_default(),
            bake_ms: req.bake_ms,
            health,
            deployer: req.deployer,
            dry_run: req.dry_run,
            rollback_window_ms: req.rollback_window_ms.unwrap_or(DEFAULT_ROLLBACK_WINDOW_MS),
            approval: req.approval.map(|a| ApprovalPolicy::try_from(a).map_err(within("approval"))).transpose()?,
            analysis,
            queue: req.queue,
            control: Default::default(),
        };
        Ok(Self { request, request_id })
    }
}

fn lb(lb: Option<pb::LoadBalancer>, kind: &str) -> Result<LbTarget> {
    let lb = lb.ok_or_else(|| required(&format!("strategy.{kind}.lb")))?;
    Ok(LbTarget { stats_socket: lb.stats_socket, backend: lb.backend })
}

/// The wire path of a field the domain names in `request`: its strategy's fields sit in the
/// `strategy` oneof's case on the wire (`strategy.canary.lb.backend` where the domain, whose
/// JSON tags the strategy by `kind`, says `strategy.lb.backend`).
pub fn wire_field(field: &str, request: &DeployRequest) -> String {
    let case = match request.strategy {
        Strategy::Rolling => return field.to_owned(),
        Strategy::Canary(_) => "canary",
        Strategy::BlueGreen(_) => "blue_green",
    };
    match field.strip_prefix("strategy.") {
        Some(inside) if !inside.starts_with(case) => format!("strategy.{case}.{inside}"),
        _ => field.to_owned(),
    }
}

fn strategy(s: pb::Strategy) -> Result<Strategy> {
    use pb::strategy::Kind;
    Ok(match s.kind {
        None | Some(Kind::Rolling(_)) => Strategy::Rolling,
        Some(Kind::Canary(c)) => {
            let promotion = pb::Promotion::try_from(c.promotion)
                .map_err(|u| Error::invalid("strategy.canary.promotion", format!("must be UPDATE_REST or KEEP_CANARY, not {}", u.0)))?;
            Strategy::Canary(CanarySpec {
                lb: lb(c.lb, "canary")?,
                canary: c.canary,
                steps: if c.steps.is_empty() { default_canary_steps() } else { c.steps },
                promotion: match promotion {
                    pb::Promotion::Unspecified | pb::Promotion::UpdateRest => Promotion::UpdateRest,
                    pb::Promotion::KeepCanary => Promotion::KeepCanary,
                },
            })
        }
        Some(Kind::BlueGreen(b)) => Strategy::BlueGreen(BlueGreenSpec { lb: lb(b.lb, "blue_green")?, verify_rps: b.verify_rps.unwrap_or(signalbox_domain::strategy::DEFAULT_VERIFY_RPS) }),
    })
}

impl From<Strategy> for pb::Strategy {
    fn from(s: Strategy) -> Self {
        use pb::strategy::Kind;
        let lb = |lb: LbTarget| Some(pb::LoadBalancer { stats_socket: lb.stats_socket, backend: lb.backend });
        let kind = match s {
            Strategy::Rolling => Kind::Rolling(pb::RollingStrategy {}),
            Strategy::Canary(c) => Kind::Canary(pb::CanaryStrategy {
                lb: lb(c.lb),
                canary: c.canary,
                steps: c.steps,
                promotion: match c.promotion {
                    Promotion::UpdateRest => pb::Promotion::UpdateRest,
                    Promotion::KeepCanary => pb::Promotion::KeepCanary,
                }
                .into(),
            }),
            Strategy::BlueGreen(b) => Kind::BlueGreen(pb::BlueGreenStrategy { lb: lb(b.lb), verify_rps: Some(b.verify_rps) }),
        };
        Self { kind: Some(kind) }
    }
}

/// Unset quorum, expiry and `on_expiry` take the domain's defaults (1, a day, abort); an
/// `on_expiry` this version does not know is refused. Errors name the policy's own fields.
impl TryFrom<pb::ApprovalPolicy> for ApprovalPolicy {
    type Error = Error;

    fn try_from(p: pb::ApprovalPolicy) -> Result<Self> {
        let on_expiry = pb::OnExpiry::try_from(p.on_expiry).map_err(|u| Error::invalid("on_expiry", format!("must be ABORT or PROCEED, not {}", u.0)))?;
        Ok(Self {
            before_batches: p.before_batches,
            approvers: p.approvers,
            quorum: p.quorum.unwrap_or(DEFAULT_QUORUM),
            allow_self_approval: p.allow_self_approval,
            expiry_ms: p.expiry_ms.unwrap_or(DEFAULT_EXPIRY_MS),
            on_expiry: OnExpiry::from(on_expiry),
        })
    }
}

impl From<ApprovalPolicy> for pb::ApprovalPolicy {
    fn from(p: ApprovalPolicy) -> Self {
        Self {
            before_batches: p.before_batches,
            approvers: p.approvers,
            quorum: Some(p.quorum),
            allow_self_approval: p.allow_self_approval,
            expiry_ms: Some(p.expiry_ms),
            on_expiry: pb::OnExpiry::from(p.on_expiry).into(),
        }
    }
}

fn rule_of(e: Error) -> String {
    let Error::Invalid { rule, .. } = e;
    rule
}

fn batch_plan(plan: pb::BatchPlan) -> Result<BatchPlan> {
    let steps = plan
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| match step.step {
            Some(pb::batch_step::Step::Percent(p)) => Ok(BatchStep::Percent(p)),
            Some(pb::batch_step::Step::Count(c)) => Ok(BatchStep::Count(c)),
            None => Err(Error::invalid(format!("batch_plan.steps[{i}]"), "must set percent or count")),
        })
        .collect::<Result<_>>()?;
    Ok(BatchPlan { steps })
}

/// Unset fields take [`HealthPolicy::default`]'s values.
impl From<pb::HealthPolicy> for HealthPolicy {
    fn from(p: pb::HealthPolicy) -> Self {
        let d = Self::default();
        Self {
            max_error_rate_increase: p.max_error_rate_increase.unwrap_or(d.max_error_rate_increase),
            min_error_rate_delta: p.min_error_rate_delta.unwrap_or(d.min_error_rate_delta),
            max_p99_increase_ms: p.max_p99_increase_ms.unwrap_or(d.max_p99_increase_ms),
            consecutive_bad_samples: p.consecutive_bad_samples.unwrap_or(d.consecutive_bad_samples),
            samples: p.samples.unwrap_or(d.samples),
            sample_interval_ms: p.sample_interval_ms.unwrap_or(d.sample_interval_ms),
            min_requests_per_sample: p.min_requests_per_sample.unwrap_or(d.min_requests_per_sample),
        }
    }
}

impl From<HealthPolicy> for pb::HealthPolicy {
    fn from(p: HealthPolicy) -> Self {
        Self {
            max_error_rate_increase: Some(p.max_error_rate_increase),
            min_error_rate_delta: Some(p.min_error_rate_delta),
            max_p99_increase_ms: Some(p.max_p99_increase_ms),
            consecutive_bad_samples: Some(p.consecutive_bad_samples),
            samples: Some(p.samples),
            sample_interval_ms: Some(p.sample_interval_ms),
            min_requests_per_sample: Some(p.min_requests_per_sample),
        }
    }
}

impl From<BatchPlan> for pb::BatchPlan {
    fn from(plan: BatchPlan) -> Self {
        let step = |s| match s {
            BatchStep::Percent(p) => pb::batch_step::Step::Percent(p),
            BatchStep::Count(c) => pb::batch_step::Step::Count(c),
        };
        Self { steps: plan.steps.into_iter().map(|s| pb::BatchStep { step: Some(step(s)) }).collect() }
    }
}

impl From<Artifact> for pb::Artifact {
    fn from(a: Artifact) -> Self {
        Self { digest: a.digest.into(), git_sha: a.git_sha, version: a.version }
    }
}

/// What a client sends for a domain request; every field is set explicitly.
impl From<DeployRequest> for pb::StartDeployRequest {
    fn from(r: DeployRequest) -> Self {
        Self {
            service: r.service,
            artifact: Some(r.artifact.into()),
            fleet: None,
            target: Some(pb::Target { name: r.target.name, kind: r.target.kind }),
            strategy: Some(r.strategy.into()),
            queue: r.queue,
            request_id: String::new(),
            batch_plan: Some(r.batch_plan.into()),
            bake_ms: r.bake_ms,
            health: Some(r.health.into()),
            deployer: r.deployer,
            dry_run: r.dry_run,
            rollback_window_ms: Some(r.rollback_window_ms),
            approval: r.approval.map(Into::into),
            analysis_policy_json: r.analysis.map(|p| serde_json::to_string(&p).expect("a policy serializes")).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use signalbox_domain::Digest;

    use super::*;

    fn request() -> DeployRequest {
        DeployRequest {
            service: "checkout".into(),
            artifact: Artifact { digest: Digest::from_sha256_bytes(&[7; 32]), git_sha: "abc1234".into(), version: "1.1.0".into() },
            target: Target::local("local"),
            strategy: Strategy::Rolling,
            batch_plan: BatchPlan { steps: vec![BatchStep::Count(1), BatchStep::Percent(100.0)] },
            bake_ms: 500,
            health: HealthPolicy { samples: 4, sample_interval_ms: 1_000, ..HealthPolicy::default() },
            deployer: "alice".into(),
            dry_run: true,
            rollback_window_ms: 0,
            approval: Some(ApprovalPolicy {
                before_batches: vec![2],
                approvers: vec!["bob".into(), "carol".into()],
                quorum: 2,
                allow_self_approval: true,
                expiry_ms: 60_000,
                on_expiry: OnExpiry::Proceed,
            }),
            analysis: None,
            queue: false,
            control: Default::default(),
        }
    }

    fn read(wire: pb::StartDeployRequest) -> Result<DeployRequest> {
        StartDeploy::try_from(wire).map(|s| s.request)
    }

    fn field_of(wire: pb::StartDeployRequest) -> String {
        read(wire).unwrap_err().field().to_owned()
    }

    #[test]
    fn a_request_survives_the_wire() {
        let wire = pb::StartDeployRequest::from(request());
        assert_eq!(read(wire).unwrap(), request());
    }

    #[test]
    fn unset_control_fields_take_the_domain_defaults() {
        let wire = pb::StartDeployRequest { rollback_window_ms: None, approval: None, ..request().into() };
        let req = read(wire).unwrap();
        assert_eq!((req.rollback_window_ms, req.approval), (DEFAULT_ROLLBACK_WINDOW_MS, None));
        // The defaults of a policy are the ones an operator's JSON gets from the domain.
        let minimal = pb::ApprovalPolicy { before_batches: vec![2], approvers: vec!["bob".into()], ..Default::default() };
        let from_json: ApprovalPolicy = serde_json::from_str(r#"{"before_batches":[2],"approvers":["bob"]}"#).unwrap();
        assert_eq!(ApprovalPolicy::try_from(minimal).unwrap(), from_json);
        let abort = pb::ApprovalPolicy { on_expiry: pb::OnExpiry::Abort.into(), ..Default::default() };
        assert_eq!(ApprovalPolicy::try_from(abort).unwrap().on_expiry, OnExpiry::Abort);
    }

    #[test]
    fn a_broken_policy_names_its_field_under_approval() {
        let mut wire = pb::StartDeployRequest::from(request());
        wire.approval.as_mut().unwrap().on_expiry = 7;
        let err = read(wire).unwrap_err();
        assert_eq!(err.field(), "approval.on_expiry");
        assert!(err.to_string().contains("not 7"), "{err}");
        // What the wire carries faithfully is the domain's to judge, with the same field paths.
        let mut wire = pb::StartDeployRequest::from(request());
        wire.approval.as_mut().unwrap().quorum = Some(0);
        assert_eq!(read(wire).unwrap().validate().unwrap_err().field(), "approval.quorum");
        let wire = pb::StartDeployRequest { rollback_window_ms: Some(u64::MAX), ..request().into() };
        assert_eq!(read(wire).unwrap().validate().unwrap_err().field(), "rollback_window_ms");
    }

    #[test]
    fn an_analysis_policy_crosses_as_json() {
        let policy: Policy = serde_json::from_str(r#"{"metrics": [{"name": "error_rate", "thresholds": {"max": 0.05}}], "rules": {"required_passes": 3}}"#).unwrap();
        let req = DeployRequest { analysis: Some(policy), ..request() };
        let wire = pb::StartDeployRequest::from(req.clone());
        assert!(wire.analysis_policy_json.starts_with(r#"{"metrics":[{"name":"error_rate""#), "{}", wire.analysis_policy_json);
        assert_eq!(read(wire).unwrap(), req);
        let blank = pb::StartDeployRequest { analysis_policy_json: " ".into(), ..request().into() };
        assert_eq!(read(blank).unwrap().analysis, None, "blank: the first-version gate judges");
    }

    #[test]
    fn a_broken_analysis_policy_names_its_field_inside_the_json() {
        let refusal = |json: &str| read(pb::StartDeployRequest { analysis_policy_json: json.into(), ..request().into() }).unwrap_err().to_string();
        let weight = r#"{"metrics": [{"name": "error_rate"}, {"name": "p99_ms", "weight": 0}]}"#;
        assert_eq!(refusal(weight), "analysis_policy_json.metrics[1].weight: must be > 0");
        assert_eq!(refusal(r#"{"metrics": []}"#), "analysis_policy_json.metrics: must list at least one metric");
        let typo = refusal(r#"{"metrics": [{"name": "error_rate"}], "rulez": {}}"#);
        assert!(typo.starts_with("analysis_policy_json: not a valid analysis policy: unknown field `rulez`"), "{typo}");
        assert!(refusal("{").starts_with("analysis_policy_json: not a valid analysis policy: "));
    }

    #[test]
    fn missing_messages_are_refused_by_name() {
        assert_eq!(field_of(pb::StartDeployRequest { artifact: None, ..request().into() }), "artifact");
        assert_eq!(field_of(pb::StartDeployRequest { target: None, ..request().into() }), "target");
        let both = pb::StartDeployRequest { fleet: Some(pb::FleetTarget { name: "x".into() }), ..request().into() };
        assert_eq!(field_of(both), "fleet");
    }

    #[test]
    fn the_deprecated_fleet_is_a_local_target_and_an_empty_kind_is_local() {
        let old = pb::StartDeployRequest { target: None, fleet: Some(pb::FleetTarget { name: "demo".into() }), ..request().into() };
        assert_eq!(read(old).unwrap().target, Target::local("demo"));
        let kindless = pb::StartDeployRequest { target: Some(pb::Target { name: "demo".into(), kind: String::new() }), ..request().into() };
        assert_eq!(read(kindless).unwrap().target, Target::local("demo"));
    }

    #[test]
    fn every_strategy_survives_the_wire_and_unset_fields_take_defaults() {
        let lb = LbTarget { stats_socket: "/run/h.sock".into(), backend: "web".into() };
        for s in [
            Strategy::Rolling,
            Strategy::Canary(CanarySpec { lb: lb.clone(), canary: vec!["i-0".into()], steps: vec![10.0, 100.0], promotion: Promotion::KeepCanary }),
            Strategy::BlueGreen(BlueGreenSpec { lb: lb.clone(), verify_rps: 7 }),
        ] {
            let req = DeployRequest { strategy: s, ..request() };
            assert_eq!(read(req.clone().into()).unwrap(), req);
        }
        let bare = pb::Strategy {
            kind: Some(pb::strategy::Kind::Canary(pb::CanaryStrategy {
                lb: Some(pb::LoadBalancer { stats_socket: "s".into(), backend: "b".into() }),
                ..Default::default()
            })),
        };
        let Strategy::Canary(c) = read(pb::StartDeployRequest { strategy: Some(bare), ..request().into() }).unwrap().strategy else {
            panic!("not a canary")
        };
        assert_eq!((c.steps, c.canary.len(), c.promotion), (default_canary_steps(), 0, Promotion::UpdateRest));
        let no_lb = pb::Strategy { kind: Some(pb::strategy::Kind::BlueGreen(pb::BlueGreenStrategy::default())) };
        assert_eq!(field_of(pb::StartDeployRequest { strategy: Some(no_lb), ..request().into() }), "strategy.blue_green.lb");
    }

    #[test]
    fn a_domain_field_of_the_strategy_is_named_by_its_wire_path() {
        let lb = LbTarget { stats_socket: "s".into(), backend: "b".into() };
        let canary = DeployRequest { strategy: Strategy::Canary(CanarySpec { lb: lb.clone(), canary: vec![], steps: vec![], promotion: Promotion::UpdateRest }), ..request() };
        assert_eq!(wire_field("strategy.lb.backend", &canary), "strategy.canary.lb.backend");
        assert_eq!(wire_field("strategy.canary.lb", &canary), "strategy.canary.lb", "already a wire path");
        assert_eq!(wire_field("artifact.digest", &canary), "artifact.digest");
        let blue_green = DeployRequest { strategy: Strategy::BlueGreen(BlueGreenSpec { lb, verify_rps: 7 }), ..request() };
        assert_eq!(wire_field("strategy.lb", &blue_green), "strategy.blue_green.lb");
        assert_eq!(wire_field("strategy.lb", &request()), "strategy.lb", "a rolling deploy has no strategy fields");
    }

    #[test]
    fn a_request_id_is_checked_and_kept() {
        let with = pb::StartDeployRequest { request_id: "retry-1".into(), ..request().into() };
        assert_eq!(StartDeploy::try_from(with).unwrap().request_id.as_deref(), Some("retry-1"));
        assert_eq!(field_of(pb::StartDeployRequest { request_id: "Not OK".into(), ..request().into() }), "request_id");
    }

    #[test]
    fn a_malformed_digest_names_the_artifact_field() {
        let mut wire = pb::StartDeployRequest::from(request());
        wire.artifact.as_mut().unwrap().digest = "sha256:nothex".into();
        let err = read(wire).unwrap_err();
        assert_eq!(err.field(), "artifact.digest");
        assert!(err.to_string().contains("64 lowercase hex digits"), "{err}");
    }

    #[test]
    fn a_step_without_percent_or_count_is_refused() {
        let mut wire = pb::StartDeployRequest::from(request());
        wire.batch_plan.as_mut().unwrap().steps[1].step = None;
        assert_eq!(field_of(wire), "batch_plan.steps[1]");
    }

    #[test]
    fn unset_plan_and_health_take_the_defaults() {
        let wire = pb::StartDeployRequest { batch_plan: None, health: None, ..request().into() };
        let req = read(wire).unwrap();
        assert_eq!(req.batch_plan, BatchPlan::default());
        assert_eq!(req.health, HealthPolicy::default());
    }

    #[test]
    fn unset_health_fields_take_their_defaults_one_by_one() {
        let partial = pb::HealthPolicy { samples: Some(9), max_p99_increase_ms: Some(10.0), ..Default::default() };
        let policy = HealthPolicy::from(partial);
        assert_eq!(policy, HealthPolicy { samples: 9, max_p99_increase_ms: 10.0, ..HealthPolicy::default() });
    }

    #[test]
    fn an_empty_plan_is_left_to_validation() {
        let wire = pb::StartDeployRequest { batch_plan: Some(pb::BatchPlan { steps: vec![] }), ..request().into() };
        let req = read(wire).unwrap();
        assert_eq!(req.validate().unwrap_err().field(), "batch_plan.steps");
    }
}
