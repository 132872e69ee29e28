//! A Kubernetes rollout at size: a 200-replica Deployment moved to a new image in 10 batches with
//! zero bake by signalbox, side by side with `kubectl set image` + `kubectl rollout status` of
//! the same image change on another Deployment of the same control plane, whose rolling update
//! is set to the same steps (maxSurge 10%, maxUnavailable 0). Wall time, and the orchestrator's
//! own API calls from the API server's audit log (the platform's controllers do the same pod
//! work on both sides and are not counted).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use signalbox_devstack::kube::KubeOptions;
use signalbox_domain::{BatchPlan, BatchStep, HealthPolicy, Phase, Target};
use signalbox_localstack::kube::{KubeWorld, NAMESPACE, publish_image};
use signalbox_localstack::{Stack, StackOptions, request};

pub(crate) async fn run(dir: PathBuf, replicas: u32, batches: u32) -> anyhow::Result<()> {
    let world = KubeWorld::start(&dir.join("kube"), KubeOptions { nodes: 2, never_ready_versions: vec![] }, &["sbx", "kctl"], 300_000).await?;
    let mut options = StackOptions::in_dir(&dir);
    options.worker_env.push(world.worker_env());
    let s = Stack::start(options).await?;
    let (_, v1) = publish_image(&s.home, "sbx", "1.0.0", "registry.local/bench/web").await?;
    let (next, v2) = publish_image(&s.home, "sbx", "2.0.0", "registry.local/bench/web").await?;
    world.deployment("sbx", replicas, &v1).await?;
    world.deployment("kctl", replicas, &v1).await?;
    let step = replicas.div_ceil(batches);

    let before = world.cluster.api_calls("signalbox")?.1;
    let deploys = s.deploys().await?;
    let mut req = request("sbx", "sbx", next);
    req.target = Target { name: "sbx".into(), kind: "kubernetes".into() };
    req.batch_plan = BatchPlan { steps: (1..=batches).map(|i| BatchStep::Count((i * step).min(replicas))).collect() };
    req.bake_ms = 0;
    req.health = HealthPolicy { samples: 1, consecutive_bad_samples: 1, sample_interval_ms: 50, ..HealthPolicy::default() };
    let started = Instant::now();
    let id = deploys.start(req, None).await?.id;
    let status = deploys.result(&id).await?;
    world.wait_ready("sbx", replicas as usize, &v2).await?;
    let ours = started.elapsed();
    anyhow::ensure!(status.phase == Phase::Succeeded, "the deploy ended {:?}: {:?}", status.phase, status.reason);
    let (our_calls, ours_n) = world.cluster.api_calls("signalbox")?;
    let ours_n = ours_n - before;

    let surge = format!("{{\"spec\":{{\"strategy\":{{\"rollingUpdate\":{{\"maxSurge\":{step},\"maxUnavailable\":0}}}}}}}}");
    world.cluster.kubectl(&["-n", NAMESPACE, "patch", "deployment", "kctl", "-p", &surge])?;
    world.wait_ready("kctl", replicas as usize, &v1).await?;
    let before = world.cluster.api_calls("admin")?.1;
    let started = Instant::now();
    world.cluster.kubectl(&["-n", NAMESPACE, "set", "image", "deployment/kctl", &format!("app={v2}")])?;
    world.cluster.kubectl(&["-n", NAMESPACE, "rollout", "status", "deployment/kctl", "--timeout=10m"])?;
    let theirs = started.elapsed();
    let theirs_n = world.cluster.api_calls("admin")?.1 - before;
    world.wait_ready("kctl", replicas as usize, &v2).await?;

    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!("kubernetes rollout: {replicas} replicas to a new image in {batches} steps of {step}, zero bake, one control plane (kwok nodes)");
    println!("  {:<40} {:>10} {:>14} {:>11} {:>14}", "", "wall", "per batch", "API calls", "calls/batch");
    println!("  {:<40} {:>10} {:>14} {:>11} {:>14.1}", "signalbox (ReplicaSets, judged per batch)", secs(ours), secs(ours / batches), ours_n, ours_n as f64 / f64::from(batches));
    println!("  {:<40} {:>10} {:>14} {:>11} {:>14}", "kubectl set image + rollout status", secs(theirs), secs(theirs / batches), theirs_n, "-");
    println!("  {:<40} {:>10.2}", "ratio signalbox / kubectl (wall)", ours.as_secs_f64() / theirs.as_secs_f64());
    println!("  signalbox's calls by kind: {}", our_calls.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    Ok(())
}
