//! Agent hosts at scale, each running the demo service as a bundle (its binary, its build and
//! filler to the build size): a rollout of every host at once (zero bake) timed from the first
//! desired-state write to the last host ready, and its rollback timed from the decision to
//! every host serving the old build, side by side with the local process fleet doing the same
//! with the same build; bytes the origin served against bytes the regional caches served; the
//! agents' memory.

use std::path::PathBuf;
use std::time::Instant;

use signalbox_domain::Artifact;
use signalbox_localstack::agents::{AgentFleet, AgentWorld, demo_bundle};
use signalbox_store::{Home, Record};
use signalbox_substrate::Substrate;
use signalbox_substrate_local::LocalFleet;

const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "eu-north", "ap-south"];

/// Bytes the access log says were sent, over every line of it.
fn bytes_sent(log: &[String]) -> u64 {
    // `$remote_addr $region "$request" $status $bytes $cache`: the bytes are the field before last.
    log.iter().filter_map(|l| l.rsplit(' ').nth(1).and_then(|b| b.parse::<u64>().ok())).sum()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) async fn run(dir: PathBuf, hosts: usize, build_mb: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let home = Home::new(dir.join("home"));
    let store = home.store()?;
    let push = |version: &str| {
        let store = store.clone();
        let version = version.to_owned();
        async move {
            // The demo service, which starts in milliseconds: the figures are the hosts' machinery.
            let bytes = demo_bundle("bench", &version, (build_mb * 1024 * 1024).saturating_sub(11 << 20), 180_000)?;
            let (digest, record, _) = store.push(bytes, Record::new("bench", version.clone(), "0a1b2c3d")).await?;
            anyhow::Ok((Artifact { digest, git_sha: record.git_sha, version }, record.size))
        }
    };
    let (v1, _) = push("1.0.0").await?;
    let (v2, size) = push("2.0.0").await?;
    let ids: Vec<String> = (0..hosts).map(|i| format!("h-{i:03}")).collect();

    // Agent hosts: one network namespace, one agent and one service each.
    let world = AgentWorld::start(&dir.join("world"), &home, &REGIONS).await?;
    let provisioned = Instant::now();
    let fleet = AgentFleet::start(&world, &dir.join("agents"), "bench", hosts, &v1, 0).await?;
    let provisioning = provisioned.elapsed();
    let origin_before = bytes_sent(&world.origin.access_log()?);
    let caches_before: u64 = world.caches.values().map(|c| c.access_log().map(|l| bytes_sent(&l))).sum::<anyhow::Result<u64>>()?;
    let started = Instant::now();
    let changes = fleet.substrate.apply("bench-rollout", &ids, &v2, &|_| {}).await?;
    let agent_rollout = started.elapsed();
    let origin_bytes = bytes_sent(&world.origin.access_log()?) - origin_before;
    let cache_bytes = world.caches.values().map(|c| c.access_log().map(|l| bytes_sent(&l))).sum::<anyhow::Result<u64>>()? - caches_before;
    let rss: Vec<u64> = fleet.agent_pids().into_iter().filter_map(rss_kib).collect();
    // 200 hosts share this machine's one disk: the rollout left gigabytes of unpacked
    // releases waiting to be written back, which each real host writes to its own disk in
    // well under a second. Flushed first, so the rollback is timed on the hosts' machinery,
    // not on this disk's write-back queue; the flush is printed too.
    let flushing = Instant::now();
    std::process::Command::new("sync").status()?;
    let flush = flushing.elapsed();
    let decided = Instant::now();
    fleet.substrate.rollback("bench-rollout", &changes, &|_| {}).await?;
    let answers = fleet.answers_on("/ready").await;
    let agent_rollback = decided.elapsed();
    anyhow::ensure!(answers.iter().all(|a| a.as_deref() == Some("1.0.0")), "after the rollback every host answers 1.0.0: {answers:?}");
    drop(fleet);
    drop(world);
    // Each host kept both releases: free that disk before the other side unpacks its own.
    std::fs::remove_dir_all(dir.join("agents"))?;

    // The same rollout on the local process fleet, from the same store.
    let binary = signalbox_devstack::workspace_binary("signalbox-demo-service")?;
    let local = LocalFleet::provision(&home, "bench-local", hosts, &REGIONS, binary, &v1.digest).await?;
    for region in REGIONS {
        home.region_cache(region)?.copy_from(&store, &v2.digest).await?;
    }
    let started = Instant::now();
    let changes = local.apply("bench-local", &ids_of(&local), &v2, &|_| {}).await?;
    let local_rollout = started.elapsed();
    let decided = Instant::now();
    local.rollback("bench-local", &changes, &|_| {}).await?;
    let local_rollback = decided.elapsed();
    local.shutdown().await;
    std::fs::remove_dir_all(home.fleet_dir("bench-local"))?;

    let secs = |d: std::time::Duration| format!("{:.1} s", d.as_secs_f64());
    println!("agent hosts: {hosts} hosts (network namespaces) over {} regions, a {} build, every host in one batch, zero bake", REGIONS.len(), mib(size));
    println!("  {:<58} {:>10}", "provisioning (not part of the rollout)", secs(provisioning));
    println!("  {:<58} {:>10}   local process fleet {:>8}   ratio {:.2}", "rollout: first desired write -> last host ready", secs(agent_rollout), secs(local_rollout), agent_rollout.as_secs_f64() / local_rollout.as_secs_f64());
    println!("  {:<58} {:>10}   local process fleet {:>8}   goal < 5 s", "rollback: decision -> every host serving the old build", secs(agent_rollback), secs(local_rollback));
    println!("  {:<58} {:>10}", "  (before it: flushing the rollout's writes to this one disk)", secs(flush));
    println!("  {:<58} {:>10}   caches served {:>10}   ({:.1} builds from the origin, {:.1} from the caches)", "bytes the origin served", mib(origin_bytes), mib(cache_bytes), origin_bytes as f64 / size as f64, cache_bytes as f64 / size as f64);
    let (max, mean) = (rss.iter().max().copied().unwrap_or(0), rss.iter().sum::<u64>() / rss.len().max(1) as u64);
    println!("  {:<58} {:>10}   max {:>6}", "agent RSS after the rollout, mean", format!("{:.1} MiB", mean as f64 / 1024.0), format!("{:.1} MiB", max as f64 / 1024.0));
    Ok(())
}

fn ids_of(fleet: &LocalFleet) -> Vec<String> {
    fleet.instances().iter().map(|i| i.id.clone()).collect()
}
