//! `signalbox artifact push|list|show|quarantine|lift|merged`: builds in the origin store, and
//! what is merged on a branch, through the artifact API.
//!
//! A push hashes the file first and names the digest, so pushing a build the store already
//! holds sends no bytes, and a push retried after a broken connection stores it once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use signalbox_proto::pb;
use signalbox_proto::pb::artifact_service_client::ArtifactServiceClient;

use crate::control::operator;
use crate::deploy::{Api, Conn};

/// Bytes per pushed message: well under the API's message limit.
const CHUNK: usize = 1024 * 1024;

/// `signalbox artifact ...`
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Push a build (a bundle tarball, see the README) to the origin store; prints its digest.
    Push(Push),
    /// List the builds the store holds, newest push first.
    List {
        #[command(flatten)]
        api: Api,
        /// Only builds of this service.
        #[arg(long)]
        service: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one build's record and its quarantine (in force, and every quarantine and lift) as JSON.
    Show {
        #[command(flatten)]
        api: Api,
        /// The build's digest, `sha256:<hex>`.
        digest: String,
    },
    /// Quarantine a build known bad: every later deploy or release of it is refused.
    Quarantine(Judged),
    /// Lift a build's quarantine; the lift, with who and why, stays in its record.
    Lift(Judged),
    /// What is merged on a branch: the pushes the SCM webhook recorded, newest last.
    Merged {
        #[command(flatten)]
        api: Api,
        /// The repository, `owner/name`.
        #[arg(long)]
        repo: String,
        /// The branch.
        #[arg(long, default_value = "main")]
        branch: String,
        /// Most pushes to print, the newest; 0 for all.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `signalbox artifact quarantine|lift DIGEST --reason WHY`.
#[derive(Debug, clap::Args)]
pub struct Judged {
    #[command(flatten)]
    api: Api,
    /// The build's digest, `sha256:<hex>`.
    digest: String,
    /// Why (required).
    #[arg(long)]
    reason: String,
    /// Who; defaults to $SIGNALBOX_DEPLOYER, else $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    by: Option<String>,
}

/// `signalbox artifact push FILE --service S --version V --git-sha SHA`.
#[derive(Debug, clap::Args)]
pub struct Push {
    #[command(flatten)]
    api: Api,
    /// The build: a `.tar` or `.tar.gz` with a `signalbox.json` manifest at its root.
    file: PathBuf,
    /// The service it is a build of.
    #[arg(long)]
    service: String,
    /// Its version name.
    #[arg(long)]
    version: String,
    /// The commit it was built from.
    #[arg(long)]
    git_sha: String,
    /// When it was built (RFC 3339); by default unknown.
    #[arg(long)]
    built_at: Option<String>,
    /// A free label `KEY=VALUE`; repeat for more.
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
    /// Who pushes it; defaults to $SIGNALBOX_DEPLOYER, else $USER.
    #[arg(long, env = "SIGNALBOX_DEPLOYER")]
    by: Option<String>,
}

fn label(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("--label {text}: must be KEY=VALUE"))
}

async fn connect(api: &Api) -> anyhow::Result<ArtifactServiceClient<Conn>> {
    Ok(ArtifactServiceClient::with_interceptor(api.channel("artifact").await?, api.bearer()?))
}

/// A record as people read it: times as RFC 3339, labels as an object.
fn json(a: &pb::ArtifactRecord) -> serde_json::Value {
    serde_json::json!({
        "digest": a.digest,
        "service": a.service,
        "version": a.version,
        "git_sha": a.git_sha,
        "size": a.size,
        "format": a.format,
        "built_at": at(&a.built_at),
        "pushed_at": at(&a.pushed_at),
        "pushed_by": a.pushed_by,
        "labels": a.labels,
        "quarantined": a.quarantined,
    })
}

pub(crate) fn at(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A quarantine as people read it.
fn quarantine_json(q: &pb::Quarantine) -> serde_json::Value {
    let event = |e: &pb::QuarantineEvent| serde_json::json!({"action": e.action, "by": e.by, "reason": e.reason, "at": at(&e.at)});
    serde_json::json!({
        "active": q.active.as_ref().map(event),
        "history": q.history.iter().map(event).collect::<Vec<_>>(),
    })
}

/// Runs an artifact command.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Push(push) => {
            let built_at = push
                .built_at
                .as_deref()
                .map(|t| chrono::DateTime::parse_from_rfc3339(t).map_err(|_| anyhow::anyhow!("--built-at: must be an RFC 3339 time, e.g. 2026-12-01T09:30:00Z")))
                .transpose()?
                .map(|t| signalbox_proto::timestamp(t.to_utc()));
            let path = &push.file;
            let (digest, size) = hash(path)?;
            let metadata = pb::ArtifactMetadata {
                service: push.service,
                version: push.version,
                git_sha: push.git_sha,
                built_at,
                pushed_by: operator(push.by),
                labels: push.labels.into_iter().collect::<BTreeMap<_, _>>(),
                digest: digest.clone(),
                size,
            };
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let parts = chunks(metadata, file, path.clone());
            let answer = connect(&push.api).await?.push_artifact(parts).await?.into_inner();
            let record = answer.artifact.context("the API answered a push without its record")?;
            println!("{}", record.digest);
            if !answer.stored {
                eprintln!("already in the store: {} {} ({}), pushed by {}", record.service, record.version, record.git_sha, record.pushed_by);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { api, service, json: as_json } => {
            let list = connect(&api).await?.list_artifacts(pb::ListArtifactsRequest { service: service.unwrap_or_default() }).await?.into_inner();
            if as_json {
                for a in &list.artifacts {
                    println!("{}", json(a));
                }
            } else {
                println!("{:<78} {:<16} {:<12} {:<10} {:>12}  PUSHED", "DIGEST", "SERVICE", "VERSION", "GIT SHA", "SIZE");
                for a in &list.artifacts {
                    let pushed = json(a)["pushed_at"].as_str().unwrap_or("-").to_owned();
                    println!("{:<78} {:<16} {:<12} {:<10} {:>12}  {pushed} by {}", a.digest, a.service, a.version, &a.git_sha[..a.git_sha.len().min(10)], a.size, a.pushed_by);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { api, digest } => {
            let mut client = connect(&api).await?;
            let record = client.get_artifact(pb::GetArtifactRequest { digest: digest.clone() }).await?.into_inner();
            let quarantine = client.get_quarantine(pb::GetQuarantineRequest { digest }).await?.into_inner();
            let mut shown = json(&record);
            shown["quarantine"] = quarantine_json(&quarantine);
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine(j) => {
            let req = pb::QuarantineArtifactRequest { digest: j.digest, by: operator(j.by), reason: j.reason };
            let q = connect(&j.api).await?.quarantine_artifact(req).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&quarantine_json(&q))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Lift(j) => {
            let req = pb::LiftQuarantineRequest { digest: j.digest, by: operator(j.by), reason: j.reason };
            let q = connect(&j.api).await?.lift_quarantine(req).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&quarantine_json(&q))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Merged { api, repo, branch, limit, json: as_json } => {
            let merged = connect(&api).await?.get_merged(pb::GetMergedRequest { repo, branch, limit }).await?.into_inner();
            for p in &merged.pushes {
                let (received, committed) = (at(&p.received_at).unwrap_or_default(), at(&p.committed_at));
                if as_json {
                    let line = serde_json::json!({
                        "repo": merged.repo, "branch": merged.branch, "sha": p.sha, "before": p.before, "provider": p.provider,
                        "delivery": p.delivery, "pushed_by": p.pushed_by, "message": p.message, "commits": p.commits,
                        "committed_at": committed, "received_at": received,
                    });
                    println!("{line}");
                } else {
                    println!("{received}  {}  {} commit(s) by {} ({}): {}", p.sha, p.commits, p.pushed_by, p.provider, p.message);
                }
            }
            if merged.pushes.is_empty() && !as_json {
                eprintln!("no push to {} {} was recorded", merged.repo, merged.branch);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The file's digest and size, read once before anything is sent.
fn hash(path: &std::path::Path) -> anyhow::Result<(String, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut hasher, mut buf, mut size) = (Sha256::new(), vec![0; CHUNK], 0u64);
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// The push as a stream: the metadata, then the file in chunks, read as the API takes them.
fn chunks(metadata: pb::ArtifactMetadata, file: std::fs::File, path: PathBuf) -> impl futures::Stream<Item = pb::PushArtifactRequest> {
    use pb::push_artifact_request::Part;
    let first = pb::PushArtifactRequest { part: Some(Part::Metadata(metadata)) };
    let rest = futures::stream::unfold(file, move |mut file| {
        let path = path.clone();
        async move {
            let mut buf = vec![0; CHUNK];
            match file.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((pb::PushArtifactRequest { part: Some(Part::Chunk(buf)) }, file))
                }
                // The API sees a short push and refuses it by its size; say why here too.
                Err(e) => {
                    eprintln!("error: reading {}: {e}", path.display());
                    None
                }
            }
        }
    });
    futures::stream::once(async { first }).chain(rest)
}
