//! The `signalbox-api` server process: options, Temporal connection, graceful shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use signalbox_client::{DEFAULT_TASK_QUEUE, Deploys, Releases};
use tracing::{info, warn};

use signalbox_store::{ArtifactStore, Home};

use crate::artifacts::{Artifacts, DEFAULT_MAX_ARTIFACT_BYTES};
use crate::auth::Security;
use crate::grpc;
use crate::targets::Targets;

/// Where the API listens unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// API server configuration. Temporal itself is configured by the SDK's envconfig
/// (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `temporal.toml`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "signalbox-api", about = "Serves the signalbox deploy API over gRPC")]
pub struct Options {
    /// Address to serve gRPC on.
    #[arg(long, env = "SIGNALBOX_API_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Task queue the deploy workflows run on (the workers' queue).
    #[arg(long, env = "SIGNALBOX_TASK_QUEUE", default_value = DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// The origin artifact store the workers read: `s3://bucket/prefix` (configured by the
    /// `AWS_*` environment) or a directory (default: `store` under `$SIGNALBOX_HOME`).
    #[arg(long, env = "SIGNALBOX_STORE")]
    pub store: Option<String>,
    /// etcd endpoints of agent targets, comma-separated (connected on first use).
    #[arg(long, env = "SIGNALBOX_ETCD", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd: Vec<String>,
    /// The auth file (TOML: TLS, OIDC, client CA, policy; see `signalbox_api::auth::Config`).
    /// Required unless `--insecure-no-auth`.
    #[arg(long, env = "SIGNALBOX_API_AUTH")]
    pub auth: Option<std::path::PathBuf>,
    /// Serve plaintext and let every call through, taking names from the requests: only for a
    /// server on loopback that nobody else can reach.
    #[arg(long, env = "SIGNALBOX_API_INSECURE_NO_AUTH", conflicts_with = "auth")]
    pub insecure_no_auth: bool,
    /// Where to serve the webhooks (`POST /webhooks/health` with `--webhook-secret-file`,
    /// `POST /webhooks/scm` with `--scm-secret-file`); off unless set.
    #[arg(long, env = "SIGNALBOX_WEBHOOKS_LISTEN")]
    pub webhooks_listen: Option<SocketAddr>,
    /// The secret health checkers sign with (HMAC-SHA256; at least 32 bytes).
    #[arg(long, env = "SIGNALBOX_WEBHOOK_SECRET_FILE", requires = "webhooks_listen")]
    pub webhook_secret_file: Option<std::path::PathBuf>,
    /// The secret set on the GitHub and GitLab webhooks (at least 32 bytes; GitLab's signing
    /// token `whsec_...` serves both).
    #[arg(long, env = "SIGNALBOX_SCM_SECRET_FILE", requires = "webhooks_listen")]
    pub scm_secret_file: Option<std::path::PathBuf>,
    /// Branches whose pushes are recorded (names, or prefixes ending in `*`), comma-separated.
    #[arg(long, env = "SIGNALBOX_SCM_BRANCHES", value_delimiter = ',', default_value = "main")]
    pub scm_branches: Vec<String>,
    /// Largest build a push may carry, in bytes.
    #[arg(long, env = "SIGNALBOX_MAX_ARTIFACT_BYTES", default_value_t = DEFAULT_MAX_ARTIFACT_BYTES)]
    pub max_artifact_bytes: u64,
}

/// Serves until SIGTERM or Ctrl-C, then answers the calls in flight and returns.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let security = match (&options.auth, options.insecure_no_auth) {
        (Some(path), _) => Security::load(path)?,
        (None, true) => {
            warn!("serving without authentication (--insecure-no-auth): anyone who reaches {} can deploy as anyone", options.listen);
            Security::open()
        }
        (None, false) => anyhow::bail!("--auth: is required (an auth file: TLS, who authenticates how, the policy); --insecure-no-auth serves without it, for loopback only"),
    };
    let client = signalbox_client::connect().await?;
    let releases = Releases::new(client.clone(), options.task_queue.clone());
    let deploys = Deploys::new(client, options.task_queue.clone());
    let store = match &options.store {
        Some(location) => ArtifactStore::open(location, std::iter::empty::<(&str, String)>()),
        None => Home::from_env().store(),
    }
    .context("opening the origin artifact store")?;
    let artifacts = Artifacts::new(store.clone(), options.max_artifact_bytes);
    if let Some(listen) = options.webhooks_listen {
        let read = |flag: &str, file: &std::path::Path| std::fs::read(file).with_context(|| format!("{flag}: cannot read {}", file.display()));
        let mut routes = crate::webhooks::Routes::default();
        if let Some(file) = &options.webhook_secret_file {
            let hooks = crate::webhooks::Webhooks::new(deploys.clone().signing_with(security.control_key.clone()), &read("--webhook-secret-file", file)?);
            routes = routes.health(hooks.map_err(|rule| anyhow::anyhow!("--webhook-secret-file: {rule}"))?);
        }
        if let Some(file) = &options.scm_secret_file {
            let hooks = crate::webhooks::scm::Scm::new(store, &read("--scm-secret-file", file)?, options.scm_branches.clone());
            routes = routes.scm(hooks.map_err(|rule| anyhow::anyhow!("--scm-secret-file: {rule}"))?);
        }
        if options.webhook_secret_file.is_none() && options.scm_secret_file.is_none() {
            anyhow::bail!("--webhooks-listen: serves nothing without --webhook-secret-file or --scm-secret-file");
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("--webhooks-listen: cannot listen on {listen}"))?;
        info!(%listen, "webhooks serving");
        tokio::spawn(async move {
            if let Err(e) = crate::webhooks::serve(listener, routes, terminated()).await {
                tracing::error!(error = %e, "webhooks stopped");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(options.listen).await.with_context(|| format!("listening on {}", options.listen))?;
    info!(listen = %options.listen, task_queue = %options.task_queue, "deploy API serving");
    grpc::serve(listener, deploys, releases, artifacts, Targets::new(options.etcd.clone()), security, terminated()).await?;
    info!("deploy API stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down: answering calls in flight");
}
