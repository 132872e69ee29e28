//! The interface every deploy substrate offers: one policy and one analysis engine drive any
//! number of substrates (local processes today; hosts, Kubernetes, serverless behind the same
//! trait). Activities reach a target only through [`Registry::open`] and this trait.

mod error;
mod registry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use signalbox_contract::activities::{InstanceChange, InstanceState};
use signalbox_domain::Artifact;

pub use error::{Error, Result};
pub use registry::{Kind, Registry};

/// Where to read one instance's health signals, and where it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEndpoint {
    /// Instance id.
    pub instance: String,
    /// URL of its Prometheus-format metrics.
    pub metrics_url: String,
    /// URL it serves requests on, for a verification load sent straight to it.
    pub service_url: String,
}

/// One audited change to the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The deploy that caused it.
    pub deploy_id: String,
    /// Substrate kind and target, e.g. `local/checkout-prod`.
    pub substrate: String,
    /// What happened: `apply`, `rollback`, `halt`, `release`.
    pub action: String,
    /// Instances concerned.
    pub instances: Vec<String>,
    /// Free-form detail: versions, digests, counts.
    pub detail: String,
}

/// Reports progress of a long operation, e.g. to heartbeat an activity.
pub type Progress<'a> = &'a (dyn Fn(usize) + Send + Sync);

/// What a deploy substrate must offer.
#[async_trait]
pub trait Substrate: Send + Sync {
    /// Every instance with the version it runs now and the deploy that put it there, in
    /// rollout order.
    async fn describe(&self) -> Result<Vec<InstanceState>>;

    /// Phased apply: moves `instances` (one phase) to `target`. Idempotent: an instance already
    /// running `target` is left alone and still reported. Returns changes in completion order.
    async fn apply(&self, deploy_id: &str, instances: &[String], target: &Artifact, progress: Progress<'_>) -> Result<Vec<InstanceChange>>;

    /// Fast rollback: returns each changed instance to its previous version, in the given order.
    /// Idempotent; returns how many instances this call actually reverted. A rollback ignores a
    /// halt: undoing a change is always allowed.
    async fn rollback(&self, deploy_id: &str, changes: &[InstanceChange], progress: Progress<'_>) -> Result<u32>;

    /// Health hook: where to read the instances' health signals.
    async fn health_endpoints(&self, instances: &[String]) -> Result<Vec<HealthEndpoint>>;

    /// Health hook: what the platform itself says of `instances` (Kubernetes: pod readiness and
    /// restarts), `Some(reason)` when one is unhealthy. Substrates whose instances only speak
    /// through their metrics say nothing.
    async fn platform_health(&self, instances: &[String]) -> Result<Option<String>> {
        let _ = instances;
        Ok(None)
    }

    /// Whether the instances serve metrics to sample. A target without them (pods with no
    /// metrics source) is judged by [`Self::platform_health`] alone.
    fn has_metrics(&self) -> bool {
        true
    }

    /// Freezes the substrate: in-flight and later applies stop before touching another instance.
    async fn halt(&self, deploy_id: &str, reason: &str) -> Result<()>;

    /// Lifts a halt.
    async fn release(&self, deploy_id: &str) -> Result<()>;

    /// Audit events recorded for a deploy, oldest first.
    async fn audit_events(&self, deploy_id: &str) -> Result<Vec<AuditEvent>>;
}
