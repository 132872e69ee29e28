//! `signalbox release`: a client of the release API. A release promotes builds of one or more
//! services through a pipeline file's stages; `get` and `watch` print its tree (stage, then
//! each deploy), `approve`, `bypass` and `abort` steer it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use signalbox_proto::pb;
use signalbox_proto::pb::release_service_client::ReleaseServiceClient;

use crate::artifact::at;
use crate::control::operator;
use crate::deploy::{Api, Conn};

/// A client of the release API, served with the deploy API at `api`.
async fn connect(api: &Api) -> anyhow::Result<ReleaseServiceClient<Conn>> {
    Ok(ReleaseServiceClient::with_interceptor(api.channel("release").await?, api.bearer()?))
}

/// `signalbox release ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start a release of a pipeline file; prints its id.
    Start(Start),
    /// Print where a release stands: every stage and every deploy.
    Get {
        #[command(flatten)]
        api: Api,
        /// Release id, as printed by `release start`.
        id: String,
    },
    /// Follow a release until it ends; exits 0 only if it succeeded.
    Watch {
        #[command(flatten)]
        api: Api,
        /// Release id, as printed by `release start`.
        id: String,
    },
    /// Approve the stage gate a release awaits.
    Approve {
        #[command(flatten)]
        api: Api,
        /// Release id.
        id: String,
        /// Who approves: one of the stage's approvers; defaults to $SIGNALBOX_DEPLOYER, else $USER.
        #[arg(long, env = "SIGNALBOX_DEPLOYER")]
        approver: Option<String>,
        /// Why, recorded with the approval.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Emergency bypass of a stage's approval and soak; needs --reason and --expiry-ms.
    Bypass {
        #[command(flatten)]
        api: Api,
        /// Release id.
        id: String,
        /// Who asks; defaults to $SIGNALBOX_DEPLOYER, else $USER.
        #[arg(long, env = "SIGNALBOX_DEPLOYER")]
        by: Option<String>,
        /// Why (mandatory, recorded).
        #[arg(long, default_value = "")]
        reason: String,
        /// The stage; by default the one under way.
        #[arg(long, default_value = "")]
        stage: String,
        /// How long the bypass lasts, in milliseconds (1000 to 86400000).
        #[arg(long)]
        expiry_ms: u64,
        /// Also bypass the health verdicts of the stage's deploys.
        #[arg(long)]
        override_failed_verdict: bool,
    },
    /// Stop a release: deploys in flight roll back, no later stage starts; needs --reason.
    Abort {
        #[command(flatten)]
        api: Api,
        /// Release id.
        id: String,
        /// Who asks; defaults to $SIGNALBOX_DEPLOYER, else $USER.
        #[arg(long, env = "SIGNALBOX_DEPLOYER")]
        by: Option<String>,
        /// Why (mandatory, recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `signalbox release start --pipeline FILE --build SERVICE=DIGEST ...`.
#[derive(Debug, clap::Args)]
pub struct Start {
    #[command(flatten)]
    api: Api,
    /// The pipeline file (JSON), sent as written: the server checks it and names the field of
    /// anything it refuses.
    #[arg(long, value_name = "FILE")]
    pipeline: PathBuf,
    /// A service and its build, `SERVICE=sha256:<64 hex>`; repeat for each service.
    #[arg(long = "build", value_name = "SERVICE=DIGEST", required = true)]
    builds: Vec<String>,
    /// A service deployed only after another in every stage, `SERVICE=NEEDED`; repeatable.
    #[arg(long = "depends", value_name = "SERVICE=NEEDED")]
    depends: Vec<String>,
    /// Who releases; defaults to $SIGNALBOX_DEPLOYER, else $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    deployer: Option<String>,
    /// Rehearse every deploy without changing an instance.
    #[arg(long)]
    dry_run: bool,
    /// Your id for this request (1 to 40 of a-z, 0-9, -).
    #[arg(long)]
    request_id: Option<String>,
    /// Follow the release until it ends; exits 0 only if it succeeded.
    #[arg(long)]
    watch: bool,
}

impl Start {
    /// The request as sent to the API.
    pub fn request(&self) -> anyhow::Result<pb::StartReleaseRequest> {
        let pipeline_json = std::fs::read_to_string(&self.pipeline).with_context(|| format!("--pipeline: reading {}", self.pipeline.display()))?;
        let mut services = Vec::new();
        for build in &self.builds {
            let Some((service, digest)) = build.split_once('=') else { bail!("--build {build}: must be SERVICE=DIGEST") };
            let artifact = pb::Artifact { digest: digest.to_owned(), git_sha: String::new(), version: String::new() };
            services.push(pb::ReleaseServiceBuild { service: service.to_owned(), artifact: Some(artifact), depends_on: Vec::new() });
        }
        for dep in &self.depends {
            let Some((service, needed)) = dep.split_once('=') else { bail!("--depends {dep}: must be SERVICE=NEEDED") };
            let Some(s) = services.iter_mut().find(|s| s.service == service) else { bail!("--depends {dep}: {service} has no --build") };
            s.depends_on.push(needed.to_owned());
        }
        Ok(pb::StartReleaseRequest {
            pipeline_json,
            services,
            deployer: operator(self.deployer.clone()),
            dry_run: self.dry_run,
            request_id: self.request_id.clone().unwrap_or_default(),
        })
    }
}

/// Runs a `release` subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Start(start) => {
            let mut client = connect(&start.api).await?;
            let id = client.start_release(start.request()?).await?.into_inner().release_id;
            println!("{id}");
            if start.watch { watch(&mut client, &id).await } else { Ok(ExitCode::SUCCESS) }
        }
        Command::Get { api, id } => {
            let status = connect(&api).await?.get_release(pb::GetReleaseRequest { release_id: id.clone() }).await?.into_inner();
            print(&tree(&id, &status));
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { api, id } => watch(&mut connect(&api).await?, &id).await,
        Command::Approve { api, id, approver, reason } => {
            let req = pb::ApproveReleaseRequest { release_id: id.clone(), approver: operator(approver), reason };
            let status = connect(&api).await?.approve_release(req).await?.into_inner();
            print(&tree(&id, &status));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bypass { api, id, by, reason, stage, expiry_ms, override_failed_verdict } => {
            let req = pb::BypassReleaseRequest { release_id: id.clone(), by: operator(by), reason, stage, expiry_ms, override_failed_verdict };
            let status = connect(&api).await?.bypass_release(req).await?.into_inner();
            print(&tree(&id, &status));
            Ok(ExitCode::SUCCESS)
        }
        Command::Abort { api, id, by, reason } => {
            let req = pb::AbortReleaseRequest { release_id: id.clone(), by: operator(by), reason };
            let status = connect(&api).await?.abort_release(req).await?.into_inner();
            print(&tree(&id, &status));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// Prints each line of the tree that changed since the last status, until the release ends.
async fn watch(client: &mut ReleaseServiceClient<Conn>, id: &str) -> anyhow::Result<ExitCode> {
    let mut stream = client.watch_release(pb::GetReleaseRequest { release_id: id.to_owned() }).await?.into_inner();
    let mut shown: Vec<String> = Vec::new();
    let mut last = None;
    while let Some(status) = stream.message().await? {
        let lines = tree(id, &status);
        for line in lines.iter().filter(|l| !shown.contains(l)) {
            println!("{line}");
        }
        shown = lines;
        last = Some(status.phase());
    }
    match last {
        Some(pb::ReleasePhase::Succeeded) => Ok(ExitCode::SUCCESS),
        Some(pb::ReleasePhase::Failed | pb::ReleasePhase::Aborted | pb::ReleasePhase::RolledBack) => Ok(ExitCode::FAILURE),
        _ => bail!("the watch of {id} ended before the release did"),
    }
}

/// A phase's name as the domain spells it (`AwaitingApproval`).
fn name(debug: impl std::fmt::Debug) -> String {
    format!("{debug:?}")
}

/// The release as a tree: a header, each stage (its gate, bypass, soak), each deploy, and the
/// audit trail.
pub fn tree(id: &str, s: &pb::ReleaseStatus) -> Vec<String> {
    let mut out = Vec::new();
    let stage = s.stage.as_deref().map(|st| format!("  stage {st}")).unwrap_or_default();
    let reason = s.reason.as_deref().map(|r| format!("  reason: {r}")).unwrap_or_default();
    out.push(format!("{id}  pipeline {}  {}{stage}{reason}", s.pipeline, name(s.phase())));
    for st in &s.stages {
        let mut line = format!("  {}  {}", st.name, name(st.phase()));
        if let Some(until) = at(&st.soak_until) {
            line.push_str(&format!("  soak until {until}"));
        }
        if st.soak_restarts > 0 {
            line.push_str(&format!("  soak restarted {} times, last: {}", st.soak_restarts, st.last_regression.as_deref().unwrap_or("")));
        }
        out.push(line);
        if let Some(g) = &st.gate {
            let outcome = g.outcome.map_or_else(|| format!("open until {}", at(&g.expires_at).unwrap_or_default()), |o| name(pb::GateOutcome::try_from(o).unwrap_or_default()));
            let by: Vec<&str> = g.approvals.iter().map(|a| a.by.as_str()).collect();
            let awaits = st.awaits.as_deref().map(|a| format!("; awaits {a}")).unwrap_or_default();
            out.push(format!("    gate {outcome}; approved by [{}]{awaits}", by.join(", ")));
        }
        if let Some(b) = &st.bypass {
            let verdicts = if b.override_failed_verdict { " (verdicts too)" } else { "" };
            out.push(format!("    bypassed by {}{verdicts} until {}: {}", b.by, at(&b.expires_at).unwrap_or_default(), b.reason));
        }
        for d in &st.deploys {
            let target = d.target.as_ref().map_or("", |t| t.name.as_str());
            let reason = d.reason.as_deref().map(|r| format!("  {r}")).unwrap_or_default();
            out.push(format!("    {} on {target}  {}  {}{reason}", d.service, name(d.state()), d.deploy_id));
        }
    }
    for digest in &s.quarantined {
        out.push(format!("  quarantined {digest}"));
    }
    for e in &s.audit {
        let action = name(pb::AuditAction::try_from(e.action).unwrap_or_default());
        out.push(format!("  audit {action} by {} at {}: {}", e.by, at(&e.at).unwrap_or_default(), e.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(["signalbox"].into_iter().chain(args.split_whitespace())).map(|c| c.command)
    }

    #[test]
    fn start_sends_the_pipeline_file_the_builds_and_their_dependencies() {
        let file = std::env::temp_dir().join(format!("signalbox-cli-pipeline-{}.json", std::process::id()));
        std::fs::write(&file, r#"{"name": "web"}"#).unwrap();
        let args = format!("start --pipeline {} --build api=sha256:aa --build web=sha256:bb --depends web=api --deployer dave", file.display());
        let Command::Start(start) = parse(&args).unwrap() else { panic!("not a start") };
        let req = start.request().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(req.pipeline_json, r#"{"name": "web"}"#, "sent as written: the server checks it");
        assert_eq!(req.services.iter().map(|s| (s.service.as_str(), s.depends_on.clone())).collect::<Vec<_>>(), [("api", vec![]), ("web", vec!["api".to_owned()])]);
        assert_eq!(req.services[1].artifact.as_ref().unwrap().digest, "sha256:bb");
        assert_eq!(req.deployer, "dave");
        let Command::Start(bad) = parse(&format!("start --pipeline {} --build api", file.display())).unwrap() else { panic!("not a start") };
        assert!(bad.request().unwrap_err().to_string().starts_with("--pipeline: reading "), "the file is read first");
        assert!(parse("start --pipeline p.json").is_err(), "a build is required");
    }

    #[test]
    fn the_tree_shows_each_stage_its_gate_and_its_deploys() {
        let status = pb::ReleaseStatus {
            pipeline: "web".into(),
            phase: pb::ReleasePhase::AwaitingApproval.into(),
            stage: Some("production".into()),
            stages: vec![pb::StageStatus {
                name: "production".into(),
                phase: pb::StagePhase::AwaitingApproval.into(),
                soak_until: None,
                gate: Some(pb::Gate { before_batch: 1, opened_at: None, expires_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }), approvals: vec![], outcome: None }),
                bypass: None,
                soak_restarts: 0,
                last_regression: None,
                awaits: Some("1 more approval from bob".into()),
                deploys: vec![pb::ReleaseDeploy {
                    service: "web".into(),
                    target: Some(pb::Target { name: "eu".into(), kind: "local".into() }),
                    deploy_id: "deploy/web/eu/r1".into(),
                    state: pb::ReleaseDeployState::Waiting.into(),
                    reason: None,
                }],
            }],
            reason: None,
            quarantined: vec![],
            audit: vec![],
        };
        assert_eq!(
            tree("release/web/r1", &status),
            [
                "release/web/r1  pipeline web  AwaitingApproval  stage production",
                "  production  AwaitingApproval",
                "    gate open until 1970-01-01T00:00:00.000Z; approved by []; awaits 1 more approval from bob",
                "    web on eu  Waiting  deploy/web/eu/r1",
            ]
        );
    }
}
