//! Rollback speed: a bad build reaches every instance of the fleet in one batch, the health gate
//! fails it, and the clock runs from the decision (the status turning `RollingBack`) until every
//! instance, asked over HTTP, serves the previous build again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use signalbox_domain::{BatchPlan, BatchStep, Phase};
use signalbox_localstack::{LoadedFleet, Stack, StackOptions, demo_build, publish, request};

pub(crate) async fn run(dir: PathBuf, instances: usize) -> anyhow::Result<()> {
    let s = Stack::start(StackOptions::in_dir(&dir)).await?;
    let base = publish(&s.home, demo_build("rollback", "1.0.0", 0.002, 5)).await?;
    let bad = publish(&s.home, demo_build("rollback", "1.1.0", 0.30, 5)).await?;
    let fleet = LoadedFleet::start(&s.home, "rollback", instances, base, 10 * instances as u32, &dir).await?;
    let deploys = s.deploys().await?;
    let mut req = request("rollback", "rollback", bad);
    req.batch_plan = BatchPlan { steps: vec![BatchStep::Percent(100.0)] };
    req.bake_ms = 0;
    let id = deploys.start(req, None).await?.id;

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let decided = loop {
        tick.tick().await;
        if deploys.status(&id).await?.phase == Phase::RollingBack {
            break Instant::now();
        }
    };
    let all_back = loop {
        tick.tick().await;
        if fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")) {
            break decided.elapsed();
        }
    };
    let status = deploys.result(&id).await?;
    anyhow::ensure!(status.phase == Phase::RolledBack, "deploy ended {:?}", status.phase);
    println!("rollback of a {instances}-instance fleet (decision -> every instance serving the previous build over HTTP)");
    println!("  {:<44} {:>10}   goal < 10 s (ratio {:.2} of goal)", "measured", format!("{:.2} s", all_back.as_secs_f64()), all_back.as_secs_f64() / 10.0);
    Ok(())
}
