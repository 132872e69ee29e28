//! The signalbox client of Temporal: the envconfig connection ([`connect`]), typed start and
//! steer of deploys ([`Deploys`]), start and status of releases ([`Releases`]), and who holds
//! a lane ([`lanes`]). The API, the CLI, the tests and the benchmarks are thin layers on it; it
//! depends on the contract, never on workflow code.

mod connect;
mod deploys;
pub mod lanes;
pub mod listing;
mod releases;

pub use connect::{connect, connect_to, connect_with};
pub use deploys::{Deploys, Error, Result, Started, history};
pub use releases::Releases;
pub use temporalio_client::Client;

/// The task queue deploys run on unless configured otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "signalbox";
