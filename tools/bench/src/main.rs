//! `signalbox-bench`: benchmark commands. Each starts its own local stack (real dev server,
//! worker process, real fleet) and prints its figures next to a baseline measured in the same
//! run, or next to the goal.

mod agents;
mod kube;
mod overhead;
mod release;
mod rollback;
mod rollout;
mod traffic;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "signalbox-bench", about = "signalbox benchmark commands")]
struct Cli {
    /// Scratch directory (one sub-directory per benchmark).
    #[arg(long, default_value = "/tmp/signalbox-bench")]
    dir: PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// A 10-batch zero-bake deploy against a bare workflow with as many no-op activities.
    Overhead {
        /// Batches of the deploy.
        #[arg(long, default_value_t = 10)]
        batches: u32,
        /// Runs of each side, interleaved.
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// A release over its child deploys: 3 stages x 4 targets x 2 services against the same
    /// deploys alone, and 20 regions x 5 services in waves of 1 / 3 / 16.
    Release {
        /// Runs of each side, interleaved.
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// Rollback of a fleet: from the decision to every instance serving the old build.
    Rollback {
        /// Fleet size.
        #[arg(long, default_value_t = 100)]
        instances: usize,
    },
    /// Rollout of a large fleet in equal batches with zero bake: wall time and worker peak RSS.
    Rollout {
        /// Fleet size.
        #[arg(long, default_value_t = 1000)]
        instances: usize,
        /// Batches.
        #[arg(long, default_value_t = 10)]
        batches: u32,
    },
    /// Canary and blue/green on a real HAProxy: per-step shares of requests against the
    /// configured weights, and the blue/green flip back measured from client requests.
    Traffic {
        /// Instances of each canary fleet.
        #[arg(long, default_value_t = 10)]
        instances: usize,
        /// Requests per second sent through HAProxy's frontend.
        #[arg(long, default_value_t = 400)]
        rps: u32,
    },
    /// Agent hosts at scale against the local process fleet: rollout, rollback, cache bytes,
    /// agent memory.
    Agents {
        /// Hosts (network namespaces, each with an agent and a service).
        #[arg(long, default_value_t = 200)]
        hosts: usize,
        /// Size of the build in MiB.
        #[arg(long, default_value_t = 50)]
        build_mb: usize,
    },
    /// A Kubernetes Deployment moved to a new image in equal batches with zero bake, against
    /// `kubectl rollout` of the same change on the same control plane.
    Kube {
        /// Replicas of each Deployment.
        #[arg(long, default_value_t = 200)]
        replicas: u32,
        /// Batches (kubectl's rolling update gets the same step as its maxSurge).
        #[arg(long, default_value_t = 10)]
        batches: u32,
    },
    /// All of the above with their defaults.
    All,
}

/// Equal cumulative percentage steps: 10 batches are 10%, 20%, ... 100%.
fn equal_batches(n: u32) -> signalbox_domain::BatchPlan {
    signalbox_domain::BatchPlan { steps: (1..=n).map(|i| signalbox_domain::BatchStep::Percent(100.0 * f64::from(i) / f64::from(n))).collect() }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scratch = |name: &str| {
        let d = cli.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        d
    };
    match cli.bench {
        Bench::Overhead { batches, runs } => overhead::run(scratch("overhead"), batches, runs).await,
        Bench::Release { runs } => release::run(scratch("release"), runs).await,
        Bench::Rollback { instances } => rollback::run(scratch("rollback"), instances).await,
        Bench::Rollout { instances, batches } => rollout::run(scratch("rollout"), instances, batches).await,
        Bench::Traffic { instances, rps } => traffic::run(scratch("traffic"), instances, rps).await,
        Bench::Agents { hosts, build_mb } => agents::run(scratch("agents"), hosts, build_mb).await,
        Bench::Kube { replicas, batches } => kube::run(scratch("kube"), replicas, batches).await,
        Bench::All => {
            overhead::run(scratch("overhead"), 10, 5).await?;
            release::run(scratch("release"), 3).await?;
            rollback::run(scratch("rollback"), 100).await?;
            rollout::run(scratch("rollout"), 1000, 10).await?;
            traffic::run(scratch("traffic"), 10, 400).await?;
            agents::run(scratch("agents"), 200, 50).await?;
            kube::run(scratch("kube"), 200, 10).await
        }
    }
}
