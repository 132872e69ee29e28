//! [`TrafficActivities`]: the load-balancer activities of the contract, carried out on
//! HAProxy's runtime API.

use std::sync::Arc;

use signalbox_contract::activities::{self as contract, SetWeightsInput, SetWeightsOutput};
use signalbox_domain::traffic::{LbStats, LbTarget};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument};

use super::RuntimeApi;
use crate::Error;

/// The load-balancer activities; one instance serves any number of balancers, each named by the
/// [`LbTarget`] in the activity's input.
#[derive(Debug, Clone, Default)]
pub struct TrafficActivities;

fn api(lb: &LbTarget) -> RuntimeApi {
    RuntimeApi::new(&lb.stats_socket)
}

#[activities]
impl TrafficActivities {
    /// See [`contract::ReadStats`].
    #[activity(definition = contract::ReadStats)]
    #[instrument(skip_all, fields(backend = %input.backend))]
    pub async fn read_stats(self: Arc<Self>, _ctx: ActivityContext, input: LbTarget) -> Result<LbStats, ActivityError> {
        api(&input).stats(&input.backend).await.map_err(Error::into_activity)
    }

    /// See [`contract::SetWeights`].
    #[activity(definition = contract::SetWeights)]
    #[instrument(skip_all, fields(backend = %input.lb.backend, servers = input.weights.len()))]
    pub async fn set_weights(self: Arc<Self>, _ctx: ActivityContext, input: SetWeightsInput) -> Result<SetWeightsOutput, ActivityError> {
        let api = api(&input.lb);
        let previous = if input.dry_run {
            api.check_weights(&input.lb.backend, &input.weights).await
        } else {
            api.set_weights(&input.lb.backend, &input.weights).await
        }
        .map_err(Error::into_activity)?;
        info!(weights = ?input.weights, dry_run = input.dry_run, "weights set");
        Ok(SetWeightsOutput { previous })
    }
}
