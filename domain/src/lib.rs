//! The deploy domain of signalbox: what a deploy is, and the pure decisions about it.
//!
//! Nothing in this crate performs I/O or reads a clock. Workflow code sequences these decisions
//! with activities; activities carry them out on the world. Both sides speak the types here,
//! including the activity [`contract`], so a workflow never depends on the code that acts.

/// Declares an activity of the contract: a marker type implementing `ActivityDefinition` with
/// its pinned wire name. The string is what history records: renaming the Rust type must never
/// change it.
macro_rules! activity {
    ($(#[$doc:meta])* $ty:ident = $wire:literal: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned wire name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::ActivityDefinition for $ty {
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }
    };
}

pub mod analysis;
pub mod approval;
pub mod artifact;
pub mod contract;
pub mod control;
pub mod error;
pub mod health;
pub mod plan;
pub mod request;
pub mod search;
pub mod status;
pub mod traffic;

pub use artifact::{Artifact, Digest};
pub use error::{Error, Result};
pub use health::{GroupFigures, HealthPolicy, HealthReport, Verdict};
pub use plan::{BatchPlan, BatchStep};
pub use approval::{ApprovalPolicy, Approve, OnExpiry};
pub use control::Command;
pub use request::{DEFAULT_ROLLBACK_WINDOW_MS, DeployRequest, FleetTarget, deploy_workflow_id};
pub use status::{DeployStatus, Phase};
