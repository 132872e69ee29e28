//! The agent substrate (kind `agent`): a target's hosts each run `signalbox-agent`, and the
//! worker changes them only through etcd. A batch writes its hosts' desired state (a new
//! generation, compare-and-set), then waits, reporting progress, until every host's agent says
//! it is ready on the build; a host that reports a failure, loses its lease or stays silent past
//! the target's report timeout fails the batch like an unhealthy one. Rollback writes the
//! previous desired state; halt sets the target's halt key, which agents honour before each step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use signalbox_agent::protocol::{Desired, HaltMark, Hosts, Keys, Observed, Registration, State, TargetSpec};
use signalbox_contract::activities::{InstanceChange, InstanceState};
use signalbox_domain::{Artifact, Digest};
use signalbox_substrate::{AuditEvent, Error, HealthEndpoint, Kind, Progress, Result, Substrate};
use tokio::sync::OnceCell;
use tracing::{info, warn};

/// The kind name of agent targets.
pub const KIND: &str = "agent";

/// How often a waiting batch reads its hosts' reports.
const POLL: Duration = Duration::from_millis(100);

/// Agent targets whose keys live in one etcd cluster.
#[derive(Clone)]
pub struct AgentTargets {
    endpoints: Vec<String>,
    client: Arc<OnceCell<Client>>,
}

impl AgentTargets {
    /// The agent targets of the etcd cluster at `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, client: Arc::new(OnceCell::new()) }
    }
}

impl Kind for AgentTargets {
    fn open(&self, name: &str) -> Result<Arc<dyn Substrate>> {
        Ok(Arc::new(AgentTarget { keys: Keys::new(name), endpoints: self.endpoints.clone(), client: self.client.clone() }))
    }
}

/// One target of agent hosts.
#[derive(Clone)]
pub struct AgentTarget {
    keys: Keys,
    endpoints: Vec<String>,
    client: Arc<OnceCell<Client>>,
}

/// etcd trouble: transient, a retry may reach it.
fn etcd(e: etcd_client::Error) -> Error {
    Error::Io { path: "etcd".into(), source: std::io::Error::other(e.to_string()) }
}

fn unreadable(key: &str, e: serde_json::Error) -> Error {
    Error::Target(format!("{key} is unreadable: {e}"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl AgentTarget {
    /// The target named `name` in the etcd cluster at `endpoints` (tests and tools).
    pub fn new(endpoints: Vec<String>, name: &str) -> Self {
        Self { keys: Keys::new(name), endpoints, client: Arc::new(OnceCell::new()) }
    }

    async fn client(&self) -> Result<Client> {
        let client = self
            .client
            .get_or_try_init(|| signalbox_agent::connect_etcd(&self.endpoints))
            .await
            .map_err(etcd)?;
        Ok(client.clone())
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let resp = self.client().await?.get(key, None).await.map_err(etcd)?;
        resp.kvs().first().map(|kv| serde_json::from_slice(kv.value()).map_err(|e| unreadable(key, e))).transpose()
    }

    async fn put_json(&self, key: &str, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("protocol values serialize");
        self.client().await?.put(key, bytes, None).await.map_err(etcd)?;
        Ok(())
    }

    /// The target's spec, written by `apply_spec`; none is an unknown target.
    pub async fn spec(&self) -> Result<TargetSpec> {
        self.get_json(&self.keys.spec())
            .await?
            .ok_or_else(|| Error::Target(format!("no agent target named {:?} (no {} in etcd)", self.keys.target(), self.keys.spec())))
    }

    /// Declares the target: its regions and their caches.
    pub async fn apply_spec(&self, spec: &TargetSpec) -> Result<()> {
        self.put_json(&self.keys.spec(), spec).await
    }

    /// Every host's observed state, by name.
    pub async fn observed(&self) -> Result<BTreeMap<String, Observed>> {
        Ok(self.hosts().await?.observed)
    }

    /// The hosts whose agents hold a live registration, by name.
    pub async fn registered(&self) -> Result<BTreeMap<String, Registration>> {
        Ok(self.hosts().await?.registration)
    }

    async fn hosts(&self) -> Result<Hosts> {
        let prefix = self.keys.hosts();
        let resp = self.client().await?.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await.map_err(etcd)?;
        Hosts::read(&self.keys, resp.kvs().iter().map(|kv| (kv.key(), kv.value(), kv.mod_revision()))).map_err(|e| Error::Target(e.to_string()))
    }

    async fn halted_by(&self) -> Result<Option<HaltMark>> {
        self.get_json(&self.keys.halt()).await
    }

    /// Writes `host`'s desired state to `digest` unless it already says so for this deploy;
    /// returns the generation to wait for. Compare-and-set on the key's revision: a write in
    /// between (another worker) is read again, never overwritten blind.
    async fn want(&self, host: &str, seen: Option<&(Desired, i64)>, want: Desired) -> Result<u64> {
        let key = self.keys.desired(host);
        let mut seen = seen.cloned();
        loop {
            if let Some((d, _)) = &seen
                && d.digest == want.digest
                && d.deploy_id == want.deploy_id
                && d.rollback == want.rollback
            {
                return Ok(d.generation);
            }
            let (generation, compare) = match &seen {
                Some((d, revision)) => (d.generation + 1, Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)),
                None => (1, Compare::create_revision(key.as_str(), CompareOp::Equal, 0)),
            };
            let desired = Desired { generation, ..want.clone() };
            let put = TxnOp::put(key.as_str(), serde_json::to_vec(&desired).expect("desired serializes"), None::<PutOptions>);
            let txn = Txn::new().when([compare]).and_then([put]);
            if self.client().await?.txn(txn).await.map_err(etcd)?.succeeded() {
                return Ok(generation);
            }
            let resp = self.client().await?.get(key.as_str(), None).await.map_err(etcd)?;
            seen = resp.kvs().first().map(|kv| serde_json::from_slice(kv.value()).map(|d| (d, kv.mod_revision())).map_err(|e| unreadable(&key, e))).transpose()?;
        }
    }

    /// Moves `hosts` to their builds and waits until each reports ready on it.
    async fn converge(&self, deploy_id: &str, moves: &[(String, Digest, String)], rollback: bool, progress: Progress<'_>) -> Result<()> {
        let spec = self.spec().await?;
        let known = self.hosts().await?;
        let mut waiting = BTreeMap::new();
        for (host, digest, version) in moves {
            let seen = known.desired.get(host);
            let source = match known.registration.get(host) {
                Some(r) => spec.regions.get(&r.region).map(|region| region.cache.clone()).ok_or_else(|| {
                    Error::Target(format!("host {host} is in region {:?}, which the target's spec does not name", r.region))
                })?,
                // An undo still reaches a host that is gone: its desired state goes back, and its
                // agent converges to it when it returns. Nobody waits for it.
                None if rollback => match seen {
                    Some((d, _)) => d.source.clone(),
                    None => continue,
                },
                None => {
                    return Err(Error::Instance { instance: host.clone(), message: "has no live registration: its agent is down or cut off".into() });
                }
            };
            let want = Desired { generation: 0, digest: digest.clone(), version: version.clone(), deploy_id: deploy_id.to_owned(), source, rollback };
            let generation = self.want(host, seen, want).await?;
            if known.registration.contains_key(host) {
                waiting.insert(host.clone(), (generation, digest.clone()));
            } else {
                warn!(deploy_id, host, "rolled back in etcd only: the host is gone and converges when it returns");
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.report_timeout_ms);
        let total = waiting.len();
        let mut ready = 0;
        while !waiting.is_empty() {
            let now = self.hosts().await?;
            let mut failed = None;
            waiting.retain(|host, (generation, digest)| {
                if !now.registration.contains_key(host) {
                    if rollback {
                        warn!(deploy_id, host, "lost during the rollback: it converges when it returns");
                        return false;
                    }
                    failed.get_or_insert((host.clone(), "lost its lease: its agent is down or the host is cut off".to_owned()));
                    return true;
                }
                match now.observed.get(host) {
                    Some(o) if o.generation >= *generation && o.state == State::Ready && o.digest.as_ref() == Some(digest) => false,
                    Some(o) if o.generation >= *generation && matches!(o.state, State::Failed | State::Halted) => {
                        failed.get_or_insert((host.clone(), o.message.clone()));
                        true
                    }
                    _ => true,
                }
            });
            if let Some((instance, message)) = failed {
                return Err(Error::Instance { instance, message });
            }
            if total - waiting.len() > ready {
                ready = total - waiting.len();
                progress(ready);
            }
            if waiting.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let (host, _) = waiting.first_key_value().expect("a host still waited for");
                return Err(Error::Instance { instance: host.clone(), message: format!("did not report ready within {} ms", spec.report_timeout_ms) });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn audit(&self, deploy_id: &str, action: &str, instances: Vec<String>, detail: String) -> Result<()> {
        let event = AuditEvent { at: now(), deploy_id: deploy_id.to_owned(), substrate: format!("{KIND}/{}", self.keys.target()), action: action.to_owned(), instances, detail };
        let key = format!("{}{}-{}", self.keys.audit(deploy_id), event.at, audit_suffix());
        self.put_json(&key, &event).await
    }
}

/// A suffix that keeps two audit events of the same millisecond apart.
fn audit_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[async_trait]
impl Substrate for AgentTarget {
    async fn describe(&self) -> Result<Vec<InstanceState>> {
        self.spec().await?;
        let hosts = self.hosts().await?;
        hosts
            .registration
            .iter()
            .map(|(host, r)| {
                let o = hosts.observed.get(host);
                let digest = o.and_then(|o| o.digest.clone()).ok_or_else(|| Error::Target(format!("host {host} runs no build yet")))?;
                Ok(InstanceState {
                    id: host.clone(),
                    region: r.region.clone(),
                    version: o.and_then(|o| o.version.clone()).unwrap_or_default(),
                    digest,
                    changed_by: o.and_then(|o| o.owner.clone()),
                })
            })
            .collect()
    }

    async fn apply(&self, deploy_id: &str, instances: &[String], target: &Artifact, progress: Progress<'_>) -> Result<Vec<InstanceChange>> {
        if self.halted_by().await?.is_some() {
            return Err(Error::Halted(self.keys.target().to_owned()));
        }
        let before = self.hosts().await?;
        let changes: Vec<InstanceChange> = instances
            .iter()
            .map(|host| {
                let o = before.observed.get(host);
                // What the host ran before: its current build, or its previous one if an earlier
                // attempt of this deploy already moved it (its owner says so).
                let (from_digest, from_version) = match o {
                    Some(o) if o.digest.as_ref() == Some(&target.digest) && o.owner.as_deref() == Some(deploy_id) => {
                        (o.previous.clone().unwrap_or_else(|| target.digest.clone()), o.previous_version.clone().unwrap_or_else(|| target.version.clone()))
                    }
                    Some(o) => (o.digest.clone().unwrap_or_else(|| target.digest.clone()), o.version.clone().unwrap_or_else(|| target.version.clone())),
                    None => (target.digest.clone(), target.version.clone()),
                };
                InstanceChange { instance: host.clone(), from_version, from_digest, to_version: target.version.clone(), to_digest: target.digest.clone() }
            })
            .collect();
        let moves: Vec<(String, Digest, String)> = instances.iter().map(|h| (h.clone(), target.digest.clone(), target.version.clone())).collect();
        self.converge(deploy_id, &moves, false, progress).await?;
        info!(deploy_id, hosts = instances.len(), "batch applied");
        self.audit(deploy_id, "apply", instances.to_vec(), format!("to {} ({})", target.version, target.digest)).await?;
        Ok(changes)
    }

    async fn rollback(&self, deploy_id: &str, changes: &[InstanceChange], progress: Progress<'_>) -> Result<u32> {
        let before = self.hosts().await?;
        let reverted = changes.iter().filter(|c| before.observed.get(&c.instance).and_then(|o| o.digest.as_ref()) != Some(&c.from_digest)).count() as u32;
        let moves: Vec<(String, Digest, String)> = changes.iter().map(|c| (c.instance.clone(), c.from_digest.clone(), c.from_version.clone())).collect();
        self.converge(deploy_id, &moves, true, progress).await?;
        let ids = changes.iter().map(|c| c.instance.clone()).collect();
        self.audit(deploy_id, "rollback", ids, format!("{reverted} hosts reverted")).await?;
        Ok(reverted)
    }

    async fn health_endpoints(&self, instances: &[String]) -> Result<Vec<HealthEndpoint>> {
        let hosts = self.hosts().await?;
        instances
            .iter()
            .map(|host| {
                let r = hosts.registration.get(host).ok_or_else(|| Error::Instance { instance: host.clone(), message: "has no live registration".into() })?;
                let metrics = hosts.observed.get(host).map_or("/metrics", |o| o.metrics_path.as_str());
                let base = format!("http://{}:{}", r.address, r.port);
                Ok(HealthEndpoint { instance: host.clone(), metrics_url: format!("{base}{metrics}"), service_url: format!("{base}/") })
            })
            .collect()
    }

    async fn halt(&self, deploy_id: &str, reason: &str) -> Result<()> {
        if self.halted_by().await?.is_some_and(|m| m.deploy_id == deploy_id) {
            return Ok(());
        }
        self.put_json(&self.keys.halt(), &HaltMark { deploy_id: deploy_id.to_owned(), reason: reason.to_owned() }).await?;
        self.audit(deploy_id, "halt", vec![], reason.to_owned()).await
    }

    async fn release(&self, deploy_id: &str) -> Result<()> {
        match self.halted_by().await? {
            Some(mark) if mark.deploy_id == deploy_id || mark.deploy_id.is_empty() => {
                self.client().await?.delete(self.keys.halt(), None).await.map_err(etcd)?;
                self.audit(deploy_id, "release", vec![], String::new()).await
            }
            _ => Ok(()),
        }
    }

    async fn audit_events(&self, deploy_id: &str) -> Result<Vec<AuditEvent>> {
        let prefix = self.keys.audit(deploy_id);
        let resp = self.client().await?.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await.map_err(etcd)?;
        let mut events: Vec<AuditEvent> = resp.kvs().iter().map(|kv| serde_json::from_slice(kv.value()).map_err(|e| unreadable(&prefix, e))).collect::<Result<_>>()?;
        events.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(events)
    }
}
