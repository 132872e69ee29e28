//! The ledger of a Kubernetes target: which build each replica slot runs, kept in one ConfigMap
//! next to the workload and written with a resourceVersion precondition. Replica slots are
//! signalbox's instances on Kubernetes (`web-0` .. `web-19`); the ReplicaSets' replica counts
//! follow the ledger, so a batch is one compare-and-set of the ledger and then a convergence
//! that a retry can repeat without applying anything twice.
//!
//! Pure: every change is a function from a ledger to a ledger, tested without a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use signalbox_contract::activities::{InstanceChange, InstanceState};
use signalbox_domain::{Artifact, Digest};

/// Who holds a build's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Holder {
    /// The user's Deployment the target adopted: its replicas are scaled, its template never
    /// changed.
    Deployment(String),
    /// A ReplicaSet signalbox made for the build from the Deployment's pod template.
    ReplicaSet(String),
}

impl Holder {
    /// Its object name.
    pub fn name(&self) -> &str {
        match self {
            Self::Deployment(n) | Self::ReplicaSet(n) => n,
        }
    }
}

/// One build the target has run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Its version name.
    pub version: String,
    /// The image its pods run, pinned by digest.
    pub image: String,
    /// Who holds its replicas; kept at zero when none runs it, for an instant rollback.
    pub holder: Holder,
}

/// One replica slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The build it runs.
    pub digest: Digest,
    /// What it ran before the deploy that moved it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Digest>,
    /// That deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
}

/// Who froze the target, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltMark {
    /// The deploy that halted it.
    pub deploy_id: String,
    /// The operator's reason.
    pub reason: String,
}

/// The whole ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The workload's Deployment: the pod template every build's ReplicaSet copies.
    pub workload: String,
    /// Every replica slot, by ordinal.
    pub slots: Vec<Slot>,
    /// Every build a slot runs or ran, by digest.
    pub builds: BTreeMap<Digest, Build>,
    /// Set while the target is halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<HaltMark>,
}

/// How a ledger change went.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// The changed ledger (equal to the old one when nothing had to change).
    pub ledger: Ledger,
    /// One entry per slot asked for, in the order asked.
    pub changes: Vec<InstanceChange>,
}

/// A bad instance id or slot: the instances a batch names must be this target's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {0:?} is not a replica slot of this workload")]
pub struct UnknownSlot(pub String);

impl Ledger {
    /// The ledger of a workload adopted as it runs: `replicas` slots on one build, held by its
    /// Deployment.
    pub fn adopt(workload: &str, replicas: u32, digest: Digest, build: Build) -> Self {
        let slots = (0..replicas).map(|_| Slot { digest: digest.clone(), previous: None, deploy: None }).collect();
        Self { workload: workload.to_owned(), slots, builds: BTreeMap::from([(digest, build)]), halt: None }
    }

    /// The instance id of slot `ordinal`.
    pub fn instance(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", self.workload)
    }

    fn ordinal(&self, instance: &str) -> Result<usize, UnknownSlot> {
        instance
            .strip_prefix(&self.workload)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < self.slots.len() && instance == self.instance(*n))
            .ok_or_else(|| UnknownSlot(instance.to_owned()))
    }

    /// Every slot as an instance, in rollout order.
    pub fn instances(&self, region: &str) -> Vec<InstanceState> {
        self.slots
            .iter()
            .enumerate()
            .map(|(n, s)| InstanceState {
                id: self.instance(n),
                region: region.to_owned(),
                version: self.builds.get(&s.digest).map(|b| b.version.clone()).unwrap_or_default(),
                digest: s.digest.clone(),
                changed_by: s.deploy.clone(),
            })
            .collect()
    }

    /// How many replicas each build should have now, every build listed (zero kept).
    pub fn replicas(&self) -> BTreeMap<Digest, u32> {
        let mut counts: BTreeMap<Digest, u32> = self.builds.keys().map(|d| (d.clone(), 0)).collect();
        for s in &self.slots {
            *counts.entry(s.digest.clone()).or_default() += 1;
        }
        counts
    }

    /// Moves `instances` to `target` (held by `build`) for `deploy_id`. A slot that an earlier
    /// attempt of the same deploy already moved keeps its first `previous`, so a retry reports
    /// the same undo; a slot already on the build from elsewhere stays as it is.
    pub fn apply(&self, deploy_id: &str, instances: &[String], target: &Artifact, build: Build) -> Result<Moved, UnknownSlot> {
        let mut ledger = self.clone();
        ledger.builds.entry(target.digest.clone()).or_insert(build);
        let mut changes = Vec::with_capacity(instances.len());
        for id in instances {
            let n = self.ordinal(id)?;
            let slot = &mut ledger.slots[n];
            let ours = slot.digest == target.digest && slot.deploy.as_deref() == Some(deploy_id);
            let from = if ours { slot.previous.clone().unwrap_or_else(|| slot.digest.clone()) } else { slot.digest.clone() };
            let from_version = self.builds.get(&from).map(|b| b.version.clone()).unwrap_or_default();
            if slot.digest != target.digest {
                *slot = Slot { digest: target.digest.clone(), previous: Some(from.clone()), deploy: Some(deploy_id.to_owned()) };
            }
            changes.push(InstanceChange { instance: id.clone(), from_version, from_digest: from, to_version: target.version.clone(), to_digest: target.digest.clone() });
        }
        Ok(Moved { ledger, changes })
    }

    /// Returns each changed slot to its build before; answers the new ledger and how many
    /// slots it actually moved back.
    pub fn rollback(&self, deploy_id: &str, changes: &[InstanceChange]) -> Result<(Ledger, u32), UnknownSlot> {
        let mut ledger = self.clone();
        let mut reverted = 0;
        for c in changes {
            let n = self.ordinal(&c.instance)?;
            let slot = &mut ledger.slots[n];
            if slot.digest != c.from_digest && ledger.builds.contains_key(&c.from_digest) {
                *slot = Slot { digest: c.from_digest.clone(), previous: None, deploy: Some(deploy_id.to_owned()) };
                reverted += 1;
            }
        }
        Ok((ledger, reverted))
    }

    /// The slots `instances` name, as ordinals (for events and health).
    pub fn ordinals(&self, instances: &[String]) -> Result<Vec<usize>, UnknownSlot> {
        instances.iter().map(|i| self.ordinal(i)).collect()
    }
}

/// A short, stable rendering of ordinals for events: `0-4,7`.
pub fn ranges(ordinals: &[usize]) -> String {
    let mut sorted = ordinals.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn build(version: &str, holder: Holder) -> Build {
        Build { version: version.into(), image: format!("registry.local/web@{version}"), holder }
    }

    fn artifact(c: char, version: &str) -> Artifact {
        Artifact { digest: digest(c), git_sha: "abcdef0".into(), version: version.into() }
    }

    fn adopted() -> Ledger {
        Ledger::adopt("web", 4, digest('a'), build("1.0.0", Holder::Deployment("web".into())))
    }

    fn ids(ns: &[usize]) -> Vec<String> {
        ns.iter().map(|n| format!("web-{n}")).collect()
    }

    #[test]
    fn a_batch_moves_only_its_slots_and_the_replica_counts_follow() {
        let l = adopted();
        let moved = l.apply("d1", &ids(&[0, 1]), &artifact('b', "2.0.0"), build("2.0.0", Holder::ReplicaSet("web-b".into()))).unwrap();
        assert_eq!(moved.ledger.replicas(), BTreeMap::from([(digest('a'), 2), (digest('b'), 2)]));
        assert_eq!(moved.changes.iter().map(|c| (c.from_version.as_str(), c.to_version.as_str())).collect::<Vec<_>>(), [("1.0.0", "2.0.0"); 2]);
        let states = moved.ledger.instances("eu");
        assert_eq!(states.iter().map(|s| s.version.as_str()).collect::<Vec<_>>(), ["2.0.0", "2.0.0", "1.0.0", "1.0.0"]);
        assert_eq!(states[0].changed_by.as_deref(), Some("d1"));
        assert_eq!(states[2].changed_by, None);
    }

    #[test]
    fn a_retried_batch_changes_nothing_and_reports_the_same_undo() {
        let first = adopted().apply("d1", &ids(&[0, 1]), &artifact('b', "2.0.0"), build("2.0.0", Holder::ReplicaSet("web-b".into()))).unwrap();
        let again = first.ledger.apply("d1", &ids(&[0, 1]), &artifact('b', "2.0.0"), build("2.0.0", Holder::ReplicaSet("other".into()))).unwrap();
        assert_eq!(again.ledger, first.ledger, "nothing applied twice, the first holder kept");
        assert_eq!(again.changes, first.changes);
    }

    #[test]
    fn rollback_returns_the_slots_and_keeps_the_new_build_at_zero() {
        let moved = adopted().apply("d1", &ids(&[0, 1, 2, 3]), &artifact('b', "2.0.0"), build("2.0.0", Holder::ReplicaSet("web-b".into()))).unwrap();
        let (back, reverted) = moved.ledger.rollback("d1", &moved.changes).unwrap();
        assert_eq!(reverted, 4);
        assert_eq!(back.replicas(), BTreeMap::from([(digest('a'), 4), (digest('b'), 0)]));
        let (twice, again) = back.rollback("d1", &moved.changes).unwrap();
        assert_eq!((twice, again), (back, 0), "a rollback retried reverts nothing more");
    }

    #[test]
    fn an_instance_that_is_no_slot_is_refused_by_name() {
        let l = adopted();
        for bad in ["web-4", "web-01", "api-0", "web-", "web-x"] {
            assert_eq!(l.apply("d", &[bad.into()], &artifact('b', "2"), build("2", Holder::ReplicaSet("r".into()))).unwrap_err(), UnknownSlot(bad.into()));
        }
    }

    #[test]
    fn ordinals_render_as_ranges() {
        assert_eq!(ranges(&[4, 0, 1, 2, 3, 7, 9, 10]), "0-4,7,9-10");
        assert_eq!(ranges(&[]), "");
    }
}
