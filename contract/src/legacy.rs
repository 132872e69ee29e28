//! The legacy traffic workflows, `signalbox.canary` and `signalbox.bluegreen`: canary and
//! blue/green before they became strategies of the deploy workflow. They stay registered so
//! that runs started before (and their histories) go on, and they still start from the
//! `temporal` CLI; new deploys of either strategy are `signalbox.deploy` runs with a `strategy`
//! field, steered and judged like every other deploy.

use serde::{Deserialize, Serialize};
use signalbox_domain::bounds::{MAX_WAIT_MS, check_name, check_principal};
use signalbox_domain::strategy::{DEFAULT_VERIFY_RPS, MAX_VERIFY_RPS};
use signalbox_domain::traffic::{LbTarget, Promotion, Weights, validate_steps};
use signalbox_domain::{Artifact, HealthPolicy, HealthReport, Result, Target};

/// A canary deploy behind a load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Fleet of the instances.
    #[serde(alias = "target")]
    pub fleet: Target,
    /// Balancer in front of the fleet.
    pub lb: LbTarget,
    /// Instances that become the canary; the other serving servers of the backend are its baseline.
    pub canary: Vec<String>,
    /// Shares of traffic in percent sent to the canary, step by step; the last must be 100.
    #[serde(default = "signalbox_domain::traffic::default_canary_steps")]
    pub steps: Vec<f64>,
    /// How long each step bakes before its health is judged, in milliseconds.
    #[serde(default)]
    pub bake_ms: u64,
    /// When the health gate fails a step.
    #[serde(default)]
    pub health: HealthPolicy,
    /// What happens at 100%.
    #[serde(default)]
    pub promotion: Promotion,
    /// Who asked.
    pub deployer: String,
}

/// A blue/green deploy behind a load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Fleet of the instances.
    #[serde(alias = "target")]
    pub fleet: Target,
    /// Balancer in front of the fleet: servers with a weight are blue, servers at weight 0 green.
    pub lb: LbTarget,
    /// Windows and thresholds of green's verification.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Verification requests per second sent to each green and blue instance.
    #[serde(default = "default_verify_rps")]
    pub verify_rps: u32,
    /// How long blue stays ready for an instant flip back after the flip, in milliseconds.
    #[serde(default)]
    pub keep_blue_ms: u64,
    /// Who asked.
    pub deployer: String,
}

fn default_verify_rps() -> u32 {
    DEFAULT_VERIFY_RPS
}

fn check_common(service: &str, artifact: &Artifact, fleet: &Target, lb: &LbTarget, health: &HealthPolicy, deployer: &str) -> Result<()> {
    check_name("service", service)?;
    artifact.validate("artifact")?;
    fleet.validate("fleet")?;
    lb.validate("lb")?;
    health.validate()?;
    check_principal("deployer", deployer)
}

impl CanaryRequest {
    /// Checks every field that can be checked without looking at the world.
    pub fn validate(&self) -> Result<()> {
        check_common(&self.service, &self.artifact, &self.fleet, &self.lb, &self.health, &self.deployer)?;
        if self.canary.is_empty() {
            return Err(signalbox_domain::Error::invalid("canary", "must name at least one instance"));
        }
        signalbox_domain::bounds::check_count("canary", self.canary.len(), signalbox_domain::bounds::MAX_INSTANCES)?;
        validate_steps("steps", &self.steps)?;
        signalbox_domain::bounds::check_ms("bake_ms", self.bake_ms, MAX_WAIT_MS, "one day")
    }
}

impl BlueGreenRequest {
    /// Checks every field that can be checked without looking at the world.
    pub fn validate(&self) -> Result<()> {
        check_common(&self.service, &self.artifact, &self.fleet, &self.lb, &self.health, &self.deployer)?;
        if !(1..=MAX_VERIFY_RPS).contains(&self.verify_rps) {
            return Err(signalbox_domain::Error::invalid("verify_rps", "must be 1 to 10000: a set nobody asked anything is not verified"));
        }
        signalbox_domain::bounds::check_ms("keep_blue_ms", self.keep_blue_ms, MAX_WAIT_MS, "one day")
    }
}

/// Where a canary or blue/green deploy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPhase {
    /// Reading the balancer and the fleet, pushing the artifact.
    Preparing,
    /// Updating the new set's instances while they take no traffic.
    Updating,
    /// Changing weights.
    Shifting,
    /// Waiting before judging a step.
    Baking,
    /// Judging a step from the instances' metrics.
    Evaluating,
    /// Verifying green under a verification load.
    Verifying,
    /// Green serves; blue stays ready for an instant flip back.
    Flipped,
    /// Updating the rest of the fleet after the canary reached 100%.
    Promoting,
    /// Undoing: weights back first, then instances.
    RollingBack,
    /// Done: the new build serves all traffic.
    Succeeded,
    /// Undone; `reason` says why.
    RolledBack,
    /// Could not start, or could not be undone cleanly; `reason` says why.
    Failed,
}

impl TrafficPhase {
    /// Whether the deploy has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::RolledBack | Self::Failed)
    }
}

/// The `status` query's answer and the workflow's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficStatus {
    /// Current phase.
    pub phase: TrafficPhase,
    /// 1-based traffic step in progress or last done (canary; blue/green has one, the flip).
    pub step: u32,
    /// Steps in the plan.
    pub total_steps: u32,
    /// Configured share of traffic on the new set now, in percent.
    pub new_share_percent: f64,
    /// Weights the workflow last set (or read), by server.
    pub weights: Weights,
    /// The new set: canary or green instances.
    pub new_set: Vec<String>,
    /// The old set: baseline or blue instances.
    pub old_set: Vec<String>,
    /// The most recent health verdict, with its figures.
    pub last_verdict: Option<HealthReport>,
    /// Why it rolled back or failed.
    pub reason: Option<String>,
}

impl TrafficStatus {
    /// The status before anything happened.
    pub fn starting() -> Self {
        Self {
            phase: TrafficPhase::Preparing,
            step: 0,
            total_steps: 0,
            new_share_percent: 0.0,
            weights: Weights::new(),
            new_set: Vec::new(),
            old_set: Vec::new(),
            last_verdict: None,
            reason: None,
        }
    }
}

workflow!(
    /// The legacy canary workflow.
    CanaryRun = "signalbox.canary": CanaryRequest => TrafficStatus
);
workflow!(
    /// The legacy blue/green workflow.
    BlueGreenRun = "signalbox.bluegreen": BlueGreenRequest => TrafficStatus
);
query!(
    /// The legacy canary's status.
    CanaryStatus = "status" on CanaryRun: () => TrafficStatus
);
query!(
    /// The legacy blue/green workflow's status.
    BlueGreenStatus = "status" on BlueGreenRun: () => TrafficStatus
);
update!(
    /// Traffic back to blue while the legacy blue/green workflow keeps it; the input is the
    /// reason. Completes once blue takes all traffic again.
    FlipBack = "flip_back" on BlueGreenRun: String => TrafficStatus
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_canary_starts_from_the_fields_a_person_types() {
        let digest = "07".repeat(32);
        let json = format!(
            r#"{{"service": "search", "artifact": {{"digest": "sha256:{digest}", "git_sha": "abc1234", "version": "3.1.0"}},
                "fleet": {{"name": "canary-good"}}, "lb": {{"stats_socket": "/run/h.sock", "backend": "search"}},
                "canary": ["i-0000"], "deployer": "alice"}}"#
        );
        let req: CanaryRequest = serde_json::from_str(&json).unwrap();
        assert_eq!((req.steps.len(), req.bake_ms), (5, 0));
        req.validate().unwrap();
    }
}
