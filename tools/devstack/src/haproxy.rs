//! HAProxy in front of local instances: one HTTP frontend on a loopback port, one backend per
//! service with a `server` line per instance, and an admin `stats socket` through which the
//! runtime API changes weights and server states while traffic flows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{ManagedProcess, free_port, wait_for};

/// Environment variable naming the `haproxy` binary to use.
const HAPROXY_BIN_ENV: &str = "SIGNALBOX_HAPROXY_BIN";
/// Where Debian installs it.
const DEBIAN_HAPROXY: &str = "/usr/sbin/haproxy";
/// How long HAProxy may take until its frontend answers.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Log lines quoted in errors.
const LOG_TAIL_LINES: usize = 20;

/// How a backend picks a server for each request. Both honour weights changed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin: over a cycle, shares equal weights exactly.
    #[default]
    RoundRobin,
    /// A random server by weight: shares equal weights on average.
    Random,
}

impl Balance {
    fn keyword(self) -> &'static str {
        match self {
            Self::RoundRobin => "roundrobin",
            // One weighted draw: HAProxy's default `random(2)` takes the less loaded of two draws,
            // which skews shares away from the weights.
            Self::Random => "random(1)",
        }
    }
}

/// One `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Server name: the instance id.
    pub name: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Initial weight, 0 to 256 (0: takes no traffic until given a weight).
    pub weight: u32,
}

/// One backend: a service's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Backend name: the service. Requests with `Host: <name>` go here; the first backend is the
    /// default for any other host.
    pub name: String,
    /// Its servers.
    pub servers: Vec<ServerSpec>,
}

/// How to run [`Haproxy`].
#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// Where the configuration and the log go.
    pub dir: PathBuf,
    /// Frontend port; `None` picks a free one.
    pub port: Option<u16>,
    /// Balancing algorithm of every backend.
    pub balance: Balance,
    /// Backends; at least one.
    pub backends: Vec<BackendSpec>,
}

/// A running HAProxy we own: killed (with its admin socket removed) when dropped.
#[derive(Debug)]
pub struct Haproxy {
    process: ManagedProcess,
    port: u16,
    socket_dir: PathBuf,
    config: PathBuf,
    http: reqwest::Client,
}

/// Where the `haproxy` binary is: `$SIGNALBOX_HAPROXY_BIN`, else `/usr/sbin/haproxy`, else
/// `haproxy` on `PATH`.
pub fn haproxy_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(HAPROXY_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    if Path::new(DEBIAN_HAPROXY).exists() {
        return Ok(PathBuf::from(DEBIAN_HAPROXY));
    }
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("haproxy"))
            .find(|c| c.is_file())
    });
    on_path.context("no haproxy found: install Debian's `haproxy` or set $SIGNALBOX_HAPROXY_BIN")
}

/// The configuration HAProxy runs with. HTTP mode balances every request on its own, also on
/// kept-alive client connections, so per-server session counts are request counts.
pub fn render_config(options: &HaproxyOptions, port: u16, socket: &Path) -> Result<String> {
    let Some(default) = options.backends.first() else {
        bail!("HAProxy needs at least one backend")
    };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "global\n    stats socket {} mode 600 level admin\n    maxconn 4096",
        socket.display()
    );
    // A server restarting mid-request costs a retry on another server, not an error.
    let _ = writeln!(
        c,
        "defaults\n    mode http\n    option redispatch\n    retries 2\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n    timeout http-keep-alive 10s"
    );
    let _ = writeln!(
        c,
        "frontend signalbox\n    bind 127.0.0.1:{port}\n    default_backend {}",
        default.name
    );
    for b in &options.backends[1..] {
        let _ = writeln!(
            c,
            "    use_backend {0} if {{ req.hdr(host),field(1,:) -m str {0} }}",
            b.name
        );
    }
    for b in &options.backends {
        let _ = writeln!(
            c,
            "backend {}\n    balance {}",
            b.name,
            options.balance.keyword()
        );
        for s in &b.servers {
            if s.weight > 256 {
                bail!(
                    "server {}/{}: weight {} is above HAProxy's 256",
                    b.name,
                    s.name,
                    s.weight
                );
            }
            let _ = writeln!(
                c,
                "    server {} 127.0.0.1:{} weight {}",
                s.name, s.port, s.weight
            );
        }
    }
    Ok(c)
}

/// Admin sockets live in a short path of their own: a unix socket path is limited to 107 bytes.
fn socket_dir() -> Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sbx-lb-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Haproxy {
    /// Writes the configuration, starts `haproxy -f <cfg> -db` and returns once the frontend
    /// answers HTTP (any status: a backend without servers still answers 503).
    pub async fn start(options: HaproxyOptions) -> Result<Self> {
        let binary = haproxy_binary()?;
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("creating {}", options.dir.display()))?;
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let socket_dir = socket_dir()?;
        let config = options.dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            render_config(&options, port, &socket_dir.join("admin.sock"))?,
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-f").arg(&config).arg("-db");
        let process = ManagedProcess::spawn("haproxy", cmd, &options.dir.join("haproxy.log"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let lb = Self {
            process,
            port,
            socket_dir,
            config,
            http,
        };
        let url = lb.frontend_url();
        // `Some(false)`: HAProxy exited (a bad configuration); no use waiting any longer.
        let answered = wait_for(
            &format!("HAProxy's frontend {url} to answer"),
            START_DEADLINE,
            || async {
                if lb.process.has_exited() {
                    return Ok(Some(false));
                }
                Ok(lb.http.get(&url).send().await.ok().map(|_| true))
            },
        )
        .await
        .and_then(|up| {
            if up {
                Ok(())
            } else {
                Err(anyhow::anyhow!("haproxy exited"))
            }
        });
        if let Err(e) = answered {
            bail!(
                "{e:#}\nconfig {}; log tail:\n{}",
                lb.config.display(),
                lb.process.log_tail(LOG_TAIL_LINES)
            );
        }
        if !lb.stats_socket().exists() {
            bail!(
                "HAProxy serves but created no admin socket at {}",
                lb.stats_socket().display()
            );
        }
        Ok(lb)
    }

    /// The frontend's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn frontend_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The admin socket of the runtime API.
    pub fn stats_socket(&self) -> PathBuf {
        self.socket_dir.join("admin.sock")
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Sends one `GET path` through the frontend; returns the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.process.sigkill();
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_a_frontend_a_socket_and_weighted_servers() {
        let options = HaproxyOptions {
            dir: PathBuf::from("/tmp/x"),
            port: None,
            balance: Balance::Random,
            backends: vec![
                BackendSpec {
                    name: "checkout".into(),
                    servers: vec![ServerSpec {
                        name: "i-0000".into(),
                        port: 4100,
                        weight: 3,
                    }],
                },
                BackendSpec {
                    name: "cart".into(),
                    servers: vec![],
                },
            ],
        };
        let cfg = render_config(&options, 8080, Path::new("/tmp/s/admin.sock")).unwrap();
        assert!(
            cfg.contains("stats socket /tmp/s/admin.sock mode 600 level admin"),
            "{cfg}"
        );
        assert!(
            cfg.contains("bind 127.0.0.1:8080") && cfg.contains("default_backend checkout"),
            "{cfg}"
        );
        assert!(cfg.contains("use_backend cart if"), "{cfg}");
        assert!(
            cfg.contains("balance random") && cfg.contains("server i-0000 127.0.0.1:4100 weight 3"),
            "{cfg}"
        );
        let mut heavy = options.clone();
        heavy.backends[0].servers[0].weight = 300;
        assert!(render_config(&heavy, 8080, Path::new("/s")).is_err());
    }
}
