//! Who holds a lane (`signalbox_contract::lane`): the parent of the running lane workflow.

use std::time::Duration;

use signalbox_contract::lane::LaneRun;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, WorkflowDescribeOptions, WorkflowExecutionStatus};

/// The deploy holding the lane `lane` (a lane workflow id), or `None` when it is free. A lane
/// whose holder has ended is free: Temporal ends it with its holder in a moment.
pub async fn holder(client: &Client, lane: &str) -> anyhow::Result<Option<String>> {
    let Some(parent) = running(client, lane).await?.map(|parent| parent.unwrap_or_default()) else { return Ok(None) };
    if parent.is_empty() {
        return Ok(Some("(a deploy)".to_owned()));
    }
    Ok(running(client, &parent).await?.map(|_| parent))
}

/// `Some(its parent's id)` when workflow `id` runs, `None` when it does not (or never did).
async fn running(client: &Client, id: &str) -> anyhow::Result<Option<Option<String>>> {
    let handle = client.get_workflow_handle::<LaneRun>(id);
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) if d.status() == WorkflowExecutionStatus::Running => Ok(Some(d.parent_id().map(str::to_owned))),
        Ok(_) | Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {id}: {e}")),
    }
}

/// Waits until `lane` is free or `at_most` passed, asking every `every`; `tick` is called after
/// each look (an activity heartbeats there). Returns whether the lane is free.
pub async fn await_free(client: &Client, lane: &str, at_most: Duration, every: Duration, mut tick: impl FnMut()) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + at_most;
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        if holder(client, lane).await?.is_none() {
            return Ok(true);
        }
        tick();
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}
