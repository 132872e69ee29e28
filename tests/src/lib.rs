//! Support for the integration tests: one runtime and one local stack per test binary (one
//! Temporal server per binary, not per test), and golden-history recording.

pub mod pki;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use futures::StreamExt;
use signalbox_client::Deploys;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use signalbox_localstack::agents::AgentWorld;
use signalbox_localstack::{Stack, StackOptions};
use tokio::sync::OnceCell;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the test runtime builds"));
static STACK: OnceCell<Stack> = OnceCell::const_new();

/// Runs a test body on the binary's shared runtime, where the shared stack lives.
pub fn run<F: Future<Output = anyhow::Result<()>>>(body: F) {
    RUNTIME.block_on(body).unwrap_or_else(|e| panic!("{e:#}"));
}

/// A fresh scratch directory for one test binary's stack.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signalbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The shared stack of this test binary, started on first use.
pub async fn stack() -> &'static Stack {
    STACK
        .get_or_init(|| async {
            let name = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
            Stack::start(StackOptions::in_dir(scratch(&name))).await.expect("the local stack starts")
        })
        .await
}

static AGENT_STACK: OnceCell<(Stack, tokio::sync::Mutex<AgentWorld>)> = OnceCell::const_new();

/// Regions of the agent world.
pub const AGENT_REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// The shared stack of this test binary with an agent world around it (etcd, origin, a cache
/// per region of [`AGENT_REGIONS`]); the worker reaches agent targets through that etcd.
pub async fn agent_stack() -> &'static (Stack, tokio::sync::Mutex<AgentWorld>) {
    AGENT_STACK
        .get_or_init(|| async {
            let name = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
            let dir = scratch(&name);
            // The stack's home, made here first: the origin serves its store.
            let home = signalbox_store::Home::new(dir.join("home"));
            let world = AgentWorld::start(&dir.join("world"), &home, &AGENT_REGIONS).await.expect("the agent world starts");
            let mut options = StackOptions::in_dir(dir);
            options.worker_env.push(("SIGNALBOX_ETCD".into(), world.etcd.url()));
            let stack = Stack::start(options).await.expect("the local stack starts");
            (stack, tokio::sync::Mutex::new(world))
        })
        .await
}

/// Where golden histories live.
pub fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// With `SIGNALBOX_RECORD_HISTORIES=1`, saves the deploy's history as a golden file that the
/// replay test checks every later change of the workflow code against.
pub async fn record_history(deploys: &Deploys, id: &str, name: &str) -> anyhow::Result<()> {
    if std::env::var_os("SIGNALBOX_RECORD_HISTORIES").is_none() {
        return Ok(());
    }
    let json = deploys.history_json(id).await?;
    std::fs::create_dir_all(histories_dir())?;
    std::fs::write(histories_dir().join(format!("{name}.json")), json)?;
    Ok(())
}

/// A deploy API served in-process on a loopback port for one test, and a real tonic client of it.
pub struct GrpcApi {
    /// The server's URL.
    pub url: String,
    /// A client of it.
    pub client: DeployServiceClient<Channel>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcApi {
    /// Serves the deploy API of `s` on a free loopback port and connects to it.
    pub async fn start(s: &Stack) -> anyhow::Result<Self> {
        Self::start_with_etcd(s, "http://127.0.0.1:2379").await
    }

    /// [`Self::start`], its target API on the etcd at `etcd`.
    pub async fn start_with_etcd(s: &Stack, etcd: &str) -> anyhow::Result<Self> {
        let targets = signalbox_api::targets::Targets::new(vec![etcd.to_owned()]);
        // Port 0: the kernel picks a free port, and nobody can take it between pick and bind.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let artifacts = signalbox_api::artifacts::Artifacts::new(s.home.store()?, signalbox_api::artifacts::DEFAULT_MAX_ARTIFACT_BYTES);
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(signalbox_api::grpc::serve(listener, s.deploys().await?, s.releases().await?, artifacts, targets, signalbox_api::auth::Security::open(), async {
            let _ = stopped.await;
        }));
        Ok(Self { client: DeployServiceClient::connect(url.clone()).await?, url, stop, server })
    }

    /// Shuts the server down and checks that it stopped cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.client);
        let _ = self.stop.send(());
        Ok(self.server.await??)
    }
}

/// Every deploy of `service` Temporal's visibility lists, with its workflow status (visibility
/// lags the workflows by a moment; a deploy just started may be missing).
pub async fn deploys_of(deploys: &Deploys, service: &str) -> anyhow::Result<Vec<(String, temporalio_client::WorkflowExecutionStatus)>> {
    let query = format!("WorkflowType = 'signalbox.deploy' AND SignalboxService = '{service}'");
    let mut found = Vec::new();
    let mut stream = deploys.client().list_workflows(query, Default::default());
    while let Some(execution) = stream.next().await {
        let execution = execution?;
        found.push((execution.id().to_owned(), execution.status()));
    }
    Ok(found)
}

/// Runs the real `temporal` CLI against the stack's server; returns its exit code, stdout and
/// stderr.
pub async fn temporal(s: &signalbox_localstack::Stack, args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::process::Command::new(signalbox_devstack::temporal_binary()?)
        .args(args)
        .args(["--address", &s.server.address(), "--namespace", &s.options.namespace])
        .output()
        .await?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Runs the real `signalbox` CLI; returns its exit code, stdout and stderr.
pub async fn signalbox(args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::process::Command::new(signalbox_devstack::workspace_binary("signalbox")?).args(args).env_remove("SIGNALBOX_API").output().await?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// The example `examples/hello-py` packed as a `.tar.gz` of `version` whose requests fail at `error_rate`.
pub fn pack_hello(dir: &Path, version: &str, error_rate: f64) -> anyhow::Result<PathBuf> {
    // The harness's own uncompressed bundle, gzipped: pushes take both.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &signalbox_localstack::agents::hello_bundle(version, error_rate, 0, 20_000)?)?;
    let path = dir.join(format!("hello-py-{version}.tar.gz"));
    std::fs::write(&path, gz.finish()?)?;
    Ok(path)
}

/// `signalbox artifact push` of a build of `service`; returns the digest it printed and what it said on stderr.
pub async fn push_bundle(api: &GrpcApi, service: &str, file: &Path, version: &str) -> anyhow::Result<(String, String)> {
    let file = file.to_str().expect("a UTF-8 path");
    let args = ["artifact", "push", "--api", &api.url, file, "--service", service, "--version", version, "--git-sha", "0a1b2c3d", "--label", "team=web", "--by", "ci@example"];
    let (code, out, err) = signalbox(&args).await?;
    anyhow::ensure!(code == Some(0), "push of {file} exited {code:?}: {out}{err}");
    Ok((out.trim().to_owned(), err))
}
