//! A deploy request and its validation.

use serde::{Deserialize, Serialize};

use crate::approval::ApprovalPolicy;
use crate::{Artifact, BatchPlan, Error, HealthPolicy, Result};

/// Which fleet to deploy to. For the local substrate this names a fleet under the signalbox home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTarget {
    /// Fleet name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub name: String,
}

/// Everything a deploy needs; together with the artifact digest it reproduces the deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Where to roll it out.
    pub fleet: FleetTarget,
    /// How the rollout grows.
    pub batch_plan: BatchPlan,
    /// How long each batch bakes before its health is judged, in milliseconds.
    pub bake_ms: u64,
    /// When the health gate fails a batch.
    pub health: HealthPolicy,
    /// Who asked for the deploy (recorded, and later used by approval policy).
    pub deployer: String,
    /// Plan and record every step without changing an instance: a rehearsal of the rollout.
    #[serde(default)]
    pub dry_run: bool,
    /// How long after success the deploy can still be rolled back with the `rollback` update, in
    /// milliseconds; the workflow stays open (with a durable timer) that long. 0 ends the deploy
    /// at once. Requests without the field get [`DEFAULT_ROLLBACK_WINDOW_MS`].
    #[serde(default = "default_rollback_window_ms")]
    pub rollback_window_ms: u64,
    /// Who must approve before which batches; `None` (the default) gates nothing.
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
    /// Opt in to the full analysis engine: each batch is judged by `health.analyze` under this
    /// policy instead of the first-version gate of `health`. `None` (the default, and every
    /// request from before the field) keeps the gate; it is left out of the serialized request
    /// so that such a request reads exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::analysis::Policy>,
}

/// The rollback window of a request that does not say: an hour.
pub const DEFAULT_ROLLBACK_WINDOW_MS: u64 = 60 * 60 * 1000;

fn default_rollback_window_ms() -> u64 {
    DEFAULT_ROLLBACK_WINDOW_MS
}

/// Longest rollback window accepted: a week.
const MAX_ROLLBACK_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Longest bake accepted: a day. Longer waits belong to release trains, not to one batch.
const MAX_BAKE_MS: u64 = 24 * 60 * 60 * 1000;

fn check_name(field: &str, value: &str) -> Result<()> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok { Ok(()) } else { Err(Error::invalid(field, "must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'")) }
}

impl DeployRequest {
    /// Checks every field that can be checked without looking at the world; the first broken
    /// rule is returned, naming its field.
    pub fn validate(&self) -> Result<()> {
        check_name("service", &self.service)?;
        self.artifact.validate("artifact")?;
        check_name("fleet.name", &self.fleet.name)?;
        self.batch_plan.validate()?;
        if self.bake_ms > MAX_BAKE_MS {
            return Err(Error::invalid("bake_ms", "must be at most 86400000 (one day)"));
        }
        self.health.validate()?;
        if self.deployer.trim().is_empty() {
            return Err(Error::invalid("deployer", "must not be empty"));
        }
        if self.rollback_window_ms > MAX_ROLLBACK_WINDOW_MS {
            return Err(Error::invalid("rollback_window_ms", "must be at most 604800000 (a week)"));
        }
        if let Some(approval) = &self.approval {
            approval.validate(&self.deployer, self.batch_plan.steps.len())?;
        }
        if let Some(analysis) = &self.analysis {
            crate::analysis::validate(analysis)?;
        }
        Ok(())
    }

    /// The workflow id of this deploy; see [`deploy_workflow_id`].
    pub fn workflow_id(&self) -> String {
        deploy_workflow_id(&self.service, &self.artifact.digest)
    }
}

/// A deploy's workflow id, derived from service and artifact digest, so that starting the same
/// artifact twice on one service is refused by Temporal itself rather than by a race-prone check.
pub fn deploy_workflow_id(service: &str, digest: &crate::Digest) -> String {
    format!("deploy/{service}/{}", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn request() -> DeployRequest {
        DeployRequest {
            service: "checkout".into(),
            artifact: Artifact { digest: Digest::from_sha256_bytes(&[7; 32]), git_sha: "abc1234".into(), version: "1.0.1".into() },
            fleet: FleetTarget { name: "local".into() },
            batch_plan: BatchPlan::default(),
            bake_ms: 1000,
            health: HealthPolicy::default(),
            deployer: "alice".into(),
            dry_run: false,
            rollback_window_ms: 0,
            approval: None,
            analysis: None,
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
            (Box::new(|r| r.fleet.name = String::new()), "fleet.name"),
            (Box::new(|r| r.deployer = " ".into()), "deployer"),
            (Box::new(|r| r.bake_ms = MAX_BAKE_MS + 1), "bake_ms"),
            (Box::new(|r| r.artifact.version = String::new()), "artifact.version"),
            (Box::new(|r| r.rollback_window_ms = MAX_ROLLBACK_WINDOW_MS + 1), "rollback_window_ms"),
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
    fn a_request_without_control_fields_gets_the_defaults() {
        let mut json = serde_json::to_value(request()).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("rollback_window_ms");
        obj.remove("approval");
        assert!(!obj.contains_key("analysis"), "no analysis policy, no field");
        let old: DeployRequest = serde_json::from_value(json).unwrap();
        assert_eq!((old.rollback_window_ms, old.approval, old.analysis), (DEFAULT_ROLLBACK_WINDOW_MS, None, None));
    }

    #[test]
    fn workflow_id_is_stable_per_service_and_digest() {
        let r = request();
        assert_eq!(r.workflow_id(), format!("deploy/checkout/{}", "07".repeat(32)));
        let mut other = request();
        other.service = "cart".into();
        assert_ne!(r.workflow_id(), other.workflow_id());
    }
}
