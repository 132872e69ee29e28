//! Traffic on a load balancer: the balancer a strategy steers, what it reports, and the pure
//! decisions of the traffic strategies (which weights give a group a share of the requests,
//! which servers are the canary, which are blue and which green).

mod bluegreen;
mod canary;
mod weights;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::bluegreen::{BlueGreenPlan, plan_blue_green};
pub use self::canary::{CanaryPlan, Promotion, default_canaries, default_canary_steps, plan_canary, validate_steps};
pub use self::weights::{MAX_WEIGHT, Weights, share_percent, split_weights};
use crate::bounds::{MAX_PATH, check_id, check_text};
use crate::{Error, Result};

/// The load balancer a strategy acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbTarget {
    /// Path of the balancer's admin socket (HAProxy `stats socket ... level admin`).
    pub stats_socket: String,
    /// Backend whose servers are the fleet's instances, named by instance id.
    pub backend: String,
}

impl LbTarget {
    /// Checks both fields; errors name them under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.stats_socket.trim().is_empty() {
            return Err(Error::invalid(format!("{prefix}.stats_socket"), "must not be empty"));
        }
        check_text(&format!("{prefix}.stats_socket"), &self.stats_socket, MAX_PATH)?;
        if self.backend.trim().is_empty() {
            return Err(Error::invalid(format!("{prefix}.backend"), "must not be empty"));
        }
        check_id(&format!("{prefix}.backend"), &self.backend)
    }
}

/// One server as the balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Server name: the instance id.
    pub name: String,
    /// Current weight.
    pub weight: u32,
    /// Status as reported (`UP`, `DRAIN`, `MAINT`, `no check`, ...).
    pub status: String,
    /// Sessions (in HTTP mode: requests) sent to the server since the balancer started.
    pub sessions: u64,
}

/// A backend's servers, in configuration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbStats {
    /// Backend name.
    pub backend: String,
    /// Its servers.
    pub servers: Vec<ServerStats>,
}

impl LbStats {
    /// Every server's weight.
    pub fn weights(&self) -> Weights {
        self.servers.iter().map(|s| (s.name.clone(), s.weight)).collect()
    }

    /// Sessions per server.
    pub fn sessions(&self) -> BTreeMap<String, u64> {
        self.servers.iter().map(|s| (s.name.clone(), s.sessions)).collect()
    }
}

/// A server's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic by its weight.
    Ready,
    /// Takes no new traffic; in-flight requests finish.
    Drain,
    /// Out of service.
    Maint,
}
