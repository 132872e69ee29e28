//! `signalbox-demo` (run as `signalbox demo`): a whole local signalbox (Temporal dev server with
//! its UI, the worker, the deploy API, hosts running real service processes under real load),
//! and one deploy started through the API and followed batch by batch with the real `signalbox`
//! CLI, as a user would follow it. The hosts are agent hosts by default (network namespaces
//! running `signalbox-agent` against etcd and regional nginx caches, deploying the Python
//! example bundle); `--hosts local` uses the local process fleet of the demo service.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use signalbox_devstack::workspace_binary;
use signalbox_domain::{DeployStatus, Phase};
use signalbox_domain::Target;
use signalbox_localstack::agents::{AgentFleet, AgentWorld, hello_bundle};
use signalbox_localstack::{LoadedFleet, Stack, StackOptions, demo_build, publish, request};
use signalbox_store::{Home, Record};
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The ports a local Temporal is usually found on, so the UI link is the familiar one.
const FRONTEND_PORT: u16 = 7233;
const UI_PORT: u16 = 8233;
const API_ADDR: &str = "127.0.0.1:50051";
const SERVICE: &str = "checkout";
/// The service of the example bundle agent hosts run.
const BUNDLE_SERVICE: &str = "hello-py";
/// Regions of the agent hosts, each with its cache.
const REGIONS: [&str; 2] = ["us-east", "eu-west"];
const FLEET: &str = "demo";
/// A directory holding this file was made by the demo, and the next run may wipe it.
const MARKER: &str = ".signalbox-demo";
/// How long the worker and the dev server get to stop cleanly.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// What a workflow id needs escaped to be one path segment of a UI link (`/` above all).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// `signalbox demo` options.
#[derive(Debug, clap::Parser)]
#[command(name = "signalbox demo", about = "Runs a whole local signalbox and rolls a build out to a fleet under load")]
struct Args {
    /// Working directory: Temporal database, logs, signalbox home. A directory made by an earlier
    /// demo is wiped first; any other non-empty directory is refused.
    #[arg(long, default_value = ".signalbox/demo")]
    dir: PathBuf,
    /// Instances in the fleet.
    #[arg(long, default_value_t = 20)]
    instances: usize,
    /// Requests per second the load generator sends to the fleet.
    #[arg(long, default_value_t = 300)]
    rps: u32,
    /// Deploy a build with a raised error rate: the health gate must catch it and roll back.
    #[arg(long)]
    bad: bool,
    /// Once the deploy has ended, keep everything running for the Temporal UI until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// What the hosts are: `agent` (network namespaces running signalbox-agent; needs root) or
    /// `local` (processes of the demo service on loopback ports).
    #[arg(long, value_enum, default_value = "agent")]
    hosts: Hosts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Hosts {
    Agent,
    Local,
}

/// The hosts under load, of either kind.
enum Fleet {
    Local(Box<LoadedFleet>),
    Agent(Box<(AgentFleet, AgentWorld)>),
}

impl Fleet {
    async fn served_versions(&self) -> Vec<Option<String>> {
        match self {
            Self::Local(f) => f.served_versions().await,
            Self::Agent(a) => a.0.answers().await,
        }
    }
}

/// What runs once the demo is up; stopped in order by [`Running::stop`].
struct Running {
    stack: Stack,
    fleet: Fleet,
    stop_api: oneshot::Sender<()>,
    api: JoinHandle<Result<(), tonic::transport::Error>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    run(Args::parse()).await.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

/// Runs the demo; exits 0 only if the deploy ended as intended (rolled back with `--bad`).
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Registered before anything starts: Ctrl-C must stop the demo, never kill it and leave its
    // children running.
    let mut interrupt = signal(SignalKind::interrupt()).context("catching Ctrl-C")?;
    let (running, status) = tokio::select! {
        outcome = rollout(&args) => outcome?,
        _ = interrupt.recv() => {
            // Dropping the demo's future kills what it had started.
            eprintln!("interrupted: stopping");
            return Ok(ExitCode::from(130));
        }
    };
    if args.keep_running {
        println!("\neverything keeps running: browse http://localhost:{UI_PORT}; Ctrl-C to stop");
        interrupt.recv().await;
    }
    println!("stopping");
    running.stop().await;
    let intended = if args.bad { Phase::RolledBack } else { Phase::Succeeded };
    Ok(if status.phase == intended { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn rollout(args: &Args) -> anyhow::Result<(Running, DeployStatus)> {
    let dir = fresh_dir(&args.dir)?;
    ensure_free(FRONTEND_PORT, "the Temporal frontend")?;
    ensure_free(UI_PORT, "the Temporal UI")?;
    let listener = tokio::net::TcpListener::bind(API_ADDR).await.map_err(|e| taken(API_ADDR, "the deploy API", e))?;

    println!("signalbox demo in {}", dir.display());
    let hosts = if args.hosts == Hosts::Agent && !running_as_root() {
        println!("  (agent hosts are network namespaces, which need root: using the local process fleet; --hosts local says so)");
        Hosts::Local
    } else {
        args.hosts
    };
    // The agent world first: the worker must know its etcd. The home is the one the stack makes.
    let world = match hosts {
        Hosts::Agent => Some(AgentWorld::start(&dir.join("world"), &Home::new(dir.join("home")), &REGIONS).await?),
        Hosts::Local => None,
    };
    let mut options = StackOptions { port: Some(FRONTEND_PORT), ui_port: Some(UI_PORT), ..StackOptions::in_dir(&dir) };
    let etcd = world.as_ref().map_or_else(|| "http://127.0.0.1:2379".to_owned(), |w| w.etcd.url());
    options.worker_env.push(("SIGNALBOX_ETCD".into(), etcd.clone()));
    let stack = Stack::start(options).await?;
    println!("  temporal  {} (UI http://localhost:{UI_PORT}), worker on task queue {}", stack.server.address(), stack.options.task_queue);
    let artifacts = signalbox_api::artifacts::Artifacts::new(stack.home.store()?, signalbox_api::artifacts::DEFAULT_MAX_ARTIFACT_BYTES);
    let (stop_api, stopped) = oneshot::channel::<()>();
    let api = tokio::spawn(signalbox_api::grpc::serve(listener, stack.deploys().await?, stack.releases().await?, artifacts, signalbox_api::targets::Targets::new(vec![etcd]), signalbox_api::auth::Security::open(), async {
        let _ = stopped.await;
    }));
    println!("  api       grpc://{API_ADDR}");

    let (error_rate, kind) = if args.bad { (0.30, "bad: 30% errors") } else { (0.002, "good: 0.2% errors") };
    let (service, fleet, target, req_target) = match world {
        Some(world) => {
            let store = stack.home.store()?;
            let push = |version: &str, error_rate: f64| {
                let store = store.clone();
                let version = version.to_owned();
                async move {
                    let bytes = hello_bundle(&version, error_rate, 0, 20_000)?;
                    let (digest, record, _) = store.push(bytes, Record::new(BUNDLE_SERVICE, version.clone(), "0a1b2c3d")).await?;
                    anyhow::Ok(signalbox_domain::Artifact { digest, git_sha: record.git_sha, version })
                }
            };
            let base = push("1.0.0", 0.002).await?;
            let target = push("1.1.0", error_rate).await?;
            println!("  builds    {BUNDLE_SERVICE} (examples/hello-py) {} {} (0.2% errors), {} {} ({kind})", base.version, base.digest.short(), target.version, target.digest.short());
            println!("  world     etcd {}, origin and caches (nginx) for {}", world.etcd.url(), REGIONS.join(", "));
            let fleet = AgentFleet::start(&world, &dir.join("hosts"), FLEET, args.instances, &base, args.rps).await?;
            println!("  hosts     {FLEET}: {} agent hosts (network namespaces) on {} under {} req/s", args.instances, base.version, args.rps);
            (BUNDLE_SERVICE, Fleet::Agent(Box::new((fleet, world))), target, Target { name: FLEET.into(), kind: "agent".into() })
        }
        None => {
            let base = publish(&stack.home, demo_build(SERVICE, "1.0.0", 0.002, 5)).await?;
            let target = publish(&stack.home, demo_build(SERVICE, "1.1.0", error_rate, 5)).await?;
            println!("  builds    {SERVICE} {} {} (0.2% errors), {} {} ({kind})", base.version, base.digest.short(), target.version, target.digest.short());
            let fleet = LoadedFleet::start(&stack.home, FLEET, args.instances, base.clone(), args.rps, &dir).await?;
            println!("  fleet     {FLEET}: {} instances on {} under {} req/s", args.instances, base.version, args.rps);
            (SERVICE, Fleet::Local(Box::new(fleet)), target, Target::local(FLEET))
        }
    };
    let running = Running { stack, fleet, stop_api, api };

    let mut client = DeployServiceClient::connect(format!("http://{API_ADDR}")).await.context("connecting to the deploy API")?;
    let mut req = request(service, FLEET, target.clone());
    req.target = req_target;
    let deploy_id = client.start_deploy(pb::StartDeployRequest::from(req)).await?.into_inner().deploy_id;
    println!("\ndeploying {service} {} through the API: {deploy_id}", target.version);
    println!("  watch it in the Temporal UI: {}", ui_link(&running.stack.options.namespace, &deploy_id));
    println!("  and here, with the signalbox CLI: signalbox deploy watch --api http://{API_ADDR} {deploy_id}\n");
    let watched = tokio::process::Command::new(workspace_binary("signalbox")?)
        .args(["deploy", "watch", "--api", &format!("http://{API_ADDR}"), &deploy_id])
        .status()
        .await
        .context("running signalbox deploy watch")?;
    let status: DeployStatus = client.get_deploy(pb::GetDeployRequest { deploy_id: deploy_id.clone() }).await?.into_inner().try_into()?;
    if !watched.success() && !status.phase.is_final() {
        bail!("signalbox deploy watch ended with {watched} before the deploy did");
    }

    let served = running.fleet.served_versions().await;
    let mut tally = std::collections::BTreeMap::<String, u32>::new();
    for v in served {
        *tally.entry(v.unwrap_or_else(|| "no answer".into())).or_default() += 1;
    }
    let serving: Vec<String> = tally.iter().map(|(v, n)| format!("{v}={n}")).collect();
    println!("\nsummary");
    println!("  phase      {:?}{}", status.phase, status.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default());
    let versions: Vec<String> = status.instances_per_version.iter().map(|(v, n)| format!("{v}={n}")).collect();
    println!("  workflow   {}", versions.join(" "));
    println!("  instances  {} (asked each over HTTP)", serving.join(" "));
    Ok((running, status))
}

impl Running {
    /// Stops the API (answering calls in flight), the fleet and its load, the worker, and the
    /// dev server, in that order: nothing is left running.
    async fn stop(mut self) {
        let _ = self.stop_api.send(());
        if let Ok(Err(e)) = self.api.await {
            eprintln!("the deploy API ended with: {e}");
        }
        drop(self.fleet);
        if let Err(e) = self.stack.worker.terminate(STOP_GRACE).await {
            eprintln!("stopping the worker: {e:#}");
        }
        if let Err(e) = self.stack.server.stop().await {
            eprintln!("stopping the Temporal dev server: {e:#}");
        }
    }
}

/// Whether this process runs as root (it owns `/proc/self`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The deploy's page in the Temporal UI.
fn ui_link(namespace: &str, deploy_id: &str) -> String {
    format!("http://localhost:{UI_PORT}/namespaces/{namespace}/workflows/{}", utf8_percent_encode(deploy_id, PATH_SEGMENT))
}

/// Makes `dir` empty, wiping it only if an earlier demo made it; returns its absolute path.
fn fresh_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join(MARKER).exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("wiping the previous demo in {}", dir.display()))?;
    } else if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} is not empty and was not made by `signalbox demo`; pass another --dir", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by `signalbox demo`; the next demo in this directory wipes it\n")?;
    Ok(dir.canonicalize()?)
}

fn ensure_free(port: u16, what: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map(drop).map_err(|e| taken(&format!("127.0.0.1:{port}"), what, e))
}

fn taken(addr: &str, what: &str, e: std::io::Error) -> anyhow::Error {
    anyhow!("cannot use {addr} for {what}: {e}. Is another Temporal server or signalbox demo running? Stop it and try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_link_escapes_the_workflow_id_as_one_segment() {
        assert_eq!(ui_link("default", "deploy/checkout/demo/ab12"), "http://localhost:8233/namespaces/default/workflows/deploy%2Fcheckout%2Fdemo%2Fab12");
    }
}
