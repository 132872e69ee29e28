//! Quarantined builds: a build that failed its verdict in a release is refused by every later
//! deploy or release, anywhere, until someone lifts the quarantine.
//!
//! The quarantine of a build lives beside its record, at `quarantines/sha256/<hex>.json`, in the
//! origin store every worker and the API share. The file keeps the quarantine in force, if any,
//! and every quarantine and lift the build ever saw, with who, when and why: the audit of it.

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use signalbox_domain::Digest;
use signalbox_domain::bounds::{MAX_TEXT, check_principal, check_text};

use crate::{ArtifactStore, Error, Result};

/// Most entries a build's quarantine audit keeps; the oldest go first.
pub const MAX_QUARANTINE_EVENTS: usize = 100;

/// What was done to a build's quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    /// The build was quarantined.
    Quarantined,
    /// The quarantine was lifted.
    Lifted,
}

/// One quarantine or lift, as the audit keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEvent {
    /// Quarantined or lifted.
    pub action: QuarantineAction,
    /// Who: a person, or the release that caught the build (`release/<pipeline>/<id>`).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A build's quarantine: the one in force, if any, and every event it saw, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The quarantine in force; `None` when the build may be deployed.
    pub active: Option<QuarantineEvent>,
    /// Every quarantine and lift, oldest first (at most [`MAX_QUARANTINE_EVENTS`]).
    pub history: Vec<QuarantineEvent>,
}

fn check(by: &str, reason: &str) -> Result<()> {
    check_principal("by", by).map_err(Error::Invalid)?;
    if reason.trim().is_empty() {
        return Err(Error::Invalid(signalbox_domain::Error::invalid("reason", "is required: say why")));
    }
    check_text("reason", reason, MAX_TEXT).map_err(Error::Invalid)
}

impl QuarantineRecord {
    fn push(&mut self, event: QuarantineEvent) {
        self.history.push(event);
        if self.history.len() > MAX_QUARANTINE_EVENTS {
            let over = self.history.len() - MAX_QUARANTINE_EVENTS;
            self.history.drain(..over);
        }
    }
}

impl ArtifactStore {
    fn quarantine_key(digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("quarantines/sha256/{}.json", digest.hex()))
    }

    /// The quarantine record of `digest`; empty when it was never quarantined.
    pub async fn quarantine_of(&self, digest: &Digest) -> Result<QuarantineRecord> {
        match self.inner().get(&Self::quarantine_key(digest)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(Error::Backend)?;
                serde_json::from_slice(&bytes).map_err(|e| Error::Record { digest: digest.clone(), message: format!("quarantine: {e}") })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(QuarantineRecord::default()),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    async fn write_quarantine(&self, digest: &Digest, record: &QuarantineRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("a quarantine record serializes");
        self.inner().put(&Self::quarantine_key(digest), PutPayload::from(json)).await.map_err(Error::Backend)?;
        Ok(())
    }

    /// Quarantines `digest` on behalf of `by`; returns whether it took effect. A build already in
    /// quarantine keeps its first quarantine (a retried call, or a second release that caught
    /// it, changes nothing).
    pub async fn quarantine(&self, digest: &Digest, by: &str, reason: &str, at: DateTime<Utc>) -> Result<bool> {
        check(by, reason)?;
        let mut record = self.quarantine_of(digest).await?;
        if record.active.is_some() {
            return Ok(false);
        }
        let event = QuarantineEvent { action: QuarantineAction::Quarantined, by: by.to_owned(), reason: reason.to_owned(), at };
        record.active = Some(event.clone());
        record.push(event);
        self.write_quarantine(digest, &record).await?;
        Ok(true)
    }

    /// Lifts the quarantine of `digest` on behalf of `by`, saying why; the lift is kept in the
    /// build's audit. A build not in quarantine is refused (`Error::NotQuarantined`).
    pub async fn lift_quarantine(&self, digest: &Digest, by: &str, reason: &str, at: DateTime<Utc>) -> Result<QuarantineRecord> {
        check(by, reason)?;
        let mut record = self.quarantine_of(digest).await?;
        if record.active.take().is_none() {
            return Err(Error::NotQuarantined(digest.clone()));
        }
        record.push(QuarantineEvent { action: QuarantineAction::Lifted, by: by.to_owned(), reason: reason.to_owned(), at });
        self.write_quarantine(digest, &record).await?;
        Ok(record)
    }

    /// Refuses `digest` when it is in quarantine (`Error::Quarantined`, naming who, when and why).
    pub async fn check_not_quarantined(&self, digest: &Digest) -> Result<()> {
        match self.quarantine_of(digest).await?.active {
            Some(q) => Err(Error::Quarantined { digest: digest.clone(), by: q.by, reason: q.reason, at: q.at }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_quarantine_refuses_the_build_until_lifted_and_keeps_both_in_its_audit() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let d = crate::digest_of(b"bad build");
        store.check_not_quarantined(&d).await.unwrap();
        assert!(store.quarantine(&d, "release/web/r1", "error rate +40% in test", at("2026-12-02T10:00:00Z")).await.unwrap());
        // A second release catching it keeps the first quarantine.
        assert!(!store.quarantine(&d, "release/web/r2", "again", at("2026-12-02T11:00:00Z")).await.unwrap());
        let refused = store.check_not_quarantined(&d).await.unwrap_err();
        let text = refused.to_string();
        assert!(text.starts_with("artifact.digest: "), "{text}");
        assert!(text.contains("quarantined by release/web/r1") && text.contains("error rate +40% in test"), "{text}");
        assert!(!refused.is_retryable());

        let lifted = store.lift_quarantine(&d, "alice", "false alarm: the test region's database was down", at("2026-12-02T12:00:00Z")).await.unwrap();
        assert_eq!(lifted.active, None);
        let actions: Vec<_> = lifted.history.iter().map(|e| (e.action, e.by.as_str())).collect();
        assert_eq!(actions, [(QuarantineAction::Quarantined, "release/web/r1"), (QuarantineAction::Lifted, "alice")]);
        store.check_not_quarantined(&d).await.unwrap();
        assert_eq!(store.quarantine_of(&d).await.unwrap(), lifted, "the audit is what the store keeps");
    }

    #[tokio::test]
    async fn a_lift_needs_a_quarantine_a_principal_and_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let d = crate::digest_of(b"fine build");
        let now = at("2026-12-02T12:00:00Z");
        assert!(matches!(store.lift_quarantine(&d, "alice", "why not", now).await, Err(Error::NotQuarantined(_))));
        store.quarantine(&d, "release/web/r1", "bad", now).await.unwrap();
        let no_reason = store.lift_quarantine(&d, "alice", "  ", now).await.unwrap_err().to_string();
        assert!(no_reason.starts_with("reason: "), "{no_reason}");
        let no_one = store.lift_quarantine(&d, "", "fixed", now).await.unwrap_err().to_string();
        assert!(no_one.starts_with("by: "), "{no_one}");
        assert!(store.quarantine_of(&d).await.unwrap().active.is_some(), "a refused lift changes nothing");
    }
}
