//! `signalbox-demo-service`: one instance of the demo fleet.
//!
//! Reads `<instance-dir>/current/artifact.json` once at start-up, serves it on
//! 127.0.0.1:`port` until SIGTERM/SIGINT, then drains and exits 0. Any start-up failure
//! (bad artifact, port taken) is reported on stderr with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use signalbox_demo::service::{Options, Service};

/// One instance of the signalbox demo fleet.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Instance directory; the artifact is `<DIR>/current/artifact.json`.
    #[arg(long, value_name = "DIR")]
    instance_dir: PathBuf,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    address: Option<std::net::Ipv4Addr>,
    /// Instance id for /ready, metrics and logs [default: the instance directory's name].
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread per instance: a fleet of a thousand processes must stay cheap.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signalbox-demo-service: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = signalbox_demo::shutdown::on_signal()?;
    let service = Service::bind(Options {
        instance_dir: cli.instance_dir,
        port: cli.port,
        address: cli.address,
        instance_id: cli.instance_id,
    })
    .await?;
    let addr = service.local_addr()?;
    let r = service.readiness();
    eprintln!(
        "signalbox-demo-service: instance {} serving {} {} ({}) on http://{addr} pid {}",
        r.instance, r.service, r.version, r.digest, r.pid
    );
    let instance = r.instance.clone();
    service.run(shutdown).await.context("serving")?;
    eprintln!("signalbox-demo-service: instance {instance} drained, exiting");
    Ok(())
}
