//! `POST /webhooks/scm`: a push to a configured branch, as GitHub or GitLab sends it, records
//! the commit in the store ([`signalbox_store::MergedBranch`]), so a train knows what is merged.
//!
//! Each sender signs as it does, with the secret configured on its webhook:
//!
//! - GitHub (`X-GitHub-Event: push`): `X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(secret,
//!   body)>`, the delivery's id in `X-GitHub-Delivery`. A `ping` is answered once verified.
//! - GitLab (`X-Gitlab-Event: Push Hook`), with a signing token (Standard Webhooks):
//!   `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`,
//!   the key being the token's bytes after `whsec_`, base64-decoded. GitLab's older plain
//!   `X-Gitlab-Token` proves nothing about the body and is refused.
//!
//! An unsigned or mis-signed call is 401; a GitLab call more than five minutes off, or a GitHub
//! push whose signed `repository.pushed_at` is more than an hour old, is 401; a
//! delivery or a body seen before is 409 (a replay). A push to a branch not configured, a tag, a
//! branch deletion or another event is 202 and records nothing.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use signalbox_store::{ArtifactStore, Push, body_digest};
use tracing::{info, warn};

use super::{MIN_SECRET, Refusal, fresh, header, signs, unauthorized};

/// Largest body the SCM webhook takes: GitHub lists at most 20 commits in a push, far below.
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Delivery ids remembered in memory, beside the store's record of each branch.
const REMEMBERED: usize = 10_000;

/// The SCM webhook: the store it records into, the secret, and the branches it follows.
#[derive(Clone)]
pub struct Scm {
    store: ArtifactStore,
    /// GitHub's key: the secret as it is.
    secret: Arc<Vec<u8>>,
    /// GitLab's key: a `whsec_` token's decoded bytes, else the secret as it is.
    gitlab_key: Arc<Vec<u8>>,
    branches: Arc<Vec<String>>,
    /// Recent delivery ids, oldest first, and as a set.
    seen: Arc<Mutex<(VecDeque<String>, BTreeSet<String>)>>,
    /// One push recorded at a time: the store's record of a branch is read, then written.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Scm {
    /// The webhook recording into `store` pushes to `branches` (names, or prefixes ending in
    /// `*`), checking signatures with `secret` (at least [`MIN_SECRET`] bytes, trimmed; a
    /// GitLab signing token `whsec_<base64>` serves both senders).
    pub fn new(store: ArtifactStore, secret: &[u8], branches: Vec<String>) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(format!("the SCM webhook secret must be at least {MIN_SECRET} bytes (it is {})", secret.len()));
        }
        let branches: Vec<String> = branches.into_iter().map(|b| b.trim().to_owned()).collect();
        if branches.is_empty() {
            return Err("branches: name at least one branch to follow".into());
        }
        if let Some(b) = branches.iter().find(|b| b.is_empty() || b.chars().any(char::is_whitespace)) {
            return Err(format!("branches: {b:?} is not a branch name or a prefix ending in *"));
        }
        let gitlab_key = std::str::from_utf8(secret).ok().and_then(|s| s.strip_prefix("whsec_")).and_then(|b| BASE64.decode(b).ok()).unwrap_or_else(|| secret.to_vec());
        Ok(Self {
            store,
            secret: Arc::new(secret.to_vec()),
            gitlab_key: Arc::new(gitlab_key),
            branches: Arc::new(branches),
            seen: Arc::default(),
            writing: Arc::default(),
        })
    }

    fn follows(&self, branch: &str) -> bool {
        self.branches.iter().any(|b| match b.strip_suffix('*') {
            Some(prefix) => branch.starts_with(prefix),
            None => b == branch,
        })
    }

    /// Whether `delivery` was taken before.
    fn seen(&self, delivery: &str) -> bool {
        self.seen.lock().expect("the delivery set is never poisoned").1.contains(delivery)
    }

    /// Remembers that `delivery` was taken (answered 2xx): it is not taken again.
    fn remember(&self, delivery: String) {
        let mut seen = self.seen.lock().expect("the delivery set is never poisoned");
        let (order, set) = &mut *seen;
        if set.insert(delivery.clone()) {
            order.push_back(delivery);
        }
        if order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

/// Who sent a call, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    GitHub,
    GitLab,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }
}

/// Checks the call's signature as its sender signs; returns the sender, its event and the
/// delivery id.
fn verify(hooks: &Scm, headers: &HeaderMap, body: &[u8]) -> Result<(Provider, String, String), Refusal> {
    if let Some(event) = header(headers, "x-github-event") {
        let sig = header(headers, "x-hub-signature-256").ok_or_else(|| unauthorized("X-Hub-Signature-256: is required (set a secret on the GitHub webhook)"))?;
        let tag = sig.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).ok_or_else(|| unauthorized("X-Hub-Signature-256: must be sha256=<hex>"))?;
        if !signs(&hooks.secret, &[body], &tag) {
            return Err(unauthorized("X-Hub-Signature-256: does not match the body"));
        }
        let delivery = header(headers, "x-github-delivery").filter(|d| !d.is_empty()).ok_or_else(|| (StatusCode::BAD_REQUEST, "X-GitHub-Delivery: is required".to_owned()))?;
        return Ok((Provider::GitHub, event.to_owned(), delivery.to_owned()));
    }
    if let Some(event) = header(headers, "x-gitlab-event") {
        if header(headers, "webhook-signature").is_none() && headers.contains_key("x-gitlab-token") {
            return Err(unauthorized("webhook-signature: is required; X-Gitlab-Token does not sign the body (set a signing token on the GitLab webhook)"));
        }
        let id = header(headers, "webhook-id").filter(|d| !d.is_empty()).ok_or_else(|| unauthorized("webhook-id: is required (set a signing token on the GitLab webhook)"))?;
        let ts = header(headers, "webhook-timestamp").ok_or_else(|| unauthorized("webhook-timestamp: is required"))?;
        let sigs = header(headers, "webhook-signature").ok_or_else(|| unauthorized("webhook-signature: is required"))?;
        fresh("webhook-timestamp", ts)?;
        // Several signatures may come, space-separated, while a token is rotated.
        let matched = sigs.split_ascii_whitespace().filter_map(|s| s.strip_prefix("v1,")).filter_map(|b| BASE64.decode(b).ok()).any(|tag| signs(&hooks.gitlab_key, &[id.as_bytes(), ts.as_bytes(), body], &tag));
        if !matched {
            return Err(unauthorized("webhook-signature: no v1 signature matches the body"));
        }
        return Ok((Provider::GitLab, event.to_owned(), id.to_owned()));
    }
    Err(unauthorized("X-GitHub-Event or X-Gitlab-Event: one is required, with the sender's signature"))
}

/// What both senders' push payloads carry, in either shape.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    // GitHub
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    pusher: Option<Named>,
    #[serde(default)]
    head_commit: Option<Commit>,
    // GitLab
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    total_commits_count: Option<u32>,
    // Both
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    /// When the push happened: Unix seconds in push events (a string in others).
    #[serde(default)]
    pushed_at: Option<serde_json::Value>,
}

/// How old a GitHub push may be when it arrives: GitHub signs no timestamp, but the body it
/// signs says when the push happened, so an old body replayed is refused however it is
/// labelled. (GitHub redelivers only by hand, and within days.)
const GITHUB_MAX_AGE_S: i64 = 3600;

#[derive(Debug, Deserialize)]
struct Project {
    path_with_namespace: String,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Commit {
    id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    timestamp: Option<DateTime<chrono::FixedOffset>>,
}

/// The push a payload describes: repository, branch (`None` for a tag) and the record.
fn read_push(provider: Provider, delivery: &str, body: &[u8]) -> Result<(String, Option<String>, Push, bool), Refusal> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("body: {e}")))?;
    let bad = |field: &str, rule: &str| (StatusCode::BAD_REQUEST, format!("{field}: {rule}"));
    if let (Provider::GitHub, Some(r)) = (provider, &p.repository) {
        let pushed_at = r.pushed_at.as_ref().and_then(serde_json::Value::as_i64).ok_or_else(|| bad("repository.pushed_at", "is required: Unix seconds"))?;
        if Utc::now().timestamp() - pushed_at > GITHUB_MAX_AGE_S {
            return Err(unauthorized("repository.pushed_at: the push is more than an hour old; a replay changes nothing"));
        }
    }
    let repo = match provider {
        Provider::GitHub => p.repository.map(|r| r.full_name).ok_or_else(|| bad("repository.full_name", "is required"))?,
        Provider::GitLab => p.project.map(|r| r.path_with_namespace).ok_or_else(|| bad("project.path_with_namespace", "is required"))?,
    };
    let branch = p.git_ref.strip_prefix("refs/heads/").map(str::to_owned);
    let deleted = p.deleted || p.after.bytes().all(|b| b == b'0');
    let head = match provider {
        Provider::GitHub => p.head_commit.clone(),
        Provider::GitLab => p.commits.iter().find(|c| c.id == p.after).or(p.commits.last()).cloned(),
    };
    let pushed_by = match provider {
        Provider::GitHub => p.pusher.map(|n| n.name),
        Provider::GitLab => p.user_username,
    }
    .unwrap_or_default();
    let commits = p.total_commits_count.unwrap_or(p.commits.len() as u32);
    let push = Push {
        provider: provider.name().into(),
        delivery: delivery.to_owned(),
        sha: p.after,
        before: p.before,
        pushed_by,
        message: head.as_ref().map(|c| c.message.lines().next().unwrap_or_default().chars().take(1000).collect()).unwrap_or_default(),
        commits,
        committed_at: head.and_then(|c| c.timestamp).map(|t| t.with_timezone(&Utc)),
        received_at: Utc::now(),
        body_sha256: body_digest(body),
    };
    Ok((repo, branch, push, deleted))
}

fn ignored(why: String) -> Refusal {
    info!(%why, "SCM webhook: nothing recorded");
    (StatusCode::ACCEPTED, serde_json::json!({ "ignored": why }).to_string())
}

pub(crate) async fn push(State(hooks): State<Scm>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let (provider, event, delivery) = match verify(&hooks, &headers, &body) {
        Ok(v) => v,
        Err(refusal) => {
            warn!(why = %refusal.1, "SCM webhook refused");
            return refusal;
        }
    };
    let key = format!("{}:{delivery}", provider.name());
    if hooks.seen(&key) {
        return (StatusCode::CONFLICT, "this delivery was received before: a replay changes nothing".into());
    }
    let answer = take(&hooks, provider, &event, &delivery, &body).await;
    if answer.0.is_success() {
        hooks.remember(key);
    }
    answer
}

/// Takes a verified call not seen before.
async fn take(hooks: &Scm, provider: Provider, event: &str, delivery: &str, body: &[u8]) -> (StatusCode, String) {
    match (provider, event) {
        (Provider::GitHub, "ping") => return (StatusCode::OK, serde_json::json!({ "pong": true }).to_string()),
        (Provider::GitHub, "push") | (Provider::GitLab, "Push Hook") => {}
        (_, other) => return ignored(format!("event {other:?} is not a push")),
    }
    let (repo, branch, push, deleted) = match read_push(provider, delivery, body) {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    let Some(branch) = branch else { return ignored("a tag, not a branch".into()) };
    if deleted {
        return ignored(format!("branch {branch} was deleted"));
    }
    if !hooks.follows(&branch) {
        return ignored(format!("branch {branch} is not followed (following {})", hooks.branches.join(", ")));
    }
    let sha = push.sha.clone();
    let _one = hooks.writing.lock().await;
    match hooks.store.record_push(&repo, &branch, push).await {
        Ok(true) => {
            info!(%repo, %branch, %sha, provider = provider.name(), "SCM webhook: push recorded");
            (StatusCode::OK, serde_json::json!({ "recorded": { "repo": repo, "branch": branch, "sha": sha } }).to_string())
        }
        Ok(false) => (StatusCode::CONFLICT, "this push was recorded before: a replay changes nothing".into()),
        Err(signalbox_store::Error::Invalid(e)) => (StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(secret: &str, branches: &[&str]) -> Result<Scm, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = ArtifactStore::local(dir.path()).expect("a local store");
        Scm::new(store, secret.as_bytes(), branches.iter().map(|b| (*b).to_owned()).collect())
    }

    #[test]
    fn it_follows_named_branches_and_prefixes_and_refuses_what_names_none() {
        let h = hooks("a-secret-of-at-least-thirty-two-bytes", &["main", " release/*"]).unwrap();
        assert!(h.follows("main") && h.follows("release/2026-12") && !h.follows("mainline") && !h.follows("feature/x"));
        assert_eq!(hooks("a-secret-of-at-least-thirty-two-bytes", &[]).err().as_deref(), Some("branches: name at least one branch to follow"));
        assert!(hooks("a-secret-of-at-least-thirty-two-bytes", &["main", " "]).err().is_some_and(|e| e.starts_with("branches: ")));
        assert!(hooks("too short", &["main"]).err().is_some_and(|e| e.contains("at least 32 bytes")));
    }

    #[test]
    fn a_gitlab_signing_token_signs_with_its_decoded_key_and_any_other_secret_as_is() {
        let key = [7u8; 32];
        let token = format!("whsec_{}", BASE64.encode(key));
        assert_eq!(*hooks(&token, &["main"]).unwrap().gitlab_key, key);
        let plain = "a-secret-of-at-least-thirty-two-bytes";
        assert_eq!(*hooks(plain, &["main"]).unwrap().gitlab_key, plain.as_bytes());
    }
}
