//! The host agent and the etcd protocol it shares with the agent substrate.
//!
//! Per target, etcd holds under `/signalbox/targets/<target>/`:
//!
//! - `spec`: the target's regions and the cache each region's hosts pull from;
//! - `hosts/<host>/registration`: the agent's address, region and port, under a lease, so it is
//!   gone when the agent is;
//! - `hosts/<host>/desired`: the build the host should run, with a generation, written by the
//!   worker with compare-and-set;
//! - `hosts/<host>/observed`: what the host runs, written back by its agent;
//! - `halt`: a deploy froze the target; agents take no step while it is there.
//!
//! The agent ([`agent::run`]) watches its keys, pulls a build from its region's cache, verifies
//! its digest, unpacks it into a cold directory, drains the running process, switches the
//! `current` link at once, starts the new build and waits until it is ready.

pub mod agent;
pub mod protocol;

/// The CA (PEM) that `https://` etcd endpoints' certificates are checked against.
pub const ETCD_CA_ENV: &str = "SIGNALBOX_ETCD_CA";
/// The client certificate (PEM) presented to an etcd that asks for one (`--client-cert-auth`).
pub const ETCD_CERT_ENV: &str = "SIGNALBOX_ETCD_CERT";
/// The key of [`ETCD_CERT_ENV`] (PEM).
pub const ETCD_KEY_ENV: &str = "SIGNALBOX_ETCD_KEY";

/// A client of the etcd at `endpoints`, with the timeouts every signalbox component uses: two
/// seconds to connect, five per request. TLS, as the worker, the API and the agent share it,
/// comes from the environment like Temporal's: [`ETCD_CA_ENV`], [`ETCD_CERT_ENV`] and
/// [`ETCD_KEY_ENV`], with `https://` endpoints.
pub async fn connect_etcd(endpoints: &[String]) -> Result<etcd_client::Client, etcd_client::Error> {
    let mut options = etcd_client::ConnectOptions::new().with_connect_timeout(std::time::Duration::from_secs(2)).with_timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = etcd_tls(|name| std::env::var_os(name))? {
        options = options.with_tls(tls);
    }
    etcd_client::Client::connect(endpoints, Some(options)).await
}

/// The TLS settings `var` (the environment) names, if any; an unreadable file or a certificate
/// without its key is refused, naming the variable.
fn etcd_tls(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Option<etcd_client::TlsOptions>, etcd_client::Error> {
    let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let (ca, cert, key) = (path(ETCD_CA_ENV), path(ETCD_CERT_ENV), path(ETCD_KEY_ENV));
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let read = |name: &str, p: &std::path::Path| std::fs::read(p).map_err(|e| etcd_client::Error::InvalidArgs(format!("{name}: cannot read {}: {e}", p.display())));
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ETCD_CA_ENV, &ca)?));
    }
    match (cert, key) {
        (Some(cert), Some(key)) => tls = tls.identity(etcd_client::Identity::from_pem(read(ETCD_CERT_ENV, &cert)?, read(ETCD_KEY_ENV, &key)?)),
        (None, None) => {}
        _ => return Err(etcd_client::Error::InvalidArgs(format!("{ETCD_CERT_ENV} and {ETCD_KEY_ENV}: give both or neither"))),
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_tls_is_off_unless_asked_and_a_certificate_needs_its_key() {
        assert!(etcd_tls(|_| None).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not checked until the handshake").unwrap();
        let only_cert = etcd_tls(|name| (name == ETCD_CERT_ENV).then(|| cert.clone().into_os_string())).unwrap_err().to_string();
        assert!(only_cert.contains("SIGNALBOX_ETCD_CERT and SIGNALBOX_ETCD_KEY: give both or neither"), "{only_cert}");
        let missing = etcd_tls(|name| (name == ETCD_CA_ENV).then(|| dir.path().join("nope.pem").into_os_string())).unwrap_err().to_string();
        assert!(missing.contains("SIGNALBOX_ETCD_CA: cannot read"), "{missing}");
        assert!(etcd_tls(|name| (name != ETCD_CA_ENV).then(|| cert.clone().into_os_string())).unwrap().is_some());
    }
}
