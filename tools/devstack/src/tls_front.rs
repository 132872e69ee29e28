//! TLS in front of a plaintext TCP service: HAProxy terminating TLS (HTTP/2 by ALPN) and
//! passing the bytes on, as a load balancer or ingress terminates TLS in front of Temporal's
//! frontend. With a client CA it asks every client for a certificate from that CA (mutual
//! TLS) and refuses the handshake of one that has none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::haproxy::haproxy_binary;
use crate::{ManagedProcess, free_port, wait_for};

/// How long HAProxy may take until its port accepts.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// What a TLS front serves.
#[derive(Debug, Clone)]
pub struct TlsFrontOptions {
    /// Working directory: configuration, the combined certificate file, the log.
    pub dir: PathBuf,
    /// The plaintext service, `host:port`.
    pub upstream: String,
    /// The server certificate (PEM, chain first) and its key.
    pub cert: PathBuf,
    /// The key of `cert` (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA (PEM) issued.
    pub client_ca: Option<PathBuf>,
}

/// A running TLS front; stopped when dropped.
pub struct TlsFront {
    process: ManagedProcess,
    port: u16,
}

impl TlsFront {
    /// Starts HAProxy on a free loopback port; returns once the port accepts connections.
    pub async fn start(options: TlsFrontOptions) -> Result<Self> {
        let binary = haproxy_binary()?;
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        // HAProxy reads the certificate and its key from one file.
        let pem = options.dir.join("front.pem");
        let mut combined = std::fs::read(&options.cert)
            .with_context(|| format!("reading {}", options.cert.display()))?;
        combined.extend(
            std::fs::read(&options.key)
                .with_context(|| format!("reading {}", options.key.display()))?,
        );
        std::fs::write(&pem, combined)?;
        let port = free_port()?;
        let config = options.dir.join("tls-front.cfg");
        std::fs::write(&config, render(&options, port, &pem))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-f").arg(&config).arg("-db");
        let process =
            ManagedProcess::spawn("haproxy (TLS front)", cmd, &options.dir.join("tls-front.log"))?;
        let front = Self { process, port };
        let accepted = wait_for("the TLS front to accept", START_DEADLINE, || async {
            if front.process.has_exited() {
                return Ok(Some(false));
            }
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| true))
        })
        .await?;
        if !accepted {
            bail!(
                "the TLS front exited at start:\n{}",
                front.process.log_tail(20)
            );
        }
        Ok(front)
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn render(options: &TlsFrontOptions, port: u16, pem: &Path) -> String {
    let verify = match &options.client_ca {
        Some(ca) => format!(" ca-file {} verify required", ca.display()),
        None => String::new(),
    };
    format!(
        "global\n  maxconn 1000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
         timeout client 1h\n  timeout server 1h\n\nfrontend tls\n  \
         bind 127.0.0.1:{port} ssl crt {pem} alpn h2{verify}\n  default_backend upstream\n\n\
         backend upstream\n  server upstream {upstream}\n",
        pem = pem.display(),
        upstream = options.upstream,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_ca_asks_every_client_for_a_certificate() {
        let options = TlsFrontOptions {
            dir: "/d".into(),
            upstream: "127.0.0.1:7233".into(),
            cert: "/d/c.pem".into(),
            key: "/d/k.pem".into(),
            client_ca: Some("/d/ca.pem".into()),
        };
        let cfg = render(&options, 9443, Path::new("/d/front.pem"));
        assert!(
            cfg.contains("bind 127.0.0.1:9443 ssl crt /d/front.pem alpn h2 ca-file /d/ca.pem verify required"),
            "{cfg}"
        );
        assert!(cfg.contains("server upstream 127.0.0.1:7233"), "{cfg}");
        let open = render(&TlsFrontOptions { client_ca: None, ..options }, 9443, Path::new("/p"));
        assert!(!open.contains("verify"), "{open}");
    }
}
