//! After success: the rollback window. The deploy stays open (a durable timer) for the
//! `rollback` update; a rollback asked for in it undoes only what is still this deploy's. It
//! takes the lane (refused while another deploy of the service runs on the target) and checks
//! that no later deploy changed the instances this one changed (refused, naming it, if one did),
//! before it is accepted. Runs recorded before lanes accepted any rollback in the window.

use std::pin::pin;
use std::time::Duration;

use signalbox_contract::activities::{OwnersInput, ReadOwners};
use signalbox_contract::release::DeploySucceeded;
use signalbox_domain::control::{self, Action, timestamp};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{CancellableFuture, SignalWorkflowOptions, TimerOptions, WorkflowCancellationToken};

use super::lane::{self, Lane};
use super::run::{Run, requests_only};
use super::state::{DeployWorkflow, RollbackCheck};
use crate::shared::options::detached;
use crate::shared::stop::failure_message;

/// Patch id of the rollback window after success.
const ROLLBACK_WINDOW_PATCH: &str = "signalbox-rollback-window";

/// Patch id of a release's deploy telling its release that it succeeded, when its window
/// opens; deploys recorded before left their release waiting for the window to close.
const TELL_RELEASE_PATCH: &str = "signalbox-deploy-tells-release";

/// When the deploy is a release's (it has a parent), tells the release it succeeded, so that
/// the release goes on while the window stays open for the release's own rollback. A release
/// that already ended has nothing to hear; that is not the deploy's failure.
pub(crate) async fn tell_release(run: &Run<'_>) {
    let ctx = run.ctx;
    let Some(parent) = ctx.info().parent() else { return };
    if !ctx.patched(TELL_RELEASE_PATCH) {
        return;
    }
    let release = ctx.external_workflow(parent.workflow_id().to_owned(), Some(parent.run_id().to_owned()));
    let options = SignalWorkflowOptions::builder().cancellation_token(WorkflowCancellationToken::new()).summary("tell the release".to_owned()).build();
    let _ = release.signal(DeploySucceeded, ctx.workflow_id().to_owned(), options).await;
}

/// Opens the succeeded deploy's rollback window, in the same moment it succeeded (so a rollback
/// asked for at once finds it open); `false` when the request has none.
pub(crate) fn open(run: &Run<'_>) -> bool {
    let (ctx, req) = (run.ctx, &run.req);
    if req.rollback_window_ms == 0 || !ctx.patched(ROLLBACK_WINDOW_PATCH) {
        return false;
    }
    let until = control::after_ms(timestamp(ctx.workflow_time()), req.rollback_window_ms);
    ctx.state_mut(|s| s.status.rollback_window_until = Some(until));
    true
}

/// Keeps the succeeded deploy open for the rollback window [`open`] opened. Returns the reason of a rollback
/// accepted in it, with the lane it took to roll back in, or `None` when the window closed
/// without one. A workflow cancellation closes the window early; the deploy stays `Succeeded`.
pub(crate) async fn rollback_window(run: &Run<'_>) -> Option<(String, Option<Lane>)> {
    let (ctx, req) = (run.ctx, &run.req);
    let window = TimerOptions::builder(Duration::from_millis(req.rollback_window_ms)).summary("rollback window".to_owned()).build();
    let mut window = pin!(ctx.timer(window));
    let mut lane = None;
    loop {
        // The request first: a rollback accepted in the window's last moment is honoured.
        let closed = select! {
            _ = ctx.wait_condition_with_options(|s: &DeployWorkflow| s.stop.is_some() || matches!(s.rollback, Some(RollbackCheck::Asked(_))), requests_only()) => false,
            _ = window.as_mut() => true,
        };
        if ctx.state(|s| s.stop.is_some()) {
            window.cancel();
            break;
        }
        let asked = ctx.state_mut(|s| match s.rollback.take() {
            Some(RollbackCheck::Asked(cmd)) => {
                s.rollback = Some(RollbackCheck::Checking);
                Some(cmd)
            }
            other => {
                s.rollback = other;
                None
            }
        });
        if let Some(cmd) = asked {
            let answer = claim(run).await.map(|claimed| lane = Some(claimed));
            let at = timestamp(ctx.workflow_time());
            ctx.state_mut(|s| {
                if answer.is_ok() {
                    s.accept_stop(Action::Rollback, control::rolled_back(&cmd), &cmd, at);
                }
                s.rollback = Some(RollbackCheck::Answered(answer));
            });
            if lane.is_some() {
                window.cancel();
                break;
            }
        }
        if closed {
            break;
        }
    }
    ctx.state_mut(|s| {
        s.status.rollback_window_until = None;
        if matches!(s.rollback, Some(RollbackCheck::Asked(_))) {
            s.rollback = Some(RollbackCheck::Answered(Err("the rollback window closed".into())));
        }
        s.stop.clone()
    })
    .map(|reason| (reason, lane))
}

/// Takes the lane for a rollback and checks that what the deploy changed is still its own;
/// refused, with the reason, otherwise.
async fn claim(run: &Run<'_>) -> Result<Lane, String> {
    let (ctx, req) = (run.ctx, &run.req);
    let lane = lane::take(ctx, req, false).await.map_err(|busy| {
        // The refusal names the holder; the succeeded deploy waits for nobody.
        ctx.state_mut(|s| s.status.held_by = None);
        format!("cannot roll back: {}", busy.reason(req))
    })?;
    let changed = run.saga.changed_instances();
    if changed.is_empty() {
        return Ok(lane);
    }
    let input = OwnersInput { fleet: req.target.clone(), instances: changed };
    let owners = ctx.execute_activity(ReadOwners, input, detached("who last changed this deploy's instances")).await;
    let refusal = match owners {
        Ok(owners) => {
            let foreign: Vec<(String, String)> =
                owners.changed_by.into_iter().filter_map(|(instance, by)| by.filter(|b| *b != run.id).map(|b| (instance, b))).collect();
            match foreign.first() {
                None => return Ok(lane),
                Some((instance, by)) => {
                    let more = match foreign.len() - 1 {
                        0 => String::new(),
                        n => format!(" (and {n} more instances)"),
                    };
                    format!("cannot roll back: deploy {by} changed {instance}{more} after this deploy; only what is still its own is rolled back")
                }
            }
        }
        Err(e) => format!("cannot roll back: who last changed the instances could not be read: {}", failure_message(&e)),
    };
    lane.leave().await;
    Err(refusal)
}
