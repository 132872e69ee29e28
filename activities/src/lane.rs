//! The lane activities: who holds a lane, and waiting for it to be free. They ask Temporal
//! (the running lane workflow and its parent), so the worker's client does the asking.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use signalbox_client::{Client, lanes};
use signalbox_contract::activities::{self as contract, AwaitLaneInput, LaneInput};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::instrument;

use crate::Error;
use crate::heartbeat::until_cancelled;

/// How often a waiting deploy looks at the lane.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The lane activities, over the worker's Temporal client.
#[derive(Clone)]
pub struct LaneActivities {
    client: Client,
}

impl LaneActivities {
    /// Lane activities asking Temporal through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[activities]
impl LaneActivities {
    /// See [`contract::LaneHolder`].
    #[activity(definition = contract::LaneHolder)]
    #[instrument(skip_all, fields(lane = %input.lane))]
    pub async fn lane_holder(self: Arc<Self>, _ctx: ActivityContext, input: LaneInput) -> Result<Option<String>, ActivityError> {
        lanes::holder(&self.client, &input.lane).await.map_err(|e| Error::Temporal(format!("{e:#}")).into_activity())
    }

    /// See [`contract::AwaitLane`]. Heartbeats while it waits.
    #[activity(definition = contract::AwaitLane)]
    #[instrument(skip_all, fields(lane = %input.lane))]
    pub async fn await_lane(self: Arc<Self>, ctx: ActivityContext, input: AwaitLaneInput) -> Result<bool, ActivityError> {
        let looks = AtomicUsize::new(0);
        let wait = lanes::await_free(&self.client, &input.lane, Duration::from_millis(input.at_most_ms), LOOK_EVERY, || {
            looks.fetch_add(1, Ordering::Relaxed);
        });
        until_cancelled(&ctx, &looks, wait).await?.map_err(|e| Error::Temporal(format!("{e:#}")).into_activity())
    }
}
