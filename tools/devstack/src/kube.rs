//! A real Kubernetes control plane without Docker: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler 1.35.4 as the set-up builds them
//! (`$SIGNALBOX_KUBE_BIN`), and kwok (`$SIGNALBOX_KWOK_DIR`) playing the kubelets of fake nodes:
//! it binds nothing and runs nothing, but moves scheduled pods through their lifecycle by its
//! stages, so Deployments, ReplicaSets, the scheduler and readiness behave as on a cluster.
//!
//! The harness makes its own CA, the API server's serving certificate, the service-account key
//! and an admin token, and writes a kubeconfig (context `devstack`) for clients.
//!
//! Pods become Ready by a pod-ready stage of our own, which leaves out pods whose
//! `signalbox.dev/version` annotation names one of [`KubeOptions::never_ready_versions`]: those
//! run but never pass readiness, the way a build that fails its readiness probe would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};

use crate::etcd::EtcdServer;
use crate::{ManagedProcess, free_port, wait_for};

/// How long the API server may take to be ready.
const READY: Duration = Duration::from_secs(60);

/// The context name of the kubeconfig written.
pub const CONTEXT: &str = "devstack";

/// Where the control plane's binaries are: `$SIGNALBOX_KUBE_BIN`, else the set-up's cache.
pub fn kube_bin_dir() -> Result<PathBuf> {
    cache_dir("SIGNALBOX_KUBE_BIN", "kube-1.35.4", "kube-apiserver")
}

/// Where kwok and its stage files are: `$SIGNALBOX_KWOK_DIR`, else the set-up's cache.
pub fn kwok_dir() -> Result<PathBuf> {
    cache_dir("SIGNALBOX_KWOK_DIR", "kwok-0.8.0", "kwok")
}

fn cache_dir(var: &str, name: &str, binary: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os(var) {
        Some(d) => PathBuf::from(d),
        None => Path::new(&std::env::var_os("HOME").context("$HOME is unset")?).join(".cache/signalbox/bin").join(name),
    };
    if !dir.join(binary).is_file() {
        bail!("no {binary} in {} (${var}); scripts/test builds the Kubernetes control plane once", dir.display());
    }
    Ok(dir)
}

/// What the control plane is started with.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Fake nodes, each taking up to 250 pods.
    pub nodes: u32,
    /// Versions (pod annotation `signalbox.dev/version`) whose pods run but are never Ready.
    pub never_ready_versions: Vec<String>,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self { nodes: 2, never_ready_versions: Vec::new() }
    }
}

/// A running control plane we own.
pub struct KubeCluster {
    dir: PathBuf,
    port: u16,
    _etcd: EtcdServer,
    apiserver: Option<ManagedProcess>,
    _controllers: Vec<ManagedProcess>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").field("dir", &self.dir).field("port", &self.port).finish()
    }
}

impl KubeCluster {
    /// Starts etcd, the control plane and kwok with state and logs in `dir`, and registers the
    /// fake nodes; returns once the nodes are Ready.
    pub async fn start(dir: &Path, options: KubeOptions) -> Result<Self> {
        let bin = kube_bin_dir()?;
        let kwok = kwok_dir()?;
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let etcd = EtcdServer::start(&dir.join("etcd")).await?;
        let port = free_port()?;
        credentials(&dir)?;
        write_kubeconfig(&dir, port)?;
        let mut cluster = Self { dir: dir.clone(), port, _etcd: etcd, apiserver: None, _controllers: Vec::new() };
        cluster.start_apiserver(&etcd_url(&cluster._etcd)).await?;

        let kubeconfig = dir.join("kubeconfig-controllers");
        let mut cm = Command::new(bin.join("kube-controller-manager"));
        cm.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?))
            .arg(format!("--service-account-private-key-file={}", dir.join("sa-key.pem").display()))
            .arg(format!("--root-ca-file={}", dir.join("ca.pem").display()))
            .arg("--use-service-account-credentials=false")
            .arg("--controllers=*,-nodeipam,-service-lb-controller,-route,-cloud-node-lifecycle")
            .arg("--kube-api-qps=100")
            .arg("--kube-api-burst=200");
        cluster._controllers.push(ManagedProcess::spawn("kube-controller-manager", cm, &dir.join("controller-manager.log"))?);
        let mut scheduler = Command::new(bin.join("kube-scheduler"));
        scheduler
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?));
        cluster._controllers.push(ManagedProcess::spawn("kube-scheduler", scheduler, &dir.join("scheduler.log"))?);

        let stages = write_stages(&dir, &kwok.join("stages"), &options.never_ready_versions)?;
        let mut k = Command::new(kwok.join("kwok"));
        k.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--config={}", stages.display()))
            .arg("--manage-all-nodes=false")
            .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
            .arg("--cidr=10.244.0.0/16")
            .arg("--node-ip=10.250.0.1")
            .arg(format!("--server-address=127.0.0.1:{}", free_port()?));
        cluster._controllers.push(ManagedProcess::spawn("kwok", k, &dir.join("kwok.log"))?);

        let nodes: String = (0..options.nodes).map(node).collect();
        cluster.kubectl_stdin(&["apply", "-f", "-"], &nodes)?;
        wait_for("the fake nodes to be Ready", READY, || async {
            let out = cluster.kubectl(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"])?;
            let ready = out.lines().filter(|l| *l == "True").count();
            if ready == options.nodes as usize { Ok(Some(())) } else { Err(anyhow::anyhow!("{ready} of {} nodes Ready", options.nodes)) }
        })
        .await?;
        wait_for("the default service account", READY, || async { cluster.kubectl(&["get", "serviceaccount", "default", "-o", "name"]).map(Some) }).await?;
        Ok(cluster)
    }

    async fn start_apiserver(&mut self, etcd: &str) -> Result<()> {
        let dir = &self.dir;
        let mut cmd = Command::new(kube_bin_dir()?.join("kube-apiserver"));
        cmd.arg(format!("--etcd-servers={etcd}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--tls-cert-file={}", dir.join("apiserver.pem").display()))
            .arg(format!("--tls-private-key-file={}", dir.join("apiserver-key.pem").display()))
            .arg(format!("--client-ca-file={}", dir.join("ca.pem").display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", dir.join("sa-pub.pem").display()))
            .arg(format!("--service-account-signing-key-file={}", dir.join("sa-key.pem").display()))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--endpoint-reconciler-type=none")
            .arg("--authorization-mode=RBAC")
            .arg(format!("--audit-policy-file={}", dir.join("audit-policy.yaml").display()))
            .arg(format!("--audit-log-path={}", dir.join("audit.log").display()))
            .arg("--audit-log-maxsize=200")
            .arg("--profiling=false");
        self.apiserver = Some(ManagedProcess::spawn("kube-apiserver", cmd, &dir.join("apiserver.log"))?);
        wait_for("kube-apiserver to be ready", READY, || async { self.kubectl(&["get", "--raw=/readyz"]).map(|_| Some(())) }).await
    }

    /// Kills the API server and starts it again on the same port and etcd; returns once ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.stop_apiserver()?;
        let etcd = etcd_url(&self._etcd);
        self.start_apiserver(&etcd).await
    }

    /// Kills the API server (clients see the connection refused until [`Self::start_apiserver_again`]).
    pub fn stop_apiserver(&mut self) -> Result<()> {
        if let Some(mut p) = self.apiserver.take() {
            p.sigkill()?;
        }
        Ok(())
    }

    /// Starts the API server stopped by [`Self::stop_apiserver`].
    pub async fn start_apiserver_again(&mut self) -> Result<()> {
        let etcd = etcd_url(&self._etcd);
        self.start_apiserver(&etcd).await
    }

    /// The kubeconfig of an admin (context [`CONTEXT`]).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubeconfig of the user `signalbox`, for the worker.
    pub fn worker_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig-signalbox")
    }

    /// Requests `user` made so far, by verb and resource (`patch replicasets`), from the API
    /// server's audit log: (verb resource, count), and the total.
    pub fn api_calls(&self, user: &str) -> Result<(std::collections::BTreeMap<String, usize>, usize)> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut ids = std::collections::BTreeSet::new();
        let mut calls = std::collections::BTreeMap::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if event["user"]["username"] != user || !ids.insert(event["auditID"].as_str().unwrap_or_default().to_owned()) {
                continue;
            }
            let resource = event["objectRef"]["resource"].as_str().unwrap_or("(none)");
            *calls.entry(format!("{} {resource}", event["verb"].as_str().unwrap_or_default())).or_insert(0) += 1;
        }
        Ok((calls, ids.len()))
    }

    /// Runs the real `kubectl` against this cluster; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, "")
    }

    /// [`Self::kubectl`] with `stdin` fed to it.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new(kube_bin_dir()?.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig().display()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("kubectl")?;
        child.stdin.take().expect("piped").write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The tail of a component's log (`apiserver`, `controller-manager`, `scheduler`, `kwok`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn etcd_url(etcd: &EtcdServer) -> String {
    etcd.url()
}

/// The CA, the API server's certificate, the service-account signing key and the admin token.
fn credentials(dir: &Path) -> Result<()> {
    if dir.join("tokens.csv").is_file() {
        return Ok(());
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "devstack kubernetes CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let names = ["localhost", "127.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1"];
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    std::fs::write(dir.join("apiserver.pem"), cert.pem())?;
    std::fs::write(dir.join("apiserver-key.pem"), key.serialize_pem())?;
    // The API server checks tokens with the public half; it takes no PKCS#8 private key there.
    let sa = KeyPair::generate()?;
    std::fs::write(dir.join("sa-key.pem"), sa.serialize_pem())?;
    std::fs::write(dir.join("sa-pub.pem"), sa.public_key_pem())?;
    let token = || -> Result<String> { Ok(KeyPair::generate()?.serialize_der().iter().rev().take(24).map(|b| format!("{b:02x}")).collect()) };
    let tokens: String = USERS.iter().map(|u| Ok(format!("{},{u},{u}-uid,\"system:masters\"\n", token()?))).collect::<Result<_>>()?;
    std::fs::write(dir.join("tokens.csv"), tokens)?;
    // Every request of the named users is audited (who, verb, resource), so a benchmark can
    // count a client's API calls.
    let audited = USERS[..2].iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        dir.join("audit-policy.yaml"),
        format!("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n  users: [{audited}]\n- level: None\n"),
    )?;
    Ok(())
}

/// The users of the cluster, each an administrator with a kubeconfig of its own
/// (`kubeconfig-<user>`, `kubeconfig` for `admin`): the tests and kubectl are `admin`, the
/// signalbox worker `signalbox`, the controller-manager, scheduler and kwok `controllers`, so
/// the audit log tells their API calls apart (it records `admin` and `signalbox` only).
pub const USERS: [&str; 3] = ["admin", "signalbox", "controllers"];

fn write_kubeconfig(dir: &Path, port: u16) -> Result<()> {
    let tokens = std::fs::read_to_string(dir.join("tokens.csv"))?;
    for line in tokens.lines() {
        let mut fields = line.split(',');
        let (token, user) = (fields.next().context("tokens.csv: no token")?, fields.next().context("tokens.csv: no user")?);
        let file = if user == "admin" { "kubeconfig".to_owned() } else { format!("kubeconfig-{user}") };
        std::fs::write(dir.join(file), kubeconfig(dir, port, token))?;
    }
    Ok(())
}

fn kubeconfig(dir: &Path, port: u16, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {CONTEXT}\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: admin\ncurrent-context: {CONTEXT}\n",
        ca = dir.join("ca.pem").display()
    )
}

/// A fake node kwok manages: room for 250 pods.
fn node(n: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: kwok-node-{n}\n  annotations:\n    kwok.x-k8s.io/node: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    type: kwok\n    kubernetes.io/hostname: kwok-node-{n}\nstatus:\n  allocatable: {{cpu: \"64\", memory: 256Gi, pods: \"250\"}}\n  capacity: {{cpu: \"64\", memory: 256Gi, pods: \"250\"}}\n---\n"
    )
}

/// kwok's configuration: the node and pod-teardown stages that ship with kwok (copied by the
/// set-up from its module), and our pod-ready and pod-unready stages.
fn write_stages(dir: &Path, shipped: &Path, never_ready: &[String]) -> Result<PathBuf> {
    let mut config = String::new();
    for stage in ["node-initialize.yaml", "node-heartbeat.yaml", "pod-complete.yaml", "pod-delete.yaml"] {
        let path = shipped.join(stage);
        config.push_str(&std::fs::read_to_string(&path).with_context(|| format!("{} (kwok's stage files, copied by scripts/test)", path.display()))?);
        config.push_str("\n---\n");
    }
    let versions = if never_ready.is_empty() { vec!["\"(none)\"".to_owned()] } else { never_ready.iter().map(|v| format!("{v:?}")).collect() };
    let versions = versions.join(", ");
    config.push_str(&pod_stage("signalbox-pod-ready", "NotIn", &versions, true));
    config.push_str("\n---\n");
    config.push_str(&pod_stage("signalbox-pod-unready", "In", &versions, false));
    let path = dir.join("kwok.yaml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// A stage taking a scheduled, pending pod (whose version annotation is `op` `versions`) to
/// Running, its containers started and Ready = `ready`.
fn pod_stage(name: &str, op: &str, versions: &str, ready: bool) -> String {
    format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: {name}
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.spec.nodeName'
      operator: 'Exists'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.metadata.annotations["signalbox.dev/version"]'
      operator: '{op}'
      values: [{versions}]
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "{ready}", type: Ready}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "{ready}", type: ContainersReady}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: {ready_lower}
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"#,
        ready = if ready { "True" } else { "False" },
        ready_lower = ready,
    )
}
