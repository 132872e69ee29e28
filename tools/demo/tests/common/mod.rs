//! Helpers shared by the integration tests: instance directories, real service
//! processes, polling with deadlines, scraping.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

/// Service binary under test.
pub const SERVICE: &str = env!("CARGO_BIN_EXE_signalbox-demo-service");

/// Artifact JSON with the given behaviour.
pub fn artifact_json(
    version: &str,
    error_rate: f64,
    latency_ms: u64,
    jitter_ms: u64,
    log_lines: u32,
) -> String {
    serde_json::json!({
        "schema": "signalbox.demo/v1",
        "service": "checkout",
        "version": version,
        "error_rate": error_rate,
        "latency_ms": latency_ms,
        "latency_jitter_ms": jitter_ms,
        "log_lines_per_request": log_lines,
    })
    .to_string()
}

/// Lays out `<root>/<id>/releases/<version>/artifact.json` with `current` pointing at the
/// release, as the deployer does; returns the instance directory.
pub fn instance_dir(root: &Path, id: &str, version: &str, artifact: &str) -> PathBuf {
    let dir = root.join(id);
    let release = dir.join("releases").join(version);
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("artifact.json"), artifact).unwrap();
    std::os::unix::fs::symlink(Path::new("releases").join(version), dir.join("current")).unwrap();
    dir
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running service process, killed on drop if still alive.
pub struct Instance {
    /// The process.
    pub child: Child,
    /// Its port.
    pub port: u16,
    /// File its stdout (the request log) goes to.
    pub stdout: PathBuf,
}

impl Instance {
    /// Starts the service on a free port with stdout captured to `<dir>/stdout.log`.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let stdout = dir.join("stdout.log");
        let child = Command::new(SERVICE)
            .arg("--instance-dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            stdout,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/ready` answers 200 and returns its JSON.
    pub async fn ready(&mut self, client: &reqwest::Client) -> serde_json::Value {
        let url = self.url("/ready");
        let child = &mut self.child;
        eventually(
            "the instance to become ready",
            Duration::from_secs(10),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("the instance exited before becoming ready: {status}");
                }
                let request = client.get(&url).send();
                async move {
                    let response = request.await.ok()?;
                    (response.status() == 200).then_some(())?;
                    response.json().await.ok()
                }
            },
        )
        .await
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        terminate(&self.child);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child`.
pub fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// Waits for `child` to exit, at most `timeout`.
pub async fn exit_status(child: &mut Child, timeout: Duration) -> ExitStatus {
    eventually("the process to exit", timeout, || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
}

/// An HTTP client that never goes through a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `probe` until it yields a value; panics after `timeout` (devstack's `wait_for`, for
/// probes that cannot fail).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    signalbox_devstack::wait_for(what, timeout, || {
        let probed = probe();
        async move { Ok(probed.await) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Scrapes `/metrics` of the instance on `port`.
pub async fn scrape(client: &reqwest::Client, port: u16) -> Scrape {
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the first sample named `name` whose labels include `label`, as f64.
pub fn sample(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: unexpected {other:?}"),
    }
}

/// Requests to `/` an instance has answered, both codes together.
pub async fn requests_served(client: &reqwest::Client, port: u16) -> u64 {
    let scrape = scrape(client, port).await;
    let total = |code| {
        sample(
            &scrape,
            "signalbox_demo_requests_total",
            Some(("code", code)),
        )
    };
    (total("200") + total("500")) as u64
}
