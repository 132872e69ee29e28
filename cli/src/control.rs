//! `signalbox deploy pause|resume|halt|abort|rollback|bypass|approve`: operator control of a
//! running deploy through the deploy API. The deploy decides whether an operation is allowed;
//! a refusal prints its reason and exits 2.

use std::process::ExitCode;

use anyhow::Context;
use signalbox_domain::DeployStatus;
use signalbox_proto::pb;

use crate::deploy::Api;
use crate::progress::Progress;

/// Who an operator is when they do not say: `$SIGNALBOX_DEPLOYER` (read by clap), else `$USER`.
/// Nobody at all is left empty, for the deploy to refuse by name rather than record a made-up one.
/// A caller with a credential is who the credential says: the name is left to the API.
pub fn operator(given: Option<String>) -> String {
    let fallback = if credential_given() { None } else { std::env::var("USER").ok() };
    given.filter(|g| !g.trim().is_empty()).or(fallback).unwrap_or_default()
}

/// Whether this run authenticates with a token or a client certificate (flag or environment).
pub fn credential_given() -> bool {
    let env = ["SIGNALBOX_TOKEN", "SIGNALBOX_TOKEN_FILE", "SIGNALBOX_CERT"].iter().any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty()));
    env || std::env::args().any(|a| ["--token", "--token-file", "--cert"].iter().any(|f| a == *f || a.starts_with(&format!("{f}="))))
}

/// The operations that take `--by` and `--reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Signal: hold before the next batch.
    Pause,
    /// Signal: lift a pause or a halt.
    Resume,
    /// Update: freeze the fleet where it stands.
    Halt,
    /// Update: roll back now.
    Abort,
    /// Update: roll back, also after success within the rollback window.
    Rollback,
    /// Update: skip the remaining gates and bake timers.
    Bypass,
}

/// `signalbox deploy <operation> ID [--by NAME] [--reason TEXT]`.
#[derive(Debug, clap::Args)]
pub struct Operate {
    #[command(flatten)]
    api: Api,
    /// Deploy id, as printed by `deploy start`.
    id: String,
    /// Who asks, recorded in the deploy's audit trail; defaults to $SIGNALBOX_DEPLOYER, else $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    by: Option<String>,
    /// Why, recorded in the audit trail; required by halt, abort, rollback and bypass.
    #[arg(long, default_value = "")]
    reason: String,
}

impl Operate {
    /// The request as sent to the API.
    pub fn request(&self) -> pb::ControlDeployRequest {
        pb::ControlDeployRequest { deploy_id: self.id.clone(), by: operator(self.by.clone()), reason: self.reason.clone() }
    }
}

/// `signalbox deploy approve ID [--approver NAME] [--reason TEXT]`.
#[derive(Debug, clap::Args)]
pub struct Approval {
    #[command(flatten)]
    api: Api,
    /// Deploy id, as printed by `deploy start`.
    id: String,
    /// Who approves: one of the deploy's approvers; defaults to $SIGNALBOX_DEPLOYER, else $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    approver: Option<String>,
    /// Why, recorded with the approval.
    #[arg(long, default_value = "")]
    reason: String,
}

impl Approval {
    /// The request as sent to the API.
    pub fn request(&self) -> pb::ApproveDeployRequest {
        pb::ApproveDeployRequest { deploy_id: self.id.clone(), approver: operator(self.approver.clone()), reason: self.reason.clone() }
    }
}

/// Sends `op`. A pause or resume is a signal the deploy takes at its next step: it prints that
/// it was sent. The others answer with the deploy's status once accepted, which is printed.
pub async fn operate(op: Operation, args: Operate) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let req = args.request();
    let status = match op {
        Operation::Pause => return signalled("pause", &args.id, client.pause_deploy(req).await),
        Operation::Resume => return signalled("resume", &args.id, client.resume_deploy(req).await),
        Operation::Halt => client.halt_deploy(req).await?,
        Operation::Abort => client.abort_deploy(req).await?,
        Operation::Rollback => client.rollback_deploy(req).await?,
        Operation::Bypass => client.bypass_deploy(req).await?,
    };
    print(status.into_inner())
}

/// Sends the approval; prints the deploy's status once it was counted.
pub async fn approve(args: Approval) -> anyhow::Result<ExitCode> {
    let status = args.api.connect().await?.approve_deploy(args.request()).await?;
    print(status.into_inner())
}

fn signalled(name: &str, id: &str, sent: Result<tonic::Response<()>, tonic::Status>) -> anyhow::Result<ExitCode> {
    sent?;
    println!("{name} sent to {id}; `signalbox deploy get` shows when it took effect");
    Ok(ExitCode::SUCCESS)
}

fn print(wire: pb::DeployStatus) -> anyhow::Result<ExitCode> {
    let status = DeployStatus::try_from(wire).context("reading the status from the API")?;
    for line in Progress::default().lines(&status) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
