//! A large rollout: equal batches, zero bake, the health judgement (the gate preset) after every batch. Reports
//! wall time (against the 30-minute goal) and the worker's peak resident memory (VmHWM). With
//! `SIGNALBOX_BENCH_HISTORY=<file>`, writes the deploy's history there.

use std::path::PathBuf;
use std::time::Instant;

use signalbox_domain::Phase;
use signalbox_localstack::{LoadedFleet, Stack, StackOptions, demo_build, publish, request};

fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM for pid {pid}"))?;
    Ok(kib / 1024.0)
}

pub(crate) async fn run(dir: PathBuf, instances: usize, batches: u32) -> anyhow::Result<()> {
    let s = Stack::start(StackOptions::in_dir(&dir)).await?;
    let base = publish(&s.home, demo_build("rollout", "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build("rollout", "1.1.0", 0.002, 5)).await?;
    let t = Instant::now();
    let fleet = LoadedFleet::start(&s.home, "rollout", instances, base, 2 * instances as u32, &dir).await?;
    let provision = t.elapsed();
    let idle_rss = peak_rss_mib(s.worker.pid())?;
    let deploys = s.deploys().await?;
    let mut req = request("rollout", "rollout", next);
    req.batch_plan = crate::equal_batches(batches);
    req.bake_ms = 0;
    req.health.samples = 3;

    let t = Instant::now();
    let id = deploys.start(req, None).await?.id;
    let status = deploys.result(&id).await?;
    let wall = t.elapsed();
    // For a look at where the time went, activity by activity.
    if let Some(path) = std::env::var_os("SIGNALBOX_BENCH_HISTORY") {
        std::fs::write(path, deploys.history_json(&id).await?)?;
    }
    anyhow::ensure!(status.phase == Phase::Succeeded, "deploy ended {:?}: {:?}", status.phase, status.reason);
    let served = fleet.served_versions().await;
    anyhow::ensure!(served.iter().all(|v| v.as_deref() == Some("1.1.0")), "not every instance serves 1.1.0");
    let peak = peak_rss_mib(s.worker.pid())?;
    println!("rollout of a {instances}-instance fleet ({batches} batches, zero bake, health gate of 3 x 1 s windows per batch)");
    println!("  {:<44} {:>10}", "fleet provisioning (not part of the deploy)", format!("{:.1} s", provision.as_secs_f64()));
    println!("  {:<44} {:>10}   goal < 30 min (ratio {:.3} of goal)", "deploy wall time", format!("{:.1} s", wall.as_secs_f64()), wall.as_secs_f64() / 1800.0);
    println!("  {:<44} {:>10}", "worker peak RSS before the deploy (baseline)", format!("{idle_rss:.0} MiB"));
    println!("  {:<44} {:>10}", "worker peak RSS after the deploy", format!("{peak:.0} MiB"));
    Ok(())
}
