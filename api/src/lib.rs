//! The signalbox API: the `signalbox.v1.DeployService` gRPC server ([`grpc`]) over the deploy
//! client of `signalbox-client`, and the `signalbox-api` server process ([`server`]). It talks
//! to Temporal only: checks that need the worker's world are the worker's to answer.

pub mod grpc;
pub mod server;
