//! `signalbox target apply|list|show`: targets of agent hosts, declared from the file their
//! owners keep in git, through the target API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use signalbox_proto::pb;
use signalbox_proto::pb::target_service_client::TargetServiceClient;

use crate::deploy::{Api, Conn};

/// `signalbox target ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Declare (or redeclare) the target a TOML file describes; prints it with its hosts.
    Apply {
        #[command(flatten)]
        api: Api,
        /// The target file (see the README).
        file: PathBuf,
    },
    /// List the declared targets, a line each.
    List {
        #[command(flatten)]
        api: Api,
    },
    /// Print one target and where each of its hosts stands, as JSON.
    Show {
        #[command(flatten)]
        api: Api,
        /// The target's name.
        name: String,
    },
}

async fn connect(api: &Api) -> anyhow::Result<TargetServiceClient<Conn>> {
    Ok(TargetServiceClient::with_interceptor(api.channel("target").await?, api.bearer()?))
}

fn json(t: &pb::TargetStatus) -> serde_json::Value {
    let hosts: Vec<_> = t
        .hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name, "region": h.region, "declared": h.declared, "registered": h.registered,
                "address": h.address, "port": h.port, "version": h.version, "digest": h.digest,
                "state": h.state, "changed_by": h.changed_by, "message": h.message,
            })
        })
        .collect();
    serde_json::json!({"name": t.name, "kind": t.kind, "caches": t.caches, "report_timeout_ms": t.report_timeout_ms, "hosts": hosts})
}

/// Runs a target command.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Apply { api, file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let status = connect(&api).await?.apply_target(pb::ApplyTargetRequest { file: text }).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&json(&status))?);
        }
        Command::List { api } => {
            let list = connect(&api).await?.list_targets(pb::ListTargetsRequest {}).await?.into_inner();
            println!("{:<24} {:<8} {:>8} {:>11} {:>6}", "NAME", "KIND", "REGIONS", "REGISTERED", "READY");
            for t in &list.targets {
                let registered = t.hosts.iter().filter(|h| h.registered).count();
                let ready = t.hosts.iter().filter(|h| h.registered && h.state == "ready").count();
                println!("{:<24} {:<8} {:>8} {:>11} {:>6}", t.name, t.kind, t.caches.len(), format!("{registered}/{}", t.hosts.len()), ready);
            }
        }
        Command::Show { api, name } => {
            let status = connect(&api).await?.get_target(pb::GetTargetRequest { name }).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&json(&status))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
