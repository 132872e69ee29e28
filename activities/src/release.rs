//! The release activities: what a release asks of its deploys that a workflow cannot send
//! itself (an update), through the worker's Temporal client.

use std::sync::Arc;

use signalbox_client::{Client, Deploys, Error as ClientError};
use std::collections::BTreeMap;

use signalbox_contract::activities::{self as contract, SteerDeploysInput};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use signalbox_domain::Phase;
use tracing::{info, instrument};

use crate::Error;

/// The release activities, over the worker's Temporal client.
#[derive(Clone)]
pub struct ReleaseActivities {
    deploys: Deploys,
}

impl ReleaseActivities {
    /// Release activities reaching deploys through `client` (on `task_queue`, where the
    /// release's deploys run), signing what they ask with `key` (the deploys of a release the
    /// API started take nothing unsigned).
    pub fn new(client: Client, task_queue: impl Into<String>, key: Option<signalbox_domain::grant::ControlKey>) -> Self {
        Self { deploys: Deploys::new(client, task_queue).signing_with(key) }
    }
}

#[activities]
impl ReleaseActivities {
    /// See [`contract::BypassDeploys`]. A deploy's refusal (it ended, or is already bypassed)
    /// leaves it as it is; Temporal being unreachable is retried, and a retry sends the bypass
    /// again only to the deploys that have not taken it (the deploy refuses a second one).
    #[activity(definition = contract::BypassDeploys)]
    #[instrument(skip_all, fields(deploys = input.deploys.len()))]
    pub async fn bypass_deploys(self: Arc<Self>, _ctx: ActivityContext, input: SteerDeploysInput) -> Result<Vec<String>, ActivityError> {
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

    /// See [`contract::RollBackDeploys`]. A refusal is checked against the deploy's status: one
    /// already rolling back or rolled back (an earlier attempt's rollback, or its own verdict)
    /// counts as rolling back.
    #[activity(definition = contract::RollBackDeploys)]
    #[instrument(skip_all, fields(deploys = input.deploys.len()))]
    pub async fn roll_back_deploys(self: Arc<Self>, _ctx: ActivityContext, input: SteerDeploysInput) -> Result<BTreeMap<String, Option<String>>, ActivityError> {
        let mut answers = BTreeMap::new();
        for id in &input.deploys {
            let answer = match self.deploys.rollback(id, input.command.clone()).await {
                Ok(_) => None,
                Err(ClientError::Refused(why) | ClientError::Invalid { rule: why, .. }) => match self.deploys.status(id).await {
                    Ok(status) if status.stopping() || status.phase == Phase::RolledBack => None,
                    Ok(_) => Some(why),
                    Err(e) => return Err(Error::Temporal(format!("status of {id}: {e}")).into_activity()),
                },
                Err(ClientError::NotFound(_)) => Some("no such deploy".to_owned()),
                Err(e) => return Err(Error::Temporal(format!("rollback of {id}: {e}")).into_activity()),
            };
            info!(deploy = %id, refused = ?answer, "rollback asked for");
            answers.insert(id.clone(), answer);
        }
        Ok(answers)
    }
}
