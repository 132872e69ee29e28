//! The signalbox worker: connects to Temporal with the SDK's envconfig (`TEMPORAL_ADDRESS`,
//! `TEMPORAL_NAMESPACE`, `temporal.toml`), registers the workflows, the activities and the
//! substrate kinds, and serves until shut down.

use std::path::PathBuf;

use signalbox_activities::{DeployActivities, LaneActivities, ReleaseActivities, TrafficActivities};
use signalbox_client::DEFAULT_TASK_QUEUE;
use signalbox_store::Home;
use signalbox_substrate::Registry;
use signalbox_substrate_agent::AgentTargets;
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
}

/// The substrate kinds this worker serves: the local process fleet under `home`, and hosts
/// running `signalbox-agent` whose keys are in the etcd at `etcd`.
pub fn substrates(home: &Home, etcd: &[String]) -> Registry {
    Registry::default()
        .with(signalbox_substrate_local::KIND, LocalFleets::new(home.clone()))
        .with(signalbox_substrate_agent::KIND, AgentTargets::new(etcd.to_vec()))
}

/// Runs the worker until SIGTERM or Ctrl-C, then lets in-flight tasks finish.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let client = signalbox_client::connect().await?;
    let home = match &options.store {
        Some(origin) => Home::new(options.home.clone()).with_origin(origin.clone()),
        None => Home::new(options.home.clone()),
    };
    let worker_options = WorkerOptions::new(options.task_queue.clone())
        .register_workflow::<DeployWorkflow>()?
        .register_workflow::<LaneWorkflow>()?
        .register_workflow::<ReleaseWorkflow>()?
        .register_workflow::<NoopChainWorkflow>()?
        .register_workflow::<CanaryWorkflow>()?
        .register_workflow::<BlueGreenWorkflow>()?
        .register_activities(DeployActivities::new(home.clone(), substrates(&home, &options.etcd)))
        .register_activities(LaneActivities::new(client.clone()))
        .register_activities(ReleaseActivities::new(client.clone(), options.task_queue.clone()))
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
