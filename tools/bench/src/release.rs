//! Release overhead: what the release workflow adds over its child deploys. A 3-stage,
//! 4-target, 2-service release of zero-bake dry-run deploys, its stages one deploy at a time,
//! against the same 24 deploys started one by one without a parent, interleaved runs; then the
//! wall time of 20 regions x 5 services in waves of 1 / 3 / 16, and, with 10 services, the
//! length of the histories it writes against Temporal's 10,240-event warning.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use signalbox_client::{Deploys, Releases};
use signalbox_domain::{
    Artifact, BatchPlan, BatchStep, DeploySettings, OnFailure, Phase, Pipeline, ReleasePhase, ReleaseRequest, ServiceBuild, Stage, StageTarget, Target,
};
use signalbox_localstack::{LoadedFleet, Stack, StackOptions, demo_build, publish};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Zero bake, one batch, a rehearsal: every activity of a deploy runs, nothing is sampled.
fn settings() -> DeploySettings {
    DeploySettings { batch_plan: BatchPlan { steps: vec![BatchStep::Percent(100.0)] }, bake_ms: 0, ..DeploySettings::default() }
}

/// `stages` of `(name, targets)`, each stage running `max_parallel(targets)` deploys at once.
fn pipeline(name: &str, stages: &[(&str, Vec<String>)], max_parallel: impl Fn(usize) -> u32) -> Pipeline {
    let stages = stages
        .iter()
        .map(|(stage, targets)| Stage {
            name: (*stage).into(),
            targets: targets.iter().map(|t| StageTarget { target: Target::local(t.as_str()), instances: 2, deploy: settings(), services: vec![] }).collect(),
            max_parallel: max_parallel(targets.len()),
            soak_ms: 0,
            approval: None,
            max_soak_restarts: 3,
            analysis: None,
        })
        .collect();
    Pipeline { name: name.into(), stages, blast_radius_percent: None, on_failure: OnFailure::Keep }
}

async fn fleets(s: &Stack, names: &[String], base: &Artifact, dir: &Path) -> anyhow::Result<Vec<LoadedFleet>> {
    let mut fleets = Vec::new();
    for name in names {
        fleets.push(LoadedFleet::start(&s.home, name, 2, base.clone(), 1, dir).await?);
    }
    Ok(fleets)
}

/// Events in the history of workflow `id`.
async fn events(deploys: &Deploys, id: &str) -> anyhow::Result<usize> {
    let history: serde_json::Value = serde_json::from_str(&deploys.history_json(id).await?)?;
    Ok(history["events"].as_array().map_or(0, Vec::len))
}

async fn release(releases: &Releases, req: ReleaseRequest, request_id: String) -> anyhow::Result<(String, Duration)> {
    let t = Instant::now();
    let id = releases.start(req, Some(request_id)).await?;
    let status = releases.result(&id).await?;
    anyhow::ensure!(status.phase == ReleasePhase::Succeeded, "release {id} ended {:?}: {:?}", status.phase, status.reason);
    Ok((id, t.elapsed()))
}

pub(crate) async fn run(dir: PathBuf, runs: u32) -> anyhow::Result<()> {
    let s = Stack::start(StackOptions::in_dir(&dir)).await?;
    let (deploys, releases) = (s.deploys().await?, s.releases().await?);
    let services = ["front", "back"];
    let base = publish(&s.home, demo_build("front", "1.0.0", 0.0, 1)).await?;
    let mut builds = Vec::new();
    for service in services {
        builds.push(ServiceBuild { service: service.into(), artifact: publish(&s.home, demo_build(service, "1.1.0", 0.0, 1)).await?, depends_on: vec![] });
    }
    let stages: Vec<(&str, Vec<String>)> = ["test", "staging", "production"].iter().map(|st| (*st, (0..4).map(|t| format!("{st}-{t}")).collect())).collect();
    let names: Vec<String> = stages.iter().flat_map(|(_, t)| t.clone()).collect();
    let _fleets = fleets(&s, &names, &base, &dir).await?;
    let one_by_one = pipeline("overhead", &stages, |_| 1);
    let req = |pipeline: Pipeline| ReleaseRequest { pipeline, services: builds.clone(), deployer: "bench".into(), dry_run: true, control: Default::default() };

    let (mut released, mut solo) = (Vec::new(), Vec::new());
    for i in 0..runs + 1 {
        let (_, took) = release(&releases, req(one_by_one.clone()), format!("bench-{i}")).await?;
        // The same deploys in the release's order (its stages, each target's services), alone.
        let t = Instant::now();
        for stage in &one_by_one.stages {
            for target in &stage.targets {
                for build in &builds {
                    let deploy = target.deploy.request(&build.service, &build.artifact, &target.target, "bench", true);
                    let id = deploys.start(deploy, Some(format!("solo-{i}"))).await?.id;
                    let status = deploys.result(&id).await?;
                    anyhow::ensure!(status.phase == Phase::Succeeded, "deploy {id} ended {:?}", status.phase);
                }
            }
        }
        // The first pair warms caches and connections; it is not counted.
        if i > 0 {
            released.push(took);
            solo.push(t.elapsed());
        }
    }
    let parallel = pipeline("overhead", &stages, |targets| (targets * services.len()) as u32);
    let (_, in_parallel) = release(&releases, req(parallel), "bench-parallel".into()).await?;
    let (r, b) = (median(released), median(solo));
    println!("release overhead (3 stages x 4 targets x 2 services = 24 dry-run deploys, zero bake, median of {runs} runs)");
    println!("  {:<52} {:>10}", "the 24 deploys one by one, no parent (baseline)", format!("{:.2} s", b.as_secs_f64()));
    println!("  {:<52} {:>10}", "release, its stages one deploy at a time", format!("{:.2} s", r.as_secs_f64()));
    println!("  {:<52} {:>10}", "ratio release / deploys alone", format!("{:.2}", r.as_secs_f64() / b.as_secs_f64()));
    println!("  {:<52} {:>10}", "release, each stage's 8 deploys at once", format!("{:.2} s", in_parallel.as_secs_f64()));

    // 20 regions x 5 services (the wall time), then x 10 (the histories' bound): a canary
    // region, one region per continent, then the rest.
    let regions: Vec<String> = (0..20).map(|r| format!("region-{r:02}")).collect();
    let t = Instant::now();
    let _regions = fleets(&s, &regions, &base, &dir).await?;
    let provisioning = t.elapsed();
    let waves: Vec<(&str, Vec<String>)> = vec![("canary", regions[..1].to_vec()), ("continents", regions[1..4].to_vec()), ("rest", regions[4..].to_vec())];
    for count in [5, 10] {
        let mut wide = Vec::new();
        for k in 0..count {
            let service = format!("svc-{k}");
            wide.push(ServiceBuild { artifact: publish(&s.home, demo_build(&service, &format!("2.0.{count}"), 0.0, 1)).await?, service, depends_on: vec![] });
        }
        let pipeline = pipeline("regions", &waves, |targets| (targets * count) as u32);
        let req = ReleaseRequest { pipeline, services: wide, deployer: "bench".into(), dry_run: true, control: Default::default() };
        let (id, took) = release(&releases, req, format!("bench-regions-{count}")).await?;
        let status = releases.status(&id).await?;
        let mut longest_child = 0;
        for d in status.stages.iter().flat_map(|st| &st.deploys) {
            longest_child = longest_child.max(events(&deploys, &d.deploy_id).await?);
        }
        let children = status.stages.iter().map(|st| st.deploys.len()).sum::<usize>();
        println!("release of 20 regions x {count} services in waves of 1 / 3 / 16 ({children} dry-run deploys, each wave's at once)");
        if count == 5 {
            println!("  {:<52} {:>10}", "fleet provisioning (not part of the release)", format!("{:.1} s", provisioning.as_secs_f64()));
        }
        println!("  {:<52} {:>10}", "release wall time", format!("{:.2} s", took.as_secs_f64()));
        println!("  {:<52} {:>10}   Temporal warns at 10240", "release history, events", events(&deploys, &id).await?);
        println!("  {:<52} {:>10}", "longest child deploy history, events", longest_child);
    }
    Ok(())
}
