//! Who holds a lane (`signalbox_contract::lane`): the parent of the running lane workflow.

use std::time::Duration;

use signalbox_contract::deploy::{DeployRun, Status};
use signalbox_contract::lane::LaneRun;
use temporalio_client::errors::{WorkflowInteractionError, WorkflowQueryError};
use temporalio_client::{Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowQueryOptions};

use crate::{Error, Result};

/// The deploy holding the lane `lane` (a lane workflow id), or `None` when it is free or being
/// freed. A lane is being freed when its holder has ended (Temporal ends the lane with it in a
/// moment), or has reached a final phase (`Succeeded` and in its rollback window, it leaves the
/// lane right after; `RolledBack` or `Failed`, it is closing).
pub async fn holder(client: &Client, lane: &str) -> Result<Option<String>> {
    let Some(parent) = running(client, lane).await?.map(|parent| parent.unwrap_or_default()) else { return Ok(None) };
    if parent.is_empty() {
        return Ok(Some("(a deploy)".to_owned()));
    }
    if running(client, &parent).await?.is_none() {
        return Ok(None);
    }
    let status = client.get_workflow_handle::<DeployRun>(&parent).query(Status, (), WorkflowQueryOptions::default()).await;
    match status {
        Ok(s) if s.phase.is_final() && !s.stopping() => Ok(None),
        // Ended between the two looks.
        Err(WorkflowQueryError::NotFound(_)) => Ok(None),
        // Running and steerable, or not answering (its worker is down): it holds the lane.
        Ok(_) | Err(_) => Ok(Some(parent)),
    }
}

/// `Some(its parent's id)` when workflow `id` runs, `None` when it does not (or never did).
async fn running(client: &Client, id: &str) -> Result<Option<Option<String>>> {
    let handle = client.get_workflow_handle::<LaneRun>(id);
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) if d.status() == WorkflowExecutionStatus::Running => Ok(Some(d.parent_id().map(str::to_owned))),
        Ok(_) | Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
        Err(e) => Err(Error::Unavailable(format!("reading {id}: {e}"))),
    }
}

/// Waits until `lane` is free or `at_most` passed, asking every `every`; `tick` is called after
/// each look (an activity heartbeats there). Returns whether the lane is free.
pub async fn await_free(client: &Client, lane: &str, at_most: Duration, every: Duration, mut tick: impl FnMut()) -> Result<bool> {
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
