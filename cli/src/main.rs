//! `signalbox`: starts and follows deploys through the deploy API, and runs the local demo.
//!
//! Exit codes: 0 when the command did what it was asked (a watched deploy succeeded), 1 when a
//! watched deploy ended otherwise, 2 when the request was refused or could not be made.

mod backtest;
mod control;
mod demo;
mod deploy;
mod progress;

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
    /// Start, inspect, follow and steer deploys through the deploy API.
    #[command(subcommand)]
    Deploy(deploy::Command),
    /// Run a whole local signalbox and roll a build out to a fleet under load.
    Demo(demo::Args),
    /// Judge a recorded analysis input again (exit 0 pass, 1 fail, 3 inconclusive), or export one from a deploy.
    Backtest(backtest::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let outcome = match Cli::parse().command {
        Command::Deploy(command) => deploy::run(command).await,
        Command::Demo(args) => demo::run(args).await,
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
