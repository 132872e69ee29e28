//! Proof that a control operation came through the signalbox API.
//!
//! The API authenticates the caller and checks the policy; Temporal's own port knows nothing of
//! either. So the API signs each operation it lets through with a key it shares with the
//! workers (HMAC-SHA256 over the workflow, the operation, who and why, and a fresh nonce), and
//! a deploy started by the API (`control: signed`) refuses an operation without a valid grant,
//! or with one it has seen before: a grant copied out of the history works nowhere else and
//! never twice.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::control::Refusal;

/// Shortest control key: 32 bytes, the HMAC-SHA256 block of security.
pub const MIN_KEY: usize = 32;

/// Longest grant read: `v1.` a nonce of up to 64 and 64 hex digits.
const MAX_GRANT: usize = 160;

/// Who may steer a workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Anyone who reaches Temporal, with any name (a deploy started without the API's key).
    #[default]
    Open,
    /// Only operations the API signed; signals, which carry no answer, are refused and audited.
    Signed,
}

impl Control {
    /// Whether this is [`Control::Open`] (it is left out of the JSON, as before it existed).
    pub fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

/// The key the API and the workers share.
#[derive(Clone)]
pub struct ControlKey(Vec<u8>);

impl std::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlKey(..)")
    }
}

/// What a grant is for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The workflow steered.
    pub workflow_id: &'a str,
    /// The update's wire name (`abort`, `pause_update`, ...).
    pub operation: &'a str,
    /// Who asks, as the API authenticated them.
    pub by: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl ControlKey {
    /// A key of the secret's bytes (a file's text, trimmed); at least [`MIN_KEY`] of them.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY {
            return Err(format!("must be at least {MIN_KEY} bytes (it is {})", secret.len()));
        }
        Ok(Self(secret.to_vec()))
    }

    fn mac(&self, subject: &Subject<'_>, nonce: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for part in ["signalbox-grant/v1", subject.workflow_id, subject.operation, subject.by, subject.reason, nonce] {
            // Length-prefixed, so no two subjects read the same.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The grant of `subject` with `nonce` (1 to 64 of `a-z`, `0-9`, `-`).
    pub fn sign(&self, subject: &Subject<'_>, nonce: &str) -> String {
        let tag = self.mac(subject, nonce).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("v1.{nonce}.{hex}")
    }
}

/// Checks `grant` for `subject` against `keys` (the current key first, then ones being
/// retired); returns its nonce, which the workflow must not accept again.
pub fn verify<'g>(keys: &[ControlKey], subject: &Subject<'_>, grant: &'g str) -> Result<&'g str, Refusal> {
    if grant.is_empty() {
        return Err(Refusal(format!("{}: only the signalbox API may steer this workflow (no grant)", subject.operation)));
    }
    let bad = || Refusal(format!("{}: the grant is not the API's for this deploy, operation, operator and reason", subject.operation));
    if grant.len() > MAX_GRANT {
        return Err(bad());
    }
    let mut parts = grant.splitn(3, '.');
    let (Some("v1"), Some(nonce), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let ok_nonce = (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let tag: Option<Vec<u8>> = (tag.len() == 64).then(|| (0..32).map(|i| u8::from_str_radix(&tag[2 * i..2 * i + 2], 16).ok()).collect()).flatten();
    let (true, Some(tag)) = (ok_nonce, tag) else { return Err(bad()) };
    if keys.is_empty() {
        return Err(Refusal(format!("{}: this worker holds no control key (SIGNALBOX_CONTROL_KEY_FILE) to check the grant", subject.operation)));
    }
    if keys.iter().any(|k| k.mac(subject, nonce).verify_slice(&tag).is_ok()) { Ok(nonce) } else { Err(bad()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ControlKey {
        ControlKey::new(&[byte; 40]).unwrap()
    }

    const ABORT: Subject<'static> = Subject { workflow_id: "deploy/web/eu/1", operation: "abort", by: "alice@example.com", reason: "p99" };

    #[test]
    fn a_grant_holds_for_its_subject_only() {
        let grant = key(1).sign(&ABORT, "n-1");
        assert_eq!(verify(&[key(1)], &ABORT, &grant).unwrap(), "n-1");
        assert_eq!(verify(&[key(2), key(1)], &ABORT, &grant).unwrap(), "n-1", "a key being retired still verifies");
        for other in [
            Subject { workflow_id: "deploy/web/eu/2", ..ABORT },
            Subject { operation: "bypass", ..ABORT },
            Subject { by: "mallory", ..ABORT },
            Subject { reason: "p99 ", ..ABORT },
        ] {
            assert!(verify(&[key(1)], &other, &grant).unwrap_err().0.contains("is not the API's"), "{other:?}");
        }
        assert!(verify(&[key(2)], &ABORT, &grant).is_err(), "another key");
        let forged = grant.replacen("n-1", "n-2", 1);
        assert!(verify(&[key(1)], &ABORT, &forged).is_err(), "a nonce changed");
    }

    #[test]
    fn missing_garbled_or_unverifiable_grants_are_refused_by_name() {
        assert_eq!(verify(&[key(1)], &ABORT, "").unwrap_err().0, "abort: only the signalbox API may steer this workflow (no grant)");
        for garbled in ["v1", "v2.n.00", "v1.N.00", &format!("v1.n.{}", "zz".repeat(32)), &"x".repeat(500)] {
            assert!(verify(&[key(1)], &ABORT, garbled).unwrap_err().0.contains("is not the API's"), "{garbled}");
        }
        let grant = key(1).sign(&ABORT, "n-1");
        assert!(verify(&[], &ABORT, &grant).unwrap_err().0.contains("holds no control key"));
        assert!(ControlKey::new(b"short").unwrap_err().contains("at least 32 bytes"));
    }
}
