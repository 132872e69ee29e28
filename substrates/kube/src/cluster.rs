//! The objects of one Kubernetes target, through kube-rs: the ledger's ConfigMap, the
//! workload's Deployment and the builds' ReplicaSets (their replica counts), their pods, and the
//! Events that audit each step. Every write carries the resourceVersion it read; a conflict is
//! read again and redone, never overwritten.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta, Time};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use sha2::{Digest as _, Sha256};
use signalbox_domain::Digest;
use signalbox_substrate::{Error, Result};

use crate::ledger::{Build, Holder, Ledger};
use crate::spec::TargetSpec;

/// Label on everything signalbox makes for a workload.
pub const WORKLOAD_LABEL: &str = "signalbox.dev/workload";
/// Label on a build's ReplicaSet and pods: the first 12 hex digits of its digest.
pub const BUILD_LABEL: &str = "signalbox.dev/build";
/// Label on audit Events: a hash of the deploy id (ids hold characters labels cannot).
pub const DEPLOY_LABEL: &str = "signalbox.dev/deploy";
const DEPLOY_ID_ANNOTATION: &str = "signalbox.dev/deploy-id";
const ACTION_ANNOTATION: &str = "signalbox.dev/action";
const INSTANCES_ANNOTATION: &str = "signalbox.dev/instances";
const AT_ANNOTATION: &str = "signalbox.dev/at";
const DIGEST_ANNOTATION: &str = "signalbox.dev/digest";
const VERSION_ANNOTATION: &str = "signalbox.dev/version";
const LEDGER_KEY: &str = "ledger.json";

/// A resourceVersion precondition failed: someone wrote in between.
pub struct Conflict;

/// Kubernetes trouble: transient unless the API said the request itself is wrong.
pub fn api(what: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Error::Target(format!("{what}: {}", s.message)),
        _ => Error::Io { path: format!("kubernetes: {what}").into(), source: std::io::Error::other(e.to_string()) },
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The name of a deploy in labels: 20 hex digits of its SHA-256.
pub fn deploy_label(deploy_id: &str) -> String {
    hex::encode(&Sha256::digest(deploy_id.as_bytes())[..10])
}

/// The objects of one target.
#[derive(Clone)]
pub struct Objects {
    spec: TargetSpec,
    maps: Api<ConfigMap>,
    deployments: Api<Deployment>,
    sets: Api<ReplicaSet>,
    pods: Api<Pod>,
    events: Api<Event>,
}

impl Objects {
    /// The objects of `spec` through `client`.
    pub fn new(client: Client, spec: TargetSpec) -> Self {
        let ns = spec.namespace.as_str();
        Self {
            maps: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            sets: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            events: Api::namespaced(client, ns),
            spec,
        }
    }

    fn ledger_name(&self) -> String {
        format!("signalbox-{}", self.spec.workload)
    }

    /// The ledger and its resourceVersion, or `None` before the first deploy.
    pub async fn ledger(&self) -> Result<Option<(Ledger, String)>> {
        let name = self.ledger_name();
        let Some(map) = self.maps.get_opt(&name).await.map_err(|e| api("read the ledger", e))? else {
            return Ok(None);
        };
        let text = map.data.as_ref().and_then(|d| d.get(LEDGER_KEY)).ok_or_else(|| Error::Target(format!("configmap {name} holds no {LEDGER_KEY}")))?;
        let ledger = serde_json::from_str(text).map_err(|e| Error::Target(format!("configmap {name}: {LEDGER_KEY} is unreadable: {e}")))?;
        Ok(Some((ledger, map.metadata.resource_version.unwrap_or_default())))
    }

    /// Writes `ledger` if the ConfigMap is still at `version` (`None`: if it does not exist).
    pub async fn write_ledger(&self, ledger: &Ledger, version: Option<&str>) -> Result<std::result::Result<(), Conflict>> {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.ledger_name()),
                namespace: Some(self.spec.namespace.clone()),
                labels: Some(BTreeMap::from([(WORKLOAD_LABEL.to_owned(), self.spec.workload.clone())])),
                resource_version: version.map(str::to_owned),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(LEDGER_KEY.to_owned(), serde_json::to_string_pretty(ledger).expect("a ledger serializes"))])),
            ..ConfigMap::default()
        };
        let written = match version {
            Some(_) => self.maps.replace(&self.ledger_name(), &PostParams::default(), &map).await,
            None => self.maps.create(&PostParams::default(), &map).await,
        };
        match written {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_code(&e, 409) => Ok(Err(Conflict)),
            Err(e) => Err(api("write the ledger", e)),
        }
    }

    /// The workload's Deployment.
    pub async fn workload(&self) -> Result<Deployment> {
        let name = &self.spec.workload;
        self.deployments
            .get_opt(name)
            .await
            .map_err(|e| api("read the workload", e))?
            .ok_or_else(|| Error::Target(format!("no deployment {name} in namespace {} (the target's workload)", self.spec.namespace)))
    }

    /// The index of the container a build's image goes into, in `template`.
    fn container(&self, template: &PodTemplateSpec) -> Result<usize> {
        let containers = template.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        match &self.spec.container {
            None if !containers.is_empty() => Ok(0),
            None => Err(Error::Target(format!("deployment {} has no container", self.spec.workload))),
            Some(c) => containers
                .iter()
                .position(|k| &k.name == c)
                .ok_or_else(|| Error::Target(format!("deployment {} has no container {c:?} (the target's container)", self.spec.workload))),
        }
    }

    /// The image the workload's Deployment runs now, pinned by digest, with that digest.
    pub async fn adopted_image(&self) -> Result<(Deployment, String, Digest)> {
        let deployment = self.workload().await?;
        let template = deployment.spec.as_ref().map(|s| &s.template).ok_or_else(|| Error::Target("the workload has no spec".into()))?;
        let at = self.container(template)?;
        let image = template.spec.as_ref().and_then(|s| s.containers[at].image.clone()).unwrap_or_default();
        let digest = image.rsplit_once('@').and_then(|(_, d)| d.parse::<Digest>().ok()).ok_or_else(|| {
            Error::Target(format!("deployment {} runs image {image:?}, not pinned by digest: signalbox adopts a workload whose image is <repository>@sha256:<digest>", self.spec.workload))
        })?;
        Ok((deployment, image, digest))
    }

    /// The ReplicaSet name of a build.
    pub fn set_name(&self, digest: &Digest) -> String {
        format!("{}-{}", self.spec.workload, digest.short())
    }

    /// Current desired replicas of `holder` (0 if it is gone).
    async fn scale_of(&self, holder: &Holder) -> Result<i32> {
        Ok(match holder {
            Holder::Deployment(n) => self.deployments.get_opt(n).await.map_err(|e| api("read the workload", e))?.map_or(0, |d| d.spec.and_then(|s| s.replicas).unwrap_or(1)),
            Holder::ReplicaSet(n) => self.sets.get_opt(n).await.map_err(|e| api("read a replicaset", e))?.map_or(0, |r| r.spec.and_then(|s| s.replicas).unwrap_or(1)),
        })
    }

    /// Desired replicas of every build's holder now.
    pub async fn scales(&self, ledger: &Ledger) -> Result<BTreeMap<Digest, i32>> {
        let mut out = BTreeMap::new();
        for (digest, build) in &ledger.builds {
            out.insert(digest.clone(), self.scale_of(&build.holder).await?);
        }
        Ok(out)
    }

    /// Sets `holder`'s replicas to `want`, making a build's ReplicaSet first if it is missing.
    pub async fn scale(&self, digest: &Digest, build: &Build, want: i32) -> Result<()> {
        let scaled = match &build.holder {
            Holder::Deployment(n) => set_replicas(&self.deployments, n, want, |d| &mut d.spec.as_mut().expect("a deployment has a spec").replicas).await?,
            Holder::ReplicaSet(n) => set_replicas(&self.sets, n, want, |r| &mut r.spec.as_mut().expect("a replicaset has a spec").replicas).await?,
        };
        match (scaled, &build.holder) {
            (true, _) => Ok(()),
            (false, Holder::ReplicaSet(_)) => self.create_set(digest, build, want).await,
            (false, Holder::Deployment(n)) => Err(Error::Target(format!("deployment {n} (the adopted workload) is gone"))),
        }
    }

    /// A build's ReplicaSet: the workload's pod template with the build's image, selected by
    /// the build's label only, so neither the Deployment nor its ReplicaSets claim it or its pods.
    async fn create_set(&self, digest: &Digest, build: &Build, replicas: i32) -> Result<()> {
        let deployment = self.workload().await?;
        let mut template = deployment.spec.map(|s| s.template).ok_or_else(|| Error::Target("the workload has no spec".into()))?;
        let at = self.container(&template)?;
        template.spec.as_mut().expect("checked above").containers[at].image = Some(build.image.clone());
        let ours = BTreeMap::from([(WORKLOAD_LABEL.to_owned(), self.spec.workload.clone()), (BUILD_LABEL.to_owned(), digest.short().to_owned())]);
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.remove("pod-template-hash");
        labels.extend(ours.clone());
        let marks = BTreeMap::from([(DIGEST_ANNOTATION.to_owned(), digest.to_string()), (VERSION_ANNOTATION.to_owned(), build.version.clone())]);
        meta.annotations.get_or_insert_with(BTreeMap::new).extend(marks.clone());
        let set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(build.holder.name().to_owned()),
                namespace: Some(self.spec.namespace.clone()),
                labels: Some(ours.clone()),
                annotations: Some(marks),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector { match_labels: Some(ours), ..LabelSelector::default() },
                template: Some(template),
                ..ReplicaSetSpec::default()
            }),
            ..ReplicaSet::default()
        };
        match self.sets.create(&PostParams::default(), &set).await {
            Ok(_) => Ok(()),
            // A retry after a crash finds it made: the caller scales it on its next read.
            Err(e) if is_code(&e, 409) => Box::pin(self.scale(digest, build, replicas)).await,
            Err(e) => Err(api("create a replicaset", e)),
        }
    }

    /// The pods of a build.
    pub async fn pods(&self, digest: &Digest, build: &Build) -> Result<Vec<Pod>> {
        let selector = match &build.holder {
            Holder::ReplicaSet(_) => format!("{WORKLOAD_LABEL}={},{BUILD_LABEL}={}", self.spec.workload, digest.short()),
            Holder::Deployment(_) => {
                let d = self.workload().await?;
                let labels = d.spec.and_then(|s| s.selector.match_labels).unwrap_or_default();
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            }
        };
        let pods = self.pods.list(&ListParams::default().labels(&selector)).await.map_err(|e| api("list pods", e))?;
        // The Deployment's selector also matches our pods when the template's labels do; only
        // pods of this build's image count.
        Ok(pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none() && runs(p, &build.image)).collect())
    }

    /// Ready and live pods of a build: (ready, live).
    pub async fn readiness(&self, digest: &Digest, build: &Build) -> Result<(usize, Vec<Pod>)> {
        let pods = self.pods(digest, build).await?;
        Ok((pods.iter().filter(|p| is_ready(p)).count(), pods))
    }

    /// Records one audited step as a Kubernetes Event on the holder of `digest`'s build, named
    /// from what it records so that a retry finds it made instead of recording it twice.
    pub async fn event(&self, ledger: &Ledger, digest: &Digest, deploy_id: &str, action: &str, instances: &[String], message: String, warning: bool) -> Result<()> {
        let Some(build) = ledger.builds.get(digest) else { return Ok(()) };
        // Apply and rollback are named by what they move (a retry finds its event made); halt
        // and release by their message, which carries their time.
        let key = format!("{deploy_id}\n{action}\n{digest}\n{}\n{}", instances.join(","), if instances.is_empty() { message.as_str() } else { "" });
        let name = format!("{}.signalbox.{}", build.holder.name(), &hex::encode(Sha256::digest(key.as_bytes()))[..16]);
        let (kind, uid) = match &build.holder {
            Holder::Deployment(n) => ("Deployment", self.deployments.get_opt(n).await.ok().flatten().and_then(|d| d.metadata.uid)),
            Holder::ReplicaSet(n) => ("ReplicaSet", self.sets.get_opt(n).await.ok().flatten().and_then(|r| r.metadata.uid)),
        };
        let now = chrono::Utc::now();
        let stamp = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.spec.namespace.clone()),
                labels: Some(BTreeMap::from([(DEPLOY_LABEL.to_owned(), deploy_label(deploy_id)), (WORKLOAD_LABEL.to_owned(), self.spec.workload.clone())])),
                annotations: Some(BTreeMap::from([
                    (DEPLOY_ID_ANNOTATION.to_owned(), deploy_id.to_owned()),
                    (ACTION_ANNOTATION.to_owned(), action.to_owned()),
                    (INSTANCES_ANNOTATION.to_owned(), instances.join(",")),
                    (AT_ANNOTATION.to_owned(), now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                ])),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some(kind.into()),
                name: Some(build.holder.name().to_owned()),
                namespace: Some(self.spec.namespace.clone()),
                uid,
                ..ObjectReference::default()
            },
            reason: Some(reason(action).into()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource { component: Some("signalbox".into()), host: None }),
            reporting_component: Some("signalbox.dev/substrate-kube".into()),
            reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| "signalbox-worker".into())),
            first_timestamp: Some(Time(stamp)),
            last_timestamp: Some(Time(stamp)),
            event_time: Some(MicroTime(stamp)),
            action: Some(action.into()),
            count: Some(1),
            ..Event::default()
        };
        match self.events.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 409) => Ok(()),
            Err(e) => Err(api("record an event", e)),
        }
    }

    /// Every audit Event of a deploy: (at, action, instances, message).
    pub async fn events(&self, deploy_id: &str) -> Result<Vec<(String, String, Vec<String>, String)>> {
        let lp = ListParams::default().labels(&format!("{DEPLOY_LABEL}={}", deploy_label(deploy_id)));
        let events = self.events.list(&lp).await.map_err(|e| api("list events", e))?;
        let mut out: Vec<_> = events
            .items
            .into_iter()
            .filter(|e| e.meta().annotations.as_ref().and_then(|a| a.get(DEPLOY_ID_ANNOTATION)).map(String::as_str) == Some(deploy_id))
            .map(|e| {
                let a = e.metadata.annotations.clone().unwrap_or_default();
                let get = |k: &str| a.get(k).cloned().unwrap_or_default();
                let instances = get(INSTANCES_ANNOTATION).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
                (get(AT_ANNOTATION), get(ACTION_ANNOTATION), instances, e.message.unwrap_or_default())
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Sets the replicas of the object `name` to `want` with a replace carrying the resourceVersion
/// read; a conflict is read again. `false`: there is no such object.
async fn set_replicas<K>(api_of: &Api<K>, name: &str, want: i32, replicas: impl Fn(&mut K) -> &mut Option<i32>) -> Result<bool>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    loop {
        let Some(mut object) = api_of.get_opt(name).await.map_err(|e| api("read", e))? else {
            return Ok(false);
        };
        if *replicas(&mut object) == Some(want) {
            return Ok(true);
        }
        *replicas(&mut object) = Some(want);
        match api_of.replace(name, &PostParams::default(), &object).await {
            Ok(_) => return Ok(true),
            Err(e) if is_code(&e, 409) => continue,
            Err(e) => return Err(api("scale", e)),
        }
    }
}

fn reason(action: &str) -> &'static str {
    match action {
        "apply" => "BatchApplied",
        "rollback" => "RolledBack",
        "halt" => "Halted",
        "release" => "Released",
        "unhealthy" => "BatchUnhealthy",
        _ => "Changed",
    }
}

/// Whether `pod` runs `image` (in any container).
fn runs(pod: &Pod, image: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.containers.iter().any(|c| c.image.as_deref() == Some(image)))
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What says a pod's build is failing, not just slow: a restart, or a container waiting on a
/// crash or an image it cannot have.
pub fn failing(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    statuses.iter().find_map(|c| {
        if c.restart_count > 0 {
            return Some(format!("pod {name}: container {} restarted {} times", c.name, c.restart_count));
        }
        let why = c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref())?;
        matches!(why, "CrashLoopBackOff" | "ErrImagePull" | "ImagePullBackOff" | "CreateContainerConfigError" | "InvalidImageName")
            .then(|| format!("pod {name}: container {} is waiting: {why}", c.name))
    })
}

/// What is wrong with a pod that should be serving, if anything: [`failing`], or not Ready.
pub fn trouble(pod: &Pod) -> Option<String> {
    failing(pod).or_else(|| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("no phase");
        (!is_ready(pod)).then(|| format!("pod {} is not Ready ({phase})", pod.metadata.name.as_deref().unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool, restarts: i32, waiting: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": ready, "restartCount": restarts,
                    "state": waiting.map_or_else(|| serde_json::json!({"running": {}}), |w| serde_json::json!({"waiting": {"reason": w}})),
                }],
            },
        }))
        .expect("a pod")
    }

    #[test]
    fn a_pod_that_restarts_or_cannot_start_is_failing_one_not_yet_ready_is_only_in_trouble() {
        assert_eq!(trouble(&pod(true, 0, None)), None);
        assert_eq!(failing(&pod(false, 0, None)), None, "slow is not failing");
        assert_eq!(trouble(&pod(false, 0, None)).as_deref(), Some("pod web-1 is not Ready (Running)"));
        assert_eq!(failing(&pod(true, 2, None)).as_deref(), Some("pod web-1: container app restarted 2 times"));
        assert_eq!(failing(&pod(false, 0, Some("ImagePullBackOff"))).as_deref(), Some("pod web-1: container app is waiting: ImagePullBackOff"));
        assert_eq!(failing(&pod(false, 0, Some("ContainerCreating"))), None, "still starting");
    }
}
