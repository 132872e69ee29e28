//! `signalbox deploy list` and `signalbox audit`: what ran, where and when, and who did what to
//! it, from the API's `ListDeploys` (Temporal's visibility) and each deploy's own audit trail.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use signalbox_domain::{DeployStatus, Phase};
use signalbox_proto::pb;

use crate::deploy::Api;

/// Which deploys: `--service`, `--since`, and optionally `--phase` and `--target`.
#[derive(Debug, clap::Args)]
pub struct Which {
    #[command(flatten)]
    pub api: Api,
    /// The service.
    #[arg(long)]
    pub service: String,
    /// Started at or after: RFC 3339 (`2026-12-01T09:00:00Z`) or an age (`90m`, `24h`, `7d`).
    #[arg(long, value_parser = since)]
    pub since: DateTime<Utc>,
    /// Only deploys in this phase (`succeeded`, `rolled_back`, `failed`, `rolling`, ...).
    #[arg(long, value_parser = phase)]
    pub phase: Option<Phase>,
    /// Only deploys to this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Print JSON, one object per deploy.
    #[arg(long)]
    pub json: bool,
}

/// `--since`: a time, or an age before now.
fn since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = n.parse().map_err(|_| format!("{text}: must be RFC 3339 or an age such as 90m, 24h, 7d"))?;
    let age = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => return Err(format!("{text}: an age's unit is s, m, h or d")),
    };
    Ok(Utc::now() - age)
}

fn phase(text: &str) -> Result<Phase, String> {
    let camel: String = text.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    serde_json::from_value(serde_json::Value::String(camel)).map_err(|_| format!("{text}: not a phase (succeeded, rolled_back, failed, rolling, ...)"))
}

/// Every deploy `which` names, all pages.
async fn all(which: &Which) -> anyhow::Result<Vec<pb::DeploySummary>> {
    let mut client = which.api.connect().await?;
    let mut deploys = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListDeploysRequest {
            service: which.service.clone(),
            since: Some(signalbox_proto::timestamp(which.since)),
            phase: which.phase.map_or(pb::Phase::Unspecified, pb::Phase::from).into(),
            target: which.target.clone().unwrap_or_default(),
            page_size: 0,
            page_token: token,
        };
        let page = client.list_deploys(req).await?.into_inner();
        deploys.extend(page.deploys);
        if page.next_page_token.is_empty() {
            return Ok(deploys);
        }
        token = page.next_page_token;
    }
}

fn time(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| signalbox_proto::instant("at", Some(t)).ok()).map_or_else(|| "-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A phase as `--phase` takes it: `rolled_back`.
fn phase_name(d: &pb::DeploySummary) -> String {
    let mut name = String::new();
    for (i, c) in format!("{:?}", d.phase()).chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// `signalbox deploy list`: one line per deploy, newest first.
pub async fn list(which: Which) -> anyhow::Result<ExitCode> {
    for d in all(&which).await? {
        if which.json {
            let json = serde_json::json!({
                "deploy_id": d.deploy_id, "service": d.service, "target": d.target, "phase": phase_name(&d), "deployer": d.deployer,
                "artifact_digest": d.artifact_digest, "git_sha": d.git_sha, "strategy": d.strategy, "started_at": time(d.started_at), "closed_at": time(d.closed_at),
                "config_sha256": d.config_sha256, "config": config_json(&d),
            });
            println!("{json}");
        } else {
            println!("{}  {}  {}  {}  {}  by {}  {}  git {}", time(d.started_at), d.deploy_id, d.target, phase_name(&d), d.strategy, d.deployer, d.artifact_digest, d.git_sha);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A deploy's config snapshot in words, as JSON (`null` when its memo holds none).
fn config_json(d: &pb::DeploySummary) -> serde_json::Value {
    d.config.as_ref().map_or(serde_json::Value::Null, |c| {
        serde_json::json!({"build": c.build, "batches": c.batches, "bake": c.bake, "health": c.health, "started_by": c.started_by})
    })
}

/// The first 12 hex digits of a SHA-256, or `-` when there is none.
fn short(sha: &str) -> &str {
    if sha.is_empty() { "-" } else { &sha[..sha.len().min(12)] }
}

/// `signalbox audit`: who started each deploy and every operator action on it, oldest first.
pub async fn audit(which: Which) -> anyhow::Result<ExitCode> {
    let mut client = which.api.connect().await?;
    let mut lines: Vec<(String, serde_json::Value, String)> = Vec::new();
    for d in all(&which).await? {
        let started = time(d.started_at);
        // Every entry names the config snapshot in force: a deploy runs with the one it started with.
        let config = d.config_sha256.clone();
        let start = serde_json::json!({
            "at": started, "deploy_id": d.deploy_id, "action": "start", "by": d.deployer, "reason": "", "artifact_digest": d.artifact_digest,
            "git_sha": d.git_sha, "target": d.target, "config_sha256": config, "config": config_json(&d),
        });
        let plan = d.config.as_ref().map(|c| format!(", {}", c.batches)).unwrap_or_default();
        lines.push((started.clone(), start, format!("{started}  {}  start by {}: {} (git {}) on {}{plan}, config {}", d.deploy_id, d.deployer, d.artifact_digest, d.git_sha, d.target, short(&config))));
        let status = client.get_deploy(pb::GetDeployRequest { deploy_id: d.deploy_id.clone() }).await.with_context(|| format!("reading {}", d.deploy_id))?.into_inner();
        let status = DeployStatus::try_from(status).context("reading the status from the API")?;
        for (i, e) in status.audit.iter().enumerate() {
            if i == signalbox_domain::status::AUDIT_HEAD && status.audit_elided > 0 {
                let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let n = status.audit_elided;
                let json = serde_json::json!({"at": at, "deploy_id": d.deploy_id, "action": "elided", "elided": n});
                lines.push((at.clone(), json, format!("{at}  {}  {n} earlier entries elided from the status (the workflow history holds them)", d.deploy_id)));
            }
            let at = e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let action = serde_json::to_value(e.action)?.as_str().unwrap_or_default().to_owned();
            let json = serde_json::json!({"at": at, "deploy_id": d.deploy_id, "action": action, "by": e.by, "reason": e.reason, "config_sha256": config});
            lines.push((at.clone(), json, format!("{at}  {}  {action} by {}: {}", d.deploy_id, e.by, e.reason)));
        }
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, json, text) in lines {
        if which.json { println!("{json}") } else { println!("{text}") }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(since("2026-12-01T09:00:00Z").unwrap().timestamp(), 1_796_115_600);
        let day = Utc::now() - since("24h").unwrap();
        assert!((day.num_seconds() - 86_400).abs() < 5, "{day}");
        assert!(since("yesterday").unwrap_err().contains("must be RFC 3339 or an age"));
        assert!(since("3w").unwrap_err().contains("unit is s, m, h or d"));
        assert_eq!(phase("rolled_back").unwrap(), Phase::RolledBack);
        assert!(phase("done").is_err());
        let d = pb::DeploySummary { phase: pb::Phase::RolledBack.into(), ..Default::default() };
        assert_eq!(phase(&phase_name(&d)).unwrap(), Phase::RolledBack, "what list prints, --phase takes");
    }
}
