//! [`TrafficActivities`]: the load-balancer activities of the contract, carried out on
//! HAProxy's runtime API.

use std::sync::Arc;

use signalbox_contract::activities::{self as contract, SetStateInput, SetStateOutput, SetWeightsInput, SetWeightsOutput};
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
        let previous = api(&input.lb).set_weights(&input.lb.backend, &input.weights).await.map_err(Error::into_activity)?;
        info!(weights = ?input.weights, "weights set");
        Ok(SetWeightsOutput { previous })
    }

    /// See [`contract::SetServerState`].
    #[activity(definition = contract::SetServerState)]
    #[instrument(skip_all, fields(backend = %input.lb.backend, state = ?input.state))]
    pub async fn set_state(self: Arc<Self>, _ctx: ActivityContext, input: SetStateInput) -> Result<SetStateOutput, ActivityError> {
        let previous = api(&input.lb).set_state(&input.lb.backend, &input.servers, input.state).await.map_err(Error::into_activity)?;
        Ok(SetStateOutput { previous })
    }
}
