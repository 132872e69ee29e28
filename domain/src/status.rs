//! Where a deploy stands: what the `status` query answers and what the workflow returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::HealthReport;

/// The deploy's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Checking the request against the world.
    Preflight,
    /// Copying the artifact into the regional caches.
    Pushing,
    /// Updating the instances of the current batch.
    Rolling,
    /// Waiting before judging the current batch.
    Baking,
    /// Sampling health and judging the current batch.
    Evaluating,
    /// Undoing every change, most recent first.
    RollingBack,
    /// Every instance runs the new version.
    Succeeded,
    /// The deploy was undone; `reason` says why.
    RolledBack,
    /// The deploy could not start or could not be undone cleanly; `reason` says why.
    Failed,
}

impl Phase {
    /// Whether the deploy has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::RolledBack | Self::Failed)
    }
}

/// A deploy's status: the answer to the `status` query and the workflow's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployStatus {
    /// Current phase.
    pub phase: Phase,
    /// 1-based index of the batch in progress or last done; 0 before the first.
    pub current_batch: u32,
    /// Number of batches in the plan for this fleet (0 until planned).
    pub total_batches: u32,
    /// Instances in the fleet.
    pub fleet_size: u32,
    /// How many instances run each version, by version name.
    pub instances_per_version: BTreeMap<String, u32>,
    /// The most recent health verdict, with its figures.
    pub last_verdict: Option<HealthReport>,
    /// Why the deploy rolled back or failed.
    pub reason: Option<String>,
}

impl DeployStatus {
    /// The status of a deploy that has not done anything yet.
    pub fn starting() -> Self {
        Self {
            phase: Phase::Preflight,
            current_batch: 0,
            total_batches: 0,
            fleet_size: 0,
            instances_per_version: BTreeMap::new(),
            last_verdict: None,
            reason: None,
        }
    }

    /// Moves `n` instances from version `from` to version `to` in the per-version counts.
    pub fn move_instances(&mut self, from: &str, to: &str, n: u32) {
        if n == 0 || from == to {
            return;
        }
        if let Some(c) = self.instances_per_version.get_mut(from) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.instances_per_version.remove(from);
            }
        }
        *self.instances_per_version.entry(to.to_owned()).or_default() += n;
    }
}
