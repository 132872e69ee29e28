//! `ReleaseWorkflow` (`signalbox.release`): services promoted through a pipeline's stages.
//!
//! The run: read and check the request (failing, naming the field, when it cannot be read or
//! breaks a rule: an empty stage, a cycle, the blast-radius budget) -> check the world (every
//! target exists, every build is pushed and not quarantined) -> for each stage in order: its
//! approval gate, its deploys as child deploy workflows (services in topological waves, at
//! most `max_parallel` at once; [`deploys`]), its own analysis and its watched soak
//! ([`gates`]) -> the next stage. A deploy that does not succeed stops promotion: the stage's
//! deploys still in flight are stopped (they roll back), no later deploy starts, and the
//! release ends `Failed` with the reason, or, when the pipeline rolls back on failure, rolls
//! back every deploy that had succeeded (dependents first) and ends `RolledBack`. A deploy
//! that failed its verdict quarantines its build.
//!
//! Operators steer it with updates: `approve` counts towards the open stage gate; `bypass`
//! skips a stage's gate and soak (and, with `override_failed_verdict`, its deploys' health
//! judgements, by bypassing each of them); `abort` stops promotion as a failure does, and the
//! release ends `Aborted`.
//!
//! History stays small: the parent records one child per deploy and summaries only; each
//! deploy's steps are in its own history.

mod deploys;
mod gates;
mod state;

pub use self::state::ReleaseWorkflow;


use signalbox_contract::activities::CheckRelease;
use signalbox_contract::release::{AbortRelease, ApproveStage, BypassRelease, DeploySucceeded, ReleaseRun, ReleaseStatusQuery, release_deploy_id};
use signalbox_contract::{Received, search};
use signalbox_domain::approval::{self, Gate};
use signalbox_domain::control::{Action, AuditEntry, SYSTEM, timestamp};
use signalbox_domain::release_control::{self, BypassStage, StageBypass};
use signalbox_domain::{Approve, Command, OnFailure, ReleasePhase, ReleaseRequest, ReleaseStatus, StagePhase};
use temporalio_macros::workflow_methods;
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::shared::options::quick;
use crate::shared::stop::{failure_message, invalid_field, refuse};

use self::deploys::{close_windows, deploy_all, quarantine, roll_back_all};
use self::gates::{analyse, gate, sample_targets, soak};
use self::state::{Held, Validation};

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
            s.control = req.control;
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
    fn validate_approve(&self, ctx: &WorkflowContextView, approve: &Approve) -> Validation {
        self.taken.check(self.control, ctx.workflow_id(), ApproveStage::NAME, &approve.approver, &approve.reason, &approve.grant)?;
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
        self.taken.take(&approve.grant);
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
    fn validate_bypass(&self, ctx: &WorkflowContextView, bypass: &BypassStage) -> Validation {
        self.taken.check(self.control, ctx.workflow_id(), BypassRelease::NAME, &bypass.by, &bypass.reason, &bypass.grant)?;
        Ok(release_control::check_bypass(&self.status, bypass, self.clock)?)
    }

    /// Emergency bypass of a stage: its gate and its soak are skipped while it lasts; with
    /// `override_failed_verdict`, its deploys' health judgements too.
    #[update(name = BypassRelease::NAME)]
    pub fn bypass(&mut self, ctx: &mut SyncWorkflowContext<Self>, bypass: BypassStage) -> Result<ReleaseStatus, Box<dyn std::error::Error + Send + Sync>> {
        let now = timestamp(ctx.workflow_time());
        release_control::check_bypass(&self.status, &bypass, now)?;
        self.taken.take(&bypass.grant);
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
    fn validate_abort(&self, ctx: &WorkflowContextView, cmd: &Command) -> Validation {
        self.taken.check(self.control, ctx.workflow_id(), AbortRelease::NAME, &cmd.by, &cmd.reason, &cmd.grant)?;
        Ok(release_control::check_abort(&self.status, cmd)?)
    }

    /// Stops promotion: the deploys in flight are cancelled (they roll back), no later deploy
    /// or stage starts, and the release ends `Aborted` with reason `aborted by <who>: <why>`.
    #[update(name = AbortRelease::NAME)]
    pub fn abort(&mut self, ctx: &mut SyncWorkflowContext<Self>, cmd: Command) -> ReleaseStatus {
        let now = timestamp(ctx.workflow_time());
        self.taken.take(&cmd.grant);
        self.status.phase = ReleasePhase::Stopping;
        self.status.reason = Some(signalbox_domain::control::aborted(&cmd));
        self.status.audit.push(AuditEntry::of(Action::Abort, &cmd, now));
        self.abort = Some(cmd);
        self.status.clone()
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
