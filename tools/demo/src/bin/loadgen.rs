//! `signalbox-loadgen`: sends `GET /` load to every instance of a fleet inventory file.
//!
//! Runs until `--duration-secs` elapses or SIGTERM/SIGINT, printing a progress line to
//! stderr every 5 s and a summary at the end. Connection errors are counted, never fatal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signalbox_demo::loadgen::{self, Options};

/// Load generator for the signalbox demo fleet.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Fleet inventory JSON: {"instances":[{"id":"i-000","port":41000},...]}; re-read every second.
    #[arg(long, value_name = "PATH")]
    fleet_file: PathBuf,
    /// Total requests per second, spread round-robin over all instances.
    #[arg(long, value_name = "N")]
    rps: f64,
    /// Stop after this many seconds [default: run until SIGTERM/SIGINT].
    #[arg(long, value_name = "S")]
    duration_secs: Option<f64>,
    /// Most requests in flight at once.
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Per-request timeout in seconds, connecting included.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    timeout_secs: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signalbox-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let seconds = |option: &str, value: f64| {
        Duration::try_from_secs_f64(value).map_err(|_| {
            anyhow::anyhow!(
                "option `{option}` is {value}, must be a non-negative number of seconds"
            )
        })
    };
    let options = Options {
        fleet_file: cli.fleet_file,
        rps: cli.rps,
        duration: cli
            .duration_secs
            .map(|s| seconds("--duration-secs", s))
            .transpose()?,
        concurrency: cli.concurrency,
        request_timeout: seconds("--timeout-secs", cli.timeout_secs)?,
    };
    let shutdown = signalbox_demo::shutdown::on_signal()?;
    loadgen::run(options, shutdown).await?;
    Ok(())
}
