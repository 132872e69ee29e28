//! A stage's deploys as child workflows, and what a release does to them when it ends: closes
//! the rollback windows it holds, or rolls them back, dependents first; the quarantine of a
//! build that failed its verdict.

use std::collections::{BTreeSet, VecDeque};
use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;

use signalbox_contract::activities::{BypassDeploys, QuarantineArtifact, QuarantineInput, RollBackDeploys, SteerDeploysInput};
use signalbox_contract::deploy::DeployRun;
use signalbox_contract::search;
use signalbox_domain::analysis::Decision;
use signalbox_domain::control::{SYSTEM, timestamp};
use signalbox_domain::{Command, DeployState, Digest, OnFailure, Phase, ReleaseDeploy, ReleasePhase, ReleaseRequest};
use temporalio_common::error::ChildWorkflowExecutionError;
use temporalio_sdk::{ChildWorkflowOptions, ParentClosePolicy, WorkflowContext};

use crate::shared::options::{detached, quick};

use super::state::{HOLD_MS, Held, InFlight, ReleaseWorkflow, Stop, requests_only};

/// Quarantines `digest`, which a deploy of the release `id` caught failing. A store that cannot
/// be written after the retries leaves the build out of quarantine, and the release says so.
pub(crate) async fn quarantine(ctx: &WorkflowContext<ReleaseWorkflow>, id: &str, digest: &Digest, reason: &str, dry_run: bool) {
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
pub(crate) async fn deploy_all(ctx: &WorkflowContext<ReleaseWorkflow>, req: &ReleaseRequest, si: usize, deploys: Vec<usize>, held: &mut Vec<Held>) -> Result<(), Stop> {
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
            // A release the API started hands its deploys the same rule: only signed operations.
            deploy.control = req.control;
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
pub(crate) async fn close_windows(held: Vec<Held>) {
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
pub(crate) async fn roll_back_all(ctx: &WorkflowContext<ReleaseWorkflow>, waves: &[Vec<usize>], req: &ReleaseRequest, mut held: Vec<Held>, reason: &str, end: ReleasePhase) {
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

