//! Orchestration overhead: the deploy workflow's own cost over the bare cost of as many
//! activity round trips. The deploy is a dry run (every activity runs, no instance is touched
//! and nothing is sampled), so what differs between the two sides is the workflow's logic,
//! state, summaries and payloads, not the work on the fleet.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use signalbox_contract::bench::NoopChainRun;
use signalbox_localstack::{LoadedFleet, Stack, StackOptions, demo_build, publish, request};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) async fn run(dir: PathBuf, batches: u32, runs: u32) -> anyhow::Result<()> {
    let s = Stack::start(StackOptions::in_dir(&dir)).await?;
    let base = publish(&s.home, demo_build("overhead", "1.0.0", 0.0, 1)).await?;
    let _fleet = LoadedFleet::start(&s.home, "overhead", batches as usize, base, 1, &dir).await?;
    let deploys = s.deploys().await?;
    // preflight + push + baseline, then advance + analyze per batch (a dry run takes no lane).
    let activities = 3 + 2 * batches;
    let (mut deploy_times, mut bare_times) = (Vec::new(), Vec::new());
    for i in 0..runs + 1 {
        let next = publish(&s.home, demo_build("overhead", &format!("1.0.{}", i + 1), 0.0, 1)).await?;
        let mut req = request(&format!("overhead-{i}"), "overhead", next);
        req.batch_plan = crate::equal_batches(batches);
        req.bake_ms = 0;
        req.dry_run = true;
        let t = Instant::now();
        let id = deploys.start(req, None).await?.id;
        let status = deploys.result(&id).await?;
        anyhow::ensure!(status.phase == signalbox_domain::Phase::Succeeded, "deploy {id} ended {:?}", status.phase);
        let deploy = t.elapsed();

        let t = Instant::now();
        let opts = WorkflowStartOptions::new(s.options.task_queue.clone(), format!("bench-noop-{i}")).build();
        let handle = deploys.client().start_workflow(NoopChainRun, activities, opts).await?;
        let ran = handle.get_result(WorkflowGetResultOptions::default()).await?;
        anyhow::ensure!(ran == activities, "the bare workflow ran {ran} activities");
        let bare = t.elapsed();
        // The first pair warms caches and connections; it is not counted.
        if i > 0 {
            deploy_times.push(deploy);
            bare_times.push(bare);
        }
    }
    let (d, b) = (median(deploy_times), median(bare_times));
    println!("orchestration overhead ({batches} batches, zero bake, {activities} activities per run, median of {runs} runs)");
    println!("  {:<44} {:>10}", "bare workflow, no-op activities (baseline)", format!("{:.0} ms", b.as_secs_f64() * 1e3));
    println!("  {:<44} {:>10}", "deploy workflow, dry run", format!("{:.0} ms", d.as_secs_f64() * 1e3));
    println!("  {:<44} {:>10}   goal <= 1.20", "ratio deploy / bare", format!("{:.2}", d.as_secs_f64() / b.as_secs_f64()));
    Ok(())
}
