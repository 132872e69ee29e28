//! `LaneWorkflow` (`signalbox.lane`): the lane of one service on one target, held by the deploy
//! that runs it as its child (see `signalbox_contract::lane`). It does nothing but wait for its
//! holder's release; its id being taken is the lock.

use signalbox_contract::Received;
use signalbox_contract::lane::{LaneHold, LaneRun, Release};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowResult};

use crate::shared::stop::refuse;

/// A held lane: released by [`Release`], or terminated with its holder.
#[workflow]
#[derive(Default)]
pub struct LaneWorkflow {
    released: bool,
}

#[workflow_methods]
impl LaneWorkflow {
    /// Holds the lane until released.
    #[run(name = LaneRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, hold: Received<LaneHold>) -> WorkflowResult<()> {
        hold.into_result().map_err(|e| refuse(e.to_string()))?;
        // Cancelling the lane releases it too: nothing here needs undoing.
        let _ = ctx.wait_condition(|s: &Self| s.released).await;
        Ok(())
    }

    /// The holder is done: the lane ends.
    #[signal(name = Release::NAME)]
    pub fn release(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.released = true;
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::{SignalDefinition, WorkflowDefinition};

    use super::*;

    #[test]
    fn the_lane_answers_to_the_contract_names() {
        assert_eq!(LaneWorkflow::run.name(), LaneRun.name());
        assert_eq!(LaneWorkflow::release.name(), Release.name());
    }
}
