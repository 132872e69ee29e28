//! Deterministic workflow code: it sequences the domain's decisions and the contract's
//! activities, and records only decisions in history. No I/O, clocks or randomness here
//! (`clippy.toml` keeps it so).

// The workflow macros generate constants that cannot carry docs; every handwritten item is documented.
#[allow(missing_docs)]
pub mod bench;
mod control;
#[allow(missing_docs)]
pub mod bluegreen;
#[allow(missing_docs)]
pub mod canary;
#[allow(missing_docs)]
pub mod deploy;
mod saga;

pub use bench::NoopChainWorkflow;
pub use bluegreen::BlueGreenWorkflow;
pub use canary::CanaryWorkflow;
pub use deploy::DeployWorkflow;

/// Workflow type names as recorded in history; renaming a Rust type must not change them.
pub mod names {
    /// The deploy workflow.
    pub const DEPLOY: &str = "signalbox.deploy";
    /// The orchestration-overhead yardstick.
    pub const NOOP_CHAIN: &str = "signalbox.bench.noop_chain";
    /// The deploy's status query.
    pub const STATUS_QUERY: &str = "status";
    pub use signalbox_domain::control::names as control;
}
