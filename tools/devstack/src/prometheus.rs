//! A real Prometheus for tests and demos: the `prometheus` binary on a free port, scraping
//! given `host:port` targets every second into a throwaway TSDB.
//!
//! Targets come from a `file_sd` file, so they can change while it runs
//! ([`PrometheusServer::set_targets`]); each carries an `instance_id` label. It deliberately
//! carries no `version` label: an instance's version changes during a deploy while its
//! target does not, so queries take the version from the `signalbox_demo_build_info{version}`
//! series the instance itself exposes, joined on the target's `instance` label
//! (`* on(instance) group_left(version) signalbox_demo_build_info`). A static label would go
//! on naming the old version after the instance switched. (The demo's own `instance` label on
//! its build info is renamed `exported_instance` on ingestion, as Prometheus does for any
//! scraped label that collides with a target label.)

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{ManagedProcess, free_port, wait_for};

/// Environment variable naming the `prometheus` binary to use.
const PROMETHEUS_BIN_ENV: &str = "SIGNALBOX_PROMETHEUS_BIN";
/// How long a start may take, on two shared cores.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// A picked port can be taken before Prometheus binds it; that is retried.
const START_ATTEMPTS: u32 = 3;
/// Log lines quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// One instance to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// `host:port` serving `/metrics`; becomes the `instance` label.
    pub address: String,
    /// The instance's id; becomes the `instance_id` label.
    pub instance_id: String,
}

/// A `prometheus` we own: killed when dropped or when this process exits.
#[derive(Debug)]
pub struct PrometheusServer {
    process: ManagedProcess,
    url: String,
    targets_file: PathBuf,
}

/// Where the `prometheus` binary is: `$SIGNALBOX_PROMETHEUS_BIN`, else `prometheus` on `PATH`
/// (Debian's `prometheus` package installs `/usr/bin/prometheus`).
pub fn prometheus_binary() -> Result<PathBuf> {
    if let Some(path) = env::var_os(PROMETHEUS_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow!("no `prometheus` on PATH and ${PROMETHEUS_BIN_ENV} unset (Debian: apt-get install prometheus)"))
}

impl PrometheusServer {
    /// Starts Prometheus with its config, targets file, TSDB and log in `dir`, scraping
    /// `targets` every second; returns once it is ready (`/-/ready`). It does not wait for
    /// the first scrapes: see [`Self::wait_targets_up`].
    pub async fn start(dir: &Path, targets: &[ScrapeTarget]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let binary = prometheus_binary()?;
        let targets_file = dir.join("targets.json");
        write_targets(&targets_file, targets)?;
        let config = dir.join("prometheus.yml");
        // JSON is YAML: no YAML writer needed for a config this small.
        let text = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "signalbox",
                "file_sd_configs": [{"files": [targets_file], "refresh_interval": "1s"}],
            }],
        });
        std::fs::write(&config, text.to_string())
            .with_context(|| format!("writing {}", config.display()))?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = Command::new(&binary);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
            let process = ManagedProcess::spawn("prometheus", cmd, &dir.join("prometheus.log"))?;
            let server = Self {
                process,
                url: format!("http://127.0.0.1:{port}"),
                targets_file: targets_file.clone(),
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                // Most likely the port was taken between picking and binding: try another.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("prometheus did not start")))
    }

    /// Base URL of its HTTP API, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the targets; Prometheus picks the change up within a second or two.
    pub fn set_targets(&self, targets: &[ScrapeTarget]) -> Result<()> {
        write_targets(&self.targets_file, targets)
    }

    /// Waits until every target in `targets` has been scraped successfully (health `up`).
    pub async fn wait_targets_up(
        &self,
        targets: &[ScrapeTarget],
        deadline: Duration,
    ) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/api/v1/targets?state=active", self.url);
        wait_for("every scrape target to be up", deadline, || {
            let request = http.get(&url).send();
            async move {
                let answer: Value = request.await?.error_for_status()?.json().await?;
                let active = answer
                    .pointer("/data/activeTargets")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let down: Vec<&str> = targets
                    .iter()
                    .filter(|t| {
                        !active.iter().any(|a| {
                            a.pointer("/labels/instance").and_then(Value::as_str)
                                == Some(t.address.as_str())
                                && a.get("health").and_then(Value::as_str) == Some("up")
                        })
                    })
                    .map(|t| t.address.as_str())
                    .collect();
                if down.is_empty() {
                    Ok(Some(()))
                } else {
                    bail!("not up yet: {}", down.join(", "))
                }
            }
        })
        .await
    }

    async fn wait_ready(&self) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/-/ready", self.url);
        let ready = wait_for("prometheus to be ready", START_DEADLINE, || {
            let exited = self.process.has_exited();
            let request = http.get(&url).send();
            async move {
                if exited {
                    bail!("prometheus exited");
                }
                Ok(request
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(()))
            }
        })
        .await;
        ready.with_context(|| format!("prometheus log:\n{}", self.process.log_tail(LOG_TAIL_LINES)))
    }
}

/// Writes the `file_sd` targets atomically (a rename), so Prometheus never reads half a file.
fn write_targets(path: &Path, targets: &[ScrapeTarget]) -> Result<()> {
    let groups: Vec<Value> = targets
        .iter()
        .map(|t| json!({"targets": [t.address], "labels": {"instance_id": t.instance_id}}))
        .collect();
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, Value::Array(groups).to_string())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
