//! The signalbox API: a deploy client over Temporal ([`Deploys`]), the gRPC service that exposes
//! it ([`grpc`]), and the `signalbox-api` server process ([`server`]).

pub mod deploys;
pub mod grpc;
pub mod server;

pub use deploys::Deploys;
