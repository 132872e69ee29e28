//! [`TrafficActivities`]: the load-balancer half of the activity contract
//! (`signalbox_domain::traffic`), carried out on HAProxy's runtime API and the local fleet.

use std::sync::Arc;
use std::time::Duration;

use signalbox_domain::HealthReport;
use signalbox_domain::traffic::{self, LbStats, LbTarget, SetStateInput, SetStateOutput, SetWeightsInput, SetWeightsOutput, VerifyInput};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, instrument};

use super::RuntimeApi;
use crate::health::Scraper;
use crate::home::Home;
use crate::Error;

/// The load-balancer activities; one instance serves any number of balancers, each named by the
/// [`LbTarget`] in the activity's input.
#[derive(Debug, Clone)]
pub struct TrafficActivities {
    home: Home,
    scraper: Scraper,
    http: reqwest::Client,
}

impl TrafficActivities {
    /// Activities verifying instances of the fleets under `home`.
    pub fn new(home: Home) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("a plain HTTP client builds");
        Self { home, scraper: Scraper::default(), http }
    }
}

fn api(lb: &LbTarget) -> RuntimeApi {
    RuntimeApi::new(&lb.stats_socket)
}

#[activities]
impl TrafficActivities {
    /// See [`traffic::ReadStats`].
    #[activity(definition = traffic::ReadStats)]
    #[instrument(skip_all, fields(backend = %input.backend))]
    pub async fn read_stats(self: Arc<Self>, _ctx: ActivityContext, input: LbTarget) -> Result<LbStats, ActivityError> {
        api(&input).stats(&input.backend).await.map_err(Error::into_activity)
    }

    /// See [`traffic::SetWeights`].
    #[activity(definition = traffic::SetWeights)]
    #[instrument(skip_all, fields(backend = %input.lb.backend, servers = input.weights.len()))]
    pub async fn set_weights(self: Arc<Self>, _ctx: ActivityContext, input: SetWeightsInput) -> Result<SetWeightsOutput, ActivityError> {
        let previous = api(&input.lb).set_weights(&input.lb.backend, &input.weights).await.map_err(Error::into_activity)?;
        info!(weights = ?input.weights, "weights set");
        Ok(SetWeightsOutput { previous })
    }

    /// See [`traffic::SetServerState`].
    #[activity(definition = traffic::SetServerState)]
    #[instrument(skip_all, fields(backend = %input.lb.backend, state = ?input.state))]
    pub async fn set_state(self: Arc<Self>, _ctx: ActivityContext, input: SetStateInput) -> Result<SetStateOutput, ActivityError> {
        let previous = api(&input.lb).set_state(&input.lb.backend, &input.servers, input.state).await.map_err(Error::into_activity)?;
        Ok(SetStateOutput { previous })
    }

    /// See [`traffic::VerifyInstances`].
    #[activity(definition = traffic::VerifyInstances)]
    #[instrument(skip_all, fields(fleet = %input.fleet.name, instances = input.instances.len(), reference = input.reference.len()))]
    pub async fn verify(self: Arc<Self>, ctx: ActivityContext, input: VerifyInput) -> Result<HealthReport, ActivityError> {
        super::verify::verify(&self.home, &self.scraper, &self.http, &ctx, input).await.map_err(Error::into_activity)
    }
}
