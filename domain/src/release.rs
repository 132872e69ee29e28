//! Releases: one or more services, each with its build, promoted through a pipeline of stages
//! (release channels such as playground -> test -> production, or region waves), every target
//! of a stage deployed by a deploy of its own.
//!
//! A pipeline is kept in git as a file and checked here, before anything starts: every stage
//! has targets, no target is deployed twice, services' `depends_on` name services of the
//! release and have no cycle, and the share of the fleet that could run the build before its
//! first verdict stays within the pipeline's blast-radius budget.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalPolicy, Gate};
use crate::control::AuditEntry;
use crate::release_control::{StageApproval, StageBypass};
use crate::bounds::{MAX_ITEMS, MAX_WAIT_MS, check_count, check_ms, check_name, check_principal};
use crate::plan::BatchStep;
use crate::{Artifact, BatchPlan, DeployRequest, Digest, Error, HealthPolicy, Result, Strategy, Target};

/// Most instances one stage target may declare.
pub const MAX_TARGET_INSTANCES: u32 = 100_000;

/// An ordered list of stages, as declared in a pipeline file.
///
/// ```json
/// {"name": "web", "blast_radius_percent": 10,
///  "stages": [{"name": "test", "targets": [{"target": {"name": "test"}, "instances": 4}]},
///             {"name": "production", "soak_ms": 1800000,
///              "targets": [{"target": {"name": "eu"}, "instances": 40}]}]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Pipeline name: lowercase letters, digits and `-`, 1 to 63 characters.
    pub name: String,
    /// The stages, in the order a build is promoted through them.
    pub stages: Vec<Stage>,
    /// The most of the fleet (every instance of every target of the pipeline), in percent,
    /// that may run a build before its first verdict; `None` sets no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius_percent: Option<f64>,
    /// What a failure does to the deploys that already succeeded; default keep.
    #[serde(default, skip_serializing_if = "OnFailure::is_keep")]
    pub on_failure: OnFailure,
}

/// What a failed (or aborted) release does to its deploys that had already succeeded, in its
/// earlier stages and in the stage that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// They keep the new build: promotion stops where it is.
    #[default]
    Keep,
    /// They are rolled back: dependents before the services they depend on (reverse
    /// topological order), each service's later stages first, and the release ends
    /// `RolledBack` with every target on what it ran before. A release's deploys stay open
    /// for this (their rollback window) until the release ends.
    RollBack,
}

impl OnFailure {
    fn is_keep(&self) -> bool {
        *self == Self::Keep
    }
}

/// One stage: a channel or a region wave, its targets deployed in parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Stage name, unique in the pipeline: lowercase letters, digits and `-`.
    pub name: String,
    /// The targets of the stage.
    pub targets: Vec<StageTarget>,
    /// How many of the stage's deploys may run at once; default 1.
    #[serde(default = "one")]
    pub max_parallel: u32,
    /// How long the stage soaks after its deploys succeeded, before the next stage starts, in
    /// milliseconds; default 0.
    #[serde(default)]
    pub soak_ms: u64,
    /// Who must approve before the stage's deploys start; default nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StageApproval>,
    /// How many times a health regression seen during the soak may restart it before the
    /// stage fails; default 3.
    #[serde(default = "three")]
    pub max_soak_restarts: u32,
    /// The stage's own analysis: once its deploys succeeded, its targets together (their
    /// requests, errors and worst p99 summed over one window) against the same before the
    /// deploys, by these thresholds; a regression fails the stage as a failed verdict does.
    /// Catches what no single target has the traffic to show. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<HealthPolicy>,
}

fn three() -> u32 {
    3
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

/// A target of a stage, and how each service is deployed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTarget {
    /// The target.
    pub target: Target,
    /// Its instances, for the blast-radius budget (at least 1).
    pub instances: u32,
    /// How every service is deployed on it; the deploy defaults where left out.
    #[serde(default)]
    pub deploy: DeploySettings,
    /// The services of the release deployed on it (one per cluster or host group of a region,
    /// say); empty: every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// The settings of a deploy that a pipeline chooses per target: all of a deploy request but
/// what the release supplies (service, build, target, deployer, dry run). Each field defaults
/// as in [`DeployRequest`], except the rollback window: a release's deploys end when they
/// succeed (0), so that the next stage can start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// How the build moves onto the target; default rolling.
    #[serde(default)]
    pub strategy: Strategy,
    /// How a rolling deploy grows; default 1% -> 10% -> 50% -> 100%.
    #[serde(default)]
    pub batch_plan: BatchPlan,
    /// How long each step bakes, in milliseconds; default 0.
    #[serde(default)]
    pub bake_ms: u64,
    /// Sampling of the health judgement.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Approvals of the deploy; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
    /// The analysis policy; default the gate's thresholds in `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::analysis::Policy>,
    /// Rollback window after success, in milliseconds; default 0.
    #[serde(default)]
    pub rollback_window_ms: u64,
}

/// One service of a release: its build and the services it needs deployed first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBuild {
    /// Service name.
    pub service: String,
    /// The build.
    pub artifact: Artifact,
    /// Services of the same release deployed before this one in every stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// What a release is started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The pipeline the services go through.
    pub pipeline: Pipeline,
    /// The services and their builds.
    pub services: Vec<ServiceBuild>,
    /// Who asked for the release; every deploy of it is theirs.
    pub deployer: String,
    /// Rehearse every deploy without changing an instance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Who may steer the release and its deploys: see [`crate::grant::Control`]; set by an API
    /// that holds the control key.
    #[serde(default, skip_serializing_if = "crate::grant::Control::is_open")]
    pub control: crate::grant::Control,
}

impl Pipeline {
    /// Checks the pipeline on its own; errors name the field under `pipeline`.
    pub fn validate(&self) -> Result<()> {
        check_name("pipeline.name", &self.name)?;
        if self.stages.is_empty() {
            return Err(Error::invalid("pipeline.stages", "must not be empty"));
        }
        check_count("pipeline.stages", self.stages.len(), MAX_ITEMS)?;
        let mut stages = BTreeSet::new();
        let mut targets: BTreeMap<String, &str> = BTreeMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let field = format!("pipeline.stages[{i}]");
            check_name(&format!("{field}.name"), &stage.name)?;
            if !stages.insert(stage.name.as_str()) {
                return Err(Error::invalid(format!("{field}.name"), format!("stage {} is declared twice", stage.name)));
            }
            if stage.targets.is_empty() {
                return Err(Error::invalid(format!("{field}.targets"), "must not be empty"));
            }
            check_count(&format!("{field}.targets"), stage.targets.len(), MAX_ITEMS)?;
            if stage.max_parallel == 0 {
                return Err(Error::invalid(format!("{field}.max_parallel"), "must be at least 1"));
            }
            check_ms(&format!("{field}.soak_ms"), stage.soak_ms, MAX_WAIT_MS, "a day")?;
            if let Some(policy) = &stage.analysis {
                policy.validate().map_err(|Error::Invalid { field: f, rule }| Error::invalid(format!("{field}.analysis{}", f.strip_prefix("health").unwrap_or(&f)), rule))?;
            }
            if stage.max_soak_restarts > 100 {
                return Err(Error::invalid(format!("{field}.max_soak_restarts"), "must be at most 100"));
            }
            if let Some(approval) = &stage.approval {
                approval.validate(&format!("{field}.approval"), None)?;
            }
            for (j, t) in stage.targets.iter().enumerate() {
                let field = format!("{field}.targets[{j}]");
                t.target.validate(&format!("{field}.target"))?;
                if t.instances == 0 || t.instances > MAX_TARGET_INSTANCES {
                    return Err(Error::invalid(format!("{field}.instances"), format!("must be 1 to {MAX_TARGET_INSTANCES}")));
                }
                if let Some(earlier) = targets.insert(t.target.to_string(), &stage.name) {
                    return Err(Error::invalid(
                        format!("{field}.target"),
                        format!("{} is already a target of stage {earlier}: a pipeline deploys each target once", t.target),
                    ));
                }
                t.deploy.validate(&format!("{field}.deploy"))?;
                check_count(&format!("{field}.services"), t.services.len(), MAX_ITEMS)?;
                let mut named = BTreeSet::new();
                for (k, service) in t.services.iter().enumerate() {
                    check_name(&format!("{field}.services[{k}]"), service)?;
                    if !named.insert(service.as_str()) {
                        return Err(Error::invalid(format!("{field}.services[{k}]"), format!("{service} is named twice")));
                    }
                }
            }
        }
        if let Some(budget) = self.blast_radius_percent {
            if !(budget > 0.0 && budget <= 100.0) {
                return Err(Error::invalid("pipeline.blast_radius_percent", "must be in (0, 100]"));
            }
            let fleet = self.fleet();
            let (stage, exposed) = self.unproven();
            let share = 100.0 * f64::from(exposed) / f64::from(fleet);
            if share > budget {
                return Err(Error::invalid(
                    "pipeline.blast_radius_percent",
                    format!(
                        "stage {stage} could run the build on {share:.1}% of the fleet ({exposed} of {fleet} instances) before its first verdict, more than the budget of {budget}%"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every instance of every target of the pipeline.
    pub fn fleet(&self) -> u32 {
        self.stages.iter().flat_map(|s| &s.targets).map(|t| t.instances).sum()
    }

    /// The first stage and the most of its instances that can run the build before any
    /// deploy of it has a verdict: its `max_parallel` most exposed targets at once, each with
    /// its first step (a rolling deploy's first batch; all of the target for another
    /// strategy, which does not say how many instances its first step takes).
    pub fn unproven(&self) -> (&str, u32) {
        let first = &self.stages[0];
        let mut exposed: Vec<u32> = first.targets.iter().map(StageTarget::first_step).collect();
        exposed.sort_unstable_by(|a, b| b.cmp(a));
        (&first.name, exposed.iter().take(first.max_parallel as usize).sum())
    }
}

impl StageTarget {
    /// Whether `service` is deployed on this target.
    pub fn deploys(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|s| s == service)
    }

    /// The instances the first step of a deploy here changes.
    pub fn first_step(&self) -> u32 {
        let n = self.instances;
        match (&self.deploy.strategy, self.deploy.batch_plan.steps.first()) {
            (Strategy::Rolling, Some(BatchStep::Percent(p))) => ((f64::from(n) * p / 100.0).ceil() as u32).clamp(1, n),
            (Strategy::Rolling, Some(BatchStep::Count(c))) => (*c).clamp(1, n),
            _ => n,
        }
    }
}

impl DeploySettings {
    /// The deploy of `service`'s `artifact` on `target` with these settings.
    pub fn request(&self, service: &str, artifact: &Artifact, target: &Target, deployer: &str, dry_run: bool) -> DeployRequest {
        DeployRequest {
            service: service.to_owned(),
            artifact: artifact.clone(),
            target: target.clone(),
            strategy: self.strategy.clone(),
            batch_plan: self.batch_plan.clone(),
            bake_ms: self.bake_ms,
            health: self.health.clone(),
            deployer: deployer.to_owned(),
            dry_run,
            rollback_window_ms: self.rollback_window_ms,
            approval: self.approval.clone(),
            analysis: self.analysis.clone(),
            queue: false,
            control: Default::default(),
        }
    }

    /// Checks the settings as a deploy request of them would be checked; errors name the
    /// field under `prefix`.
    fn validate(&self, prefix: &str) -> Result<()> {
        let probe = self.request("probe", &probe_artifact(), &Target::local("probe"), "release", false);
        probe.validate().map_err(|Error::Invalid { field, rule }| Error::invalid(format!("{prefix}.{field}"), rule))
    }
}

/// A build for checking deploy settings without a service (no digest is looked up).
fn probe_artifact() -> Artifact {
    Artifact { digest: Digest::from_sha256_bytes(&[0; 32]), git_sha: String::new(), version: String::new() }
}

impl ReleaseRequest {
    /// Checks the whole request; the first broken rule is returned, naming its field.
    pub fn validate(&self) -> Result<()> {
        self.pipeline.validate()?;
        check_principal("deployer", &self.deployer)?;
        for (i, stage) in self.pipeline.stages.iter().enumerate() {
            if let Some(approval) = &stage.approval {
                approval.validate(&format!("pipeline.stages[{i}].approval"), Some(&self.deployer))?;
            }
        }
        if self.services.is_empty() {
            return Err(Error::invalid("services", "must not be empty"));
        }
        check_count("services", self.services.len(), MAX_ITEMS)?;
        let mut names = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            check_name(&format!("services[{i}].service"), &s.service)?;
            s.artifact.validate(&format!("services[{i}].artifact"))?;
            if !names.insert(s.service.as_str()) {
                return Err(Error::invalid(format!("services[{i}].service"), format!("service {} is listed twice", s.service)));
            }
        }
        for (i, stage) in self.pipeline.stages.iter().enumerate() {
            for (j, t) in stage.targets.iter().enumerate() {
                if let Some((k, unknown)) = t.services.iter().enumerate().find(|(_, s)| !names.contains(s.as_str())) {
                    return Err(Error::invalid(format!("pipeline.stages[{i}].targets[{j}].services[{k}]"), format!("{unknown} is not a service of this release")));
                }
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            for (j, d) in s.depends_on.iter().enumerate() {
                if !names.contains(d.as_str()) {
                    return Err(Error::invalid(format!("services[{i}].depends_on[{j}]"), format!("{d} is not a service of this release")));
                }
                if *d == s.service {
                    return Err(Error::invalid(format!("services[{i}].depends_on[{j}]"), "a service cannot depend on itself"));
                }
            }
        }
        self.waves().map(|_| ())
    }

    /// The services in topological waves: each wave's services depend only on earlier
    /// waves'. Within a wave, the release's order. A cycle is refused, naming it.
    pub fn waves(&self) -> Result<Vec<Vec<usize>>> {
        let index: BTreeMap<&str, usize> = self.services.iter().enumerate().map(|(i, s)| (s.service.as_str(), i)).collect();
        let needs: Vec<Vec<usize>> =
            self.services.iter().map(|s| s.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect()).collect();
        let mut wave_of: Vec<Option<usize>> = vec![None; self.services.len()];
        let mut waves: Vec<Vec<usize>> = Vec::new();
        while wave_of.iter().any(Option::is_none) {
            let ready: Vec<usize> = (0..self.services.len())
                .filter(|&i| wave_of[i].is_none() && needs[i].iter().all(|&d| wave_of[d].is_some_and(|w| w < waves.len())))
                .collect();
            if ready.is_empty() {
                let stuck = (0..self.services.len()).find(|&i| wave_of[i].is_none()).unwrap_or(0);
                return Err(Error::invalid("services", format!("depends_on has a cycle: {}", self.cycle_from(stuck, &needs, &wave_of))));
            }
            for &i in &ready {
                wave_of[i] = Some(waves.len());
            }
            waves.push(ready);
        }
        Ok(waves)
    }

    /// A cycle among the services not yet placed, followed from `start`: `a -> b -> a`.
    fn cycle_from(&self, start: usize, needs: &[Vec<usize>], placed: &[Option<usize>]) -> String {
        let mut path = vec![start];
        let mut at = start;
        // Every unplaced service needs another unplaced one, or it would have been placed.
        while let Some(&next) = needs[at].iter().find(|&&d| placed[d].is_none()) {
            if let Some(k) = path.iter().position(|&p| p == next) {
                let names: Vec<&str> = path[k..].iter().chain([&next]).map(|&i| self.services[i].service.as_str()).collect();
                return names.join(" -> ");
            }
            path.push(next);
            at = next;
        }
        self.services[start].service.clone()
    }
}

/// The release's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleasePhase {
    /// Checking that every target exists and every build is in the store and not
    /// quarantined, before anything starts.
    Checking,
    /// Deploying the current stage's targets.
    Deploying,
    /// The current stage's deploys succeeded; it soaks before the next stage (`soak_until`).
    Soaking,
    /// The current stage waits for its approvers (its `gate`).
    AwaitingApproval,
    /// Aborted: the deploys in flight are being stopped (they roll back).
    Stopping,
    /// Every stage passed: every target runs the release's builds.
    Succeeded,
    /// A deploy failed or was refused, or the release was refused before it started
    /// (`reason`); no later stage started.
    Failed,
    /// Aborted by an operator (`reason`); no later stage started.
    Aborted,
    /// Undoing what succeeded, after a failure or an abort (`on_failure: roll_back`).
    RollingBack,
    /// A deploy failed or the release was aborted (`reason`), and every deploy of it that
    /// had succeeded was rolled back: every target runs what it ran before.
    RolledBack,
}

impl ReleasePhase {
    /// Whether the release has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted | Self::RolledBack)
    }
}

/// Where one stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagePhase {
    /// Not started: an earlier stage is under way, or promotion stopped before it.
    Waiting,
    /// Its approval gate is open: nothing of it started.
    AwaitingApproval,
    /// Its deploys are running.
    Deploying,
    /// Its deploys succeeded; it soaks.
    Soaking,
    /// Its deploys succeeded and its soak ended.
    Passed,
    /// One of its deploys failed, or its gate expired; its other deploys were stopped.
    Failed,
    /// The release was aborted while the stage was under way; its deploys were stopped.
    Aborted,
}

/// Where one deploy of a release stands, as its release sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployState {
    /// Not started yet.
    Waiting,
    /// Started; its own `status` query says where it is.
    Running,
    /// Every instance runs the new build.
    Succeeded,
    /// It was undone (a bad verdict, a failed step, or stopped by its release).
    RolledBack,
    /// It could not start, or not be undone cleanly.
    Failed,
}

/// One deploy of a release: a service on a target of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDeploy {
    /// The service.
    pub service: String,
    /// The target.
    pub target: Target,
    /// The deploy's workflow id (also before it starts: the id it will have).
    pub deploy_id: String,
    /// Where it stands.
    pub state: DeployState,
    /// Why it ended as it did, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where one stage of a release stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStatus {
    /// The stage's name.
    pub name: String,
    /// Where it stands.
    pub phase: StagePhase,
    /// While it soaks: when the soak ends (workflow time); a regression moves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<DateTime<Utc>>,
    /// How many times a health regression restarted its soak.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub soak_restarts: u32,
    /// The last regression seen while it soaked, in words with the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_regression: Option<String>,
    /// Its approval gate, once opened: who approved, when it expires, how it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// While its gate is open: whom it waits for, e.g. `1 more approval from bob, ci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaits: Option<String>,
    /// The emergency bypass granted to it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<StageBypass>,
    /// Its deploys: each service on each of its targets, in the order they start.
    pub deploys: Vec<ReleaseDeploy>,
}

/// A release's status: the answer to its `status` query and the workflow's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    /// The pipeline.
    pub pipeline: String,
    /// Where the release stands.
    pub phase: ReleasePhase,
    /// The stage under way (the last one started, once the release ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageStatus>,
    /// Why the release failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The builds this release quarantined: a deploy of theirs failed its verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Digest>,
    /// Who steered the release (approvals, bypasses, the abort), when and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
    /// The field the world refused before anything started (an unknown target, a build not in
    /// the store or quarantined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<crate::InvalidField>,
}

impl ReleaseStatus {
    /// A release of `req` before its first stage: every stage waiting, with the deploys it
    /// will run (`deploy_id` names each one's id), services in topological waves.
    pub fn planned(req: &ReleaseRequest, waves: &[Vec<usize>], deploy_id: impl Fn(&str, &Target) -> String) -> Self {
        let stages = req
            .pipeline
            .stages
            .iter()
            .map(|stage| StageStatus {
                name: stage.name.clone(),
                phase: StagePhase::Waiting,
                soak_until: None,
                soak_restarts: 0,
                last_regression: None,
                gate: None,
                awaits: None,
                bypass: None,
                deploys: waves
                    .iter()
                    .flatten()
                    .flat_map(|&i| {
                        let service = &req.services[i].service;
                        stage.targets.iter().filter(|t| t.deploys(service)).map(|t| ReleaseDeploy {
                            service: service.clone(),
                            target: t.target.clone(),
                            deploy_id: deploy_id(service, &t.target),
                            state: DeployState::Waiting,
                            reason: None,
                        })
                    })
                    .collect(),
            })
            .collect();
        Self { pipeline: req.pipeline.name.clone(), phase: ReleasePhase::Deploying, stage: None, stages, reason: None, quarantined: Vec::new(), audit: Vec::new(), invalid: None }
    }

    /// A release refused before it started.
    pub fn refused(pipeline: &str, reason: String) -> Self {
        Self { pipeline: pipeline.to_owned(), phase: ReleasePhase::Failed, stage: None, stages: Vec::new(), reason: Some(reason), quarantined: Vec::new(), audit: Vec::new(), invalid: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, instances: u32) -> StageTarget {
        StageTarget { target: Target::local(name), instances, deploy: DeploySettings::default(), services: vec![] }
    }

    fn stage(name: &str, targets: Vec<StageTarget>) -> Stage {
        Stage { name: name.into(), targets, max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None }
    }

    fn pipeline(stages: Vec<Stage>) -> Pipeline {
        Pipeline { name: "web".into(), stages, blast_radius_percent: None, on_failure: OnFailure::Keep }
    }

    fn service(name: &str, depends_on: &[&str]) -> ServiceBuild {
        ServiceBuild { service: name.into(), artifact: probe_artifact(), depends_on: depends_on.iter().map(|d| d.to_string()).collect() }
    }

    fn release(services: Vec<ServiceBuild>) -> ReleaseRequest {
        ReleaseRequest {
            pipeline: pipeline(vec![stage("test", vec![target("test", 4)]), stage("production", vec![target("prod", 40)])]),
            services,
            deployer: "alice".into(),
            dry_run: false,
            control: Default::default(),
        }
    }

    fn refusal(r: Result<()>) -> (String, String) {
        match r {
            Err(Error::Invalid { field, rule }) => (field, rule),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_pipeline_file_reads_with_defaults_and_refuses_unknown_fields() {
        let p: Pipeline = serde_json::from_str(
            r#"{"name": "web", "stages": [{"name": "test", "targets": [{"target": {"name": "test"}, "instances": 4}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.stages[0].max_parallel, 1);
        assert_eq!(p.stages[0].targets[0].deploy.rollback_window_ms, 0, "a release's deploys end when they succeed");
        p.validate().unwrap();
        let typo = r#"{"name": "web", "stages": [{"name": "test", "soak": 5, "targets": []}]}"#;
        let e = serde_json::from_str::<Pipeline>(typo).unwrap_err().to_string();
        assert!(e.contains("unknown field `soak`"), "{e}");
    }

    #[test]
    fn an_empty_stage_a_repeated_target_and_a_repeated_stage_are_refused_by_field() {
        let empty = pipeline(vec![stage("test", vec![target("test", 4)]), stage("production", vec![])]);
        assert_eq!(refusal(empty.validate()), ("pipeline.stages[1].targets".into(), "must not be empty".into()));
        let twice = pipeline(vec![stage("test", vec![target("test", 4)]), stage("production", vec![target("test", 4)])]);
        let (field, rule) = refusal(twice.validate());
        assert_eq!(field, "pipeline.stages[1].targets[0].target");
        assert!(rule.contains("already a target of stage test"), "{rule}");
        let again = pipeline(vec![stage("test", vec![target("a", 4)]), stage("test", vec![target("b", 4)])]);
        assert_eq!(refusal(again.validate()).0, "pipeline.stages[1].name");
        assert_eq!(refusal(pipeline(vec![]).validate()).0, "pipeline.stages");
    }

    #[test]
    fn a_target_deploy_setting_is_checked_under_its_path() {
        let mut p = pipeline(vec![stage("test", vec![target("test", 4)])]);
        p.stages[0].targets[0].deploy.batch_plan.steps.clear();
        assert_eq!(refusal(p.validate()), ("pipeline.stages[0].targets[0].deploy.batch_plan.steps".into(), "must not be empty".into()));
    }

    #[test]
    fn the_blast_radius_counts_the_first_stages_first_batches_run_at_once() {
        // A canary region of 10 of 100 instances, first batch 10%: 1 instance (1%).
        let mut p = pipeline(vec![stage("canary", vec![target("canary", 10)]), stage("rest", vec![target("eu", 45), target("us", 45)])]);
        p.blast_radius_percent = Some(10.0);
        p.validate().unwrap();
        assert_eq!(p.unproven(), ("canary", 1));
        // The same region deployed in one step: 10 of 100 is within 10%, 11 of 100 is not.
        p.stages[0].targets[0].deploy.batch_plan.steps = vec![BatchStep::Percent(100.0)];
        p.validate().unwrap();
        p.stages[0].targets[0].instances = 11;
        p.stages[1].targets[0].instances = 44;
        let (field, rule) = refusal(p.validate());
        assert_eq!(field, "pipeline.blast_radius_percent");
        assert!(rule.contains("stage canary") && rule.contains("11 of 100 instances"), "{rule}");
        // Two targets at once in the first stage add up.
        let mut wide = pipeline(vec![stage("first", vec![target("a", 50), target("b", 50)])]);
        wide.stages[0].max_parallel = 2;
        wide.stages[0].targets.iter_mut().for_each(|t| t.deploy.batch_plan.steps = vec![BatchStep::Count(4), BatchStep::Percent(100.0)]);
        assert_eq!(wide.unproven(), ("first", 8));
        wide.blast_radius_percent = Some(5.0);
        assert!(refusal(wide.validate()).1.contains("8.0% of the fleet"));
    }

    #[test]
    fn services_deploy_in_topological_waves_and_a_cycle_is_named() {
        let r = release(vec![service("c", &["b"]), service("a", &[]), service("b", &["a"])]);
        r.validate().unwrap();
        assert_eq!(r.waves().unwrap(), vec![vec![1], vec![2], vec![0]]);
        let parallel = release(vec![service("a", &[]), service("b", &[]), service("c", &["a", "b"])]);
        assert_eq!(parallel.waves().unwrap(), vec![vec![0, 1], vec![2]]);
        let cycle = release(vec![service("a", &["c"]), service("b", &["a"]), service("c", &["b"]), service("d", &[])]);
        let (field, rule) = refusal(cycle.validate());
        assert_eq!(field, "services");
        assert_eq!(rule, "depends_on has a cycle: a -> c -> b -> a");
        let unknown = release(vec![service("a", &["x"])]);
        assert_eq!(refusal(unknown.validate()).0, "services[0].depends_on[0]");
        let own = release(vec![service("a", &["a"])]);
        assert_eq!(refusal(own.validate()).1, "a service cannot depend on itself");
        let twice = release(vec![service("a", &[]), service("a", &[])]);
        assert_eq!(refusal(twice.validate()).0, "services[1].service");
    }

    #[test]
    fn a_stage_analysis_is_checked_under_its_path() {
        let mut r = release(vec![service("a", &[])]);
        r.pipeline.stages[1].analysis = Some(HealthPolicy { samples: 2, ..HealthPolicy::default() });
        assert_eq!(refusal(r.validate()).0, "pipeline.stages[1].analysis.samples");
    }

    #[test]
    fn a_target_naming_its_services_gets_only_their_deploys() {
        let mut r = release(vec![service("a", &[]), service("b", &["a"])]);
        r.pipeline.stages[0].targets = vec![StageTarget { services: vec!["b".into()], ..target("tb", 2) }, StageTarget { services: vec!["a".into()], ..target("ta", 2) }];
        r.validate().unwrap();
        let planned = ReleaseStatus::planned(&r, &r.waves().unwrap(), |s, t| format!("{s}@{t}"));
        let ids: Vec<&str> = planned.stages[0].deploys.iter().map(|d| d.deploy_id.as_str()).collect();
        assert_eq!(ids, ["a@local/ta", "b@local/tb"], "services in waves, each on its own target");
        r.pipeline.stages[0].targets[0].services = vec!["x".into()];
        assert_eq!(refusal(r.validate()), ("pipeline.stages[0].targets[0].services[0]".into(), "x is not a service of this release".into()));
        r.pipeline.stages[0].targets[0].services = vec!["a".into(), "a".into()];
        assert_eq!(refusal(r.validate()), ("pipeline.stages[0].targets[0].services[1]".into(), "a is named twice".into()));
    }

    #[test]
    fn a_stage_targets_deploy_is_a_whole_deploy_request() {
        let settings = DeploySettings { bake_ms: 500, ..DeploySettings::default() };
        let req = settings.request("checkout", &probe_artifact(), &Target::local("test"), "alice", true);
        req.validate().unwrap();
        assert_eq!((req.service.as_str(), req.bake_ms, req.dry_run, req.rollback_window_ms), ("checkout", 500, true, 0));
    }
}
