//! Taking and leaving the lane: one deploy at a time per service and target
//! (`signalbox_contract::lane`). A deploy holds its lane by running the lane workflow as its
//! child; if another deploy holds it, the deploy fails naming the holder, or, with `queue`,
//! waits for it.

use std::pin::pin;
use std::time::Duration;

use signalbox_contract::activities::{AwaitLane, AwaitLaneInput, LaneHolder, LaneInput};
use signalbox_contract::lane::{LaneHold, LaneRun, Release, held, lane_id};
use signalbox_domain::{DeployRequest, Phase};
use temporalio_common::error::ChildWorkflowStartError;
use temporalio_sdk::workflows::select;
use temporalio_sdk::{CancellableFuture, ChildWorkflowOptions, TimerOptions, ParentClosePolicy, SignalWorkflowOptions, StartedChildWorkflow, WorkflowCancellationToken, WorkflowContext};

use super::run::enter;
use super::state::DeployWorkflow;
use crate::shared::options::{long, quick};

/// How long one wait for a held lane lasts before the deploy looks again (and its history
/// records one more wait).
const QUEUE_WAIT: Duration = Duration::from_secs(10 * 60);
/// A lane whose holder just ended is still there for a moment (Temporal ends it with its
/// holder): how often, and how long apart, the deploy tries again before it calls it held.
const FREED_RETRIES: u32 = 10;
const FREED_PAUSE: Duration = Duration::from_millis(300);

/// A lane this deploy holds.
pub(crate) struct Lane(StartedChildWorkflow<LaneRun>);

/// Why the lane could not be taken.
pub(crate) enum Busy {
    /// Another deploy holds it (its id, when it could be read).
    HeldBy(Option<String>),
    /// The deploy was aborted while it waited.
    Aborted(String),
    /// Temporal refused the lane workflow for another reason.
    Failed(String),
}

impl Busy {
    /// The refusal, in words.
    pub(crate) fn reason(&self, req: &DeployRequest) -> String {
        match self {
            Busy::HeldBy(holder) => held(holder.as_deref().unwrap_or("(another deploy)"), &req.service, &req.target),
            Busy::Aborted(reason) | Busy::Failed(reason) => reason.clone(),
        }
    }
}

/// Takes the lane of the request's service on its target. When another deploy holds it:
/// refused naming it, or with `queue`, the deploy is `Queued` behind it until the lane is
/// free (an abort while queued ends the wait).
pub(crate) async fn take(ctx: &WorkflowContext<DeployWorkflow>, req: &DeployRequest, queue: bool) -> Result<Lane, Busy> {
    let lane = lane_id(&req.service, &req.target);
    let mut freed_tries = 0;
    loop {
        let hold = LaneHold { service: req.service.clone(), target: req.target.clone(), holder: ctx.workflow_id().to_owned() };
        let options = ChildWorkflowOptions::builder()
            .workflow_id(lane.clone())
            // The lane dies with its holder, however the holder ends.
            .parent_close_policy(ParentClosePolicy::Terminate)
            // Cancelling the deploy (an abort) must not free the lane while it rolls back.
            .cancellation_token(WorkflowCancellationToken::new())
            .static_summary(format!("lane of {} on {}, held by {}", req.service, req.target, ctx.workflow_id()))
            .build();
        match ctx.start_child_workflow(LaneRun, hold, options).await {
            Ok(started) => {
                ctx.state_mut(|s| s.status.held_by = None);
                return Ok(Lane(started));
            }
            Err(ChildWorkflowStartError::StartFailed { .. }) => {}
            Err(other) => return Err(Busy::Failed(format!("could not take the lane {lane}: {other}"))),
        }
        let holder = ctx.execute_activity(LaneHolder, LaneInput { lane: lane.clone() }, quick(format!("who holds {lane}"))).await.ok().flatten();
        // Held a moment ago, free now (its holder ended): try again shortly.
        if holder.is_none() && freed_tries < FREED_RETRIES {
            freed_tries += 1;
            let pause = TimerOptions::builder(FREED_PAUSE).summary(format!("{lane} is being freed")).build();
            let _ = ctx.timer(pause).await;
            continue;
        }
        ctx.state_mut(|s| s.status.held_by = holder.clone());
        if !queue {
            return Err(Busy::HeldBy(holder));
        }
        enter(ctx, Phase::Queued);
        let wait = AwaitLaneInput { lane: lane.clone(), at_most_ms: QUEUE_WAIT.as_millis() as u64 };
        let summary = format!("wait for {} to leave {lane}", holder.as_deref().unwrap_or("its holder"));
        let mut waited = pin!(ctx.execute_activity(AwaitLane, wait, long(summary, QUEUE_WAIT)));
        let aborted = select! {
            _ = waited.as_mut() => false,
            _ = ctx.wait_condition(|s: &DeployWorkflow| s.stop.is_some()) => true,
        };
        if aborted {
            waited.cancel();
            let _ = waited.as_mut().await;
            let reason = ctx.state(|s| s.stop.clone()).unwrap_or_else(|| "aborted while queued".into());
            return Err(Busy::Aborted(reason));
        }
    }
}

impl Lane {
    /// Leaves the lane, and returns once it has ended: the next deploy may take it then. Not
    /// cancelled with the deploy; if the signal is lost, the lane still ends with this deploy.
    pub(crate) async fn leave(self) {
        let options = SignalWorkflowOptions::builder().cancellation_token(WorkflowCancellationToken::new()).summary("leave the lane".to_owned()).build();
        if self.0.signal(Release, (), options).await.is_ok() {
            let _ = self.0.result().await;
        }
    }
}
