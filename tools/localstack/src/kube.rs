//! A Kubernetes world for the Kubernetes substrate: a real control plane with kwok nodes
//! ([`KubeCluster`]), the worker's targets file naming its workloads, image builds in the store,
//! and the users' Deployments those targets adopt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use signalbox_devstack::kube::{CONTEXT, KubeCluster, KubeOptions};
use signalbox_devstack::wait_for;
use signalbox_domain::Artifact;
use signalbox_store::{Home, IMAGE_LABEL, Record};

/// The namespace every test workload lives in.
pub const NAMESPACE: &str = "shop";

/// A control plane and the targets the worker serves on it.
pub struct KubeWorld {
    /// The control plane.
    pub cluster: KubeCluster,
    /// The worker's `--kube-targets` file.
    pub targets_file: PathBuf,
    /// A client of the cluster, as the tests read it.
    pub client: kube::Client,
}

impl KubeWorld {
    /// Starts a control plane in `dir` and writes a targets file with one target per
    /// workload of `workloads` (target name = workload name) in [`NAMESPACE`], each batch's pods
    /// given `ready_timeout_ms` to be Ready.
    pub async fn start(dir: &Path, options: KubeOptions, workloads: &[&str], ready_timeout_ms: u64) -> anyhow::Result<Self> {
        let cluster = KubeCluster::start(&dir.join("cluster"), options).await?;
        cluster.kubectl(&["create", "namespace", NAMESPACE])?;
        let kubeconfig = cluster.worker_kubeconfig();
        let mut text = String::new();
        for w in workloads {
            text.push_str(&format!(
                "[[target]]\nname = \"{w}\"\nnamespace = \"{NAMESPACE}\"\nworkload = \"{w}\"\ncontext = \"{CONTEXT}\"\nkubeconfig = \"{}\"\nready_timeout_ms = {ready_timeout_ms}\n\n",
                kubeconfig.display()
            ));
        }
        let targets_file = dir.join("kube-targets.toml");
        std::fs::write(&targets_file, text)?;
        signalbox_substrate_kube::install_tls_provider();
        let admin = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(admin, &Default::default()).await?;
        Ok(Self { cluster, targets_file, client: kube::Client::try_from(config)? })
    }

    /// The worker's environment for these targets.
    pub fn worker_env(&self) -> (String, String) {
        ("SIGNALBOX_KUBE_TARGETS".into(), self.targets_file.display().to_string())
    }

    /// Makes the user's Deployment `name`: `replicas` pods of `image`, labelled `app=<name>`,
    /// and waits until all are Ready.
    pub async fn deployment(&self, name: &str, replicas: u32, image: &str) -> anyhow::Result<()> {
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n"
        );
        self.cluster.kubectl_stdin(&["apply", "-f", "-"], &yaml)?;
        self.wait_ready(name, replicas as usize, image).await
    }

    /// Waits until exactly `n` live pods of workload `name` run `image`, all Ready, and no other.
    pub async fn wait_ready(&self, name: &str, n: usize, image: &str) -> anyhow::Result<()> {
        wait_for(&format!("{n} Ready pods of {name} on {image}"), Duration::from_secs(120), || async {
            let pods = self.pods(name).await?;
            let ready = pods.iter().filter(|(i, r)| i == image && *r).count();
            if ready == n && pods.len() == n { Ok(Some(())) } else { Err(anyhow::anyhow!("{ready} Ready of {} live pods: {pods:?}", pods.len())) }
        })
        .await
    }

    /// Every live pod of workload `name`: (image, Ready).
    pub async fn pods(&self, name: &str) -> anyhow::Result<Vec<(String, bool)>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = pods.list(&ListParams::default().labels(&format!("app={name}"))).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone()).unwrap_or_default();
                let ready = p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (image, ready)
            })
            .collect())
    }

    /// The Deployment's desired replicas.
    pub async fn deployment_replicas(&self, name: &str) -> anyhow::Result<i32> {
        let d: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        Ok(d.get(name).await?.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// The workload's ReplicaSets signalbox made: (name, desired replicas, generation).
    pub async fn replica_sets(&self, name: &str) -> anyhow::Result<Vec<(String, i32, i64)>> {
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = sets.list(&ListParams::default().labels(&format!("{}={name}", signalbox_substrate_kube::WORKLOAD_LABEL))).await?;
        Ok(list
            .items
            .into_iter()
            .map(|r| (r.metadata.name.unwrap_or_default(), r.spec.and_then(|s| s.replicas).unwrap_or(0), r.metadata.generation.unwrap_or(0)))
            .collect())
    }

    /// The audit Events of a deploy, oldest first: (reason, message).
    pub async fn events(&self, deploy_id: &str) -> anyhow::Result<Vec<(String, String)>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let lp = ListParams::default().labels(&format!("{}={}", signalbox_substrate_kube::DEPLOY_LABEL, signalbox_substrate_kube::deploy_label(deploy_id)));
        let mut list: Vec<Event> = events.list(&lp).await?.items;
        list.sort_by_key(|e| e.metadata.annotations.as_ref().and_then(|a| a.get("signalbox.dev/at").cloned()));
        Ok(list.into_iter().map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default())).collect())
    }
}

/// An image build of `service` at `version` in the store: a small OCI manifest (its digest is
/// the image's) recorded with the label `image=<repository>`. Returns the artifact and the image
/// reference its pods run.
pub async fn publish_image(home: &Home, service: &str, version: &str, repository: &str) -> anyhow::Result<(Artifact, String)> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{:064x}", version.len()), "size": 2},
        "layers": [],
        "annotations": {"org.opencontainers.image.version": version, "org.opencontainers.image.title": service},
    });
    let bytes = serde_json::to_vec(&manifest)?;
    let git_sha = signalbox_store::digest_of(&bytes).hex()[..12].to_owned();
    let mut record = Record::new(service, version, git_sha.clone());
    record.labels.insert(IMAGE_LABEL.into(), repository.into());
    let (digest, _, _) = home.store()?.push(bytes, record).await?;
    let image = format!("{repository}@{digest}");
    Ok((Artifact { digest, git_sha, version: version.into() }, image))
}
