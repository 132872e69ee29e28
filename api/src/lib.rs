//! The signalbox API: the `signalbox.v1.DeployService` gRPC server ([`grpc`]) over the deploy
//! client of `signalbox-client`, the `signalbox.v1.ReleaseService` ([`releases`]) over its release client, the `signalbox.v1.ArtifactService` ([`artifacts`]) over the
//! origin store, the `signalbox.v1.TargetService` ([`targets`]) over the agents' etcd, and the
//! `signalbox-api` server process ([`server`]). Deploys go through
//! Temporal only: checks that need the worker's world are the worker's to answer. Builds go to
//! the origin store, an object store the workers read too (never a worker's own disk).

pub mod artifacts;
pub mod auth;
pub mod grpc;
pub mod releases;
pub mod server;
pub mod targets;
pub mod webhooks;
