//! What is merged: the commits that pushes to a configured branch brought, as the SCM webhook
//! records them, so a deploy train knows what it may ship.
//!
//! One branch of one repository lives at `merged/<hex of SHA-256(repo, branch)>.json` in the
//! origin store the API and the workers share: its head (the last push), and the pushes that
//! led there, newest last (at most [`MAX_PUSHES`]). A push already recorded (the same delivery,
//! or the same signed body again) is a replay and changes nothing.

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use signalbox_domain::bounds::{MAX_TEXT, check_principal, check_text};

use crate::{ArtifactStore, Error, Result};

/// Most pushes a branch's record keeps; the oldest go first.
pub const MAX_PUSHES: usize = 500;
/// Longest repository name (`group/subgroup/name`).
pub const MAX_REPO: usize = 255;
/// Longest branch name.
pub const MAX_BRANCH: usize = 255;

/// One push to a branch, as the webhook received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// Who sent it: `github` or `gitlab`.
    pub provider: String,
    /// The sender's id of this delivery (`X-GitHub-Delivery`, `webhook-id`).
    pub delivery: String,
    /// The commit the branch points at after the push.
    pub sha: String,
    /// The commit it pointed at before.
    pub before: String,
    /// Who pushed, as the sender names them.
    pub pushed_by: String,
    /// The head commit's first line.
    pub message: String,
    /// How many commits the push brought.
    pub commits: u32,
    /// When the head commit was made, as the sender says.
    pub committed_at: Option<DateTime<Utc>>,
    /// When signalbox recorded the push.
    pub received_at: DateTime<Utc>,
    /// SHA-256 of the signed body, hex: a body seen before is a replay.
    pub body_sha256: String,
}

/// A branch's record: where it stands and the pushes that led there, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedBranch {
    /// The repository, `owner/name` as the sender names it.
    pub repo: String,
    /// The branch, without `refs/heads/`.
    pub branch: String,
    /// The pushes, newest last (at most [`MAX_PUSHES`]); the last is the head.
    pub pushes: Vec<Push>,
}

impl MergedBranch {
    /// The commit the branch points at, as the last recorded push left it.
    pub fn head(&self) -> Option<&Push> {
        self.pushes.last()
    }
}

/// SHA-256 of `body`, hex: what [`Push::body_sha256`] holds.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn invalid(field: &str, rule: impl Into<String>) -> Error {
    Error::Invalid(signalbox_domain::Error::invalid(field, rule))
}

/// Checks a repository and branch name: what the record is keyed by.
fn check_branch(repo: &str, branch: &str) -> Result<()> {
    if repo.is_empty() || repo.len() > MAX_REPO || !repo.contains('/') || repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("repo", format!("must be owner/name, 3 to {MAX_REPO} bytes, without spaces")));
    }
    if branch.is_empty() || branch.len() > MAX_BRANCH || branch.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("branch", format!("must be 1 to {MAX_BRANCH} bytes, without spaces")));
    }
    Ok(())
}

fn check_push(p: &Push) -> Result<()> {
    let commit = |field: &str, sha: &str| {
        let ok = matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if ok { Ok(()) } else { Err(invalid(field, "must be a commit SHA: 40 or 64 hex digits")) }
    };
    commit("sha", &p.sha)?;
    commit("before", &p.before)?;
    if p.delivery.trim().is_empty() || p.delivery.len() > 128 {
        return Err(invalid("delivery", "must be 1 to 128 bytes"));
    }
    if !p.pushed_by.is_empty() {
        check_principal("pushed_by", &p.pushed_by).map_err(Error::Invalid)?;
    }
    check_text("message", &p.message, MAX_TEXT).map_err(Error::Invalid)
}

impl ArtifactStore {
    fn merged_key(repo: &str, branch: &str) -> ObjectPath {
        let mut h = Sha256::new();
        h.update(repo.as_bytes());
        h.update([0]);
        h.update(branch.as_bytes());
        ObjectPath::from(format!("merged/{}.json", hex::encode(h.finalize())))
    }

    /// What the store knows of `branch` of `repo`; no pushes when none was recorded.
    pub async fn merged(&self, repo: &str, branch: &str) -> Result<MergedBranch> {
        check_branch(repo, branch)?;
        match self.inner().get(&Self::merged_key(repo, branch)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(Error::Backend)?;
                serde_json::from_slice(&bytes).map_err(|e| invalid("merged", format!("the record of {repo} {branch} cannot be read: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(MergedBranch { repo: repo.to_owned(), branch: branch.to_owned(), pushes: Vec::new() }),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// Records `push` to `branch` of `repo`; returns whether it was new. A push whose delivery
    /// or body was recorded before changes nothing (a retried delivery, or a replay).
    /// Callers serialise the pushes to one branch (the record is read, then written).
    pub async fn record_push(&self, repo: &str, branch: &str, push: Push) -> Result<bool> {
        check_branch(repo, branch)?;
        check_push(&push)?;
        let mut record = self.merged(repo, branch).await?;
        if record.pushes.iter().any(|p| (p.provider == push.provider && p.delivery == push.delivery) || p.body_sha256 == push.body_sha256) {
            return Ok(false);
        }
        record.pushes.push(push);
        if record.pushes.len() > MAX_PUSHES {
            let over = record.pushes.len() - MAX_PUSHES;
            record.pushes.drain(..over);
        }
        let json = serde_json::to_vec_pretty(&record).expect("a branch record serializes");
        self.inner().put(&Self::merged_key(repo, branch), PutPayload::from(json)).await.map_err(Error::Backend)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(delivery: &str, sha: char, body: &str) -> Push {
        Push {
            provider: "github".into(),
            delivery: delivery.into(),
            sha: sha.to_string().repeat(40),
            before: "0".repeat(40),
            pushed_by: "alice".into(),
            message: "Fix the checkout total".into(),
            commits: 1,
            committed_at: None,
            received_at: "2026-12-03T10:00:00Z".parse().unwrap(),
            body_sha256: body_digest(body.as_bytes()),
        }
    }

    #[tokio::test]
    async fn a_branch_keeps_its_pushes_newest_last_and_a_replay_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        assert_eq!(store.merged("acme/shop", "main").await.unwrap().head(), None);
        assert!(store.record_push("acme/shop", "main", push("d1", 'a', "one")).await.unwrap());
        assert!(store.record_push("acme/shop", "main", push("d2", 'b', "two")).await.unwrap());
        // The same delivery again, or the same body under another delivery id: a replay.
        assert!(!store.record_push("acme/shop", "main", push("d2", 'c', "three")).await.unwrap());
        assert!(!store.record_push("acme/shop", "main", push("d9", 'c', "one")).await.unwrap());
        let main = store.merged("acme/shop", "main").await.unwrap();
        assert_eq!(main.pushes.iter().map(|p| p.delivery.as_str()).collect::<Vec<_>>(), ["d1", "d2"]);
        assert_eq!(main.head().map(|p| p.sha.as_str()), Some("b".repeat(40).as_str()));
        // Another branch, another record.
        assert_eq!(store.merged("acme/shop", "release").await.unwrap().pushes, []);
    }

    #[tokio::test]
    async fn a_push_breaking_a_rule_is_refused_naming_the_field_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let cases = [
            ("shop", "main", push("d1", 'a', "x"), "repo"),
            ("acme/shop", "", push("d1", 'a', "x"), "branch"),
            ("acme/shop", "main", Push { sha: "not-a-sha".into(), ..push("d1", 'a', "x") }, "sha"),
            ("acme/shop", "main", Push { delivery: String::new(), ..push("d1", 'a', "x") }, "delivery"),
        ];
        for (repo, branch, p, field) in cases {
            let e = store.record_push(repo, branch, p).await.unwrap_err().to_string();
            assert!(e.starts_with(&format!("{field}: ")), "{e}");
        }
        assert_eq!(store.merged("acme/shop", "main").await.unwrap().pushes, []);
    }
}
