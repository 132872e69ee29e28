//! The Kubernetes substrate (kind `kubernetes`): a target is a Deployment in a namespace of a
//! cluster, and its instances are the workload's replica slots (`web-0` .. `web-19`). The first
//! deploy adopts the Deployment as it runs (its image pinned by digest); every build after gets a
//! ReplicaSet made from the Deployment's pod template with the build's image, and a batch moves
//! slots from the builds they run to the new one. The ledger of slots (a ConfigMap,
//! compare-and-set on its resourceVersion) is written first, then the replica counts follow it:
//! the new build's ReplicaSet scales up and its pods must be Ready before the old holders scale
//! down, so the workload never has fewer ready replicas than the plan leaves it. The old
//! holders stay at zero, ready for an instant rollback.
//!
//! Health: pod readiness and restarts from the API (see [`Substrate::platform_health`]). Halt:
//! a mark in the ledger that every apply reads before it scales. Audit: Kubernetes Events on the
//! holders, labelled with the deploy.

mod cluster;
pub mod ledger;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use signalbox_contract::activities::{InstanceChange, InstanceState};
use signalbox_domain::{Artifact, Digest};
use signalbox_store::Home;
use signalbox_substrate::{AuditEvent, Error, HealthEndpoint, Kind, Progress, Result, Substrate};
use tokio::sync::OnceCell;
use tracing::{info, warn};

pub use cluster::{BUILD_LABEL, DEPLOY_LABEL, WORKLOAD_LABEL, deploy_label};
use cluster::{Objects, failing, trouble};
use ledger::{Build, HaltMark, Holder, Ledger};
pub use spec::TargetSpec;

/// The kind name of Kubernetes targets.
pub const KIND: &str = "kubernetes";

/// How often a batch waiting for its pods reads them.
const POLL: Duration = Duration::from_millis(200);

/// The Kubernetes targets a worker serves, from its targets file.
#[derive(Clone, Default)]
pub struct KubeTargets {
    home: Option<Home>,
    targets: BTreeMap<String, Arc<KubeTarget>>,
}

impl KubeTargets {
    /// The targets of `specs`, their builds' images read from the store under `home`.
    pub fn new(home: Home, specs: Vec<TargetSpec>) -> Self {
        let targets = specs.into_iter().map(|s| (s.name.clone(), Arc::new(KubeTarget::new(home.clone(), s)))).collect();
        Self { home: Some(home), targets }
    }

    /// The targets of the file at `path` (see [`spec`]).
    pub fn from_file(home: Home, path: &Path) -> std::result::Result<Self, spec::FileError> {
        Ok(Self::new(home, spec::read(path)?))
    }

    /// The names of the targets served.
    pub fn names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }
}

impl Kind for KubeTargets {
    fn open(&self, name: &str) -> Result<Arc<dyn Substrate>> {
        match self.targets.get(name) {
            Some(t) => Ok(t.clone()),
            None if self.home.is_none() => Err(Error::Target(format!("no kubernetes target named {name:?}: this worker was started without --kube-targets"))),
            None => Err(Error::Target(format!("no kubernetes target named {name:?} in this worker's --kube-targets file (it has: {})", self.names().join(", ")))),
        }
    }
}

/// One Kubernetes target.
pub struct KubeTarget {
    home: Home,
    spec: TargetSpec,
    objects: OnceCell<Objects>,
}

/// Chooses rustls's ring provider for the process, as the rest of signalbox's TLS does: more
/// than one provider is linked (aws-lc comes with the token checks), so rustls cannot guess.
/// Installing twice keeps the first.
pub fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

async fn connect(spec: &TargetSpec) -> Result<Client> {
    install_tls_provider();
    let refuse = |e: String| Error::Target(format!("cluster of target {}: {e}", spec.name));
    let options = KubeConfigOptions { context: spec.context.clone(), ..KubeConfigOptions::default() };
    let config = match &spec.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| refuse(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await.map_err(|e| refuse(e.to_string()))?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(c) => c,
            Err(_) if spec.context.is_none() => kube::Config::incluster().map_err(|e| refuse(format!("no kubeconfig and not in a cluster: {e}")))?,
            Err(e) => return Err(refuse(e.to_string())),
        },
    };
    Client::try_from(config).map_err(|e| refuse(e.to_string()))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl KubeTarget {
    /// The target of `spec`.
    pub fn new(home: Home, spec: TargetSpec) -> Self {
        Self { home, spec, objects: OnceCell::new() }
    }

    async fn objects(&self) -> Result<&Objects> {
        self.objects.get_or_try_init(|| async { Ok(Objects::new(connect(&self.spec).await?, self.spec.clone())) }).await
    }

    /// The version of a build, from the store's record.
    async fn version_of(&self, digest: &Digest) -> Result<Option<signalbox_store::Record>> {
        Ok(self.home.store()?.record(digest).await?)
    }

    /// The ledger, adopting the workload as it runs on the first call.
    async fn ledger(&self) -> Result<(Ledger, String)> {
        let objects = self.objects().await?;
        loop {
            if let Some(found) = objects.ledger().await? {
                return Ok(found);
            }
            let (deployment, image, digest) = objects.adopted_image().await?;
            let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
            let version = self.version_of(&digest).await?.map_or_else(|| "adopted".to_owned(), |r| r.version);
            let build = Build { version, image, holder: Holder::Deployment(self.spec.workload.clone()) };
            let ledger = Ledger::adopt(&self.spec.workload, replicas, digest, build);
            if objects.write_ledger(&ledger, None).await?.is_ok() {
                info!(target = %self.spec.name, replicas, "workload adopted");
            }
        }
    }

    /// Changes the ledger with `change` (compare-and-set; a conflict reads it again), returning
    /// the ledger written and what `change` answered.
    async fn change<T>(&self, change: impl Fn(&Ledger) -> Result<(Option<Ledger>, T)>) -> Result<(Ledger, T)> {
        let objects = self.objects().await?;
        loop {
            let (ledger, version) = self.ledger().await?;
            let (next, answer) = change(&ledger)?;
            let Some(next) = next.filter(|n| n != &ledger) else {
                return Ok((ledger, answer));
            };
            if objects.write_ledger(&next, Some(&version)).await?.is_ok() {
                return Ok((next, answer));
            }
        }
    }

    /// The image a build's pods run: `<repository>@<digest>`, the repository from the store.
    async fn image_of(&self, target: &Artifact) -> Result<String> {
        let record = self.version_of(&target.digest).await?.ok_or_else(|| signalbox_store::Error::UnknownArtifact(target.digest.clone()))?;
        let repo = record.image().ok_or_else(|| {
            signalbox_domain::Error::invalid("artifact.digest", format!("build {} is not an image: push its manifest with the label image=<repository> to deploy it to Kubernetes", target.digest))
        })?;
        Ok(format!("{repo}@{}", target.digest))
    }

    /// Brings every holder's replicas to what the ledger says: builds that grow first, until
    /// their pods are Ready, then builds that shrink, so ready replicas never drop below the
    /// plan. `arriving` are the builds the step moves slots to: they are waited for even when an
    /// earlier attempt already grew them (a retry after a crash). `respect_halt`: stop before
    /// shrinking anything if the target was halted meanwhile.
    async fn converge(&self, ledger: &Ledger, arriving: &[Digest], growing_ids: &[String], respect_halt: bool, progress: Progress<'_>) -> Result<()> {
        let objects = self.objects().await?;
        let want = ledger.replicas();
        let now = objects.scales(ledger).await?;
        let mut grow = Vec::new();
        for (digest, n) in &want {
            let n = *n as i32;
            let grows = n > now.get(digest).copied().unwrap_or(0);
            if grows {
                objects.scale(digest, &ledger.builds[digest], n).await?;
            }
            if grows || (n > 0 && arriving.contains(digest)) {
                grow.push((digest.clone(), n));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.spec.ready_timeout_ms);
        for (digest, n) in &grow {
            let build = &ledger.builds[digest];
            loop {
                let (ready, pods) = objects.readiness(digest, build).await?;
                progress(ready.min(*n as usize));
                if let Some(bad) = pods.iter().find_map(failing) {
                    return Err(unhealthy(growing_ids, bad));
                }
                if ready >= *n as usize {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    let why = pods.iter().find_map(trouble).unwrap_or_else(|| format!("{} of {n} pods exist", pods.len()));
                    return Err(unhealthy(growing_ids, format!("{ready} of {n} pods of {} Ready within {} ms; {why}", build.version, self.spec.ready_timeout_ms)));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        if respect_halt && objects.ledger().await?.is_some_and(|(l, _)| l.halt.is_some()) {
            return Err(Error::Halted(self.spec.name.clone()));
        }
        for (digest, n) in &want {
            if (*n as i32) < now.get(digest).copied().unwrap_or(0) {
                objects.scale(digest, &ledger.builds[digest], *n as i32).await?;
            }
        }
        Ok(())
    }

    fn substrate(&self) -> String {
        format!("{KIND}/{}", self.spec.name)
    }

    fn counts(ledger: &Ledger) -> String {
        ledger.replicas().iter().map(|(d, n)| format!("{}={n}", ledger.builds[d].holder.name())).collect::<Vec<_>>().join(", ")
    }
}

/// How long a call rides out a control plane it cannot reach (an API server restarting) before
/// it fails and leaves the retry to the activity: every step here is idempotent, so doing it
/// again from the start is safe.
const RIDE_OUT: Duration = Duration::from_secs(30);

/// `op`, done again on a transient error until it succeeds, fails for good or [`RIDE_OUT`] has
/// passed.
async fn ride_out<T, F: std::future::Future<Output = Result<T>>>(what: &str, op: impl Fn() -> F) -> Result<T> {
    let since = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match op().await {
            Err(e) if e.is_retryable() && since.elapsed() < RIDE_OUT => {
                warn!(error = %e, "{what}: the cluster cannot be reached; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

fn unhealthy(instances: &[String], message: String) -> Error {
    Error::Unhealthy { instance: instances.first().cloned().unwrap_or_default(), message }
}

fn slot(e: ledger::UnknownSlot) -> Error {
    Error::Target(e.to_string())
}

#[async_trait]
impl Substrate for KubeTarget {
    async fn describe(&self) -> Result<Vec<InstanceState>> {
        ride_out("describe", || async { Ok(self.ledger().await?.0.instances(self.spec.region())) }).await
    }

    async fn apply(&self, deploy_id: &str, instances: &[String], target: &Artifact, progress: Progress<'_>) -> Result<Vec<InstanceChange>> {
        ride_out("apply", || self.apply_once(deploy_id, instances, target, progress)).await
    }

    async fn rollback(&self, deploy_id: &str, changes: &[InstanceChange], progress: Progress<'_>) -> Result<u32> {
        ride_out("rollback", || self.rollback_once(deploy_id, changes, progress)).await
    }

    async fn health_endpoints(&self, _instances: &[String]) -> Result<Vec<HealthEndpoint>> {
        Ok(Vec::new())
    }

    async fn platform_health(&self, instances: &[String]) -> Result<Option<String>> {
        self.pods_health(instances).await
    }

    fn has_metrics(&self) -> bool {
        false
    }

    async fn halt(&self, deploy_id: &str, reason: &str) -> Result<()> {
        ride_out("halt", || self.halt_once(deploy_id, reason)).await
    }

    async fn release(&self, deploy_id: &str) -> Result<()> {
        ride_out("release", || self.release_once(deploy_id)).await
    }

    async fn audit_events(&self, deploy_id: &str) -> Result<Vec<AuditEvent>> {
        let events = ride_out("audit", || async { self.objects().await?.events(deploy_id).await }).await?;
        Ok(events
            .into_iter()
            .map(|(at, action, instances, detail)| AuditEvent { at: if at.is_empty() { now() } else { at }, deploy_id: deploy_id.to_owned(), substrate: self.substrate(), action, instances, detail })
            .collect())
    }
}

impl KubeTarget {
    async fn apply_once(&self, deploy_id: &str, instances: &[String], target: &Artifact, progress: Progress<'_>) -> Result<Vec<InstanceChange>> {
        let image = self.image_of(target).await?;
        let objects = self.objects().await?;
        let holder = Holder::ReplicaSet(objects.set_name(&target.digest));
        let build = Build { version: target.version.clone(), image, holder };
        let (ledger, changes) = self.change(|l| {
            if l.halt.is_some() {
                return Err(Error::Halted(self.spec.name.clone()));
            }
            let moved = l.apply(deploy_id, instances, target, build.clone()).map_err(slot)?;
            Ok((Some(moved.ledger), moved.changes))
        })
        .await?;
        let detail = format!("{} to {} ({}); replicas {}", ledger::ranges(&ledger.ordinals(instances).map_err(slot)?), target.version, target.digest, Self::counts(&ledger));
        if let Err(e) = self.converge(&ledger, std::slice::from_ref(&target.digest), instances, true, progress).await {
            if let Error::Unhealthy { message, .. } = &e {
                objects.event(&ledger, &target.digest, deploy_id, "unhealthy", instances, format!("deploy {deploy_id}: {message}"), true).await?;
            }
            return Err(e);
        }
        objects.event(&ledger, &target.digest, deploy_id, "apply", instances, format!("deploy {deploy_id}: {detail}"), false).await?;
        info!(deploy_id, target = %self.spec.name, replicas = %Self::counts(&ledger), "batch applied");
        Ok(changes)
    }

    async fn rollback_once(&self, deploy_id: &str, changes: &[InstanceChange], progress: Progress<'_>) -> Result<u32> {
        let (ledger, reverted) = self.change(|l| {
            let (next, reverted) = l.rollback(deploy_id, changes).map_err(slot)?;
            Ok((Some(next), reverted))
        })
        .await?;
        let ids: Vec<String> = changes.iter().map(|c| c.instance.clone()).collect();
        // An undo is always worth retrying: the old build's pods not yet Ready is no verdict.
        let arriving: Vec<Digest> = changes.iter().map(|c| c.from_digest.clone()).collect();
        self.converge(&ledger, &arriving, &ids, false, progress).await.map_err(|e| match e {
            Error::Unhealthy { instance, message } => Error::Instance { instance, message },
            e => e,
        })?;
        let objects = self.objects().await?;
        if let Some(first) = changes.first() {
            let detail = format!("deploy {deploy_id}: {} back to {}; replicas {}", ledger::ranges(&ledger.ordinals(&ids).map_err(slot)?), first.from_version, Self::counts(&ledger));
            objects.event(&ledger, &first.from_digest, deploy_id, "rollback", &ids, detail, true).await?;
        }
        Ok(reverted)
    }

    /// Pod readiness and restarts of the builds `instances` run.
    async fn pods_health(&self, instances: &[String]) -> Result<Option<String>> {
        let (ledger, _) = self.ledger().await?;
        let objects = self.objects().await?;
        let mut builds: Vec<Digest> = ledger.ordinals(instances).map_err(slot)?.into_iter().map(|n| ledger.slots[n].digest.clone()).collect();
        builds.sort();
        builds.dedup();
        for digest in builds {
            let build = &ledger.builds[&digest];
            let want = ledger.replicas()[&digest] as usize;
            let (ready, pods) = objects.readiness(&digest, build).await?;
            if let Some(bad) = pods.iter().find_map(trouble) {
                return Ok(Some(bad));
            }
            if ready < want {
                return Ok(Some(format!("{ready} of {want} pods of {} Ready", build.version)));
            }
        }
        Ok(None)
    }

    async fn halt_once(&self, deploy_id: &str, reason: &str) -> Result<()> {
        let mark = HaltMark { deploy_id: deploy_id.to_owned(), reason: reason.to_owned() };
        let (ledger, fresh) = self.change(|l| {
            if l.halt.as_ref().is_some_and(|m| m.deploy_id == deploy_id) {
                return Ok((None, false));
            }
            Ok((Some(Ledger { halt: Some(mark.clone()), ..l.clone() }), true))
        })
        .await?;
        if fresh && let Some(digest) = ledger.slots.first().map(|s| s.digest.clone()) {
            self.objects().await?.event(&ledger, &digest, deploy_id, "halt", &[], format!("deploy {deploy_id}: halted at {}: {reason}", now()), true).await?;
        }
        Ok(())
    }

    async fn release_once(&self, deploy_id: &str) -> Result<()> {
        let (ledger, lifted) = self.change(|l| match &l.halt {
            Some(m) if m.deploy_id == deploy_id || m.deploy_id.is_empty() => Ok((Some(Ledger { halt: None, ..l.clone() }), true)),
            _ => Ok((None, false)),
        })
        .await?;
        if lifted && let Some(digest) = ledger.slots.first().map(|s| s.digest.clone()) {
            self.objects().await?.event(&ledger, &digest, deploy_id, "release", &[], format!("deploy {deploy_id}: halt lifted at {}", now()), false).await?;
        }
        Ok(())
    }
}
