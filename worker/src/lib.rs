//! The signalbox worker: connects to Temporal with the SDK's envconfig (`TEMPORAL_ADDRESS`,
//! `TEMPORAL_NAMESPACE`, `temporal.toml`), registers the workflows and activities, and serves
//! until shut down.

use std::path::PathBuf;

use anyhow::Context;
use signalbox_activities::{DeployActivities, Home};
use signalbox_activities::lb::TrafficActivities;
use signalbox_workflows::{BlueGreenWorkflow, CanaryWorkflow, DeployWorkflow, NoopChainWorkflow};
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::info;

/// The task queue deploys run on unless configured otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "signalbox";

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
}

/// A Temporal client configured from the environment (envconfig profile, `TEMPORAL_*`).
pub async fn connect() -> anyhow::Result<Client> {
    let (conn_opts, client_opts) = ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
        .map_err(|e| anyhow::anyhow!("loading the Temporal client configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, temporal.toml): {e}"))?;
    let connection = Connection::connect(conn_opts).await.context("connecting to Temporal")?;
    Ok(Client::new(connection, client_opts)?)
}

/// Runs the worker until SIGTERM or Ctrl-C, then lets in-flight tasks finish.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let client = connect().await?;
    let worker_options = WorkerOptions::new(options.task_queue.clone())
        .register_workflow::<DeployWorkflow>()?
        .register_workflow::<NoopChainWorkflow>()?
        .register_workflow::<CanaryWorkflow>()?
        .register_workflow::<BlueGreenWorkflow>()?
        .register_activities(DeployActivities::new(Home::new(options.home.clone())))
        .register_activities(TrafficActivities::new(Home::new(options.home.clone())))
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
