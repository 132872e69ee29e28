//! The signalbox worker: connects to Temporal with the SDK's envconfig (`TEMPORAL_ADDRESS`,
//! `TEMPORAL_NAMESPACE`, `temporal.toml`), registers the workflows, the activities and the
//! substrate kinds, and serves until shut down.

use std::path::PathBuf;

use anyhow::Context;
use signalbox_domain::grant::ControlKey;

use signalbox_activities::{DeployActivities, LaneActivities, ReleaseActivities, TrafficActivities};
use signalbox_client::DEFAULT_TASK_QUEUE;
use signalbox_store::Home;
use signalbox_substrate::Registry;
use signalbox_substrate_agent::AgentTargets;
use signalbox_substrate_kube::KubeTargets;
use signalbox_substrate_local::LocalFleets;
use signalbox_workflows::{BlueGreenWorkflow, CanaryWorkflow, DeployWorkflow, LaneWorkflow, NoopChainWorkflow, ReleaseWorkflow};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::info;

/// Worker configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "signalbox-worker", about = "Runs signalbox deploy workflows and activities")]
pub struct Options {
    /// Task queue to poll.
    #[arg(long, env = "SIGNALBOX_TASK_QUEUE", default_value = DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Signalbox home: artifact store, regional caches, local fleets, audit log.
    #[arg(long, env = "SIGNALBOX_HOME", default_value = ".signalbox")]
    pub home: PathBuf,
    /// The origin artifact store: `s3://bucket/prefix` (configured by the `AWS_*` environment)
    /// or a directory; by default `store` under the home.
    #[arg(long, env = "SIGNALBOX_STORE")]
    pub store: Option<String>,
    /// etcd endpoints of agent targets, comma-separated (connected on first use).
    #[arg(long, env = "SIGNALBOX_ETCD", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd: Vec<String>,
    /// Files of the keys shared with the API, comma-separated, the current one first (the rest
    /// still verify while being retired): deploys the API started take only operations it
    /// signed. The first also signs what releases ask of their deploys.
    #[arg(long, env = "SIGNALBOX_CONTROL_KEY_FILE", value_delimiter = ',')]
    pub control_key_file: Vec<PathBuf>,
    /// The file of Kubernetes targets this worker serves (TOML, `[[target]]` tables: name,
    /// namespace, workload, and optionally container, context, kubeconfig, region,
    /// ready_timeout_ms); checked at start. Without it, no Kubernetes target is served.
    #[arg(long, env = "SIGNALBOX_KUBE_TARGETS")]
    pub kube_targets: Option<PathBuf>,
}

/// Reads the control keys named by `files`, naming the file that cannot be used.
pub fn control_keys(files: &[PathBuf]) -> anyhow::Result<Vec<ControlKey>> {
    files
        .iter()
        .map(|f| {
            let secret = std::fs::read(f).with_context(|| format!("--control-key-file: cannot read {}", f.display()))?;
            ControlKey::new(&secret).map_err(|rule| anyhow::anyhow!("--control-key-file: {}: {rule}", f.display()))
        })
        .collect()
}

/// The substrate kinds this worker serves: the local process fleet under `home`, hosts
/// running `signalbox-agent` whose keys are in the etcd at `etcd`, and the Kubernetes targets
/// of `kube`.
pub fn substrates(home: &Home, etcd: &[String], kube: KubeTargets) -> Registry {
    Registry::default()
        .with(signalbox_substrate_local::KIND, LocalFleets::new(home.clone()))
        .with(signalbox_substrate_agent::KIND, AgentTargets::new(etcd.to_vec()))
        .with(signalbox_substrate_kube::KIND, kube)
}

/// The Kubernetes targets named by `--kube-targets`, the file checked now, so a bad one stops
/// the worker at start naming the field.
pub fn kube_targets(home: &Home, file: Option<&std::path::Path>) -> anyhow::Result<KubeTargets> {
    match file {
        None => Ok(KubeTargets::default()),
        Some(path) => KubeTargets::from_file(home.clone(), path).map_err(|e| anyhow::anyhow!("--kube-targets: {e}")),
    }
}

/// Runs the worker until SIGTERM or Ctrl-C, then lets in-flight tasks finish.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let keys = control_keys(&options.control_key_file)?;
    let signing = keys.first().cloned();
    if signing.is_none() {
        info!("no control key: deploys started by an API that signs are refused their operations here");
    }
    signalbox_workflows::install_control_keys(keys);
    let home = match &options.store {
        Some(origin) => Home::new(options.home.clone()).with_origin(origin.clone()),
        None => Home::new(options.home.clone()),
    };
    let kube = kube_targets(&home, options.kube_targets.as_deref())?;
    if !kube.names().is_empty() {
        info!(targets = ?kube.names(), "serving kubernetes targets");
    }
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let client = signalbox_client::connect().await?;
    let worker_options = WorkerOptions::new(options.task_queue.clone())
        .register_workflow::<DeployWorkflow>()?
        .register_workflow::<LaneWorkflow>()?
        .register_workflow::<ReleaseWorkflow>()?
        .register_workflow::<NoopChainWorkflow>()?
        .register_workflow::<CanaryWorkflow>()?
        .register_workflow::<BlueGreenWorkflow>()?
        .register_activities(DeployActivities::new(home.clone(), substrates(&home, &options.etcd, kube)))
        .register_activities(LaneActivities::new(client.clone()))
        .register_activities(ReleaseActivities::new(client.clone(), options.task_queue.clone(), signing))
        .register_activities(TrafficActivities)
        // Every heartbeat reaches the server (they come every 2 s), so a deploy's status shows
        // how far its sampling got within 2 s rather than the default throttle's 8.
        .max_heartbeat_throttle_interval(signalbox_activities::heartbeat::HEARTBEAT_EVERY)
        .build();
    let mut worker = Worker::new(&runtime, client, worker_options)?;
    let shutdown = worker.shutdown_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("shutting down: finishing in-flight tasks");
        shutdown();
    });
    info!(task_queue = %options.task_queue, home = %options.home.display(), "worker started");
    worker.run().await?;
    Ok(())
}
