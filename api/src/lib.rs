//! The signalbox API: a deploy client over Temporal, and the gRPC service that exposes it.

pub mod deploys;

pub use deploys::Deploys;
