//! Agent hosts for tests, the demo and benchmarks: a real etcd, an origin and one caching proxy
//! per region (nginx), and hosts that are network namespaces each running `signalbox-agent`,
//! which runs the host's service.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use signalbox_agent::protocol::{RegionSpec, TargetSpec};
use signalbox_devstack::etcd::EtcdServer;
use signalbox_devstack::netns::{NetHost, ServiceAddress};
use signalbox_devstack::nginx::Nginx;
use signalbox_devstack::{ManagedProcess, wait_for, workspace_binary};
use signalbox_domain::Artifact;
use signalbox_host::InstanceDir;
use signalbox_store::Home;
use signalbox_substrate::Substrate;
use signalbox_substrate_agent::AgentTarget;

/// The port every host's service answers on (each host has its own network stack).
pub const SERVICE_PORT: u16 = 8080;

/// What agent hosts need around them: etcd, the origin and the regional caches, reachable from
/// every host at one service address.
pub struct AgentWorld {
    /// The key-value store of desired and observed states.
    pub etcd: EtcdServer,
    /// The origin, serving the artifact store's directory.
    pub origin: Nginx,
    /// One caching proxy per region.
    pub caches: BTreeMap<String, Nginx>,
    /// Where hosts reach etcd and the caches.
    pub service: ServiceAddress,
    /// The tag that keeps this world's namespaces apart from other processes'.
    pub tag: u16,
}

impl AgentWorld {
    /// Starts etcd, the origin over `home`'s store and a cache per region, in `dir`.
    pub async fn start(dir: &Path, home: &Home, regions: &[&str]) -> anyhow::Result<Self> {
        let tag = (std::process::id() % 0xffff) as u16;
        let service = ServiceAddress::create(tag)?;
        let etcd = EtcdServer::start(&dir.join("etcd")).await?;
        let store = home.root().join("store");
        std::fs::create_dir_all(&store)?;
        let origin = Nginx::origin(&dir.join("origin"), &store).await?;
        let mut caches = BTreeMap::new();
        for region in regions {
            caches.insert((*region).to_owned(), Nginx::cache(&dir.join(format!("cache-{region}")), region, &origin).await?);
        }
        Ok(Self { etcd, origin, caches, service, tag })
    }

    /// The etcd endpoint as hosts and the worker see it.
    pub fn etcd_url(&self) -> String {
        self.etcd.url_at(&self.service.address)
    }

    /// The target spec naming this world's caches.
    pub fn spec(&self, report_timeout_ms: u64) -> TargetSpec {
        let regions = self.caches.iter().map(|(r, c)| (r.clone(), RegionSpec { cache: format!("http://{}:{}", self.service.address, c.port()) })).collect();
        TargetSpec { regions, report_timeout_ms, hosts: Vec::new() }
    }

    /// How many times the origin served `digest`, by the region whose cache asked.
    pub fn origin_fetches(&self, digest: &signalbox_domain::Digest) -> anyhow::Result<BTreeMap<String, usize>> {
        let path = format!("/sha256/{}", digest.hex());
        let mut by_region = BTreeMap::new();
        for line in self.origin.access_log()? {
            let mut fields = line.split(' ');
            let (_, region) = (fields.next(), fields.next().unwrap_or("-"));
            if line.contains(&format!("\"GET {path} ")) && line.contains(" 200 ") {
                *by_region.entry(region.to_owned()).or_insert(0) += 1;
            }
        }
        Ok(by_region)
    }
}

/// One agent host.
pub struct AgentHost {
    /// Its name in the target.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its network namespace.
    pub net: NetHost,
    /// Its instance directory.
    pub dir: PathBuf,
    agent: Option<ManagedProcess>,
    log: PathBuf,
}

/// A target of agent hosts under load.
pub struct AgentFleet {
    /// The target's name.
    pub target: String,
    /// Its hosts, in rollout order.
    pub hosts: Vec<AgentHost>,
    /// The substrate, as the worker sees it.
    pub substrate: AgentTarget,
    etcd: String,
    load: Option<ManagedProcess>,
}

impl AgentFleet {
    /// Makes `size` hosts over the world's regions, each running an agent, declares the target,
    /// brings every host to `initial` (a bundle in the store) and sends `rps` requests a second
    /// spread over them (none for 0).
    pub async fn start(world: &AgentWorld, dir: &Path, target: &str, size: usize, initial: &Artifact, rps: u32) -> anyhow::Result<Self> {
        let substrate = AgentTarget::new(vec![world.etcd.url()], target);
        substrate.apply_spec(&world.spec(60_000)).await?;
        let regions: Vec<&String> = world.caches.keys().collect();
        let mut fleet = Self { target: target.to_owned(), hosts: Vec::with_capacity(size), substrate, etcd: world.etcd_url(), load: None };
        for i in 0..size {
            let name = format!("h-{i:03}");
            let net = NetHost::create(world.tag, i as u16)?;
            let host_dir = dir.join(&name);
            std::fs::create_dir_all(&host_dir)?;
            let log = dir.join(format!("agent-{name}.log"));
            fleet.hosts.push(AgentHost { name, region: regions[i % regions.len()].clone(), net, dir: host_dir, agent: None, log });
            fleet.start_agent(i)?;
        }
        let names: Vec<String> = fleet.hosts.iter().map(|h| h.name.clone()).collect();
        let substrate = fleet.substrate.clone();
        wait_for("every agent to register", Duration::from_secs(30), || {
            let substrate = substrate.clone();
            let size = names.len();
            async move { Ok((substrate.registered().await?.len() == size).then_some(())) }
        })
        .await?;
        fleet.substrate.apply("provision", &names, initial, &|_| {}).await.context("bringing every host to the first build")?;
        if rps == 0 {
            return Ok(fleet);
        }
        let inventory = dir.join("inventory.json");
        let instances: Vec<_> = fleet.hosts.iter().map(|h| json!({"id": h.name, "port": SERVICE_PORT, "host": h.net.address})).collect();
        std::fs::write(&inventory, json!({ "instances": instances }).to_string())?;
        let mut cmd = std::process::Command::new(workspace_binary("signalbox-loadgen")?);
        cmd.arg("--fleet-file").arg(&inventory).arg("--rps").arg(rps.to_string());
        fleet.load = Some(ManagedProcess::spawn("signalbox-loadgen", cmd, &dir.join(format!("loadgen-{target}.log")))?);
        Ok(fleet)
    }

    /// Starts host `i`'s agent (again).
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let h = &mut self.hosts[i];
        let mut cmd = h.net.command(workspace_binary("signalbox-agent")?);
        cmd.args(["--etcd", &self.etcd, "--target", &self.target, "--host", &h.name, "--region", &h.region, "--address", &h.net.address])
            .arg("--port")
            .arg(SERVICE_PORT.to_string())
            .arg("--dir")
            .arg(&h.dir);
        h.agent = Some(ManagedProcess::spawn("signalbox-agent", cmd, &h.log)?);
        Ok(())
    }

    /// The pids of the running agents.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.hosts.iter().filter_map(|h| h.agent.as_ref().map(ManagedProcess::pid)).collect()
    }

    /// Kills host `i`'s agent at once (its service keeps running).
    pub fn kill_agent(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut agent) = self.hosts[i].agent.take() {
            agent.sigkill()?;
        }
        Ok(())
    }

    /// Lines of host `i`'s agent log (every run of its agent) that contain every one of `words`.
    pub fn agent_log_lines(&self, i: usize, words: &[&str]) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(&self.hosts[i].log)?;
        Ok(text.lines().filter(|l| words.iter().all(|w| l.contains(w))).count())
    }

    /// What every host's service answers on `/` (its `version` field), asked over HTTP; `None`
    /// for no answer.
    pub async fn answers(&self) -> Vec<Option<String>> {
        self.answers_on("/").await
    }

    /// The `version` field every host's service answers on `path`.
    pub async fn answers_on(&self, path: &str) -> Vec<Option<String>> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("a plain client builds");
        let mut out = Vec::with_capacity(self.hosts.len());
        for h in &self.hosts {
            let url = format!("http://{}:{SERVICE_PORT}{path}", h.net.address);
            let version = match http.get(url).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| v["version"].as_str().map(str::to_owned)),
                Err(_) => None,
            };
            out.push(version);
        }
        out
    }
}

impl Drop for AgentFleet {
    fn drop(&mut self) {
        if let Some(mut load) = self.load.take() {
            let _ = load.sigkill();
        }
        for h in &mut self.hosts {
            if let Some(mut agent) = h.agent.take() {
                let _ = agent.sigkill();
            }
            // The services outlive their agents by design; a test's end is theirs too.
            if let Some(pid) = InstanceDir::new(h.dir.clone()).running_pid() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The demo service as a bundle: its binary, the build it serves (`artifact.json`, as the
/// local fleet gives it) and `payload` extra bytes; ready when `/ready` answers. It starts in
/// milliseconds, so a benchmark of many hosts measures the hosts' machinery, not a runtime's
/// start-up.
pub fn demo_bundle(service: &str, version: &str, payload: usize, ready_ms: u64) -> anyhow::Result<Vec<u8>> {
    let manifest = json!({
        "start": {
            "command": "./signalbox-demo-service",
            "args": ["--instance-dir", "${INSTANCE_DIR}", "--port", "${PORT}", "--address", "${ADDRESS}", "--instance-id", "${INSTANCE_ID}"],
        },
        "ready": {"http": "/ready", "timeout_ms": ready_ms},
        "drain": {"signal": "TERM", "grace_ms": 5000},
    });
    let files: Vec<(&str, Vec<u8>, u32)> = vec![
        ("signalbox.json", manifest.to_string().into_bytes(), 0o644),
        ("signalbox-demo-service", std::fs::read(workspace_binary("signalbox-demo-service")?)?, 0o755),
        ("artifact.json", crate::demo_build(service, version, 0.002, 5), 0o644),
        ("payload.bin", filler(version, payload), 0o644),
    ];
    tarball(files)
}

/// Bytes that do not compress and differ per version, as two builds' binaries would.
fn filler(version: &str, len: usize) -> Vec<u8> {
    let mut state = version.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn tarball(files: Vec<(&str, Vec<u8>, u32)>) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, data.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

/// The example service `examples/hello-py` as an uncompressed bundle of `version` whose requests
/// fail at `error_rate`, carrying `payload` extra bytes (a stand-in for a real build's weight),
/// allowed `ready_ms` to become ready.
pub fn hello_bundle(version: &str, error_rate: f64, payload: usize, ready_ms: u64) -> anyhow::Result<Vec<u8>> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-py");
    let manifest = std::fs::read_to_string(example.join("signalbox.json"))?
        .replace(r#""HELLO_ERROR_RATE": "0""#, &format!(r#""HELLO_ERROR_RATE": "{error_rate}""#))
        .replace(r#""timeout_ms": 20000"#, &format!(r#""timeout_ms": {ready_ms}"#));
    let files = vec![
        ("signalbox.json", manifest.into_bytes(), 0o644),
        ("server.py", std::fs::read(example.join("server.py"))?, 0o755),
        ("VERSION", format!("{version}\n").into_bytes(), 0o644),
        ("payload.bin", filler(version, payload), 0o644),
    ];
    tarball(files)
}
