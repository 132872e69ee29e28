//! The Kubernetes substrate against a real control plane: kube-apiserver, controller-manager
//! and scheduler 1.35.4 over etcd 3.6, with kwok playing the kubelets of fake nodes. Each test
//! has its own workload (a user's Deployment the target adopts) in one shared cluster, and the
//! deploys run through the real worker process, which also serves agent hosts (network
//! namespaces running `signalbox-agent`), so one release spans both.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};
use signalbox_devstack::kube::KubeOptions;
use signalbox_devstack::wait_for;
use signalbox_domain::{
    Artifact, BatchPlan, BatchStep, DeployRequest, DeploySettings, DeployState, HealthPolicy, OnFailure, Phase, Pipeline, ReleasePhase, ReleaseRequest, ServiceBuild, Stage, StageTarget,
    Target,
};
use signalbox_domain::control::Command;
use signalbox_localstack::agents::{AgentFleet, AgentWorld};
use signalbox_localstack::kube::{KubeWorld, NAMESPACE, publish_image};
use signalbox_localstack::{DEPLOY_DEADLINE, Stack, StackOptions, request};
use signalbox_tests::{AGENT_REGIONS, GrpcApi, pack_hello, push_bundle, record_history, run, scratch};
use tokio::sync::OnceCell;

/// The version whose pods kwok runs but never makes Ready.
const NEVER_READY: &str = "6.6.6";
/// The workloads of the tests, one each; every one is a target of the same name.
const WORKLOADS: [&str; 5] = ["web", "stuck", "frozen", "sturdy", "storefront"];

/// The cluster, and the agent world (etcd, an origin, a cache per region) of the host targets.
struct World {
    kube: KubeWorld,
    agents: AgentWorld,
}

impl std::ops::Deref for World {
    type Target = KubeWorld;
    fn deref(&self) -> &KubeWorld {
        &self.kube
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut KubeWorld {
        &mut self.kube
    }
}

static WORLD: OnceCell<(Stack, tokio::sync::Mutex<World>)> = OnceCell::const_new();

async fn world() -> &'static (Stack, tokio::sync::Mutex<World>) {
    WORLD
        .get_or_init(|| async {
            let dir = scratch("kubernetes");
            let options = KubeOptions { nodes: 2, never_ready_versions: vec![NEVER_READY.into()] };
            let kube = KubeWorld::start(&dir.join("kube"), options, &WORKLOADS, 10_000).await.expect("the control plane starts");
            // The stack's home, made here first: the origin serves its store.
            let home = signalbox_store::Home::new(dir.join("home"));
            let agents = AgentWorld::start(&dir.join("agents"), &home, &AGENT_REGIONS).await.expect("the agent world starts");
            let mut options = StackOptions::in_dir(dir);
            options.worker_env.push(kube.worker_env());
            options.worker_env.push(("SIGNALBOX_ETCD".into(), agents.etcd.url()));
            (Stack::start(options).await.expect("the local stack starts"), tokio::sync::Mutex::new(World { kube, agents }))
        })
        .await
}

/// A deploy of `artifact` to the Kubernetes target `workload` in the batches `counts`, each
/// judged over three 200 ms windows of pod health.
fn kube_request(workload: &str, artifact: Artifact, counts: &[u32]) -> DeployRequest {
    let mut req = request(workload, workload, artifact);
    req.target = Target { name: workload.into(), kind: signalbox_substrate_kube::KIND.into() };
    req.batch_plan = BatchPlan { steps: counts.iter().map(|n| BatchStep::Count(*n)).collect() };
    req.bake_ms = 0;
    req.health = HealthPolicy { samples: 3, sample_interval_ms: 200, ..HealthPolicy::default() };
    req
}

/// Desired replicas of the workload's Deployment and of each ReplicaSet signalbox made, every
/// change in the order the API server reports it; and the fewest Ready pods seen once the
/// watch began.
#[derive(Debug, Default)]
struct Watched {
    counts: BTreeMap<String, Vec<i32>>,
    fewest_ready: Option<usize>,
}

/// Watches the workload until aborted; a watch the API server ends (a restart) is made again.
fn watch(client: kube::Client, workload: &str) -> (tokio::task::JoinHandle<()>, std::sync::Arc<std::sync::Mutex<Watched>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Watched::default()));
    let (w, out) = (workload.to_owned(), seen.clone());
    let task = tokio::spawn(async move {
        loop {
            let _ = watch_once(&client, &w, &out).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (task, seen)
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One round of watching, until a watch ends: ReplicaSets and the Deployment from their current
/// state (replayed as additions), pods from a list, so the Ready count starts whole.
async fn watch_once(client: &kube::Client, w: &str, out: &std::sync::Mutex<Watched>) -> anyhow::Result<()> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let record = |name: String, n: i32| {
        let mut s = out.lock().expect("watch state");
        let list = s.counts.entry(name).or_default();
        if list.last() != Some(&n) {
            list.push(n);
        }
    };
    let listed = pods.list(&kube::api::ListParams::default().labels(&format!("app={w}"))).await?;
    let mut ready: BTreeMap<String, bool> = listed.items.iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), is_ready(p))).collect();
    let version = listed.metadata.resource_version.unwrap_or_default();
    let mut set_events = sets.watch(&WatchParams::default().labels(&format!("{}={w}", signalbox_substrate_kube::WORKLOAD_LABEL)), "0").await?.boxed();
    let mut deploy_events = deployments.watch(&WatchParams::default().fields(&format!("metadata.name={w}")), "0").await?.boxed();
    let mut pod_events = pods.watch(&WatchParams::default().labels(&format!("app={w}")), &version).await?.boxed();
    loop {
        tokio::select! {
            Some(event) = set_events.next() => match event? {
                WatchEvent::Added(r) | WatchEvent::Modified(r) => record(r.metadata.name.clone().unwrap_or_default(), r.spec.and_then(|s| s.replicas).unwrap_or(0)),
                _ => {}
            },
            Some(event) = deploy_events.next() => match event? {
                WatchEvent::Added(d) | WatchEvent::Modified(d) => record(d.metadata.name.clone().unwrap_or_default(), d.spec.and_then(|s| s.replicas).unwrap_or(0)),
                _ => {}
            },
            Some(event) = pod_events.next() => {
                match event? {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        ready.insert(p.metadata.name.clone().unwrap_or_default(), is_ready(&p));
                    }
                    WatchEvent::Deleted(p) => {
                        ready.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    _ => continue,
                }
                let now = ready.values().filter(|r| **r).count();
                let mut s = out.lock().expect("watch state");
                s.fewest_ready = Some(s.fewest_ready.map_or(now, |f| f.min(now)));
            }
            else => return Ok(()),
        }
    }
}

#[test]
fn a_twenty_replica_deployment_rolls_out_in_four_batches_the_api_showing_each_in_order() {
    run(async {
        let (s, world) = world().await;
        let world = world.lock().await;
        let (_, image1) = publish_image(&s.home, "web", "1.0.0", "registry.local/shop/web").await?;
        let (v2, image2) = publish_image(&s.home, "web", "2.0.0", "registry.local/shop/web").await?;
        world.deployment("web", 20, &image1).await?;
        let (watcher, seen) = watch(world.client.clone(), "web");
        let deploys = s.deploys().await?;
        let id = deploys.start(kube_request("web", v2.clone(), &[5, 10, 15, 20]), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("2.0.0".to_owned(), 20)]));
        world.wait_ready("web", 20, &image2).await?;
        watcher.abort();
        let seen = std::mem::take(&mut *seen.lock().expect("watch state"));

        let set = format!("web-{}", v2.digest.short());
        assert_eq!(seen.counts.get(&set), Some(&vec![5, 10, 15, 20]), "the new build's ReplicaSet, batch by batch: {seen:?}");
        assert_eq!(seen.counts.get("web"), Some(&vec![20, 15, 10, 5, 0]), "the adopted Deployment, batch by batch: {seen:?}");
        assert!(seen.fewest_ready.is_some_and(|n| n >= 20), "never fewer than 20 Ready pods: {seen:?}");
        assert_eq!(world.deployment_replicas("web").await?, 0, "the old build stays, at zero, for an instant rollback");

        let events = world.events(&id).await?;
        let applied: Vec<&str> = events.iter().filter(|(r, _)| r == "BatchApplied").map(|(_, m)| m.split(": ").nth(1).unwrap_or_default()).collect();
        assert_eq!(applied.len(), 4, "{events:#?}");
        for (n, range) in ["0-4", "5-9", "10-14", "15-19"].iter().enumerate() {
            assert!(applied[n].starts_with(&format!("{range} to 2.0.0")), "batch {}: {}", n + 1, applied[n]);
        }
        record_history(&deploys, &id, "kube_rolling_twenty").await
    });
}

#[test]
fn a_build_whose_pods_never_become_ready_is_caught_in_the_first_batch_and_rolled_back() {
    run(async {
        let (s, world) = world().await;
        let world = world.lock().await;
        let (_, good) = publish_image(&s.home, "stuck", "1.0.0", "registry.local/shop/stuck").await?;
        let (bad, _) = publish_image(&s.home, "stuck", NEVER_READY, "registry.local/shop/stuck").await?;
        world.deployment("stuck", 20, &good).await?;
        let (watcher, seen) = watch(world.client.clone(), "stuck");
        let deploys = s.deploys().await?;
        let id = deploys.start(kube_request("stuck", bad.clone(), &[5, 10, 15, 20]), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        assert_eq!(status.current_batch, 1, "caught in the first batch: {status:#?}");
        assert!(status.reason.as_deref().unwrap_or_default().contains("Ready within"), "{:?}", status.reason);
        world.wait_ready("stuck", 20, &good).await?;
        watcher.abort();
        let seen = std::mem::take(&mut *seen.lock().expect("watch state"));
        let set = format!("stuck-{}", bad.digest.short());
        assert_eq!(seen.counts.get(&set), Some(&vec![5, 0]), "no more than the first batch ever ran the build: {seen:?}");
        assert_eq!(seen.counts.get("stuck"), Some(&vec![20]), "the stable Deployment never shrank: {seen:?}");
        assert!(seen.fewest_ready.is_some_and(|n| n >= 20), "never fewer than 20 Ready pods: {seen:?}");
        let reasons: Vec<String> = world.events(&id).await?.into_iter().map(|(r, _)| r).collect();
        assert_eq!(reasons, ["BatchUnhealthy", "RolledBack"]);
        record_history(&deploys, &id, "kube_never_ready_rolled_back").await
    });
}

#[test]
fn halt_leaves_every_replica_count_and_pod_as_it_is_and_abort_rolls_back() {
    run(async {
        let (s, world) = world().await;
        let world = world.lock().await;
        let (_, v1) = publish_image(&s.home, "frozen", "1.0.0", "registry.local/shop/frozen").await?;
        let (next, _) = publish_image(&s.home, "frozen", "2.0.0", "registry.local/shop/frozen").await?;
        world.deployment("frozen", 8, &v1).await?;
        let deploys = s.deploys().await?;
        let mut req = kube_request("frozen", next.clone(), &[2, 4, 8]);
        // Long enough a bake after each batch to halt in.
        req.bake_ms = 60_000;
        let id = deploys.start(req, None).await?.id;
        wait_for("the first batch to bake", Duration::from_secs(60), || async {
            Ok((deploys.status(&id).await?.phase == Phase::Baking).then_some(()))
        })
        .await?;
        let status = deploys.halt(&id, Command::new("alice", "checking a page")).await?;
        assert!(status.halted, "{status:#?}");
        let before = (world.deployment_replicas("frozen").await?, world.replica_sets("frozen").await?, pod_names(&world, "frozen").await?);
        assert_eq!((before.0, before.1.iter().map(|r| r.1).collect::<Vec<_>>()), (6, vec![2]), "halted after the first batch");
        // The bake is cut short by nothing; nothing moves while halted, however long.
        let undisturbed = wait_for("anything to move while halted", Duration::from_secs(3), || async {
            let now = (world.deployment_replicas("frozen").await?, world.replica_sets("frozen").await?, pod_names(&world, "frozen").await?);
            Ok((now != before).then_some(now))
        })
        .await;
        assert!(undisturbed.is_err(), "the workload changed while halted: {undisturbed:?}");
        deploys.abort(&id, Command::new("alice", "the page says no")).await?;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        world.wait_ready("frozen", 8, &v1).await?;
        assert_eq!(world.replica_sets("frozen").await?.iter().map(|r| r.1).collect::<Vec<_>>(), [0]);
        let ledger = world.cluster.kubectl(&["-n", NAMESPACE, "get", "configmap", "signalbox-frozen", "-o", "jsonpath={.data.ledger\\.json}"])?;
        let ledger: serde_json::Value = serde_json::from_str(&ledger)?;
        assert!(ledger.get("halt").is_none(), "the deploy's halt was lifted when it ended: {ledger:#}");
        record_history(&deploys, &id, "kube_halt_abort").await
    });
}

async fn pod_names(world: &World, workload: &str) -> anyhow::Result<Vec<(String, bool)>> {
    let mut pods = world.pods(workload).await?;
    pods.sort();
    Ok(pods)
}

#[test]
fn a_deploy_rides_out_an_api_server_restart_and_a_worker_killed_mid_batch_applying_no_batch_twice() {
    run(async {
        let (s, world) = world().await;
        let mut world = world.lock().await;
        let (_, v1) = publish_image(&s.home, "sturdy", "1.0.0", "registry.local/shop/sturdy").await?;
        let (next, image) = publish_image(&s.home, "sturdy", "2.0.0", "registry.local/shop/sturdy").await?;
        world.deployment("sturdy", 20, &v1).await?;
        let (watcher, seen) = watch(world.client.clone(), "sturdy");
        let deploys = s.deploys().await?;
        let mut req = kube_request("sturdy", next.clone(), &[5, 10, 15, 20]);
        req.bake_ms = 1_500;
        let id = deploys.start(req, None).await?.id;

        wait_for("the first batch to bake", Duration::from_secs(60), || async {
            let st = deploys.status(&id).await?;
            Ok((st.phase == Phase::Baking && st.current_batch == 1).then_some(()))
        })
        .await?;
        world.cluster.stop_apiserver()?;
        // Down until the bake is over and the judgement of the batch reads pods: it meets a
        // refused connection, and goes on once the API server is back.
        wait_for("the first batch to be judged against a stopped API server", Duration::from_secs(60), || async {
            let st = deploys.status(&id).await?;
            Ok((st.phase == Phase::Evaluating).then_some(()))
        })
        .await?;
        world.cluster.start_apiserver_again().await?;

        let mid_batch = wait_for("the third batch to be under way", Duration::from_secs(120), || async {
            let st = deploys.status(&id).await?;
            Ok(match (st.current_batch, st.phase) {
                (3, Phase::Rolling) => Some(true),
                // Batch 3's number is shown before it rolls, while batch 2's phase still shows.
                (3, Phase::Baking) | (4, _) => Some(false),
                _ => None,
            })
        })
        .await?;
        assert!(mid_batch, "the third batch went by before the kill");
        // The stack's own worker is SIGKILLed mid-batch; a new one finishes the deploy (and
        // serves the tests after this one).
        kill_stack_worker(s)?;
        let worker = s.spawn_worker("worker-kube-2.log")?;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        world.wait_ready("sturdy", 20, &image).await?;
        watcher.abort();
        let seen = std::mem::take(&mut *seen.lock().expect("watch state"));
        let set = format!("sturdy-{}", next.digest.short());
        assert_eq!(seen.counts.get(&set), Some(&vec![5, 10, 15, 20]), "each batch once, in order: {seen:?}");
        assert_eq!(seen.counts.get("sturdy"), Some(&vec![20, 15, 10, 5, 0]), "{seen:?}");
        let generations: Vec<i64> = world.replica_sets("sturdy").await?.into_iter().map(|r| r.2).collect();
        assert_eq!(generations, [4], "created, then scaled three times: no batch applied twice");
        let applied = world.events(&id).await?.into_iter().filter(|(r, _)| r == "BatchApplied").count();
        assert_eq!(applied, 4, "one audit event per batch");
        // Killed when the test binary exits, like the stack's own worker.
        std::mem::forget(worker);
        Ok(())
    });
}

/// SIGKILLs the shared stack's worker process by its pid (the stack is shared, not mutable).
fn kill_stack_worker(s: &Stack) -> anyhow::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.worker.pid() as i32), nix::sys::signal::Signal::SIGKILL)?;
    Ok(())
}

#[test]
fn one_release_rolls_a_service_out_to_agent_hosts_and_another_to_a_kubernetes_workload() {
    run(async {
        let (s, world) = world().await;
        let world = world.lock().await;
        let api = GrpcApi::start_with_etcd(s, &world.agents.etcd.url()).await?;
        let dir = tempfile::tempdir()?;
        let (b1, _) = push_bundle(&api, "hello-py", &pack_hello(dir.path(), "1.0.0", 0.0)?, "1.0.0").await?;
        let (b2, _) = push_bundle(&api, "hello-py", &pack_hello(dir.path(), "2.0.0", 0.0)?, "2.0.0").await?;
        let initial = Artifact { digest: b1.parse()?, git_sha: "0a1b2c3d".into(), version: "1.0.0".into() };
        let hosts = AgentFleet::start(&world.agents, &s.options.dir.join("hosts"), "hosts", 4, &initial, 200).await?;
        let (_, shop1) = publish_image(&s.home, "storefront", "1.0.0", "registry.local/shop/storefront").await?;
        let (shop2, image2) = publish_image(&s.home, "storefront", "2.0.0", "registry.local/shop/storefront").await?;
        world.deployment("storefront", 6, &shop1).await?;

        let on_hosts = DeploySettings {
            batch_plan: BatchPlan { steps: vec![BatchStep::Percent(50.0), BatchStep::Percent(100.0)] },
            bake_ms: 500,
            health: HealthPolicy { samples: 4, sample_interval_ms: 1_000, min_requests_per_sample: 10, ..HealthPolicy::default() },
            ..DeploySettings::default()
        };
        let on_kube = DeploySettings {
            batch_plan: BatchPlan { steps: vec![BatchStep::Count(2), BatchStep::Count(6)] },
            health: HealthPolicy { samples: 3, sample_interval_ms: 200, ..HealthPolicy::default() },
            ..DeploySettings::default()
        };
        let target = |name: &str, kind: &str, instances: u32, deploy: DeploySettings, service: &str| StageTarget {
            target: Target { name: name.into(), kind: kind.into() },
            instances,
            deploy,
            services: vec![service.into()],
        };
        let pipeline = Pipeline {
            name: "shop".into(),
            stages: vec![Stage {
                name: "production".into(),
                targets: vec![target("hosts", "agent", 4, on_hosts, "hello-py"), target("storefront", signalbox_substrate_kube::KIND, 6, on_kube, "storefront")],
                max_parallel: 2,
                soak_ms: 0,
                approval: None,
                max_soak_restarts: 3,
                analysis: None,
            }],
            blast_radius_percent: None,
            on_failure: OnFailure::RollBack,
        };
        let services = vec![
            ServiceBuild { service: "hello-py".into(), artifact: Artifact { digest: b2.parse()?, git_sha: "0a1b2c3d".into(), version: "2.0.0".into() }, depends_on: vec![] },
            ServiceBuild { service: "storefront".into(), artifact: shop2, depends_on: vec![] },
        ];
        let releases = s.releases().await?;
        let id = releases.start(ReleaseRequest { pipeline, services, deployer: "ci@signalbox".into(), dry_run: false, control: Default::default() }, None).await?;
        let status = tokio::time::timeout(2 * DEPLOY_DEADLINE, releases.result(&id)).await??;
        assert_eq!(status.phase, ReleasePhase::Succeeded, "{status:#?}");
        let deploys: Vec<(String, String, DeployState)> = status.stages[0].deploys.iter().map(|d| (d.service.clone(), d.target.to_string(), d.state)).collect();
        let want = [("hello-py", "agent/hosts"), ("storefront", "kubernetes/storefront")].map(|(s, t)| (s.to_owned(), t.to_owned(), DeployState::Succeeded));
        assert_eq!(deploys, want, "one deploy per target, each through its own substrate");
        assert_eq!(hosts.answers().await, vec![Some("2.0.0".to_owned()); 4], "every host answers the new build");
        world.wait_ready("storefront", 6, &image2).await?;
        record_history(&s.deploys().await?, &id, "kube_release_with_agents").await?;
        api.stop().await
    });
}

#[test]
fn a_worker_given_a_bad_targets_file_does_not_start_and_names_the_field() {
    run(async {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("kube.toml");
        std::fs::write(&file, "[[target]]\nname = \"web\"\nnamespace = \"Shop\"\nworkload = \"web\"\n")?;
        let out = tokio::process::Command::new(signalbox_devstack::workspace_binary("signalbox-worker")?)
            .arg("--kube-targets")
            .arg(&file)
            .arg("--home")
            .arg(dir.path())
            // Nothing listens here: the file is refused before any connection is tried.
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1")
            .output()
            .await?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the worker started: {said}");
        assert!(said.contains("--kube-targets: ") && said.contains("target[0].namespace: must be a DNS label"), "{said}");
        Ok(())
    });
}
