//! `ReleaseWorkflow` (`signalbox.release`): services promoted through a pipeline's stages.
//!
//! The run: read and check the request (failing, naming the field, when it cannot be read or
//! breaks a rule: an empty stage, a cycle, the blast-radius budget) -> for each stage in
//! order, its deploys as child deploy workflows (services in topological waves, at most
//! `max_parallel` at once) -> when all succeeded, the stage's soak (a durable timer) -> the
//! next stage. A deploy that does not succeed stops promotion: the stage's deploys still in
//! flight are cancelled (they roll back, as an abort does), no later deploy starts, and the
//! release ends `Failed` with the reason. A deploy that failed its verdict quarantines its
//! build: no later deploy or release of it starts until someone lifts the quarantine.
//!
//! Operators steer it with updates: `approve` counts towards the open stage gate (a stage with
//! an approval waits for it before its deploys start); `bypass` skips a stage's gate and soak
//! (and, with `override_failed_verdict`, its deploys' health judgements, by bypassing each of
//! them); `abort` stops promotion as a failure does, and the release ends `Aborted`.
//!
//! History stays small: the parent records one child per deploy and summaries only; each
//! deploy's steps are in its own history.

use std::collections::{BTreeSet, VecDeque};
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::FusedFuture;
use signalbox_contract::activities::{BypassDeploys, CheckRelease, QuarantineArtifact, QuarantineInput, RollBackDeploys, SampleTargets, SteerDeploysInput, TargetHealthInput};
use signalbox_contract::deploy::DeployRun;
use signalbox_contract::release::{AbortRelease, ApproveStage, BypassRelease, DeploySucceeded, ReleaseRun, ReleaseStatusQuery, release_deploy_id};
use signalbox_contract::{Received, search};
use signalbox_domain::analysis::Decision;
use signalbox_domain::approval::{self, ApprovalPolicy, Gate, GateOutcome};
use signalbox_domain::control::{Action, AuditEntry, SYSTEM, timestamp};
use signalbox_domain::release_control::{self, BypassStage, StageBypass};
use signalbox_domain::{Approve, Command, DeployState, DeployStatus, Digest, GroupFigures, HealthPolicy, OnExpiry, OnFailure, Phase, Stage, ReleaseDeploy, ReleasePhase, ReleaseRequest, ReleaseStatus, StagePhase};
use temporalio_common::error::ChildWorkflowExecutionError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{
    CancellableFuture, ChildWorkflowOptions, ParentClosePolicy, SyncWorkflowContext, TimerOptions, TimerResult, WaitConditionOptions, WorkflowCancellationToken, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

use crate::shared::options::{detached, long, quick};
use crate::shared::stop::{failure_message, invalid_field, refuse};

/// A release: its status is the whole tree, kept as the run goes.
#[workflow]
pub struct ReleaseWorkflow {
    status: ReleaseStatus,
    /// Who started it (the approvers' rules need it).
    deployer: String,
    /// Each stage's approval rules, in pipeline order.
    approvals: Vec<Option<ApprovalPolicy>>,
    /// The abort, once accepted.
    abort: Option<Command>,
    /// The deploys the bypass of their stage's verdicts was sent to.
    bypassed_deploys: BTreeSet<String>,
    /// The deploys that said they succeeded and hold their rollback window open.
    succeeded: BTreeSet<String>,
    /// The last workflow time the run saw: validators have no clock.
    clock: DateTime<Utc>,
}

impl Default for ReleaseWorkflow {
    fn default() -> Self {
        Self {
            status: ReleaseStatus { phase: ReleasePhase::Deploying, reason: None, ..ReleaseStatus::refused("", String::new()) },
            deployer: String::new(),
            approvals: Vec::new(),
            abort: None,
            bypassed_deploys: BTreeSet::new(),
            succeeded: BTreeSet::new(),
            clock: DateTime::UNIX_EPOCH,
        }
    }
}

type Validation = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A child deploy's result.
type Outcome = Pin<Box<dyn CancellableFuture<Output = Result<DeployStatus, ChildWorkflowExecutionError>>>>;

/// A deploy of the release in flight: its place in the stage's list, and its result.
type InFlight = (usize, Outcome);

/// A deploy that succeeded and holds its rollback window open: its stage, its place in the
/// stage's list, and its result (which comes when the window closes).
type Held = (usize, usize, Outcome);

/// How long a release holds its deploys' rollback windows open when its pipeline rolls back
/// on failure: the longest window a deploy may have; the release closes them when it ends.
const HOLD_MS: u64 = signalbox_domain::bounds::MAX_ROLLBACK_WINDOW_MS;

#[workflow_methods]
impl ReleaseWorkflow {
    /// Runs the release; returns its final status (`Succeeded`, or `Failed` with the reason).
    #[run(name = ReleaseRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: Received<ReleaseRequest>) -> WorkflowResult<ReleaseStatus> {
        let read = input.into_result().map_err(|e| e.to_string());
        let req = match read.and_then(|r| r.validate().map(|()| r).map_err(|e| e.to_string())) {
            Ok(req) => req,
            Err(reason) => {
                ctx.state_mut(|s| s.status = ReleaseStatus::refused(&s.status.pipeline, reason.clone()));
                return Err(refuse(reason));
            }
        };
        let waves = req.waves().map_err(|e| refuse(e.to_string()))?;
        let id = ctx.workflow_id().to_owned();
        let now = timestamp(ctx.workflow_time());
        ctx.state_mut(|s| {
            s.status = ReleaseStatus::planned(&req, &waves, |service, target| release_deploy_id(&id, service, target));
            s.deployer = req.deployer.clone();
            s.approvals = req.pipeline.stages.iter().map(|st| st.approval.as_ref().map(|a| a.policy())).collect();
            s.clock = now;
        });
        // The world before anything starts: unknown targets, builds not pushed or quarantined.
        if ctx.patched(CHECK_PATCH) {
            ctx.state_mut(|s| s.status.phase = ReleasePhase::Checking);
            if let Err(e) = ctx.execute_activity(CheckRelease, req.clone(), quick("check the targets and builds")).await {
                let reason = failure_message(&e);
                ctx.state_mut(|s| {
                    s.status.phase = ReleasePhase::Failed;
                    s.status.reason = Some(reason);
                    s.status.invalid = invalid_field(&e);
                });
                return Ok(ctx.state(|s| s.status.clone()));
            }
        }
        let last = req.pipeline.stages.len() - 1;
        let mut held: Vec<Held> = Vec::new();
        for (si, stage) in req.pipeline.stages.iter().enumerate() {
            let now = timestamp(ctx.workflow_time());
            ctx.state_mut(|s| {
                s.clock = now;
                s.status.stage = Some(stage.name.clone());
                s.status.stages[si].phase = StagePhase::Deploying;
                if s.abort.is_none() {
                    s.status.phase = ReleasePhase::Deploying;
                }
                // A bypass granted ahead of its stage holds only if it has not expired by now.
                if s.status.stages[si].bypass.as_ref().is_some_and(|b| !b.holds(now)) {
                    s.status.stages[si].bypass = None;
                    let note = format!("the bypass of stage {} expired before the stage started", stage.name);
                    s.status.audit.push(AuditEntry::of(Action::Bypass, &Command::new(SYSTEM, note), now));
                }
            });
            if ctx.patched(STAGE_PATCH) {
                ctx.upsert_search_attributes([search::STAGE.value_set(stage.name.clone())]);
            }
            let mut outcome = Ok(());
            if let Some(policy) = ctx.state(|s| s.approvals[si].clone()) {
                outcome = gate(ctx, si, &policy).await;
            }
            // The stage's targets before their deploys: what its analysis and its soak compare with.
            let mut before = Vec::new();
            let soaks = stage.soak_ms > 0 && si < last;
            if outcome.is_ok() && (soaks || stage.analysis.is_some()) && !req.dry_run && ctx.patched(SOAK_WATCH_PATCH) {
                before = sample_targets(ctx, stage, "before its deploys").await.unwrap_or_default();
            }
            for wave in &waves {
                if outcome.is_err() {
                    break;
                }
                let services: Vec<&str> = wave.iter().map(|&i| req.services[i].service.as_str()).collect();
                let deploys: Vec<usize> =
                    ctx.state(|s| s.status.stages[si].deploys.iter().enumerate().filter(|(_, d)| services.contains(&d.service.as_str())).map(|(k, _)| k).collect());
                outcome = deploy_all(ctx, &req, si, deploys, &mut held).await;
            }
            if outcome.is_ok()
                && let Some(policy) = &stage.analysis
                && !before.is_empty()
            {
                outcome = analyse(ctx, &req, stage, policy, &before).await;
            }
            if outcome.is_ok() && soaks {
                outcome = soak(ctx, stage, si, &before).await;
            }
            if let Err(stop) = outcome {
                let reason = if stop.aborted { stop.reason } else { format!("stage {}: {}", stage.name, stop.reason) };
                let end = if stop.aborted { ReleasePhase::Aborted } else { ReleasePhase::Failed };
                let roll_back = req.pipeline.on_failure == OnFailure::RollBack && !held.is_empty();
                ctx.state_mut(|s| {
                    s.status.stages[si].phase = if stop.aborted { StagePhase::Aborted } else { StagePhase::Failed };
                    s.status.stages[si].soak_until = None;
                    s.status.phase = if roll_back { ReleasePhase::RollingBack } else { end };
                    s.status.reason = Some(reason.clone());
                });
                if let Some(service) = stop.failed_verdict
                    && let Some(build) = req.services.iter().find(|b| b.service == service)
                    && ctx.patched(QUARANTINE_PATCH)
                {
                    quarantine(ctx, &id, &build.artifact.digest, &reason, req.dry_run).await;
                }
                if roll_back {
                    roll_back_all(ctx, &waves, &req, held, &reason, end).await;
                } else {
                    close_windows(held).await;
                }
                return Ok(ctx.state(|s| s.status.clone()));
            }
            ctx.state_mut(|s| {
                s.status.stages[si].phase = StagePhase::Passed;
                s.status.stages[si].soak_until = None;
            });
        }
        close_windows(held).await;
        ctx.state_mut(|s| s.status.phase = ReleasePhase::Succeeded);
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// A deploy of the release succeeded with its rollback window open (ignored when its id
    /// cannot be read).
    #[signal(name = DeploySucceeded::NAME)]
    pub fn deploy_succeeded(&mut self, _ctx: &mut SyncWorkflowContext<Self>, id: Received<String>) {
        if let Ok(id) = id.into_result() {
            self.succeeded.insert(id);
        }
    }

    /// Where the release stands: every stage, and every deploy of every stage.
    #[query(name = ReleaseStatusQuery::NAME)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ReleaseStatus {
        self.status.clone()
    }

    #[update_validator(approve)]
    fn validate_approve(&self, _ctx: &WorkflowContextView, approve: &Approve) -> Validation {
        let open = self.status.stages.iter().position(|s| s.gate.as_ref().is_some_and(Gate::is_open));
        let Some(si) = open.filter(|_| !self.status.phase.is_final() && self.abort.is_none()) else {
            return Err("nothing awaits approval: no stage gate is open".into());
        };
        let gates: Vec<Gate> = self.status.stages[si].gate.iter().cloned().collect();
        let stage = approval::Gated::Release(&self.status.stages[si].name);
        Ok(approval::check_approve_of(stage, self.approvals[si].as_ref(), &self.deployer, &gates, approve)?)
    }

    /// Approves the open stage gate; quorum opens it and the stage's deploys start.
    #[update(name = ApproveStage::NAME)]
    pub fn approve(&mut self, ctx: &mut SyncWorkflowContext<Self>, approve: Approve) -> ReleaseStatus {
        let entry = AuditEntry::of(Action::Approve, &Command::new(approve.approver, approve.reason), timestamp(ctx.workflow_time()));
        if let Some(si) = self.status.stages.iter().position(|s| s.gate.as_ref().is_some_and(Gate::is_open))
            && let Some(policy) = &self.approvals[si]
        {
            let stage = &mut self.status.stages[si];
            if let Some(gate) = stage.gate.as_mut() {
                gate.approvals.push(entry.clone());
                stage.awaits = Some(approval::awaiting(policy, &self.deployer, gate));
            }
        }
        self.status.audit.push(entry);
        self.status.clone()
    }

    #[update_validator(bypass)]
    fn validate_bypass(&self, _ctx: &WorkflowContextView, bypass: &BypassStage) -> Validation {
        Ok(release_control::check_bypass(&self.status, bypass, self.clock)?)
    }

    /// Emergency bypass of a stage: its gate and its soak are skipped while it lasts; with
    /// `override_failed_verdict`, its deploys' health judgements too.
    #[update(name = BypassRelease::NAME)]
    pub fn bypass(&mut self, ctx: &mut SyncWorkflowContext<Self>, bypass: BypassStage) -> Result<ReleaseStatus, Box<dyn std::error::Error + Send + Sync>> {
        let now = timestamp(ctx.workflow_time());
        release_control::check_bypass(&self.status, &bypass, now)?;
        let si = release_control::bypassed_stage(&self.status, &bypass)?;
        let stage = &mut self.status.stages[si];
        let what = if bypass.override_failed_verdict { "bypass of the gate, soak and verdicts" } else { "bypass of the gate and soak" };
        let note = format!("{what} of stage {}: {}", stage.name, bypass.reason.trim());
        stage.bypass = Some(StageBypass {
            by: bypass.by.trim().to_owned(),
            reason: bypass.reason.trim().to_owned(),
            at: now,
            expires_at: signalbox_domain::control::after_ms(now, bypass.expiry_ms),
            override_failed_verdict: bypass.override_failed_verdict,
        });
        self.status.audit.push(AuditEntry::of(Action::Bypass, &Command::new(bypass.by, note), now));
        Ok(self.status.clone())
    }

    #[update_validator(abort)]
    fn validate_abort(&self, _ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        Ok(release_control::check_abort(&self.status, cmd)?)
    }

    /// Stops promotion: the deploys in flight are cancelled (they roll back), no later deploy
    /// or stage starts, and the release ends `Aborted` with reason `aborted by <who>: <why>`.
    #[update(name = AbortRelease::NAME)]
    pub fn abort(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> ReleaseStatus {
        let now = timestamp(ctx.workflow_time());
        self.status.phase = ReleasePhase::Stopping;
        self.status.reason = Some(signalbox_domain::control::aborted(&cmd));
        self.status.audit.push(AuditEntry::of(Action::Abort, &cmd, now));
        self.abort = Some(cmd);
        self.status.clone()
    }
}

impl ReleaseWorkflow {
    /// Whether stage `si` is bypassed.
    fn bypassed(&self, si: usize) -> bool {
        self.status.stages[si].bypass.is_some()
    }

    /// The deploys of stage `si` running under a bypass of its verdicts that was not sent to
    /// them yet.
    fn unbypassed(&self, si: usize) -> Vec<String> {
        let stage = &self.status.stages[si];
        if !stage.bypass.as_ref().is_some_and(|b| b.override_failed_verdict) {
            return Vec::new();
        }
        stage.deploys.iter().filter(|d| d.state == DeployState::Running && !self.bypassed_deploys.contains(&d.deploy_id)).map(|d| d.deploy_id.clone()).collect()
    }

    /// The stop an accepted abort makes.
    fn aborted(&self) -> Option<Stop> {
        self.abort.as_ref().map(|cmd| Stop { reason: signalbox_domain::control::aborted(cmd), failed_verdict: None, aborted: true })
    }
}

/// Patch id of the quarantine of a build that failed its verdict; runs recorded before
/// quarantined nothing.
const QUARANTINE_PATCH: &str = "signalbox-release-quarantine";

/// Patch id of the check of the targets and builds before anything starts; runs recorded
/// before found an unknown target or a quarantined build at its first deploy.
const CHECK_PATCH: &str = "signalbox-release-check";

/// Patch id of the `SignalboxStage` search attribute, set as the release reaches each stage.
const STAGE_PATCH: &str = "signalbox-release-stage-attribute";

/// Patch id of the soak's health watch: the stage's targets sampled before their deploys and
/// window after window while it soaks; runs recorded before soaked on a timer alone.
const SOAK_WATCH_PATCH: &str = "signalbox-release-soak-watch";

/// Why a stage stopped: the reason, the service whose deploy failed its verdict (its build
/// is bad, not the world around it) if one did, and whether an operator aborted.
struct Stop {
    reason: String,
    failed_verdict: Option<String>,
    aborted: bool,
}

impl Stop {
    fn failed(reason: String, failed_verdict: Option<String>) -> Self {
        Self { reason, failed_verdict, aborted: false }
    }
}

/// Waits that only operators' requests end: a cancelled release stops through its timers and
/// deploys, not by waking these over and over.
fn requests_only() -> WaitConditionOptions {
    WaitConditionOptions::builder().cancellation_token(WorkflowCancellationToken::new()).build()
}

/// Stage `si`'s approval gate: open until quorum, the bypass, an abort or its expiry, which
/// the policy decides (`abort` stops the release, `proceed` goes on).
async fn gate(ctx: &WorkflowContext<ReleaseWorkflow>, si: usize, policy: &ApprovalPolicy) -> Result<(), Stop> {
    if let Some(stop) = ctx.state(ReleaseWorkflow::aborted) {
        return Err(stop);
    }
    let now = timestamp(ctx.workflow_time());
    let name = ctx.state_mut(|s| {
        let stage = &mut s.status.stages[si];
        let mut gate = Gate::open(si as u32 + 1, now, policy);
        if stage.bypass.is_some() {
            gate.outcome = Some(GateOutcome::Bypassed);
        } else {
            stage.phase = StagePhase::AwaitingApproval;
            stage.awaits = Some(approval::awaiting(policy, &s.deployer, &gate));
            s.status.phase = ReleasePhase::AwaitingApproval;
        }
        stage.gate = Some(gate);
        stage.name.clone()
    });
    if ctx.state(|s| s.bypassed(si)) {
        return Ok(());
    }
    let expiry = TimerOptions::builder(Duration::from_millis(policy.expiry_ms)).summary(format!("approval of stage {name} expires")).build();
    let mut expiry = pin!(ctx.timer(expiry));
    let outcome = loop {
        let settled = |s: &ReleaseWorkflow, expired: bool| {
            let gate = s.status.stages[si].gate.as_ref()?;
            approval::settle(policy, gate, s.bypassed(si), s.abort.is_some(), expired)
        };
        select! {
            _ = ctx.wait_condition_with_options(|s: &ReleaseWorkflow| settled(s, false).is_some(), requests_only()) => {
                if let Some(outcome) = ctx.state(|s| settled(s, false)) {
                    expiry.cancel();
                    break outcome;
                }
            }
            fired = expiry.as_mut() => {
                let expired = fired != TimerResult::Cancelled;
                break ctx.state(|s| settled(s, expired)).unwrap_or(GateOutcome::Aborted);
            }
        }
    };
    let now = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| {
        s.clock = now;
        if let Some(gate) = s.status.stages[si].gate.as_mut() {
            gate.outcome = Some(outcome);
        }
        s.status.stages[si].awaits = None;
        s.status.stages[si].phase = StagePhase::Deploying;
        if s.abort.is_none() {
            s.status.phase = ReleasePhase::Deploying;
        }
        if let GateOutcome::Expired(then) = outcome {
            let what = match then {
                OnExpiry::Abort => "the release stops",
                OnExpiry::Proceed => "the stage proceeds",
            };
            let note = format!("the approval of stage {name} expired without quorum; {what}");
            s.status.audit.push(AuditEntry::of(Action::ApprovalExpired, &Command::new(SYSTEM, note), now));
        }
    });
    match outcome {
        GateOutcome::Approved | GateOutcome::Bypassed | GateOutcome::Expired(OnExpiry::Proceed) => Ok(()),
        GateOutcome::Expired(OnExpiry::Abort) => Err(Stop::failed(format!("its approval expired without quorum of {}", policy.quorum), None)),
        GateOutcome::Aborted => Err(ctx.state(ReleaseWorkflow::aborted).unwrap_or_else(|| Stop::failed("its approval gate was cancelled".into(), None))),
    }
}

/// One window of every target of `stage`, read at once; `None` when they could not be read
/// (the soak then goes on without that window).
async fn sample_targets(ctx: &WorkflowContext<ReleaseWorkflow>, stage: &Stage, what: &str) -> Option<Vec<GroupFigures>> {
    let input: Vec<TargetHealthInput> = stage.targets.iter().map(|t| TargetHealthInput { target: t.target.clone(), policy: t.deploy.health.clone() }).collect();
    let span = stage.targets.iter().map(|t| t.deploy.health.sample_interval_ms.saturating_mul(u64::from(t.deploy.health.consecutive_bad_samples))).max().unwrap_or(0);
    let options = long(format!("health of stage {} {what}", stage.name), Duration::from_millis(span));
    ctx.execute_activity(SampleTargets, input, options).await.ok()
}

/// The stage's own analysis: one window of its targets together against the same before
/// their deploys. A regression is a failed verdict of the stage (of its build, when the release
/// has one service); targets that could not be read leave it undecided, and the stage goes on.
async fn analyse(ctx: &WorkflowContext<ReleaseWorkflow>, req: &ReleaseRequest, stage: &Stage, policy: &HealthPolicy, before: &[GroupFigures]) -> Result<(), Stop> {
    let Some(now) = sample_targets(ctx, stage, "after its deploys, together").await else { return Ok(()) };
    match policy.regression(&GroupFigures::together(before), &GroupFigures::together(&now)) {
        None => Ok(()),
        Some(why) => {
            let build = (req.services.len() == 1).then(|| req.services[0].service.clone());
            Err(Stop::failed(format!("its analysis over its {} targets together failed: {why}", stage.targets.len()), build))
        }
    }
}

/// The first target of `stage` whose window `now` regressed from `before`, in words.
fn regressed(stage: &Stage, before: &[GroupFigures], now: &[GroupFigures]) -> Option<String> {
    stage.targets.iter().zip(before).zip(now).find_map(|((t, b), n)| t.deploy.health.regression(b, n).map(|why| format!("{}: {why}", t.target)))
}

/// Stage `si`'s soak: a durable timer, ended early by the stage's bypass; an abort stops it.
/// With `before` (the targets before their deploys), the targets are read window after window
/// while it soaks; a window that regressed from `before` by the gate's thresholds restarts the
/// soak, and one more restart than `max_soak_restarts` fails the stage.
async fn soak(ctx: &WorkflowContext<ReleaseWorkflow>, stage: &Stage, si: usize, before: &[GroupFigures]) -> Result<(), Stop> {
    if let Some(stop) = ctx.state(ReleaseWorkflow::aborted) {
        return Err(stop);
    }
    if ctx.state(|s| s.bypassed(si)) {
        return Ok(());
    }
    let watched = !before.is_empty();
    let mut restarts = 0;
    'soak: loop {
        let until = timestamp(ctx.workflow_time()) + chrono::Duration::milliseconds(stage.soak_ms as i64);
        ctx.state_mut(|s| {
            s.status.phase = ReleasePhase::Soaking;
            let st = &mut s.status.stages[si];
            st.phase = StagePhase::Soaking;
            st.soak_until = Some(until);
            st.soak_restarts = restarts;
        });
        let summary = match restarts {
            0 => format!("soak of stage {}", stage.name),
            n => format!("soak of stage {}, restart {n}", stage.name),
        };
        let mut timer = pin!(ctx.timer(TimerOptions::builder(Duration::from_millis(stage.soak_ms)).summary(summary).build()));
        loop {
            let mut window: Pin<Box<dyn FusedFuture<Output = Option<Vec<GroupFigures>>> + '_>> =
                if watched { Box::pin(sample_targets(ctx, stage, "while it soaks").fuse()) } else { Box::pin(futures::future::pending()) };
            select! {
                _ = timer.as_mut() => break 'soak,
                _ = ctx.wait_condition_with_options(|s: &ReleaseWorkflow| s.abort.is_some() || s.bypassed(si), requests_only()) => {
                    timer.cancel();
                    break 'soak;
                }
                now = window.as_mut() => {
                    let Some(why) = now.and_then(|now| regressed(stage, before, &now)) else { continue };
                    timer.cancel();
                    restarts += 1;
                    ctx.state_mut(|s| s.status.stages[si].last_regression = Some(why.clone()));
                    if restarts > stage.max_soak_restarts {
                        return Err(Stop::failed(format!("its health regressed during the soak {restarts} times; the last: {why}"), None));
                    }
                    continue 'soak;
                }
            }
        }
    }
    ctx.state(ReleaseWorkflow::aborted).map_or(Ok(()), Err)
}

/// Quarantines `digest`, which a deploy of the release `id` caught failing. A store that cannot
/// be written after the retries leaves the build out of quarantine, and the release says so.
async fn quarantine(ctx: &WorkflowContext<ReleaseWorkflow>, id: &str, digest: &Digest, reason: &str, dry_run: bool) {
    let input = QuarantineInput { digest: digest.clone(), by: id.to_owned(), reason: reason.to_owned(), at: timestamp(ctx.workflow_time()), dry_run };
    // Detached: a release cancelled while it stops still quarantines what it caught.
    match ctx.execute_activity(QuarantineArtifact, input, detached(format!("quarantine {}", digest.short()))).await {
        Ok(_) if !dry_run => ctx.state_mut(|s| s.status.quarantined.push(digest.clone())),
        Ok(_) => {}
        Err(e) => ctx.state_mut(|s| s.status.reason = Some(format!("{}; the build could not be quarantined: {e}", s.status.reason.clone().unwrap_or_default()))),
    }
}

/// Runs the deploys `deploys` (places in stage `si`'s list) as child workflows, at most the
/// stage's `max_parallel` at once, until all succeeded. The first that does not stops the
/// rest: those in flight are stopped and awaited (they roll back), those not started never
/// start; why is returned. A deploy that succeeded with its rollback window open joins `held`.
///
/// Deploys in flight are stopped by cancelling them, or, when the pipeline rolls back on
/// failure, by asking each for a rollback: one that succeeds in the same moment is then still
/// rolled back, where a cancellation would close its window and leave it on the new build.
async fn deploy_all(ctx: &WorkflowContext<ReleaseWorkflow>, req: &ReleaseRequest, si: usize, deploys: Vec<usize>, held: &mut Vec<Held>) -> Result<(), Stop> {
    let stage = &req.pipeline.stages[si];
    let roll_back = req.pipeline.on_failure == OnFailure::RollBack;
    let mut waiting: VecDeque<usize> = deploys.into();
    let mut running: Vec<InFlight> = Vec::new();
    let mut failure: Option<Stop> = ctx.state(ReleaseWorkflow::aborted);
    let mut stopped: BTreeSet<String> = BTreeSet::new();
    loop {
        while failure.is_none()
            && running.len() < stage.max_parallel as usize
            && let Some(k) = waiting.pop_front()
        {
            let d = ctx.state(|s| s.status.stages[si].deploys[k].clone());
            let Some(target) = stage.targets.iter().find(|t| t.target == d.target) else { continue };
            let Some(build) = req.services.iter().find(|b| b.service == d.service) else { continue };
            let mut deploy = target.deploy.request(&build.service, &build.artifact, &target.target, &req.deployer, req.dry_run);
            if roll_back {
                deploy.rollback_window_ms = deploy.rollback_window_ms.max(HOLD_MS);
            }
            let options = ChildWorkflowOptions::builder()
                .workflow_id(d.deploy_id.clone())
                // A release that is cancelled or terminated stops its deploys; they roll back.
                .parent_close_policy(ParentClosePolicy::RequestCancel)
                .static_summary(format!("{} on {}, stage {}", d.service, d.target, stage.name))
                // Found in the UI and by `deploy list` like a deploy started on its own.
                .search_attributes(search::release_deploy(&deploy, ctx.workflow_id(), &req.pipeline.name, &stage.name))
                .build();
            match ctx.start_child_workflow(DeployRun, deploy, options).await {
                Ok(started) => {
                    ctx.state_mut(|s| s.status.stages[si].deploys[k].state = DeployState::Running);
                    running.push((k, Box::pin(started.result())));
                }
                Err(e) => {
                    let reason = format!("deploy {} could not start: {e}", d.deploy_id);
                    ended(ctx, si, k, DeployState::Failed, Some(reason.clone()));
                    failure = Some(Stop::failed(reason, None));
                }
            }
        }
        // Those that succeeded go on holding their window; the stage no longer waits for them.
        let (done, still): (Vec<InFlight>, Vec<InFlight>) = running.into_iter().partition(|(k, _)| {
            ctx.state(|s| s.succeeded.contains(&s.status.stages[si].deploys[*k].deploy_id))
        });
        running = still;
        for (k, result) in done {
            ended(ctx, si, k, DeployState::Succeeded, None);
            held.push((si, k, result));
        }
        if running.is_empty() {
            break;
        }
        if let Some(stop) = &failure {
            if roll_back {
                let ids: Vec<String> = running.iter().map(|(k, _)| ctx.state(|s| s.status.stages[si].deploys[*k].deploy_id.clone())).filter(|id| !stopped.contains(id)).collect();
                if !ids.is_empty() {
                    let command = Command::new(SYSTEM, format!("release {} stops: {}", ctx.workflow_id(), stop.reason));
                    let input = SteerDeploysInput { deploys: ids.clone(), command };
                    let _ = ctx.execute_activity(RollBackDeploys, input, detached(format!("stop the deploys of stage {} in flight", stage.name))).await;
                    stopped.extend(ids);
                }
            } else {
                // Cancelling twice is harmless: the SDK sends one request per child.
                for (_, result) in &running {
                    result.cancel();
                }
            }
        }
        let unbypassed = ctx.state(|s| s.unbypassed(si));
        if failure.is_none() && !unbypassed.is_empty() {
            let command = ctx.state(|s| s.status.stages[si].bypass.as_ref().map(|b| b.command(&stage.name))).unwrap_or_default();
            let input = SteerDeploysInput { deploys: unbypassed.clone(), command };
            // Whatever the answer, each deploy is sent the bypass once: one that refused it had
            // ended or was bypassed already.
            let _ = ctx.execute_activity(BypassDeploys, input, quick(format!("bypass the verdicts of stage {}", stage.name))).await;
            ctx.state_mut(|s| s.bypassed_deploys.extend(unbypassed));
            continue;
        }
        let stopping = failure.is_some();
        let woke = {
            let ids: Vec<String> = running.iter().map(|(k, _)| ctx.state(|s| s.status.stages[si].deploys[*k].deploy_id.clone())).collect();
            let steer = move |s: &ReleaseWorkflow| (!stopping && (s.abort.is_some() || !s.unbypassed(si).is_empty())) || ids.iter().any(|id| s.succeeded.contains(id));
            let mut steer = pin!(ctx.wait_condition_with_options(steer, requests_only()));
            poll_fn(|cx| {
                for (at, (_, result)) in running.iter_mut().enumerate() {
                    if let Poll::Ready(outcome) = result.as_mut().poll(cx) {
                        return Poll::Ready(Some((at, outcome)));
                    }
                }
                match steer.as_mut().poll(cx) {
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        let Some((at, outcome)) = woke else {
            if failure.is_none() {
                failure = ctx.state(ReleaseWorkflow::aborted);
            }
            continue;
        };
        let (k, _) = running.remove(at);
        let verdict_failed = matches!(&outcome, Ok(status)
            if status.last_analysis.as_ref().is_some_and(|a| a.decision == Decision::Fail) || status.last_verdict.as_ref().is_some_and(|v| v.verdict == Decision::Fail));
        let (state, reason) = match outcome {
            Ok(status) if status.phase == Phase::Succeeded => (DeployState::Succeeded, None),
            Ok(status) if status.phase == Phase::RolledBack => (DeployState::RolledBack, status.reason),
            Ok(status) => (DeployState::Failed, status.reason),
            Err(e) => (DeployState::Failed, Some(child_failure(&e))),
        };
        ended(ctx, si, k, state, reason.clone());
        if state != DeployState::Succeeded && failure.is_none() {
            let d = ctx.state(|s| s.status.stages[si].deploys[k].clone());
            failure = Some(Stop::failed(describe(&d, state, reason.as_deref()), verdict_failed.then(|| d.service.clone())));
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Ends the rollback windows the release held open: each deploy is cancelled in its window,
/// which closes it, and stays `Succeeded`.
async fn close_windows(held: Vec<Held>) {
    for (_, _, result) in &held {
        result.cancel();
    }
    for (_, _, result) in held {
        let _ = result.await;
    }
}

/// The joint rollback of every deploy that succeeded (`held`), after the release failed for
/// `reason`: the services of the last topological wave first (dependents before what they
/// depend on), within a wave the later stages first, each group at once and awaited before
/// the next. The release ends `RolledBack`, or `end` with the deploys that could not be
/// rolled back named.
async fn roll_back_all(ctx: &WorkflowContext<ReleaseWorkflow>, waves: &[Vec<usize>], req: &ReleaseRequest, mut held: Vec<Held>, reason: &str, end: ReleasePhase) {
    let command = Command::new(SYSTEM, format!("release {} rolls back: {reason}", ctx.workflow_id()));
    let mut refused: Vec<String> = Vec::new();
    for wave in waves.iter().rev() {
        let services: Vec<&str> = wave.iter().map(|&i| req.services[i].service.as_str()).collect();
        for si in (0..req.pipeline.stages.len()).rev() {
            let (group, rest): (Vec<Held>, Vec<Held>) =
                held.into_iter().partition(|(at, k, _)| *at == si && ctx.state(|s| services.contains(&s.status.stages[si].deploys[*k].service.as_str())));
            held = rest;
            if group.is_empty() {
                continue;
            }
            let ids: Vec<String> = group.iter().map(|(_, k, _)| ctx.state(|s| s.status.stages[si].deploys[*k].deploy_id.clone())).collect();
            let input = SteerDeploysInput { deploys: ids.clone(), command: command.clone() };
            let summary = format!("roll back {} in stage {}", services.join(", "), req.pipeline.stages[si].name);
            let answers = match ctx.execute_activity(RollBackDeploys, input, detached(summary)).await {
                Ok(answers) => answers,
                Err(e) => ids.iter().map(|id| (id.clone(), Some(format!("the rollback could not be asked for: {e}")))).collect(),
            };
            for (_, k, result) in &group {
                let id = ctx.state(|s| s.status.stages[si].deploys[*k].deploy_id.clone());
                if let Some(Some(why)) = answers.get(&id) {
                    refused.push(format!("{id}: {why}"));
                    // Its window is closed instead: nothing is left waiting on it.
                    result.cancel();
                }
            }
            for (_, k, result) in group {
                let state = match result.await {
                    Ok(status) if status.phase == Phase::RolledBack => (DeployState::RolledBack, status.reason),
                    Ok(status) if status.phase == Phase::Succeeded => (DeployState::Succeeded, None),
                    Ok(status) => (DeployState::Failed, status.reason),
                    Err(e) => (DeployState::Failed, Some(child_failure(&e))),
                };
                ended(ctx, si, k, state.0, state.1);
            }
        }
    }
    ctx.state_mut(|s| {
        if refused.is_empty() {
            s.status.phase = ReleasePhase::RolledBack;
        } else {
            s.status.phase = end;
            s.status.reason = Some(format!("{reason}; not rolled back: {}", refused.join("; ")));
        }
    });
}

/// Why a child deploy failed: the innermost cause (the deploy's own refusal, e.g. a quarantined
/// build), not the wrapper Temporal adds around a child's failure.
fn child_failure(e: &ChildWorkflowExecutionError) -> String {
    let Some(mut failure) = e.failure() else { return e.to_string() };
    while let Some(cause) = failure.cause.as_deref() {
        failure = cause;
    }
    failure.message.clone()
}

/// Records how deploy `k` of stage `si` ended.
fn ended(ctx: &WorkflowContext<ReleaseWorkflow>, si: usize, k: usize, state: DeployState, reason: Option<String>) {
    ctx.state_mut(|s| {
        let d = &mut s.status.stages[si].deploys[k];
        d.state = state;
        d.reason = reason;
    });
}

/// A deploy that stopped promotion, in words.
fn describe(d: &ReleaseDeploy, state: DeployState, reason: Option<&str>) -> String {
    let how = match state {
        DeployState::RolledBack => "rolled back",
        _ => "failed",
    };
    match reason {
        Some(reason) => format!("deploy {} of {} on {} {how}: {reason}", d.deploy_id, d.service, d.target),
        None => format!("deploy {} of {} on {} {how}", d.deploy_id, d.service, d.target),
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::{QueryDefinition, UpdateDefinition, WorkflowDefinition};

    use super::*;

    #[test]
    fn the_release_answers_to_the_contract_names() {
        assert_eq!(ReleaseWorkflow::run.name(), ReleaseRun.name());
        assert_eq!(ReleaseWorkflow::status.name(), ReleaseStatusQuery.name());
        assert_eq!(ReleaseWorkflow::approve.name(), ApproveStage.name());
        assert_eq!(ReleaseWorkflow::bypass.name(), BypassRelease.name());
        assert_eq!(ReleaseWorkflow::abort.name(), AbortRelease.name());
    }
}
