//! The Temporal CLI's dev server, on a file-backed database so that it survives restarts.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::Instant;

use crate::{ManagedProcess, temporal_binary, wait_for};

/// How long a start may take before it is declared failed: generous, because CI machines share
/// two cores between several builds.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the server gets to shut down cleanly (it needs about 2 s) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Bound on one readiness probe, so a hung CLI call cannot eat the whole start deadline.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports we pick can be taken by someone else before the server binds them; that is retried.
const START_ATTEMPTS: u32 = 3;
/// Log lines quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// How to run a [`TemporalDevServer`].
#[derive(Debug, Clone)]
pub struct DevServerOptions {
    /// SQLite database file; kept across [`TemporalDevServer::restart`], so workflows survive.
    pub db_file: PathBuf,
    /// Frontend gRPC port; `None` picks a free one.
    pub port: Option<u16>,
    /// Web UI port; `None` runs headless.
    pub ui_port: Option<u16>,
    /// Namespace created at start and probed for readiness (`default` always exists).
    pub namespace: String,
    /// Search attributes registered at start, as (name, type) with type one of `Text`,
    /// `Keyword`, `Int`, `Double`, `Bool`, `Datetime`, `KeywordList`.
    pub search_attributes: Vec<(String, String)>,
    /// Where the server's output goes; appended to across restarts.
    pub log_file: PathBuf,
    /// Dynamic config as (key, value), the value being JSON: strings need quotes, e.g.
    /// `("limit.blobSize.error", "1048576")` or `("system.foo", "\"bar\"")`.
    pub dynamic_config: Vec<(String, String)>,
}

impl DevServerOptions {
    /// Options keeping the database and the log in `dir` (`temporal.db`, `temporal.log`), on a
    /// free port, headless, namespace `default`, no search attributes, no dynamic config.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            db_file: dir.join("temporal.db"),
            port: None,
            ui_port: None,
            namespace: "default".to_owned(),
            search_attributes: Vec::new(),
            log_file: dir.join("temporal.log"),
            dynamic_config: Vec::new(),
        }
    }
}

/// Ports the server is bound to; fixed at start so that a restart keeps the same address.
#[derive(Debug, Clone, Copy)]
struct Ports {
    frontend: u16,
    http: u16,
    metrics: u16,
}

/// A `temporal server start-dev` we own: killed when dropped or when this process exits.
#[derive(Debug)]
pub struct TemporalDevServer {
    options: DevServerOptions,
    binary: PathBuf,
    ports: Ports,
    /// `None` while stopped.
    process: Option<ManagedProcess>,
}

impl TemporalDevServer {
    /// Starts the dev server and returns once its frontend serves `options.namespace`.
    ///
    /// The database is a file (`--db-filename`), so [`restart`](Self::restart) resumes on the
    /// same data. Errors quote the tail of the server log.
    pub async fn start(options: DevServerOptions) -> Result<Self> {
        let binary = temporal_binary()?;
        let mut attempt = 1;
        loop {
            let mut server = Self {
                ports: pick_ports(&options)?,
                options: options.clone(),
                binary: binary.clone(),
                process: None,
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(error)
                    if attempt < START_ATTEMPTS
                        && format!("{error:#}").contains("address already in use") =>
                {
                    tracing::warn!(attempt, %error, "a port was taken meanwhile; retrying");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The frontend's gRPC address, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.ports.frontend)
    }

    /// The Web UI's URL, unless headless.
    pub fn ui_url(&self) -> Option<String> {
        self.options
            .ui_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period), keeping its database and
    /// ports for [`restart`](Self::restart). A no-op when already stopped.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            let began = Instant::now();
            process.terminate(STOP_GRACE).await?;
            tracing::info!(address = self.address(), took = ?began.elapsed(), "temporal dev server stopped");
        }
        Ok(())
    }

    /// Starts the server again on the same database file and ports (stopping it first if it
    /// runs), and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    async fn launch(&mut self) -> Result<()> {
        let options = &self.options;
        if let Some(dir) = options
            .db_file
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let began = Instant::now();
        let process =
            ManagedProcess::spawn("temporal dev server", self.command(), &options.log_file)?;
        let address = self.address();
        let what = format!(
            "the Temporal dev server at {address} to serve namespace {}",
            options.namespace
        );
        let (binary, address, namespace, process_ref) =
            (&self.binary, address.as_str(), &options.namespace, &process);
        let readiness = wait_for(&what, START_DEADLINE, move || {
            let exited = process_ref.has_exited();
            let probe = describe_namespace(binary, address, namespace);
            async move {
                if exited {
                    return Ok(Some(Readiness::Exited));
                }
                probe.await.map(|()| Some(Readiness::Ready))
            }
        })
        .await;
        let failure = match readiness {
            Ok(Readiness::Ready) => None,
            Ok(Readiness::Exited) => Some(anyhow!("the Temporal dev server exited while starting")),
            Err(error) => Some(error),
        };
        if let Some(error) = failure {
            // Dropping `process` kills whatever is left of it.
            let tail = process.log_tail(LOG_TAIL_LINES);
            return Err(error.context(format!(
                "starting the Temporal dev server; last lines of {}:\n{tail}",
                options.log_file.display()
            )));
        }
        tracing::info!(address = self.address(), took = ?began.elapsed(), "temporal dev server ready");
        self.process = Some(process);
        Ok(())
    }

    fn command(&self) -> Command {
        let options = &self.options;
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--log-level",
            "warn",
        ])
        .args(["--port", &self.ports.frontend.to_string()])
        .args(["--http-port", &self.ports.http.to_string()])
        .args(["--metrics-port", &self.ports.metrics.to_string()])
        .arg("--db-filename")
        .arg(&options.db_file)
        .args(["--namespace", &options.namespace])
        // The server must not pick up a developer's TEMPORAL_* variables or temporal.toml.
        .args(["--disable-config-env", "--disable-config-file"]);
        match options.ui_port {
            Some(port) => cmd.args(["--ui-port", &port.to_string()]),
            None => cmd.arg("--headless"),
        };
        for (name, kind) in &options.search_attributes {
            cmd.args(["--search-attribute", &format!("{name}={kind}")]);
        }
        for (key, value) in &options.dynamic_config {
            cmd.args(["--dynamic-config-value", &format!("{key}={value}")]);
        }
        cmd
    }
}

enum Readiness {
    Ready,
    Exited,
}

/// Picks the frontend (unless given), HTTP and metrics ports, all distinct and distinct from the
/// UI port: the probing listeners are held until every port is chosen.
fn pick_ports(options: &DevServerOptions) -> Result<Ports> {
    let taken: Vec<u16> = [options.port, options.ui_port]
        .into_iter()
        .flatten()
        .collect();
    let mut listeners = Vec::new();
    let mut fresh = Vec::new();
    let wanted = if options.port.is_some() { 2 } else { 3 };
    while fresh.len() < wanted {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener.local_addr()?.port();
        if !taken.contains(&port) {
            fresh.push(port);
        }
        listeners.push(listener);
    }
    let mut fresh = fresh.into_iter();
    let mut next = || fresh.next().expect("picked enough ports");
    Ok(Ports {
        frontend: options.port.unwrap_or_else(&mut next),
        http: next(),
        metrics: next(),
    })
}

/// Succeeds once the frontend answers for `namespace`, which also means the namespace exists.
async fn describe_namespace(binary: &Path, address: &str, namespace: &str) -> Result<()> {
    let output = tokio::process::Command::new(binary)
        .args(["operator", "namespace", "describe", "--output", "none"])
        .args(["--address", address, "--namespace", namespace])
        .args(["--disable-config-env", "--disable-config-file"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PROBE_TIMEOUT, output)
        .await
        .context("`temporal operator namespace describe` hung")?
        .context("running `temporal operator namespace describe`")?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "`temporal operator namespace describe` {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
