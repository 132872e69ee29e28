//! One instance of the demo fleet: serves `GET /` with the behaviour its artifact
//! prescribes, `GET /ready` for the deployer and `GET /metrics` for Prometheus.

use std::future::{Future, IntoFuture as _};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::artifact::{Artifact, Loaded};
use crate::metrics::{self, BuildInfo, Outcome, Registry};
use crate::prng::Xorshift64;
use crate::{Error, Result};

/// Where an instance finds its artifact, relative to its instance directory. `current`
/// is a symlink the deployer switches atomically between releases.
pub const ARTIFACT_PATH: &str = "current/artifact.json";

/// How long in-flight requests may take to finish once draining has begun; requests
/// still running after it are abandoned so that the process exits within ~2 s.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// How to start an instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// Instance directory; the artifact is read from `<dir>/current/artifact.json`.
    pub instance_dir: PathBuf,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Address to listen on; `None` is 127.0.0.1.
    pub address: Option<Ipv4Addr>,
    /// Instance id reported in `/ready`, metrics and logs; defaults to the instance
    /// directory's name.
    pub instance_id: Option<String>,
}

/// The body of `GET /ready`: what this process serves. The deployer compares `digest`
/// with the artifact it means to run (an instance already serving it needs no restart)
/// and `pid` with the process it started (a stale process on the port is not ready).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Instance id.
    pub instance: String,
    /// Service name from the artifact.
    pub service: String,
    /// Version from the artifact.
    pub version: String,
    /// `sha256:<hex>` of the artifact file.
    pub digest: String,
    /// Process id of the instance.
    pub pid: u32,
}

/// A bound, not yet serving instance.
pub struct Service {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    readiness: Readiness,
    artifact: Artifact,
    registry: Registry,
    draining: AtomicBool,
    rng: Mutex<Xorshift64>,
    /// The body of every `GET /` answer, rendered once.
    work_body: String,
    /// When the service started: a degrading build's clock.
    up_since: Instant,
}

impl Service {
    /// Loads the artifact (resolving the `current` symlink once: the process serves the
    /// version it started with) and binds 127.0.0.1:`port`.
    pub async fn bind(options: Options) -> Result<Self> {
        let instance = match options.instance_id {
            Some(id) => id,
            None => default_instance_id(&options.instance_dir)?,
        };
        let loaded = Loaded::from_path(options.instance_dir.join(ARTIFACT_PATH))?;
        // A slow-starting build: the port stays closed (not ready) while it warms up.
        tokio::time::sleep(Duration::from_millis(loaded.artifact.startup_delay_ms)).await;
        let addr = SocketAddr::from((options.address.unwrap_or(Ipv4Addr::LOCALHOST), options.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| Error::Bind { addr, error })?;
        Ok(Self {
            listener,
            shared: Arc::new(Shared::new(loaded.artifact, loaded.digest, instance)),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|error| Error::Io {
            context: "reading the bound address",
            error,
        })
    }

    /// What `/ready` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.shared.readiness
    }

    /// Serves until `shutdown` resolves, then drains: `/ready` answers 503, no new
    /// connections are accepted, in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let drain_started = Arc::new(Notify::new());
        let on_shutdown = {
            let shared = Arc::clone(&self.shared);
            let drain_started = Arc::clone(&drain_started);
            async move {
                shutdown.await;
                shared.draining.store(true, Relaxed);
                drain_started.notify_one();
            }
        };
        let router = axum::Router::new()
            .route("/", get(work))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics_text))
            .with_state(self.shared);
        // Answers are small and latency is what is being measured: no Nagle delays.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router).with_graceful_shutdown(on_shutdown);
        let mut serve = std::pin::pin!(serve.into_future());
        let serving_error = |error| Error::Io {
            context: "serving HTTP",
            error,
        };
        tokio::select! {
            result = &mut serve => return result.map_err(serving_error),
            () = drain_started.notified() => {}
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, serve).await {
            Ok(result) => result.map_err(serving_error),
            Err(_elapsed) => {
                eprintln!(
                    "drain timeout of {DRAIN_TIMEOUT:?} reached; abandoning in-flight requests"
                );
                Ok(())
            }
        }
    }
}

fn default_instance_id(dir: &Path) -> Result<String> {
    let absolute = std::path::absolute(dir).map_err(|error| Error::Read {
        path: dir.to_owned(),
        error,
    })?;
    absolute
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| Error::InvalidOption {
            option: "--instance-id",
            reason: format!("is required: {} has no name to default to", dir.display()),
        })
}

impl Shared {
    fn new(artifact: Artifact, digest: String, instance: String) -> Self {
        let readiness = Readiness {
            instance: instance.clone(),
            service: artifact.service.clone(),
            version: artifact.version.clone(),
            digest: digest.clone(),
            pid: std::process::id(),
        };
        let registry = Registry::new(BuildInfo {
            service: artifact.service.clone(),
            version: artifact.version.clone(),
            digest,
            instance: instance.clone(),
        });
        let work_body =
            serde_json::json!({"version": artifact.version, "instance": instance}).to_string();
        Self {
            readiness,
            artifact,
            registry,
            draining: AtomicBool::new(false),
            rng: Mutex::new(Xorshift64::from_entropy()),
            work_body,
            up_since: Instant::now(),
        }
    }

    /// Draws this request's latency and whether it fails.
    fn draw(&self) -> (Duration, Outcome) {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let a = &self.artifact;
        let millis = a.latency_ms as f64 + rng.jitter(a.latency_jitter_ms as f64);
        let delay = Duration::from_secs_f64(millis.max(0.0) / 1000.0);
        let degraded = a.degrade_after_ms > 0 && self.up_since.elapsed() >= Duration::from_millis(a.degrade_after_ms);
        let error_rate = if degraded { a.degraded_error_rate } else { a.error_rate };
        let outcome = if rng.chance(error_rate) {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        (delay, outcome)
    }

    /// Writes the artifact's `log_lines_per_request` lines to stdout in one write.
    fn log_request(&self, outcome: Outcome, elapsed: Duration) {
        let n = self.artifact.log_lines_per_request;
        if n == 0 {
            return;
        }
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (level, status) = match outcome {
            Outcome::Ok => ("info", 200),
            Outcome::Error => ("error", 500),
        };
        let r = &self.readiness;
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let mut lines = String::with_capacity(160 * n as usize);
        for i in 1..=n {
            lines.push_str(&format!(
                "ts_ms={ts_ms} level={level} instance={} service={} version={} method=GET path=/ \
                 status={status} duration_ms={duration_ms:.3} line={i}/{n}\n",
                r.instance, r.service, r.version,
            ));
        }
        // A closed or broken stdout must not take the service down; the lines still
        // count as emitted, like lines a log shipper dropped.
        let _ = std::io::stdout().lock().write_all(lines.as_bytes());
        self.registry.add_log_lines(u64::from(n));
    }
}

async fn work(State(shared): State<Arc<Shared>>) -> Response {
    let started = Instant::now();
    let _in_flight = shared.registry.start_request();
    let (delay, outcome) = shared.draw();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let elapsed = started.elapsed();
    shared.log_request(outcome, elapsed);
    shared.registry.observe_request(outcome, elapsed);
    let status = match outcome {
        Outcome::Ok => StatusCode::OK,
        Outcome::Error => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, shared.work_body.clone())
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let status = if shared.draining.load(Relaxed) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_string(&shared.readiness).expect("readiness serializes");
    json(status, body)
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        shared.registry.render(),
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
