//! Deterministic workflow code: it sequences the domain's decisions and the contract's
//! activities, and records only decisions in history. No I/O, clocks or randomness here
//! (`clippy.toml` keeps it so).
//!
//! - [`DeployWorkflow`] (`signalbox.deploy`): every deploy, with any strategy.
//! - [`LaneWorkflow`] (`signalbox.lane`): held by a deploy, so one runs per service and target.
//! - [`ReleaseWorkflow`] (`signalbox.release`): services through a pipeline's stages, each
//!   target's deploy a child [`DeployWorkflow`].
//! - [`CanaryWorkflow`], [`BlueGreenWorkflow`]: the legacy traffic workflows, kept for runs
//!   started before canary and blue/green were strategies.
//! - [`NoopChainWorkflow`]: the benchmark's yardstick.
//!
//! Modules only point down: `deploy` stands on `shared`, strategies on `deploy::run`.

// The workflow macros generate constants that cannot carry docs; every handwritten item is documented.
#[allow(missing_docs)]
mod bench;
#[allow(missing_docs)]
mod deploy;
#[allow(missing_docs)]
mod lane;
#[allow(missing_docs)]
mod legacy;
#[allow(missing_docs)]
mod release;
mod shared;

pub use bench::NoopChainWorkflow;
pub use deploy::DeployWorkflow;
pub use shared::grant::install_control_keys;
pub use lane::LaneWorkflow;
pub use legacy::bluegreen::BlueGreenWorkflow;
pub use legacy::canary::CanaryWorkflow;
pub use release::ReleaseWorkflow;
