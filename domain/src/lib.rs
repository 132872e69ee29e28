//! The deploy domain of signalbox: what a deploy is, and the pure decisions about it.
//!
//! Nothing in this crate performs I/O, reads a clock or knows Temporal. Workflow code sequences
//! these decisions with activities; activities carry them out on the world. The wire names and
//! activity types that connect the two live in `signalbox-contract`.

pub mod analysis;
pub mod approval;
pub mod artifact;
pub mod bounds;
pub mod control;
pub mod error;
pub mod grant;
pub mod health;
pub mod metric;
pub mod plan;
pub mod release;
pub mod release_control;
pub mod request;
pub mod status;
pub mod strategy;
pub mod target;
pub mod traffic;

pub use approval::{ApprovalPolicy, Approve, OnExpiry};
pub use artifact::{Artifact, Digest};
pub use control::Command;
pub use error::{Error, Result};
pub use health::{GroupFigures, HealthPolicy, HealthReport};
pub use plan::{BatchPlan, BatchStep};
pub use release::{DeployState, DeploySettings, OnFailure, Pipeline, ReleaseDeploy, ReleasePhase, ReleaseRequest, ReleaseStatus, ServiceBuild, Stage, StagePhase, StageStatus, StageTarget};
pub use request::{DEFAULT_ROLLBACK_WINDOW_MS, DeployRequest, deploy_id};
pub use status::{DeployStatus, InvalidField, Phase, Sampling, SamplingProgress, TrafficState};
pub use strategy::{BlueGreenSpec, CanarySpec, Strategy};
pub use target::Target;
