//! A real etcd for agent targets: the binary the set-up builds (`$SIGNALBOX_ETCD_BIN`, else
//! `~/.cache/signalbox/bin/etcd-3.6.16`), one member, its data in a directory so a restart
//! keeps every key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{ManagedProcess, free_port, wait_http_ok};

/// How long etcd may take to answer `/health`.
const READY: Duration = Duration::from_secs(30);

/// Where the etcd binary is.
pub fn etcd_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SIGNALBOX_ETCD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("$HOME is unset")?;
    let path = Path::new(&home).join(".cache/signalbox/bin/etcd-3.6.16");
    if !path.is_file() {
        bail!("no etcd at {} and $SIGNALBOX_ETCD_BIN unset (scripts/test builds it)", path.display());
    }
    Ok(path)
}

/// An etcd member we own, listening on every interface (hosts in network namespaces reach it
/// through their gateway address).
#[derive(Debug)]
pub struct EtcdServer {
    process: Option<ManagedProcess>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
    /// Where `/health` answers in plain HTTP, whether or not clients need TLS.
    metrics_port: u16,
}

/// What an etcd serving its clients over mutual TLS is given: its certificate and key, and the
/// CA whose client certificates it takes.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The server certificate (PEM), for 127.0.0.1.
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA of the client certificates (PEM).
    pub client_ca: PathBuf,
}

impl EtcdServer {
    /// Starts etcd with its data and log in `dir`; returns once it is healthy.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, None).await
    }

    /// Starts etcd serving its clients over TLS, asking each for a certificate of the CA.
    pub async fn start_tls(dir: &Path, tls: EtcdTls) -> Result<Self> {
        Self::start_with(dir, Some(tls)).await
    }

    async fn start_with(dir: &Path, tls: Option<EtcdTls>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut server = Self { process: None, dir: dir.to_owned(), client_port: free_port()?, peer_port: free_port()?, tls, metrics_port: free_port()? };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(etcd_binary()?);
        let scheme = self.scheme();
        cmd.arg("--name=signalbox")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={scheme}://0.0.0.0:{}", self.client_port))
            .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{}", self.client_port))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", self.peer_port))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", self.peer_port))
            .arg(format!("--initial-cluster=signalbox=http://127.0.0.1:{}", self.peer_port))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{}", self.metrics_port))
            .arg("--log-level=warn");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg("--client-cert-auth");
        }
        self.process = Some(ManagedProcess::spawn("etcd", cmd, &self.dir.join("etcd.log"))?);
        wait_http_ok(&format!("http://127.0.0.1:{}/health", self.metrics_port), READY).await
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Its client URL on loopback.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    /// Its client URL as seen from `address` (a host's gateway).
    pub fn url_at(&self, address: &str) -> String {
        format!("{}://{address}:{}", self.scheme(), self.client_port)
    }

    /// Kills it (no goodbye to its clients).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.sigkill()?;
        }
        Ok(())
    }

    /// Starts it again on the same ports and data; returns once healthy.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn().await
    }
}
