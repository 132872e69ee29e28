//! Traffic strategies on the local stack: a fleet behind a real HAProxy with real load sent
//! through its frontend ([`BalancedFleet`]), deploy requests of the canary and blue/green
//! strategies on it, and an observer that reads HAProxy's own weights and counters while a
//! canary runs ([`observe_canary`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use signalbox_activities::lb::RuntimeApi;
use signalbox_client::Deploys;
use signalbox_devstack::haproxy::{BackendSpec, Balance, Haproxy, HaproxyOptions, ServerSpec};
use signalbox_devstack::{ManagedProcess, workspace_binary};
use signalbox_domain::traffic::{CanaryPlan, LbStats, LbTarget, Promotion, Weights, default_canary_steps};
use signalbox_domain::{Artifact, BlueGreenSpec, CanarySpec, DeployRequest, DeployStatus, HealthPolicy, Strategy, Target};
use signalbox_store::Home;
use signalbox_substrate_local::LocalFleet;

/// What to put behind the balancer.
#[derive(Debug, Clone)]
pub struct BalancedOptions {
    /// Service name: the HAProxy backend.
    pub service: String,
    /// Fleet name.
    pub fleet: String,
    /// Instances.
    pub size: usize,
    /// The last `idle` instances start at weight 0 (blue/green's green set).
    pub idle: usize,
    /// Requests per second sent through the frontend by the load generator (0: none).
    pub rps: u32,
    /// Balancing algorithm.
    pub balance: Balance,
}

impl BalancedOptions {
    /// `size` instances of `service` in fleet `fleet`, all serving, no load, round robin.
    pub fn new(service: &str, fleet: &str, size: usize) -> Self {
        Self { service: service.into(), fleet: fleet.into(), size, idle: 0, rps: 0, balance: Balance::RoundRobin }
    }
}

/// A fleet of demo instances behind HAProxy, optionally under load sent through HAProxy's
/// frontend. Dropping it kills load, balancer and instances.
pub struct BalancedFleet {
    /// The fleet.
    pub fleet: LocalFleet,
    /// The balancer; servers are named by instance id.
    pub haproxy: Haproxy,
    /// The load generator aimed at the frontend, when asked for.
    pub load: Option<ManagedProcess>,
    /// What every instance ran when the fleet was made.
    pub initial: Artifact,
    name: String,
    backend: String,
}

impl BalancedFleet {
    /// Provisions the fleet on `initial`, starts HAProxy in front of it (serving instances at
    /// weight 1, idle ones at 0) and the load, if any; logs go to `dir`.
    pub async fn start(home: &Home, options: BalancedOptions, initial: Artifact, dir: &Path) -> anyhow::Result<Self> {
        // Ports are picked free and released before the instances (and HAProxy) bind them: two
        // fleets provisioned at once in one process can pick the same port. One at a time, each
        // holds its ports by the time the next one picks.
        static PICKING_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let picking = PICKING_PORTS.lock().await;
        let binary = workspace_binary("signalbox-demo-service")?;
        // Instances outlive their starter by design: whatever fails from here on kills them.
        let fleet = match LocalFleet::provision(home, &options.fleet, options.size, &["us-east", "eu-west"], binary, &initial.digest).await {
            Ok(fleet) => fleet,
            Err(e) => {
                if let Ok(partial) = LocalFleet::open(home, &options.fleet) {
                    partial.kill_all();
                }
                return Err(e.into());
            }
        };
        let (haproxy, load) = match Self::front(&fleet, &options, dir).await {
            Ok(front) => front,
            Err(e) => {
                fleet.kill_all();
                return Err(e);
            }
        };
        drop(picking);
        Ok(Self { fleet, haproxy, load, initial, name: options.fleet, backend: options.service })
    }

    /// HAProxy in front of `fleet` and the load through it.
    async fn front(fleet: &LocalFleet, options: &BalancedOptions, dir: &Path) -> anyhow::Result<(Haproxy, Option<ManagedProcess>)> {
        let serving = options.size.saturating_sub(options.idle);
        let servers = fleet
            .instances()
            .iter()
            .enumerate()
            .map(|(i, s)| ServerSpec { name: s.id.clone(), port: s.port, weight: u32::from(i < serving) })
            .collect();
        let haproxy = Haproxy::start(HaproxyOptions {
            dir: dir.join(format!("haproxy-{}", options.fleet)),
            port: None,
            balance: options.balance,
            backends: vec![BackendSpec { name: options.service.clone(), servers }],
        })
        .await?;
        if options.rps == 0 {
            return Ok((haproxy, None));
        }
        // The load generator follows an inventory file; this one names the frontend only.
        let inventory = dir.join(format!("frontend-{}.json", options.fleet));
        std::fs::write(&inventory, serde_json::json!({ "instances": [{ "id": "haproxy", "port": haproxy.port() }] }).to_string())?;
        let mut cmd = Command::new(workspace_binary("signalbox-loadgen")?);
        cmd.arg("--fleet-file").arg(&inventory).arg("--rps").arg(options.rps.to_string());
        let load = ManagedProcess::spawn("signalbox-loadgen", cmd, &dir.join(format!("loadgen-{}.log", options.fleet)))?;
        Ok((haproxy, Some(load)))
    }

    /// The balancer as the workflows name it.
    pub fn lb(&self) -> LbTarget {
        LbTarget { stats_socket: self.haproxy.stats_socket().display().to_string(), backend: self.backend.clone() }
    }

    /// The fleet as the workflows name it.
    pub fn target(&self) -> Target {
        Target::local(self.name.clone())
    }

    /// The runtime API of the balancer (the same client the worker's activities use).
    pub fn runtime(&self) -> RuntimeApi {
        RuntimeApi::new(self.haproxy.stats_socket())
    }

    /// HAProxy's `show stat` for the backend.
    pub async fn stats(&self) -> anyhow::Result<LbStats> {
        Ok(self.runtime().stats(&self.backend).await?)
    }

    /// Instance ids in fleet order.
    pub fn ids(&self) -> Vec<String> {
        self.fleet.instances().iter().map(|s| s.id.clone()).collect()
    }

    /// Sends `n` requests through the frontend, one after another; counts answers by the
    /// version that served them (`unanswered` for requests without a usable answer).
    pub async fn served_through(&self, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let version = match self.haproxy.get("/").await {
                Ok((_, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["version"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unanswered".into()),
                Err(_) => "unanswered".into(),
            };
            *counts.entry(version).or_default() += 1;
        }
        Ok(counts)
    }
}

impl Drop for BalancedFleet {
    fn drop(&mut self) {
        if let Some(load) = self.load.as_mut() {
            let _ = load.sigkill();
        }
        self.fleet.kill_all();
    }
}

/// A health policy for a small fleet behind HAProxy at a few hundred requests per second:
/// one-second windows, judged over four, and 2 requests enough per window, so that a canary
/// at 1% of the traffic is still judged.
pub fn small_policy() -> HealthPolicy {
    HealthPolicy { samples: 4, sample_interval_ms: 1_000, min_requests_per_sample: 2, ..HealthPolicy::default() }
}

/// A canary of `artifact` on instances `canary` (default steps 1 -> 5 -> 25 -> 50 -> 100%), as a
/// deploy request: the same shape every strategy takes.
pub fn canary_request(service: &str, fleet: &BalancedFleet, artifact: Artifact, canary: Vec<String>) -> DeployRequest {
    let mut req = crate::request(service, &fleet.name, artifact);
    req.strategy = Strategy::Canary(CanarySpec { lb: fleet.lb(), canary, steps: default_canary_steps(), promotion: Promotion::UpdateRest });
    req.health = small_policy();
    req
}

/// A blue/green deploy of `artifact`, verified at 20 requests per second per instance, blue
/// kept (the rollback window) for `keep_blue_ms`.
pub fn bluegreen_request(service: &str, fleet: &BalancedFleet, artifact: Artifact, keep_blue_ms: u64) -> DeployRequest {
    let mut req = crate::request(service, &fleet.name, artifact);
    req.strategy = Strategy::BlueGreen(BlueGreenSpec { lb: fleet.lb(), verify_rps: 20 });
    req.health = HealthPolicy { min_requests_per_sample: 10, ..small_policy() };
    req.rollback_window_ms = keep_blue_ms;
    req
}

/// One canary step as HAProxy saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedStep {
    /// 1-based step.
    pub step: u32,
    /// Share of traffic the step configures for the canaries, in percent.
    pub configured_percent: f64,
    /// Weights HAProxy reported during the step, by server.
    pub weights: Weights,
    /// Requests HAProxy sent to the backend between the first and the last read of the step.
    pub requests: u64,
    /// Of those, requests sent to canaries.
    pub canary_requests: u64,
}

impl ObservedStep {
    /// Share of the step's requests that the canaries served, in percent.
    pub fn measured_percent(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { 100.0 * self.canary_requests as f64 / self.requests as f64 }
    }
}

/// What HAProxy showed while a canary ran.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryObservation {
    /// Every distinct set of weights HAProxy reported, in order (repeats collapsed).
    pub sequence: Vec<Weights>,
    /// The plan's steps that HAProxy was seen in, with their requests.
    pub steps: Vec<ObservedStep>,
}

/// Follows a canary until it ends by reading HAProxy's `show stat` every 20 ms; no workflow
/// query is involved, so a slow query cannot hide a step. Each read carries weights and
/// session counters together: a read whose weights are step k's of `plan` (the decision the
/// workflow makes from the same weights) was taken under step k, and the first and last such
/// reads bound the requests counted for it. Returns the observation and the final status.
pub async fn observe_canary(deploys: &Deploys, id: &str, fleet: &BalancedFleet, plan: &CanaryPlan, deadline: Duration) -> anyhow::Result<(CanaryObservation, DeployStatus)> {
    let in_step = |w: &Weights| plan.steps.iter().position(|(_, step)| step.iter().all(|(s, x)| w.get(s) == Some(x)));
    let mut sequence: Vec<Weights> = Vec::new();
    let mut reads: BTreeMap<usize, (LbStats, LbStats)> = BTreeMap::new();
    let mut record = |stats: LbStats| {
        let weights = stats.weights();
        if let Some(i) = in_step(&weights) {
            reads.entry(i).and_modify(|r| r.1 = stats.clone()).or_insert_with(|| (stats.clone(), stats));
        }
        if sequence.last() != Some(&weights) {
            sequence.push(weights);
        }
    };
    let result = deploys.result(id);
    tokio::pin!(result);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let follow = async {
        loop {
            tokio::select! {
                status = &mut result => break status.map_err(anyhow::Error::from),
                _ = tick.tick() => record(fleet.stats().await.context("reading HAProxy during the canary")?),
            }
        }
    };
    let status = tokio::time::timeout(deadline, follow).await.map_err(|_| anyhow::anyhow!("canary {id} did not end within {deadline:?}"))??;
    record(fleet.stats().await?);
    let canary: Vec<String> = plan.steps.first().map(|(_, w)| w.keys().filter(|s| !plan.baseline.contains(s)).cloned().collect()).unwrap_or_default();
    let steps = reads
        .into_iter()
        .map(|(i, (first, last))| {
            let (a, b) = (first.sessions(), last.sessions());
            // A server missing from either read contributes nothing rather than its whole history.
            let delta = |s: &String| match (a.get(s), b.get(s)) {
                (Some(x), Some(y)) => y.saturating_sub(*x),
                _ => 0,
            };
            ObservedStep {
                step: i as u32 + 1,
                configured_percent: plan.steps[i].0,
                weights: last.weights(),
                requests: b.keys().map(delta).sum(),
                canary_requests: canary.iter().map(delta).sum(),
            }
        })
        .collect();
    Ok((CanaryObservation { sequence, steps }, status))
}
