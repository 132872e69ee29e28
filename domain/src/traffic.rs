//! Traffic strategies on a load balancer: a canary that takes a growing share of requests by
//! server weights, and blue/green, where an idle set is brought up and traffic flips to it.
//!
//! Here are the pure decisions (which weights give a group a share of traffic, which servers are
//! blue and which green) and the wire contract: the load-balancer activities, and the two
//! workflows with their query and update, so that clients start and steer them through these
//! markers without depending on workflow code. Every name below is recorded in history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use temporalio_common::{HasWorkflowDefinition, QueryDefinition, UpdateDefinition, WorkflowDefinition};

use crate::{Artifact, Error, FleetTarget, HealthPolicy, HealthReport, Result};

/// Server name (the instance id) to weight.
pub type Weights = BTreeMap<String, u32>;

/// Highest weight a load balancer server takes (HAProxy's limit).
pub const MAX_WEIGHT: u32 = 256;

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
    /// Sets the administrative state of servers (ready, drain, maint); returns the states they had.
    SetServerState = "lb.set_state": SetStateInput => SetStateOutput
);
activity!(
    /// Drives a verification load straight at idle instances and at a serving reference group,
    /// and judges the idle ones against the reference window by window.
    VerifyInstances = "health.verify": VerifyInput => HealthReport
);

/// The load balancer a strategy acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbTarget {
    /// Path of the balancer's admin socket (HAProxy `stats socket ... level admin`).
    pub stats_socket: String,
    /// Backend whose servers are the fleet's instances, named by instance id.
    pub backend: String,
}

/// One server as the balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Server name: the instance id.
    pub name: String,
    /// Current weight.
    pub weight: u32,
    /// Status as reported (`UP`, `DRAIN`, `MAINT`, `no check`, ...).
    pub status: String,
    /// Sessions (in HTTP mode: requests) sent to the server since the balancer started.
    pub sessions: u64,
}

/// A backend's servers, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbStats {
    /// Backend name.
    pub backend: String,
    /// Its servers.
    pub servers: Vec<ServerStats>,
}

impl LbStats {
    /// Every server's weight.
    pub fn weights(&self) -> Weights {
        self.servers.iter().map(|s| (s.name.clone(), s.weight)).collect()
    }

    /// Sessions per server.
    pub fn sessions(&self) -> BTreeMap<String, u64> {
        self.servers.iter().map(|s| (s.name.clone(), s.sessions)).collect()
    }
}

/// Input of [`SetWeights`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeightsInput {
    /// Balancer and backend.
    pub lb: LbTarget,
    /// New weights of the named servers.
    pub weights: Weights,
}

/// Output of [`SetWeights`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeightsOutput {
    /// Weights the named servers had before the call.
    pub previous: Weights,
}

/// A server's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic by its weight.
    Ready,
    /// Takes no new traffic; in-flight requests finish.
    Drain,
    /// Out of service.
    Maint,
}

/// Input of [`SetServerState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStateInput {
    /// Balancer and backend.
    pub lb: LbTarget,
    /// Servers to change.
    pub servers: Vec<String>,
    /// Their new state.
    pub state: AdminState,
}

/// Output of [`SetServerState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStateOutput {
    /// States the servers had before the call.
    pub previous: BTreeMap<String, AdminState>,
}

/// Input of [`VerifyInstances`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyInput {
    /// Fleet the instances belong to.
    pub fleet: FleetTarget,
    /// Instances under test (idle: the balancer sends them nothing).
    pub instances: Vec<String>,
    /// Serving instances they are compared with; they get the same synthetic load, so the
    /// comparison is like for like.
    pub reference: Vec<String>,
    /// Requests per second sent to each instance of both groups.
    pub rps_per_instance: u32,
    /// Windows and thresholds.
    pub policy: HealthPolicy,
}

/// What a canary does once it serves 100% of the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// Update the baseline instances while they take no traffic, then give every server its
    /// original weight back: the whole fleet serves the new build.
    #[default]
    UpdateRest,
    /// Leave it there: the canary set serves alone; the baseline idles at weight 0 on the old
    /// build, a warm standby (what blue/green keeps after its flip).
    KeepCanary,
}

/// A canary deploy behind a load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Fleet of the instances.
    pub fleet: FleetTarget,
    /// Balancer in front of the fleet.
    pub lb: LbTarget,
    /// Instances that become the canary; the other serving servers of the backend are its baseline.
    pub canary: Vec<String>,
    /// Shares of traffic in percent sent to the canary, step by step; the last must be 100.
    pub steps: Vec<f64>,
    /// How long each step bakes before its health is judged, in milliseconds.
    pub bake_ms: u64,
    /// When the health gate fails a step.
    pub health: HealthPolicy,
    /// What happens at 100%.
    #[serde(default)]
    pub promotion: Promotion,
    /// Who asked.
    pub deployer: String,
}

/// The canary steps used unless a request says otherwise: 1% -> 5% -> 25% -> 50% -> 100%.
pub fn default_canary_steps() -> Vec<f64> {
    vec![1.0, 5.0, 25.0, 50.0, 100.0]
}

/// A blue/green deploy behind a load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenRequest {
    /// Service name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub service: String,
    /// The build to roll out.
    pub artifact: Artifact,
    /// Fleet of the instances.
    pub fleet: FleetTarget,
    /// Balancer in front of the fleet: servers with a weight are blue, servers at weight 0 green.
    pub lb: LbTarget,
    /// Windows and thresholds of green's verification.
    pub health: HealthPolicy,
    /// Verification requests per second sent to each green and blue instance.
    pub verify_rps: u32,
    /// How long blue stays ready for an instant flip back after the flip, in milliseconds.
    pub keep_blue_ms: u64,
    /// Who asked.
    pub deployer: String,
}

/// Longest bake or keep-blue delay accepted: a day.
const MAX_WAIT_MS: u64 = 24 * 60 * 60 * 1000;

fn check_name(field: &str, value: &str) -> Result<()> {
    let ok = (1..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok { Ok(()) } else { Err(Error::invalid(field, "must be 1 to 63 of a-z, 0-9 and '-', not starting with '-'")) }
}

fn check_common(service: &str, artifact: &Artifact, fleet: &FleetTarget, lb: &LbTarget, health: &HealthPolicy, deployer: &str) -> Result<()> {
    check_name("service", service)?;
    artifact.validate("artifact")?;
    check_name("fleet.name", &fleet.name)?;
    if lb.stats_socket.trim().is_empty() {
        return Err(Error::invalid("lb.stats_socket", "must not be empty"));
    }
    if lb.backend.trim().is_empty() {
        return Err(Error::invalid("lb.backend", "must not be empty"));
    }
    health.validate()?;
    if deployer.trim().is_empty() {
        return Err(Error::invalid("deployer", "must not be empty"));
    }
    Ok(())
}

/// Checks canary steps: each in (0, 100], growing, the last 100.
pub fn validate_steps(steps: &[f64]) -> Result<()> {
    if steps.is_empty() {
        return Err(Error::invalid("steps", "must not be empty"));
    }
    let mut last = 0.0;
    for (i, &p) in steps.iter().enumerate() {
        if !(p > last && p <= 100.0) {
            return Err(Error::invalid(format!("steps[{i}]"), "must be in (0, 100] and larger than the step before"));
        }
        last = p;
    }
    if last < 100.0 {
        return Err(Error::invalid(format!("steps[{}]", steps.len() - 1), "the last step must send 100% of the traffic to the canary"));
    }
    Ok(())
}

impl CanaryRequest {
    /// Checks every field that can be checked without looking at the world.
    pub fn validate(&self) -> Result<()> {
        check_common(&self.service, &self.artifact, &self.fleet, &self.lb, &self.health, &self.deployer)?;
        if self.canary.is_empty() {
            return Err(Error::invalid("canary", "must name at least one instance"));
        }
        validate_steps(&self.steps)?;
        if self.bake_ms > MAX_WAIT_MS {
            return Err(Error::invalid("bake_ms", "must be at most 86400000 (one day)"));
        }
        Ok(())
    }

    /// The workflow id: one canary of an artifact per service.
    pub fn workflow_id(&self) -> String {
        format!("canary/{}/{}", self.service, self.artifact.digest.hex())
    }
}

impl BlueGreenRequest {
    /// Checks every field that can be checked without looking at the world.
    pub fn validate(&self) -> Result<()> {
        check_common(&self.service, &self.artifact, &self.fleet, &self.lb, &self.health, &self.deployer)?;
        if self.verify_rps == 0 {
            return Err(Error::invalid("verify_rps", "must be at least 1: a set nobody asked anything is not verified"));
        }
        if self.keep_blue_ms > MAX_WAIT_MS {
            return Err(Error::invalid("keep_blue_ms", "must be at most 86400000 (one day)"));
        }
        Ok(())
    }

    /// The workflow id: one blue/green deploy of an artifact per service.
    pub fn workflow_id(&self) -> String {
        format!("bluegreen/{}/{}", self.service, self.artifact.digest.hex())
    }
}

/// Per-server weights of two groups such that `group`'s servers together take `percent` of the
/// traffic and `rest` the remainder, as close as integer weights in 1..=[`MAX_WEIGHT`] allow.
/// At 0% the group gets weight 0 and the rest 1; at 100% the reverse.
pub fn split_weights(group: &[String], rest: &[String], percent: f64) -> Weights {
    let (g, r) = if percent <= 0.0 || group.is_empty() {
        (0, 1)
    } else if percent >= 100.0 || rest.is_empty() {
        (1, 0)
    } else {
        best_pair(group.len() as f64, rest.len() as f64, percent / 100.0)
    };
    group.iter().map(|s| (s.clone(), g)).chain(rest.iter().map(|s| (s.clone(), r))).collect()
}

/// The integer weights (per group server, per rest server) whose share is nearest `target`;
/// ties go to the smaller group weight.
fn best_pair(n_group: f64, n_rest: f64, target: f64) -> (u32, u32) {
    let share = |g: u32, r: u32| n_group * f64::from(g) / (n_group * f64::from(g) + n_rest * f64::from(r));
    let mut best = (1, MAX_WEIGHT, f64::INFINITY);
    for g in 1..=MAX_WEIGHT {
        let ideal = f64::from(g) * n_group * (1.0 - target) / (target * n_rest);
        let r = (ideal.round() as u32).clamp(1, MAX_WEIGHT);
        let error = (share(g, r) - target).abs();
        if error < best.2 - 1e-12 {
            best = (g, r, error);
        }
    }
    (best.0, best.1)
}

/// The share of traffic, in percent, that `weights` send to `group`.
pub fn share_percent(weights: &Weights, group: &[String]) -> f64 {
    let total: u32 = weights.values().sum();
    if total == 0 {
        return 0.0;
    }
    let in_group: u32 = group.iter().filter_map(|s| weights.get(s)).sum();
    100.0 * f64::from(in_group) / f64::from(total)
}

/// The weights of each step of a canary, decided before any of them is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryPlan {
    /// The weights the balancer had: what a rollback returns to.
    pub original: Weights,
    /// Serving servers that are not canaries: the control group.
    pub baseline: Vec<String>,
    /// Canaries out of rotation, baseline serving: the state while canaries are updated.
    pub off: Weights,
    /// Per step: (percent, weights).
    pub steps: Vec<(f64, Weights)>,
}

/// Plans a canary on a backend whose servers have `current` weights. The baseline is every
/// *serving* server (weight above 0) that is not a canary; idle servers are left alone.
pub fn plan_canary(current: &Weights, canary: &[String], steps: &[f64]) -> Result<CanaryPlan> {
    validate_steps(steps)?;
    for (i, c) in canary.iter().enumerate() {
        if !current.contains_key(c) {
            return Err(Error::invalid(format!("canary[{i}]"), format!("{c} is not a server of the backend")));
        }
        if canary[..i].contains(c) {
            return Err(Error::invalid(format!("canary[{i}]"), format!("{c} is named twice")));
        }
    }
    let baseline: Vec<String> = current.iter().filter(|(s, w)| **w > 0 && !canary.contains(s)).map(|(s, _)| s.clone()).collect();
    if baseline.is_empty() {
        return Err(Error::invalid("canary", "leaves no serving server as baseline"));
    }
    let original = current.iter().filter(|(s, _)| canary.contains(s) || baseline.contains(s)).map(|(s, w)| (s.clone(), *w)).collect();
    Ok(CanaryPlan {
        original,
        off: split_weights(canary, &baseline, 0.0),
        steps: steps.iter().map(|&p| (p, split_weights(canary, &baseline, p))).collect(),
        baseline,
    })
}

/// The two sets of a blue/green backend and the weights of the flip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreenPlan {
    /// Serving servers (weight above 0).
    pub blue: Vec<String>,
    /// Idle servers (weight 0): they get the new build.
    pub green: Vec<String>,
    /// Weights before the flip: what a flip back returns to.
    pub original: Weights,
    /// After the flip: every green server takes the largest blue weight, blue takes none.
    pub flipped: Weights,
}

/// Splits a backend into blue (serving) and green (idle) and plans the flip.
pub fn plan_blue_green(current: &Weights) -> Result<BlueGreenPlan> {
    let blue: Vec<String> = current.iter().filter(|(_, w)| **w > 0).map(|(s, _)| s.clone()).collect();
    let green: Vec<String> = current.iter().filter(|(_, w)| **w == 0).map(|(s, _)| s.clone()).collect();
    if blue.is_empty() {
        return Err(Error::invalid("lb.backend", "has no serving server (weight above 0) to be blue"));
    }
    if green.is_empty() {
        return Err(Error::invalid("lb.backend", "has no idle server (weight 0) to be green"));
    }
    let serving = current.values().copied().max().unwrap_or(1);
    let flipped = blue.iter().map(|s| (s.clone(), 0)).chain(green.iter().map(|s| (s.clone(), serving))).collect();
    Ok(BlueGreenPlan { blue, green, original: current.clone(), flipped })
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

macro_rules! workflow {
    ($(#[$doc:meta])* $ty:ident = $wire:literal: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned workflow type name.
            pub const NAME: &'static str = $wire;
        }

        impl WorkflowDefinition for $ty {
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }

        impl HasWorkflowDefinition for $ty {
            type Run = Self;
        }
    };
}

workflow!(
    /// The canary workflow, as clients see it.
    CanaryRun = "signalbox.canary": CanaryRequest => TrafficStatus
);
workflow!(
    /// The blue/green workflow, as clients see it.
    BlueGreenRun = "signalbox.bluegreen": BlueGreenRequest => TrafficStatus
);

/// Wire name of both workflows' status query.
pub const STATUS_QUERY: &str = "status";

/// The canary's `status` query.
#[derive(Debug, Clone, Copy, Default)]
pub struct CanaryStatusQuery;

impl QueryDefinition for CanaryStatusQuery {
    type Workflow = CanaryRun;
    type Input = ();
    type Output = TrafficStatus;

    fn name(&self) -> &str {
        STATUS_QUERY
    }
}

/// The blue/green workflow's `status` query.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlueGreenStatusQuery;

impl QueryDefinition for BlueGreenStatusQuery {
    type Workflow = BlueGreenRun;
    type Input = ();
    type Output = TrafficStatus;

    fn name(&self) -> &str {
        STATUS_QUERY
    }
}

/// The blue/green workflow's `flip_back` update: traffic back to blue while blue is kept.
/// Its input is the reason; it completes once blue takes all traffic again.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlipBack;

impl FlipBack {
    /// The pinned update name.
    pub const NAME: &'static str = "flip_back";
}

impl UpdateDefinition for FlipBack {
    type Workflow = BlueGreenRun;
    type Input = String;
    type Output = TrafficStatus;

    fn name(&self) -> &str {
        Self::NAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn canary_weights_give_the_configured_share() {
        let (canary, base) = (names("c", 2), names("b", 8));
        for p in [1.0, 5.0, 25.0, 50.0, 100.0] {
            let w = split_weights(&canary, &base, p);
            assert!((share_percent(&w, &canary) - p).abs() < 0.01, "{p}%: {w:?}");
            assert!(w.values().all(|&x| x <= MAX_WEIGHT));
        }
        // 1% of traffic on 2 of 10 servers: each canary 4, each baseline 99.
        assert_eq!(split_weights(&canary, &base, 1.0)["c0"], 4);
        assert_eq!(split_weights(&canary, &base, 1.0)["b0"], 99);
        assert_eq!(share_percent(&split_weights(&canary, &base, 0.0), &canary), 0.0);
    }

    #[test]
    fn shares_that_integers_cannot_hit_come_as_close_as_they_can() {
        let (canary, base) = (names("c", 1), names("b", 200));
        let w = split_weights(&canary, &base, 0.1);
        assert!((share_percent(&w, &canary) - 0.1).abs() < 0.05, "{w:?}");
    }

    #[test]
    fn a_canary_plan_keeps_idle_servers_out_and_refuses_strangers() {
        let current = Weights::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1), ("idle".into(), 0)]);
        let plan = plan_canary(&current, &["a".into()], &default_canary_steps()).unwrap();
        assert_eq!(plan.baseline, vec!["b".to_owned(), "c".to_owned()]);
        assert!(!plan.original.contains_key("idle") && !plan.off.contains_key("idle"));
        assert_eq!(plan.off["a"], 0);
        assert_eq!(plan.steps.last().unwrap().1["b"], 0);
        assert_eq!(plan_canary(&current, &["x".into()], &[100.0]).unwrap_err().field(), "canary[0]");
        assert_eq!(plan_canary(&current, &["a".into(), "b".into(), "c".into()], &[100.0]).unwrap_err().field(), "canary");
    }

    #[test]
    fn steps_must_grow_to_100() {
        assert!(validate_steps(&default_canary_steps()).is_ok());
        assert_eq!(validate_steps(&[5.0, 1.0, 100.0]).unwrap_err().field(), "steps[1]");
        assert_eq!(validate_steps(&[5.0, 50.0]).unwrap_err().field(), "steps[1]");
        assert_eq!(validate_steps(&[]).unwrap_err().field(), "steps");
    }

    #[test]
    fn blue_serves_green_idles_and_the_flip_swaps_them() {
        let current = Weights::from([("b1".into(), 10), ("b2".into(), 10), ("g1".into(), 0), ("g2".into(), 0)]);
        let plan = plan_blue_green(&current).unwrap();
        assert_eq!((plan.blue.len(), plan.green.len()), (2, 2));
        assert_eq!(share_percent(&plan.flipped, &plan.green), 100.0);
        assert_eq!(plan.flipped["g1"], 10);
        let all_serving = Weights::from([("b1".into(), 1)]);
        assert!(plan_blue_green(&all_serving).unwrap_err().to_string().contains("idle"));
    }
}
