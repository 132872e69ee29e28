//! A deploy request and its validation: the same rules at the API and in the workflow.

use serde::{Deserialize, Serialize};

use crate::approval::ApprovalPolicy;
use crate::bounds::{MAX_ROLLBACK_WINDOW_MS, MAX_WAIT_MS, check_ms, check_name, check_principal};
use crate::{Artifact, BatchPlan, HealthPolicy, Result, Strategy, Target};

/// Everything a deploy needs; together with the artifact digest it reproduces the deploy.
///
/// Only `service`, `artifact.digest`, `target` and `deployer` are required; every other field
/// has the default its doc says, so
/// `{"service": "checkout", "artifact": {"digest": "sha256:..."}, "target": {"name": "prod"}, "deployer": "alice"}`
/// is a whole request. Unknown fields are refused, so a typo cannot silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Where to roll it out. Requests from before targets had kinds say `fleet`.
    #[serde(alias = "fleet")]
    pub target: Target,
    /// How the build moves onto the target; default rolling.
    #[serde(default)]
    pub strategy: Strategy,
    /// How a rolling deploy grows; default 1% -> 10% -> 50% -> 100%.
    #[serde(default)]
    pub batch_plan: BatchPlan,
    /// How long each step bakes before its health is judged, in milliseconds; default 0.
    #[serde(default)]
    pub bake_ms: u64,
    /// Sampling of the health judgement (window length, windows) and, unless `analysis` is
    /// set, the thresholds of the default analysis policy.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Who asked for the deploy (recorded, and used by approval policy).
    pub deployer: String,
    /// Plan and record every step without changing an instance: a rehearsal of the rollout.
    /// A dry run takes no lane, so it never holds up a real deploy.
    #[serde(default)]
    pub dry_run: bool,
    /// How long after success the deploy can still be rolled back with the `rollback` update, in
    /// milliseconds (for blue/green: how long blue stays ready for an instant flip back); the
    /// workflow stays open (with a durable timer) that long. 0 ends the deploy at once. Requests
    /// without the field get [`DEFAULT_ROLLBACK_WINDOW_MS`].
    #[serde(default = "default_rollback_window_ms")]
    pub rollback_window_ms: u64,
    /// Who must approve before which steps; `None` (the default) gates nothing.
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
    /// The analysis policy judging every step. `None` (the default) judges with the
    /// first-version gate's thresholds in `health` as an engine preset
    /// ([`crate::analysis::gate_policy`]). Left out of the serialized request when `None`, so
    /// such a request reads exactly as before the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::analysis::Policy>,
    /// When another deploy of this service holds the target: wait for it (`true`), or fail at
    /// once naming it (`false`, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queue: bool,
    /// Who may steer the deploy: anyone on Temporal's port (`open`, the default), or only the
    /// operations the signalbox API signed (`signed`, set by an API that holds the control key).
    #[serde(default, skip_serializing_if = "crate::grant::Control::is_open")]
    pub control: crate::grant::Control,
}

/// The rollback window of a request that does not say: an hour.
pub const DEFAULT_ROLLBACK_WINDOW_MS: u64 = 60 * 60 * 1000;

fn default_rollback_window_ms() -> u64 {
    DEFAULT_ROLLBACK_WINDOW_MS
}

impl DeployRequest {
    /// Checks every field that can be checked without looking at the world; the first broken
    /// rule is returned, naming its field.
    pub fn validate(&self) -> Result<()> {
        check_name("service", &self.service)?;
        self.artifact.validate("artifact")?;
        self.target.validate("target")?;
        self.strategy.validate()?;
        self.batch_plan.validate()?;
        check_ms("bake_ms", self.bake_ms, MAX_WAIT_MS, "one day")?;
        self.health.validate()?;
        check_principal("deployer", &self.deployer)?;
        check_ms("rollback_window_ms", self.rollback_window_ms, MAX_ROLLBACK_WINDOW_MS, "a week")?;
        if let Some(approval) = &self.approval {
            approval.validate(&self.deployer, self.strategy.steps(&self.batch_plan))?;
        }
        if let Some(analysis) = &self.analysis {
            crate::analysis::validate(analysis, &self.health)?;
        }
        Ok(())
    }

    /// The analysis policy that judges this deploy: the request's, else the gate preset.
    pub fn analysis_policy(&self) -> crate::analysis::Policy {
        self.analysis.clone().unwrap_or_else(|| crate::analysis::gate_policy(&self.health))
    }
}

/// The workflow id of a deploy of `service` to `target`: `deploy/<service>/<target>/<suffix>`,
/// unique per deploy (`suffix` is the caller's request id, or a random one), so an artifact can
/// be deployed again once an earlier deploy of it ended. `<target>` is the name of a local
/// target and `<kind>:<name>` of any other, so one request id never names two kinds' deploys.
pub fn deploy_id(service: &str, target: &Target, suffix: &str) -> String {
    match target.kind.as_str() {
        crate::target::LOCAL => format!("deploy/{service}/{}/{suffix}", target.name),
        kind => format!("deploy/{service}/{kind}:{}/{suffix}", target.name),
    }
}

/// Checks a caller's request id, the suffix of [`deploy_id`]: 1 to 40 of `a-z`, `0-9`, `-`.
pub fn check_request_id(field: &str, id: &str) -> Result<()> {
    let ok = (1..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(crate::Error::invalid(field, "must be 1 to 40 of a-z, 0-9 and '-'")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::MAX_PRINCIPAL;
    use crate::traffic::LbTarget;
    use crate::{BlueGreenSpec, Digest};

    fn request() -> DeployRequest {
        DeployRequest {
            service: "checkout".into(),
            artifact: Artifact { digest: Digest::from_sha256_bytes(&[7; 32]), git_sha: "abc1234".into(), version: "1.0.1".into() },
            target: Target::local("local"),
            strategy: Strategy::Rolling,
            batch_plan: BatchPlan::default(),
            bake_ms: 1000,
            health: HealthPolicy::default(),
            deployer: "alice".into(),
            dry_run: false,
            rollback_window_ms: 0,
            approval: None,
            analysis: None,
            queue: false,
            control: Default::default(),
        }
    }

    #[test]
    fn a_good_request_validates() {
        request().validate().unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(Box<dyn Fn(&mut DeployRequest)>, &str)> = vec![
            (Box::new(|r| r.service = "Check Out".into()), "service"),
            (Box::new(|r| r.target.name = String::new()), "target.name"),
            (Box::new(|r| r.deployer = " ".into()), "deployer"),
            (Box::new(|r| r.deployer = "d".repeat(MAX_PRINCIPAL + 1)), "deployer"),
            (Box::new(|r| r.bake_ms = MAX_WAIT_MS + 1), "bake_ms"),
            (Box::new(|r| r.artifact.version = " ".into()), "artifact.version"),
            (Box::new(|r| r.rollback_window_ms = MAX_ROLLBACK_WINDOW_MS + 1), "rollback_window_ms"),
            (Box::new(|r| r.health.samples = u32::MAX), "health.samples"),
            (
                Box::new(|r| r.strategy = Strategy::BlueGreen(BlueGreenSpec { lb: LbTarget { stats_socket: "s".into(), backend: "b".into() }, verify_rps: 0 })),
                "strategy.verify_rps",
            ),
            (
                Box::new(|r| {
                    r.approval = Some(ApprovalPolicy {
                        before_batches: vec![2],
                        approvers: vec!["alice".into()],
                        quorum: 1,
                        allow_self_approval: false,
                        expiry_ms: 60_000,
                        on_expiry: Default::default(),
                    })
                }),
                "approval.quorum",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = request();
            mutate(&mut r);
            assert_eq!(r.validate().unwrap_err().field(), field);
        }
    }

    #[test]
    fn the_fields_a_person_types_make_a_whole_request() {
        let digest = "07".repeat(32);
        let minimal = format!(r#"{{"service": "checkout", "artifact": {{"digest": "sha256:{digest}"}}, "fleet": {{"name": "demo"}}, "deployer": "alice"}}"#);
        let req: DeployRequest = serde_json::from_str(&minimal).unwrap();
        assert_eq!((req.target.clone(), req.strategy.clone(), req.batch_plan.clone()), (Target::local("demo"), Strategy::Rolling, BatchPlan::default()));
        assert_eq!((req.rollback_window_ms, req.approval.clone(), req.analysis.clone(), req.queue), (DEFAULT_ROLLBACK_WINDOW_MS, None, None, false));
        assert!(req.artifact.version.is_empty() && req.artifact.git_sha.is_empty(), "version and git SHA come from the store");
        req.validate().unwrap();
        let typo = minimal.replace(r#""deployer""#, r#""bake": 5, "deployer""#);
        assert!(serde_json::from_str::<DeployRequest>(&typo).unwrap_err().to_string().contains("unknown field `bake`"));
    }

    #[test]
    fn a_request_without_newer_fields_reads_as_it_was_sent() {
        let mut json = serde_json::to_value(request()).unwrap();
        let obj = json.as_object_mut().unwrap();
        for newer in ["rollback_window_ms", "approval", "strategy"] {
            obj.remove(newer);
        }
        let target = obj.remove("target").unwrap();
        obj.insert("fleet".into(), serde_json::json!({"name": target["name"]}));
        assert!(!obj.contains_key("analysis") && !obj.contains_key("queue"), "defaults are left out");
        let old: DeployRequest = serde_json::from_value(json).unwrap();
        assert_eq!((old.rollback_window_ms, old.approval, old.analysis, old.strategy), (DEFAULT_ROLLBACK_WINDOW_MS, None, None, Strategy::Rolling));
        assert_eq!(old.target, Target::local("local"));
    }

    #[test]
    fn deploy_ids_are_per_deploy() {
        let r = request();
        assert_eq!(deploy_id(&r.service, &r.target, "a1b2"), "deploy/checkout/local/a1b2");
        let elsewhere = Target { kind: "k8s".into(), ..r.target.clone() };
        assert_eq!(deploy_id(&r.service, &elsewhere, "a1b2"), "deploy/checkout/k8s:local/a1b2", "another kind's target of the same name");
        check_request_id("request_id", "retry-7").unwrap();
        assert_eq!(check_request_id("request_id", "Retry 7").unwrap_err().field(), "request_id");
    }
}
