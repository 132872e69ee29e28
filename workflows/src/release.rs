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
//! History stays small: the parent records one child per deploy and summaries only; each
//! deploy's steps are in its own history.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use signalbox_domain::analysis::Decision;
use signalbox_contract::activities::{QuarantineArtifact, QuarantineInput};
use signalbox_contract::{Received, search};
use signalbox_contract::deploy::DeployRun;
use signalbox_contract::release::{ReleaseRun, ReleaseStatusQuery, release_deploy_id};
use signalbox_domain::control::timestamp;
use signalbox_domain::{DeployState, Digest, DeployStatus, Phase, ReleaseDeploy, ReleasePhase, ReleaseRequest, ReleaseStatus, StagePhase};
use temporalio_common::error::ChildWorkflowExecutionError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{CancellableFuture, ChildWorkflowOptions, ParentClosePolicy, TimerOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::shared::options::detached;
use crate::shared::stop::refuse;

/// A release: its status is the whole tree, kept as the run goes.
#[workflow]
pub struct ReleaseWorkflow {
    status: ReleaseStatus,
}

impl Default for ReleaseWorkflow {
    fn default() -> Self {
        Self { status: ReleaseStatus { pipeline: String::new(), phase: ReleasePhase::Deploying, stage: None, stages: Vec::new(), reason: None, quarantined: Vec::new() } }
    }
}

/// A deploy of the release in flight: its place in the stage's list, and its result.
type InFlight = (usize, Pin<Box<dyn CancellableFuture<Output = Result<DeployStatus, ChildWorkflowExecutionError>>>>);

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
        ctx.state_mut(|s| s.status = ReleaseStatus::planned(&req, &waves, |service, target| release_deploy_id(&id, service, target)));
        let last = req.pipeline.stages.len() - 1;
        for (si, stage) in req.pipeline.stages.iter().enumerate() {
            ctx.state_mut(|s| {
                s.status.stage = Some(stage.name.clone());
                s.status.phase = ReleasePhase::Deploying;
                s.status.stages[si].phase = StagePhase::Deploying;
            });
            for wave in &waves {
                let services: Vec<&str> = wave.iter().map(|&i| req.services[i].service.as_str()).collect();
                let deploys: Vec<usize> =
                    ctx.state(|s| s.status.stages[si].deploys.iter().enumerate().filter(|(_, d)| services.contains(&d.service.as_str())).map(|(k, _)| k).collect());
                if let Err(stop) = deploy_all(ctx, &req, si, deploys).await {
                    let reason = format!("stage {}: {}", stage.name, stop.reason);
                    ctx.state_mut(|s| {
                        s.status.stages[si].phase = StagePhase::Failed;
                        s.status.phase = ReleasePhase::Failed;
                        s.status.reason = Some(reason.clone());
                    });
                    if let Some(service) = stop.failed_verdict
                        && let Some(build) = req.services.iter().find(|b| b.service == service)
                        && ctx.patched(QUARANTINE_PATCH)
                    {
                        quarantine(ctx, &id, &build.artifact.digest, &reason, req.dry_run).await;
                    }
                    return Ok(ctx.state(|s| s.status.clone()));
                }
            }
            if stage.soak_ms > 0 && si < last {
                let until = timestamp(ctx.workflow_time()) + chrono::Duration::milliseconds(stage.soak_ms as i64);
                ctx.state_mut(|s| {
                    s.status.phase = ReleasePhase::Soaking;
                    s.status.stages[si].phase = StagePhase::Soaking;
                    s.status.stages[si].soak_until = Some(until);
                });
                let soak = TimerOptions::builder(Duration::from_millis(stage.soak_ms)).summary(format!("soak of stage {}", stage.name)).build();
                let _ = ctx.timer(soak).await;
            }
            ctx.state_mut(|s| {
                s.status.stages[si].phase = StagePhase::Passed;
                s.status.stages[si].soak_until = None;
            });
        }
        ctx.state_mut(|s| s.status.phase = ReleasePhase::Succeeded);
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Where the release stands: every stage, and every deploy of every stage.
    #[query(name = ReleaseStatusQuery::NAME)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ReleaseStatus {
        self.status.clone()
    }
}

/// Patch id of the quarantine of a build that failed its verdict; runs recorded before
/// quarantined nothing.
const QUARANTINE_PATCH: &str = "signalbox-release-quarantine";

/// Why a stage stopped: the reason, and the service whose deploy failed its verdict (its build
/// is bad, not the world around it), if one did.
struct Stop {
    reason: String,
    failed_verdict: Option<String>,
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
/// rest: those in flight are cancelled and awaited (they roll back), those not started never
/// start; why is returned.
async fn deploy_all(ctx: &WorkflowContext<ReleaseWorkflow>, req: &ReleaseRequest, si: usize, deploys: Vec<usize>) -> Result<(), Stop> {
    let stage = &req.pipeline.stages[si];
    let mut waiting: VecDeque<usize> = deploys.into();
    let mut running: Vec<InFlight> = Vec::new();
    let mut failure: Option<Stop> = None;
    loop {
        while failure.is_none()
            && running.len() < stage.max_parallel as usize
            && let Some(k) = waiting.pop_front()
        {
            let d = ctx.state(|s| s.status.stages[si].deploys[k].clone());
            let Some(target) = stage.targets.iter().find(|t| t.target == d.target) else { continue };
            let Some(build) = req.services.iter().find(|b| b.service == d.service) else { continue };
            let deploy = target.deploy.request(&build.service, &build.artifact, &target.target, &req.deployer, req.dry_run);
            let options = ChildWorkflowOptions::builder()
                .workflow_id(d.deploy_id.clone())
                // A release that is cancelled or terminated stops its deploys; they roll back.
                .parent_close_policy(ParentClosePolicy::RequestCancel)
                .static_summary(format!("{} on {}, stage {}", d.service, d.target, stage.name))
                // Found in the UI and by `deploy list` like a deploy started on its own.
                .search_attributes(search::initial(&deploy))
                .build();
            match ctx.start_child_workflow(DeployRun, deploy, options).await {
                Ok(started) => {
                    ctx.state_mut(|s| s.status.stages[si].deploys[k].state = DeployState::Running);
                    running.push((k, Box::pin(started.result())));
                }
                Err(e) => {
                    let reason = format!("deploy {} could not start: {e}", d.deploy_id);
                    ended(ctx, si, k, DeployState::Failed, Some(reason.clone()));
                    failure = Some(Stop { reason, failed_verdict: None });
                }
            }
        }
        if running.is_empty() {
            break;
        }
        if failure.is_some() {
            // Cancelling twice is harmless: the SDK sends one request per child.
            for (_, result) in &running {
                result.cancel();
            }
        }
        let (at, outcome) = poll_fn(|cx| {
            for (at, (_, result)) in running.iter_mut().enumerate() {
                if let Poll::Ready(outcome) = result.as_mut().poll(cx) {
                    return Poll::Ready((at, outcome));
                }
            }
            Poll::Pending
        })
        .await;
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
            failure = Some(Stop { reason: describe(&d, state, reason.as_deref()), failed_verdict: verdict_failed.then(|| d.service.clone()) });
        }
    }
    failure.map_or(Ok(()), Err)
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
    use temporalio_common::{QueryDefinition, WorkflowDefinition};

    use super::*;

    #[test]
    fn the_release_answers_to_the_contract_names() {
        assert_eq!(ReleaseWorkflow::run.name(), ReleaseRun.name());
        assert_eq!(ReleaseWorkflow::status.name(), ReleaseStatusQuery.name());
    }
}
