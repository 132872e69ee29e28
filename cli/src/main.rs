//! `signalbox`: pushes builds through the artifact API, starts and follows deploys through the
//! deploy API and releases through the release API, judges recorded analyses again, and runs the local demo (`signalbox demo` runs
//! the `signalbox-demo` binary of the harness, built next to this one; the production CLI links
//! none of it).
//!
//! Exit codes: 0 when the command did what it was asked (a watched deploy succeeded), 1 when a
//! watched deploy ended otherwise, 2 when the request was refused or could not be made.

mod artifact;
mod backtest;
mod control;
mod deploy;
mod history;
mod progress;
mod release;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "signalbox", about = "Progressive delivery, every deploy a durable Temporal workflow", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push builds to the origin store and read what it holds, through the artifact API.
    #[command(subcommand)]
    Artifact(artifact::Command),
    /// Declare targets of agent hosts from their files and read where their hosts stand.
    #[command(subcommand)]
    Target(target::Command),
    /// Start, inspect, follow and steer deploys through the deploy API.
    #[command(subcommand)]
    Deploy(deploy::Command),
    /// Who started what, and every operator action on it, for a service since a time.
    Audit(history::Which),
    /// Start, inspect, follow and steer releases (services through a pipeline's stages).
    #[command(subcommand)]
    Release(release::Command),
    /// Run a whole local signalbox and roll a build out to a fleet under load (the
    /// `signalbox-demo` harness binary; `signalbox demo --help` shows its options).
    #[command(disable_help_flag = true)]
    Demo {
        /// Passed to `signalbox-demo` as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Judge a recorded analysis input again (exit 0 pass, 1 fail, 3 inconclusive), or export one from a deploy.
    Backtest(backtest::Args),
}

/// Becomes `signalbox-demo` from next to this binary, as git runs its subcommands (so Ctrl-C
/// reaches the demo alone, and it stops what it started).
fn demo(args: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;

    use anyhow::Context;
    let me = std::env::current_exe().context("finding the signalbox binary")?;
    let demo = me.with_file_name("signalbox-demo");
    if !demo.is_file() {
        anyhow::bail!("{} is not there: the demo is a harness binary (cargo build -p signalbox-localstack --bins)", demo.display());
    }
    let error = std::process::Command::new(&demo).args(args).exec();
    Err(anyhow::Error::new(error).context(format!("running {}", demo.display())))
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let outcome = match Cli::parse().command {
        Command::Artifact(command) => artifact::run(command).await,
        Command::Deploy(command) => deploy::run(command).await,
        Command::Audit(which) => history::audit(which).await,
        Command::Release(command) => release::run(command).await,
        Command::Target(command) => target::run(command).await,
        Command::Demo { args } => demo(args),
        Command::Backtest(args) => backtest::run(args).await,
    };
    outcome.unwrap_or_else(|e| {
        // A refusal's message names the field and the rule: print just that.
        match e.downcast_ref::<tonic::Status>() {
            Some(status) => eprintln!("error: {}", status.message()),
            None => eprintln!("error: {e:#}"),
        }
        ExitCode::from(2)
    })
}
