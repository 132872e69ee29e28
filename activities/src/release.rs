//! The release activities: what a release asks of its deploys that a workflow cannot send
//! itself (an update), through the worker's Temporal client.

use std::sync::Arc;

use signalbox_client::{Client, Deploys, Error as ClientError};
use signalbox_contract::activities::{self as contract, BypassDeploysInput};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument};

use crate::Error;

/// The release activities, over the worker's Temporal client.
#[derive(Clone)]
pub struct ReleaseActivities {
    deploys: Deploys,
}

impl ReleaseActivities {
    /// Release activities reaching deploys through `client` (on `task_queue`, where the
    /// release's deploys run).
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self { deploys: Deploys::new(client, task_queue) }
    }
}

#[activities]
impl ReleaseActivities {
    /// See [`contract::BypassDeploys`]. A deploy's refusal (it ended, or is already bypassed)
    /// leaves it as it is; Temporal being unreachable is retried, and a retry sends the bypass
    /// again only to the deploys that have not taken it (the deploy refuses a second one).
    #[activity(definition = contract::BypassDeploys)]
    #[instrument(skip_all, fields(deploys = input.deploys.len()))]
    pub async fn bypass_deploys(self: Arc<Self>, _ctx: ActivityContext, input: BypassDeploysInput) -> Result<Vec<String>, ActivityError> {
        let mut took = Vec::new();
        for id in &input.deploys {
            match self.deploys.bypass(id, input.command.clone()).await {
                Ok(_) => took.push(id.clone()),
                Err(ClientError::Refused(why) | ClientError::Invalid { rule: why, .. }) => info!(deploy = %id, %why, "the deploy did not take the bypass"),
                Err(ClientError::NotFound(_)) => info!(deploy = %id, "no such deploy: nothing to bypass"),
                Err(e) => return Err(Error::Temporal(format!("bypass of {id}: {e}")).into_activity()),
            }
        }
        Ok(took)
    }
}
