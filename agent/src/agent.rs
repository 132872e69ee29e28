//! The agent's loop: keep a lease on the host's registration, and bring the host to its desired
//! state whenever that state, or the target's halt key, changes.
//!
//! Converging is idempotent and survives the agent's own restart: the release directories, the
//! `current` link and the running process are the truth, so an agent that comes back re-reads
//! the desired state and starts, waits for or leaves alone whatever it finds; it never restarts
//! a process that already runs the desired build.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, PutOptions, WatchOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use signalbox_domain::Digest;
use signalbox_host::InstanceDir;
use tracing::{info, warn};

use crate::protocol::{Desired, HaltMark, Keys, Observed, Registration, State};

/// Where the agent runs and what it looks after.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "signalbox-agent", about = "Keeps one host on the build its desired state in etcd names")]
pub struct Options {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "SIGNALBOX_ETCD", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd: Vec<String>,
    /// The target this host belongs to.
    #[arg(long)]
    pub target: String,
    /// This host's name, unique in the target.
    #[arg(long)]
    pub host: String,
    /// This host's region (one of the target's).
    #[arg(long)]
    pub region: String,
    /// The address the service answers on (passed to it as `SIGNALBOX_ADDRESS`).
    #[arg(long)]
    pub address: String,
    /// The port the service answers on (passed to it as `PORT`).
    #[arg(long)]
    pub port: u16,
    /// The instance directory: releases, the `current` link, the service's log.
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds the registration outlives a silent agent.
    #[arg(long, default_value_t = 5)]
    pub lease_ttl_s: i64,
}

/// Pause between two attempts to reach etcd or a cache.
const RETRY: Duration = Duration::from_millis(300);
/// Attempts to pull a build before the change is reported failed.
const PULL_ATTEMPTS: u32 = 3;

/// The agent of one host.
pub struct Agent {
    options: Options,
    keys: Keys,
    inst: InstanceDir,
    http: reqwest::Client,
    started_at: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn get_json<T: DeserializeOwned>(client: &mut Client, key: &str) -> anyhow::Result<Option<T>> {
    let resp = client.get(key, None).await.with_context(|| format!("reading {key}"))?;
    match resp.kvs().first() {
        Some(kv) => Ok(Some(serde_json::from_slice(kv.value()).with_context(|| format!("{key} is unreadable"))?)),
        None => Ok(None),
    }
}

async fn put_json(client: &mut Client, key: &str, value: &impl Serialize, options: Option<PutOptions>) -> anyhow::Result<()> {
    client.put(key, serde_json::to_vec(value)?, options).await.with_context(|| format!("writing {key}"))?;
    Ok(())
}

impl Agent {
    /// The agent `options` describe.
    pub fn new(options: Options) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir).with_context(|| format!("creating {}", options.dir.display()))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).connect_timeout(Duration::from_secs(2)).build()?;
        Ok(Self { keys: Keys::new(&options.target), inst: InstanceDir::new(options.dir.clone()), options, http, started_at: now() })
    }

    /// Runs until `shutdown`; reconnects to etcd whenever it loses it. The service keeps
    /// running when the agent stops: it is the host's, not the agent's.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                ended = self.session() => match ended {
                    Ok(()) => return Ok(()),
                    Err(e) => warn!(error = %format!("{e:#}"), "etcd session ended; reconnecting"),
                },
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// One connection to etcd: register under a fresh lease, converge, then converge again on
    /// every change of the host's keys or the halt key.
    async fn session(&self) -> anyhow::Result<()> {
        let o = &self.options;
        let mut client = crate::connect_etcd(&o.etcd).await.context("connecting to etcd")?;
        let lease = client.lease_grant(o.lease_ttl_s, None).await.context("granting a lease")?.id();
        let registration = Registration { host: o.host.clone(), region: o.region.clone(), address: o.address.clone(), port: o.port, started_at: self.started_at.clone() };
        put_json(&mut client, &self.keys.registration(&o.host), &registration, Some(PutOptions::new().with_lease(lease))).await?;
        let mut keepalive = tokio::spawn(keep_alive(client.clone(), lease, o.lease_ttl_s));
        let mut host_changes = client.watch(self.keys.host(&o.host), Some(WatchOptions::new().with_prefix())).await?;
        let mut halt_changes = client.watch(self.keys.halt(), None).await?;
        info!(host = %o.host, target = %o.target, lease, "registered");
        self.converge(&mut client).await?;
        info!("converged after registering");
        loop {
            tokio::select! {
                ended = &mut keepalive => {
                    let why = match ended { Ok(Err(e)) => format!("{e:#}"), _ => "it ended".to_owned() };
                    bail!("the lease was lost: {why}");
                }
                m = host_changes.message() => { m?.context("the watch of the host's keys ended")?; }
                m = halt_changes.message() => { m?.context("the watch of the halt key ended")?; }
            }
            self.converge(&mut client).await?;
        }
    }

    /// Brings the host to its desired state, reporting each stage. Errors are etcd's; a change
    /// that fails is reported as `failed`, not returned.
    async fn converge(&self, client: &mut Client) -> anyhow::Result<()> {
        let host = &self.options.host;
        let Some(want) = get_json::<Desired>(client, &self.keys.desired(host)).await? else {
            return self.observe(client, 0, State::Ready, "no desired state yet").await;
        };
        let inst = &self.inst;
        let runs = inst.running_release();
        if inst.current().as_ref() == Some(&want.digest) && runs.as_ref() == Some(&want.digest) {
            // Running already (an agent restarted mid-change, or nothing changed): wait, never restart.
            let state = if self.wait_ready(&want.digest).await { State::Ready } else { State::Failed };
            return self.observe(client, want.generation, state, if state == State::Ready { "" } else { "running but not ready" }).await;
        }
        if !want.rollback
            && let Some(mark) = get_json::<HaltMark>(client, &self.keys.halt()).await?
        {
            return self.observe(client, want.generation, State::Halted, &format!("target halted by {}: {}", mark.deploy_id, mark.reason)).await;
        }
        self.observe(client, want.generation, State::Converging, &format!("moving to {} ({})", want.version, want.digest)).await?;
        if !inst.has_release(&want.digest)
            && let Err(e) = self.pull(&want).await
        {
            return self.observe(client, want.generation, State::Failed, &format!("{e:#}")).await;
        }
        if !want.rollback
            && let Some(mark) = get_json::<HaltMark>(client, &self.keys.halt()).await?
        {
            return self.observe(client, want.generation, State::Halted, &format!("target halted by {}: {}", mark.deploy_id, mark.reason)).await;
        }
        match self.switch(&want).await {
            Ok(()) if self.wait_ready(&want.digest).await => self.observe(client, want.generation, State::Ready, "").await,
            Ok(()) => self.observe(client, want.generation, State::Failed, &format!("{} did not become ready", want.version)).await,
            Err(e) => self.observe(client, want.generation, State::Failed, &format!("{e:#}")).await,
        }
    }

    /// Pulls the build from the region's cache, verifies its digest and unpacks it into a cold
    /// directory renamed into place.
    async fn pull(&self, want: &Desired) -> anyhow::Result<()> {
        let url = format!("{}/sha256/{}", want.source.trim_end_matches('/'), want.digest.hex());
        let mut last = None;
        for _ in 0..PULL_ATTEMPTS {
            match self.fetch(&url, &want.digest).await {
                Ok(bytes) => {
                    // Unpacking is disk work: off the async threads, so the lease keeps being
                    // refreshed however long a big build takes to write.
                    let (inst, digest, version, size) = (self.inst.clone(), want.digest.clone(), want.version.clone(), bytes.len());
                    tokio::task::spawn_blocking(move || inst.install_release(&digest, &bytes, &version)).await.context("unpacking")??;
                    info!(digest = %want.digest, bytes = size, "pulled");
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(RETRY).await;
        }
        Err(last.expect("at least one attempt")).with_context(|| format!("pulling {url}"))
    }

    async fn fetch(&self, url: &str, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let resp = self.http.get(url).send().await?.error_for_status()?;
        let bytes = resp.bytes().await?.to_vec();
        let (bytes, actual) = tokio::task::spawn_blocking(move || {
            let actual = Digest::from_sha256_bytes(&Sha256::digest(&bytes).into());
            (bytes, actual)
        })
        .await?;
        if &actual != digest {
            bail!("the bytes hash to {actual}, not {digest}");
        }
        Ok(bytes)
    }

    /// Drains the running process, switches `current` at once, starts the new build. A build
    /// switched to but not running (the agent died in between) is only started.
    async fn switch(&self, want: &Desired) -> anyhow::Result<()> {
        let inst = &self.inst;
        let manifest = inst.manifest(&want.digest)?.context("the build is not a bundle (no signalbox.json): an agent runs bundles only")?;
        // Before the switch: the host is never seen on a release without its owner.
        inst.set_owner(&want.deploy_id)?;
        if inst.running_pid().is_some() {
            let (signal, grace) = inst.drain();
            inst.stop(signal, grace).await?;
        }
        inst.switch_to(&want.digest)?;
        let pid = inst.start_bundle(&want.digest, &manifest, &self.options.host, &self.options.address, self.options.port)?;
        info!(pid, version = %want.version, digest = %want.digest, "started");
        Ok(())
    }

    /// Whether the running build `digest` becomes ready within its manifest's timeout.
    async fn wait_ready(&self, digest: &Digest) -> bool {
        let Ok(Some(manifest)) = self.inst.manifest(digest) else { return false };
        let deadline = tokio::time::Instant::now() + manifest.ready_timeout();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if self.inst.running_release().as_ref() != Some(digest) {
                return false;
            }
            let o = &self.options;
            if self.inst.is_ready(digest, &manifest, &o.host, &o.address, o.port, &self.http).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Writes the observed state, unless it says what the key already says.
    async fn observe(&self, client: &mut Client, generation: u64, state: State, message: &str) -> anyhow::Result<()> {
        let inst = &self.inst;
        let digest = inst.current();
        let previous = inst.previous();
        let metrics_path = digest.as_ref().and_then(|d| inst.manifest(d).ok().flatten()).map_or_else(|| "/metrics".to_owned(), |m| m.metrics.path);
        let observed = Observed {
            generation,
            state,
            version: digest.as_ref().and_then(|d| inst.version_of(d).ok()),
            digest,
            previous_version: previous.as_ref().and_then(|d| inst.version_of(d).ok()),
            previous,
            owner: inst.owner(),
            metrics_path,
            message: message.to_owned(),
            at: now(),
        };
        let key = self.keys.observed(&self.options.host);
        if let Some(known) = get_json::<Observed>(client, &key).await?
            && (Observed { at: observed.at.clone(), ..known }) == observed
        {
            return Ok(());
        }
        info!(generation, ?state, message, "observed");
        put_json(client, &key, &observed, None).await
    }
}

/// Refreshes the lease a third of its TTL apart; returns when etcd no longer keeps it.
async fn keep_alive(mut client: Client, lease: i64, ttl_s: i64) -> anyhow::Result<()> {
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl_s.max(1) as u64) * 1000 / 3));
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        match responses.message().await? {
            Some(r) if r.ttl() > 0 => {}
            _ => bail!("etcd let lease {lease} expire"),
        }
    }
}
