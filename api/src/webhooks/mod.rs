//! Webhooks: other systems telling signalbox something it must act on.
//!
//! `POST /webhooks/health`: an external health checker reports a regression of a service, and
//! every deploy of it still rolling out is judged bad at once and rolls back (an abort signed
//! by `webhook:<source>`). The body is JSON, `{"service": "checkout", "reason": "...",
//! "source": "pagerduty"}`; it is signed with a secret shared with the checker:
//!
//! ```text
//! X-Signalbox-Timestamp: 1764771000
//! X-Signalbox-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! An unsigned call, a wrong signature, a timestamp more than five minutes off, or a signature
//! already seen is refused (401; 409 for a replay) and changes nothing.
//!
//! `POST /webhooks/scm`: GitHub and GitLab push events, signed as each signs them ([`scm`]);
//! a push to a configured branch records the commit in the store, for the trains.

pub mod scm;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use signalbox_client::Deploys;
use signalbox_domain::Command;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Largest body the health webhook takes.
const MAX_BODY: usize = 64 * 1024;
/// How far a call's timestamp may be from the server's clock, in seconds.
pub(crate) const SKEW_S: i64 = 300;
/// Shortest secret: 32 bytes.
pub const MIN_SECRET: usize = 32;

/// A refused call: its status and what the caller reads.
pub(crate) type Refusal = (StatusCode, String);

pub(crate) fn unauthorized(why: impl Into<String>) -> Refusal {
    (StatusCode::UNAUTHORIZED, why.into())
}

/// Header `name` as text, if it is there and readable.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `tag` is the HMAC-SHA256 with `key` of `parts` joined by dots.
pub(crate) fn signs(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b".");
        }
        mac.update(part);
    }
    mac.verify_slice(tag).is_ok()
}

/// The Unix seconds of `ts`, timestamp header `name`, refused when unreadable or more than
/// [`SKEW_S`] from the server's clock.
pub(crate) fn fresh(name: &str, ts: &str) -> Result<i64, Refusal> {
    let at: i64 = ts.parse().map_err(|_| unauthorized(format!("{name}: must be Unix seconds")))?;
    if (chrono::Utc::now().timestamp() - at).abs() > SKEW_S {
        return Err(unauthorized(format!("{name}: is more than 5 minutes off")));
    }
    Ok(at)
}

/// A health report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthReport {
    service: String,
    reason: String,
    #[serde(default = "external")]
    source: String,
}

fn external() -> String {
    "external".into()
}

/// What the webhook handlers share.
#[derive(Clone)]
pub struct Webhooks {
    deploys: Deploys,
    secret: Arc<Vec<u8>>,
    /// Signatures seen within the skew window, by the timestamp they carried.
    seen: Arc<Mutex<BTreeSet<(i64, String)>>>,
}

impl Webhooks {
    /// Handlers over `deploys`, checking signatures with `secret` (at least [`MIN_SECRET`]
    /// bytes, trimmed).
    pub fn new(deploys: Deploys, secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET {
            return Err(format!("the webhook secret must be at least {MIN_SECRET} bytes (it is {})", secret.len()));
        }
        Ok(Self { deploys, secret: Arc::new(secret.to_vec()), seen: Arc::default() })
    }

    /// Checks a call's signature and freshness; the error is the status and what the caller reads.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let ts = header(headers, "x-signalbox-timestamp").ok_or_else(|| unauthorized("X-Signalbox-Timestamp: is required"))?;
        let sig = header(headers, "x-signalbox-signature").ok_or_else(|| unauthorized("X-Signalbox-Signature: is required"))?;
        let at = fresh("X-Signalbox-Timestamp", ts)?;
        let tag = sig.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).ok_or_else(|| unauthorized("X-Signalbox-Signature: must be sha256=<hex>"))?;
        if !signs(&self.secret, &[ts.as_bytes(), body], &tag) {
            return Err(unauthorized("X-Signalbox-Signature: does not match the body"));
        }
        let now = chrono::Utc::now().timestamp();
        let mut seen = self.seen.lock().expect("the replay set is never poisoned");
        seen.retain(|(t, _)| now - *t <= SKEW_S);
        if !seen.insert((at, sig.to_owned())) {
            return Err((StatusCode::CONFLICT, "this call was made before: a replay changes nothing".into()));
        }
        Ok(())
    }
}

async fn health(State(hooks): State<Webhooks>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if let Err(refusal) = hooks.verify(&headers, &body) {
        warn!(why = %refusal.1, "health webhook refused");
        return refusal;
    }
    let report: HealthReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    for (field, value, max) in [("service", &report.service, 63), ("reason", &report.reason, 1024), ("source", &report.source, 64)] {
        if value.trim().is_empty() || value.len() > max {
            return (StatusCode::BAD_REQUEST, format!("{field}: must be 1 to {max} bytes"));
        }
    }
    let cmd = Command::new(format!("webhook:{}", report.source.trim()), format!("health webhook: {}", report.reason.trim()));
    match hooks.deploys.abort_in_flight(&report.service, cmd).await {
        Ok(ids) => {
            info!(service = %report.service, deploys = ids.len(), "health webhook: deploys in flight rolled back");
            (StatusCode::OK, serde_json::json!({"rolled_back": ids}).to_string())
        }
        Err(signalbox_client::Error::Invalid { field, rule }) => (StatusCode::BAD_REQUEST, format!("{field}: {rule}")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The webhooks a server takes: each is served when it is configured.
#[derive(Clone, Default)]
pub struct Routes {
    health: Option<Webhooks>,
    scm: Option<scm::Scm>,
}

impl Routes {
    /// Serves `POST /webhooks/health` with `hooks`.
    pub fn health(self, hooks: Webhooks) -> Self {
        Self { health: Some(hooks), ..self }
    }

    /// Serves `POST /webhooks/scm` with `hooks`.
    pub fn scm(self, hooks: scm::Scm) -> Self {
        Self { scm: Some(hooks), ..self }
    }

    fn router(self) -> Router {
        let mut app = Router::new();
        if let Some(hooks) = self.health {
            app = app.merge(Router::new().route("/webhooks/health", post(health)).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(hooks));
        }
        if let Some(hooks) = self.scm {
            app = app.merge(Router::new().route("/webhooks/scm", post(scm::push)).layer(DefaultBodyLimit::max(scm::MAX_BODY)).with_state(hooks));
        }
        app
    }
}

/// Serves the configured webhooks on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, routes.router()).with_graceful_shutdown(shutdown).await
}
