//! [`LocalFleet`]: the [`Substrate`] of real local processes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use signalbox_contract::activities::{InstanceChange, InstanceState};
use signalbox_domain::{Artifact, Digest};
use signalbox_store::Home;
use signalbox_substrate::{AuditEvent, Error, HealthEndpoint, Progress, Result, Substrate};
use tracing::{debug, info};

use signalbox_bundle::Manifest;
use signalbox_host::{InstanceDir, Ready};

use crate::journal;
use crate::{InstanceSpec, Inventory};

/// How long a started instance may take to answer `/ready`.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A fleet's halt mark: the deploy that froze it, and why. Changes stop before their next
/// instance while it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltMark {
    /// The deploy that set it.
    pub deploy_id: String,
    /// Why (`halted by alice: ...`).
    pub reason: String,
}

/// One line of the fleet's operation log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpLogEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The deploy that asked.
    pub deploy_id: String,
    /// Instance id.
    pub instance: String,
    /// `restart` (a process was started on `digest`) or `skip` (it already ran `digest`).
    pub op: String,
    /// The target artifact.
    pub digest: Digest,
}

/// A fleet of local processes under a signalbox home.
#[derive(Debug, Clone)]
pub struct LocalFleet {
    home: Home,
    dir: PathBuf,
    inventory: Inventory,
    http: reqwest::Client,
    parallelism: usize,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl LocalFleet {
    /// Opens the fleet `name`; an unknown fleet is a non-retryable error naming it.
    pub fn open(home: &Home, name: &str) -> Result<Self> {
        let dir = home.fleet_dir(name);
        let inventory = Inventory::load(&dir.join("inventory.json"), name)?;
        Ok(Self::from_parts(home.clone(), dir, inventory))
    }

    fn from_parts(home: Home, dir: PathBuf, inventory: Inventory) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(1)
            .build()
            .expect("a plain HTTP client builds");
        let parallelism = std::env::var("SIGNALBOX_FLEET_PARALLELISM").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
        Self { home, dir, inventory, http, parallelism }
    }

    /// Creates a fleet of `size` instances spread over `regions`, every one running `initial`
    /// (which must be in the store), and waits until all of them serve. Ports are picked free.
    pub async fn provision(home: &Home, name: &str, size: usize, regions: &[&str], service_binary: PathBuf, initial: &Digest) -> Result<Self> {
        // A port is free from when its probe listener closes until the instance binds it; two
        // fleets provisioned at once could be handed the same one in that gap. One provision at
        // a time per process closes it (instances bind before the next fleet picks ports).
        static PROVISIONING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = PROVISIONING.lock().await;
        let dir = home.fleet_dir(name);
        std::fs::create_dir_all(dir.join("instances")).map_err(|e| Error::io(&dir, e))?;
        let mut instances = Vec::with_capacity(size);
        // Hold every listener until all ports are chosen, so no two instances get the same one.
        let mut held = Vec::with_capacity(size);
        for i in 0..size {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(&dir, e))?;
            let port = l.local_addr().map_err(|e| Error::io(&dir, e))?.port();
            held.push(l);
            instances.push(InstanceSpec { id: format!("i-{i:04}"), port, region: regions[i % regions.len()].to_owned() });
        }
        drop(held);
        let inventory = Inventory { fleet: name.to_owned(), service_binary, instances };
        inventory.save(&dir.join("inventory.json"))?;
        let fleet = Self::from_parts(home.clone(), dir, inventory);
        let store = home.store()?;
        let bytes = store.get(initial).await?;
        let recorded = store.record(initial).await?.map(|r| r.version).unwrap_or_default();
        let version = fleet.instances().first().map(|i| fleet.instance_dir(&i.id)).map(|d| {
            d.install_release(initial, &bytes, &recorded).and_then(|()| d.version_of(initial))
        });
        let version = version.transpose()?.unwrap_or(recorded);
        let target = Artifact { digest: initial.clone(), git_sha: "0000000".into(), version };
        let ids: Vec<String> = fleet.instances().iter().map(|i| i.id.clone()).collect();
        for region in regions {
            home.region_cache(region)?.copy_from(&store, initial).await?;
        }
        fleet.apply("provision", &ids, &target, &|_| {}).await?;
        Ok(fleet)
    }

    /// Instances in rollout order.
    pub fn instances(&self) -> &[InstanceSpec] {
        &self.inventory.instances
    }

    /// Path of the inventory file (what the load generator reads).
    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.json")
    }

    /// The directory of instance `id`.
    pub fn instance_dir(&self, id: &str) -> InstanceDir {
        InstanceDir::new(self.dir.join("instances").join(id))
    }

    fn oplog_path(&self) -> PathBuf {
        self.dir.join("oplog.jsonl")
    }

    /// Every restart and skip this fleet has seen, oldest first.
    pub fn oplog(&self) -> Result<Vec<OpLogEntry>> {
        journal::read(&self.oplog_path())
    }

    fn halt_path(&self) -> PathBuf {
        self.dir.join("halt")
    }

    /// The fleet's halt mark, if it has one. A mark written before marks named their deploy
    /// reads as nobody's (an empty `deploy_id`): any deploy may lift it.
    pub fn halted_by(&self) -> Result<Option<HaltMark>> {
        let path = self.halt_path();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| HaltMark {
                deploy_id: String::new(),
                reason: String::from_utf8_lossy(&bytes).into_owned(),
            }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Asks instance `id` what it serves; `None` when it does not answer. A bundle serves the
    /// release its process runs from once its manifest's readiness check passes; the demo
    /// service says what it serves on `/ready`.
    pub async fn probe(&self, id: &str) -> Option<Ready> {
        let spec = self.inventory.instance(id).ok()?;
        let inst = self.instance_dir(id);
        if let Some(digest) = inst.running_release()
            && let Ok(Some(manifest)) = inst.manifest(&digest)
        {
            let pid = inst.running_pid()?;
            let ready = inst.is_ready(&digest, &manifest, &spec.id, "127.0.0.1", spec.port, &self.http).await;
            return ready.then(|| Some(Ready { version: inst.version_of(&digest).ok()?, digest, pid })).flatten();
        }
        let resp = self.http.get(format!("http://127.0.0.1:{}/ready", spec.port)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn wait_ready(&self, spec: &InstanceSpec, digest: &Digest, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            match self.probe(&spec.id).await {
                Some(r) if &r.digest == digest => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Instance {
                        instance: spec.id.clone(),
                        message: format!("not serving {digest} within {within:?}"),
                    });
                }
                _ => {}
            }
        }
    }

    /// Brings one instance to `digest`: pull into a cold directory and verify, drain, switch,
    /// restart, wait until ready. An instance already serving `digest` is not touched; an
    /// instance switched but not restarted (a crash in between) is only started.
    /// A rollback ignores a halt: undoing a change is always allowed.
    async fn converge(&self, deploy_id: &str, spec: &InstanceSpec, digest: &Digest, version: &str, rollback: bool) -> Result<bool> {
        let inst = self.instance_dir(&spec.id);
        let serving = self.probe(&spec.id).await;
        let log = |op: &str| {
            journal::append(
                &self.oplog_path(),
                &OpLogEntry { at: now(), deploy_id: deploy_id.to_owned(), instance: spec.id.clone(), op: op.to_owned(), digest: digest.clone() },
            )
        };
        if serving.as_ref().is_some_and(|r| &r.digest == digest) && inst.current().as_ref() == Some(digest) {
            log("skip")?;
            return Ok(false);
        }
        if !rollback && self.halt_path().exists() {
            return Err(Error::Halted(self.inventory.fleet.clone()));
        }
        if !inst.has_release(digest) {
            let bytes = self.home.region_cache(&spec.region)?.get(digest).await?;
            inst.install_release(digest, &bytes, version)?;
        }
        // Before the switch: an instance is never seen on a release without its owner, and a
        // retry after a crash between the two still knows this deploy switched it. Off the
        // async threads: replacing a file by rename makes ext4 write its data out first, which
        // would hold up every other instance's restart in the batch (a 1,000-instance rollout
        // took 25% longer per batch).
        let (owned, by) = (inst.clone(), deploy_id.to_owned());
        tokio::task::spawn_blocking(move || owned.set_owner(&by)).await.map_err(|e| Error::Target(format!("recording the owner of {}: {e}", spec.id)))??;
        let (signal, grace) = inst.drain();
        inst.stop(signal, grace).await?;
        inst.switch_to(digest)?;
        let manifest = inst.manifest(digest)?;
        let pid = match &manifest {
            Some(m) => inst.start_bundle(digest, m, &spec.id, "127.0.0.1", spec.port)?,
            None => inst.start(&self.inventory.service_binary, &spec.id, spec.port)?,
        };
        log("restart")?;
        debug!(instance = %spec.id, pid, %digest, "restarted");
        self.wait_ready(spec, digest, manifest.as_ref().map_or(READY_DEADLINE, Manifest::ready_timeout)).await?;
        Ok(true)
    }

    fn audit(&self, deploy_id: &str, action: &str, instances: Vec<String>, detail: String) -> Result<()> {
        let event = AuditEvent {
            at: now(),
            deploy_id: deploy_id.to_owned(),
            substrate: format!("local/{}", self.inventory.fleet),
            action: action.to_owned(),
            instances,
            detail,
        };
        journal::append(&self.home.audit_log(), &event)
    }

    /// Kills every instance at once, without draining: teardown when nothing can wait (a `Drop`).
    pub fn kill_all(&self) {
        for spec in self.instances() {
            if let Some(pid) = self.instance_dir(&spec.id).running_pid() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Stops every instance (demo and test teardown); waits for each to exit.
    pub async fn shutdown(&self) {
        stream::iter(self.instances())
            .for_each_concurrent(64, |spec| async move {
                let inst = self.instance_dir(&spec.id);
                let (signal, grace) = inst.drain();
                let _ = inst.stop(signal, grace).await;
            })
            .await;
    }
}

#[async_trait]
impl Substrate for LocalFleet {
    async fn describe(&self) -> Result<Vec<InstanceState>> {
        self.instances()
            .iter()
            .map(|spec| {
                let inst = self.instance_dir(&spec.id);
                let digest = inst.current().ok_or_else(|| Error::Target(format!("instance {} has no current release", spec.id)))?;
                let changed_by = inst.owner();
                Ok(InstanceState { id: spec.id.clone(), region: spec.region.clone(), version: inst.version_of(&digest)?, digest, changed_by })
            })
            .collect()
    }

    async fn apply(&self, deploy_id: &str, instances: &[String], target: &Artifact, progress: Progress<'_>) -> Result<Vec<InstanceChange>> {
        if self.halt_path().exists() {
            return Err(Error::Halted(self.inventory.fleet.clone()));
        }
        let done = AtomicUsize::new(0);
        let changes: Vec<(InstanceChange, bool)> = stream::iter(instances.iter().cloned())
            .map(|id| {
                let done = &done;
                async move {
                    let spec = self.inventory.instance(&id)?;
                    let inst = self.instance_dir(&id);
                    // What the instance ran before: current, or previous if an earlier attempt of
                    // this deploy already switched it (its owner says so). One that already ran
                    // the build before this deploy stays as it is, and so does its undo.
                    let before = match inst.current() {
                        Some(cur) if cur == target.digest && inst.owner().as_deref() == Some(deploy_id) => inst.previous().unwrap_or(cur),
                        Some(cur) => cur,
                        None => target.digest.clone(),
                    };
                    let from_version = if inst.has_release(&before) { inst.version_of(&before)? } else { target.version.clone() };
                    let restarted = self.converge(deploy_id, spec, &target.digest, &target.version, false).await?;
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    let change = InstanceChange {
                        instance: id,
                        from_version,
                        from_digest: before,
                        to_version: target.version.clone(),
                        to_digest: target.digest.clone(),
                    };
                    Ok::<_, Error>((change, restarted))
                }
            })
            .buffer_unordered(self.parallelism)
            .try_collect()
            .await?;
        let restarted = changes.iter().filter(|(_, r)| *r).count();
        info!(deploy_id, instances = instances.len(), restarted, "batch applied");
        self.audit(deploy_id, "apply", instances.to_vec(), format!("to {} ({}); {restarted} restarted", target.version, target.digest))?;
        Ok(changes.into_iter().map(|(c, _)| c).collect())
    }

    async fn rollback(&self, deploy_id: &str, changes: &[InstanceChange], progress: Progress<'_>) -> Result<u32> {
        let done = AtomicUsize::new(0);
        let reverted: Vec<bool> = stream::iter(changes.iter().cloned())
            .map(|c| {
                let done = &done;
                async move {
                    let spec = self.inventory.instance(&c.instance)?;
                    // Converging is idempotent: an instance the failed batch never reached is skipped.
                    let r = self.converge(deploy_id, spec, &c.from_digest, &c.from_version, true).await?;
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    Ok::<_, Error>(r)
                }
            })
            .buffered(self.parallelism)
            .try_collect()
            .await?;
        let n = reverted.iter().filter(|r| **r).count() as u32;
        let ids = changes.iter().map(|c| c.instance.clone()).collect();
        self.audit(deploy_id, "rollback", ids, format!("{n} instances reverted"))?;
        Ok(n)
    }

    async fn health_endpoints(&self, instances: &[String]) -> Result<Vec<HealthEndpoint>> {
        instances
            .iter()
            .map(|id| {
                let spec = self.inventory.instance(id)?;
                let base = format!("http://127.0.0.1:{}", spec.port);
                let inst = self.instance_dir(id);
                let manifest = match inst.current() {
                    Some(digest) => inst.manifest(&digest)?,
                    None => None,
                };
                let metrics = manifest.map_or_else(|| "/metrics".to_owned(), |m| m.metrics.path);
                Ok(HealthEndpoint { instance: id.clone(), metrics_url: format!("{base}{metrics}"), service_url: format!("{base}/") })
            })
            .collect()
    }

    async fn halt(&self, deploy_id: &str, reason: &str) -> Result<()> {
        // A retry finds its own mark and records nothing twice.
        if self.halted_by()?.is_some_and(|mark| mark.deploy_id == deploy_id) {
            return Ok(());
        }
        let path = self.halt_path();
        let mark = HaltMark { deploy_id: deploy_id.to_owned(), reason: reason.to_owned() };
        std::fs::write(&path, serde_json::to_vec(&mark).expect("a halt mark serializes")).map_err(|e| Error::io(&path, e))?;
        self.audit(deploy_id, "halt", vec![], reason.to_owned())
    }

    async fn release(&self, deploy_id: &str) -> Result<()> {
        // Another deploy's freeze is its own to lift.
        if self.halted_by()?.is_some_and(|mark| !mark.deploy_id.is_empty() && mark.deploy_id != deploy_id) {
            return Ok(());
        }
        let path = self.halt_path();
        match std::fs::remove_file(&path) {
            Ok(()) => self.audit(deploy_id, "release", vec![], String::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    async fn audit_events(&self, deploy_id: &str) -> Result<Vec<AuditEvent>> {
        let all: Vec<AuditEvent> = journal::read(&self.home.audit_log())?;
        Ok(all.into_iter().filter(|e| e.deploy_id == deploy_id).collect())
    }
}
