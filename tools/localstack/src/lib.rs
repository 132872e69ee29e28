//! A whole local signalbox, assembled from real parts: a Temporal dev server on a file-backed
//! database, the worker as a separate OS process, demo artifacts in the store, a fleet of real
//! service processes and a load generator sending them real requests. The demo, the
//! integration tests and the benchmarks all start from here.

pub mod agents;
pub mod kube;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use signalbox_client::{Client, Deploys, Releases};
use signalbox_devstack::{DevServerOptions, ManagedProcess, TemporalDevServer, workspace_binary};
use signalbox_domain::{Artifact, BatchPlan, DeployRequest, HealthPolicy, Strategy, Target};
use signalbox_store::{Home, Record, digest_of};
use signalbox_substrate_local::LocalFleet;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Working directory: database, logs, signalbox home.
    pub dir: PathBuf,
    /// Frontend port; `None` picks a free one.
    pub port: Option<u16>,
    /// Web UI port; `None` runs headless.
    pub ui_port: Option<u16>,
    /// Task queue of the worker.
    pub task_queue: String,
    /// Namespace the server serves and everything runs in: `$TEMPORAL_NAMESPACE`, else `default`.
    pub namespace: String,
    /// Extra environment of the worker processes, e.g. `SIGNALBOX_FLEET_PARALLELISM`.
    pub worker_env: Vec<(String, String)>,
}

impl StackOptions {
    /// A headless stack in `dir` on free ports.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let namespace = std::env::var("TEMPORAL_NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        Self { dir: dir.into(), port: None, ui_port: None, task_queue: signalbox_client::DEFAULT_TASK_QUEUE.into(), namespace, worker_env: Vec::new() }
    }
}

/// A running local signalbox.
pub struct Stack {
    /// The Temporal dev server.
    pub server: TemporalDevServer,
    /// The worker process.
    pub worker: ManagedProcess,
    /// The signalbox home shared by worker and clients.
    pub home: Home,
    /// What it was started with.
    pub options: StackOptions,
}

impl Stack {
    /// Starts the dev server and one worker process; returns once both are up.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir)?;
        let mut server_opts = DevServerOptions::in_dir(&options.dir);
        server_opts.port = options.port;
        server_opts.ui_port = options.ui_port;
        server_opts.namespace = options.namespace.clone();
        server_opts.search_attributes = signalbox_contract::search::REGISTERED.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
        let server = TemporalDevServer::start(server_opts).await?;
        let home = Home::new(options.dir.join("home"));
        std::fs::create_dir_all(home.root())?;
        let worker = spawn_worker(&server.address(), &home, &options, "worker.log")?;
        Ok(Self { server, worker, home, options })
    }

    /// Starts another worker process on the same server, home and task queue.
    pub fn spawn_worker(&self, log_name: &str) -> anyhow::Result<ManagedProcess> {
        spawn_worker(&self.server.address(), &self.home, &self.options, log_name)
    }

    /// A Temporal client of this stack's server (envconfig, with this server's address and
    /// namespace).
    pub async fn client(&self) -> anyhow::Result<Client> {
        signalbox_client::connect_with(Some(&self.server.address()), Some(&self.options.namespace)).await.map_err(Into::into)
    }

    /// The deploy client of this stack.
    pub async fn deploys(&self) -> anyhow::Result<Deploys> {
        Ok(Deploys::new(self.client().await?, self.options.task_queue.clone()))
    }

    /// The release client of this stack.
    pub async fn releases(&self) -> anyhow::Result<Releases> {
        Ok(Releases::new(self.client().await?, self.options.task_queue.clone()))
    }
}

/// The control key the stack's workers share with an API that signs ([`control_key_file`]).
pub fn control_key_file(options: &StackOptions) -> std::path::PathBuf {
    options.dir.join("control.key")
}

/// Spawns `signalbox-worker` against `address` with `home` and `options` (its task queue and
/// extra environment, e.g. Temporal's TLS settings), logging to `log_name` in the stack's dir;
/// it holds the stack's control key, made on first use.
pub fn spawn_worker(address: &str, home: &Home, options: &StackOptions, log_name: &str) -> anyhow::Result<ManagedProcess> {
    let key = control_key_file(options);
    if !key.exists() {
        std::fs::create_dir_all(&options.dir)?;
        std::fs::write(&key, format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()))?;
    }
    let mut cmd = Command::new(workspace_binary("signalbox-worker")?);
    cmd.env("TEMPORAL_ADDRESS", address)
        .env("SIGNALBOX_CONTROL_KEY_FILE", &key)
        .env("TEMPORAL_NAMESPACE", &options.namespace)
        .env("SIGNALBOX_HOME", home.root())
        .env("SIGNALBOX_TASK_QUEUE", &options.task_queue)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,temporalio_sdk_core=warn".into()))
        .envs(options.worker_env.iter().map(|(k, v)| (k, v)));
    ManagedProcess::spawn("signalbox-worker", cmd, &options.dir.join(log_name))
}

/// A demo service build with the given behaviour, as the bytes of its artifact.
pub fn demo_build(service: &str, version: &str, error_rate: f64, latency_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&demo_artifact(service, version, error_rate, latency_ms)).expect("a demo artifact serializes")
}

/// A demo service build with the given behaviour; adjust its fields, then serialize it.
pub fn demo_artifact(service: &str, version: &str, error_rate: f64, latency_ms: u64) -> signalbox_demo::Artifact {
    signalbox_demo::Artifact {
        schema: signalbox_demo::artifact::SCHEMA.into(),
        service: service.into(),
        version: version.into(),
        error_rate,
        latency_ms,
        latency_jitter_ms: latency_ms / 2,
        log_lines_per_request: 1,
        startup_delay_ms: 0,
        degrade_after_ms: 0,
        degraded_error_rate: 0.0,
    }
}

/// Puts a build into the home's store with its record (service, version, git SHA); returns it
/// as a deployable artifact.
pub async fn publish(home: &Home, bytes: Vec<u8>) -> anyhow::Result<Artifact> {
    let build = serde_json::from_slice::<signalbox_demo::Artifact>(&bytes)?;
    // The demo builds are not from a repository; their git SHA is derived from their content.
    let git_sha = digest_of(&bytes).hex()[..12].to_owned();
    let record = Record::new(build.service, build.version.clone(), git_sha.clone());
    let digest = home.store()?.put_build(bytes, record).await?;
    Ok(Artifact { digest, git_sha, version: build.version })
}

/// A fleet of demo instances under real load. Dropping it kills the instances and the load.
pub struct LoadedFleet {
    /// The fleet.
    pub fleet: LocalFleet,
    /// The load generator process.
    pub load: ManagedProcess,
    /// What every instance ran when the fleet was made.
    pub initial: Artifact,
}

impl LoadedFleet {
    /// Provisions `size` instances over two regions, all on `initial`, and starts `rps`
    /// requests per second spread over them.
    pub async fn start(home: &Home, name: &str, size: usize, initial: Artifact, rps: u32, log_dir: &Path) -> anyhow::Result<Self> {
        let binary = workspace_binary("signalbox-demo-service")?;
        let fleet = LocalFleet::provision(home, name, size, &["us-east", "eu-west"], binary, &initial.digest).await?;
        let mut cmd = Command::new(workspace_binary("signalbox-loadgen")?);
        cmd.arg("--fleet-file").arg(fleet.inventory_path()).arg("--rps").arg(rps.to_string());
        let load = ManagedProcess::spawn("signalbox-loadgen", cmd, &log_dir.join(format!("loadgen-{name}.log")))?;
        Ok(Self { fleet, load, initial })
    }

    /// Versions served right now, asked of every instance over HTTP (`None` for no answer).
    pub async fn served_versions(&self) -> Vec<Option<String>> {
        let mut out = Vec::with_capacity(self.fleet.instances().len());
        for spec in self.fleet.instances() {
            out.push(self.fleet.probe(&spec.id).await.map(|r| r.version));
        }
        out
    }
}

impl Drop for LoadedFleet {
    fn drop(&mut self) {
        let _ = self.load.sigkill();
        self.fleet.kill_all();
    }
}

/// A deploy request with a health policy sized for a small local fleet under a few hundred
/// requests per second: one-second windows, judged over four of them.
pub fn request(service: &str, fleet: &str, artifact: Artifact) -> DeployRequest {
    DeployRequest {
        service: service.into(),
        artifact,
        target: Target::local(fleet),
        strategy: Strategy::Rolling,
        batch_plan: BatchPlan::default(),
        bake_ms: 500,
        health: HealthPolicy { samples: 4, sample_interval_ms: 1_000, min_requests_per_sample: 10, ..HealthPolicy::default() },
        deployer: "ci@signalbox".into(),
        dry_run: false,
        // Tests and benchmarks await the workflow's result: close the window at success.
        rollback_window_ms: 0,
        approval: None,
        analysis: None,
        queue: false,
        control: Default::default(),
    }
}

/// How long a test may wait for a deploy of a small fleet.
pub const DEPLOY_DEADLINE: Duration = Duration::from_secs(240);
