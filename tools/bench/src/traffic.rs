//! Traffic strategies on a real HAProxy, measured from HAProxy's own counters and from client
//! requests through its frontend.
//!
//! - Canary: per step, the share of requests HAProxy sent to the canaries against the share the
//!   step configures, with round-robin and random balancing side by side.
//! - Blue/green flip back: from the decision (the `rollback` update sent while blue is kept)
//!   until every request through HAProxy is served by blue, against the 1 s goal and against
//!   green's own rollback to the old build (instance restarts) in the same run; and that once
//!   HAProxy reports green at weight 0, it sends green nothing more.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use signalbox_client::Deploys;
use signalbox_devstack::haproxy::Balance;
use signalbox_devstack::wait_for;
use signalbox_domain::traffic::{plan_canary, share_percent};
use signalbox_domain::{Command, Phase, Strategy};
use signalbox_localstack::traffic::{BalancedFleet, BalancedOptions, ObservedStep, bluegreen_request, canary_request, observe_canary};
use signalbox_localstack::{DEPLOY_DEADLINE, Stack, StackOptions, demo_build, publish};

pub(crate) async fn run(dir: PathBuf, instances: usize, rps: u32) -> anyhow::Result<()> {
    let s = Stack::start(StackOptions::in_dir(&dir)).await?;
    let traffic = s.deploys().await?;
    let round_robin = canary(&s, &traffic, &dir, instances, rps, Balance::RoundRobin).await?;
    let random = canary(&s, &traffic, &dir, instances, rps, Balance::Random).await?;
    println!("canary on HAProxy: {instances} instances, 2 canaries, {rps} rps through the frontend; shares from HAProxy's per-server session counters");
    println!("  {:>4} {:>11} {:>16} {:>9} {:>14} {:>9} {:>14}", "step", "configured", "weights c/b", "requests", "roundrobin", "requests", "random");
    for (a, b) in round_robin.iter().zip(&random) {
        let canary_weight = a.weights.get("i-0000").copied().unwrap_or_default();
        let baseline_weight = a.weights.get(&format!("i-{:04}", instances - 1)).copied().unwrap_or_default();
        println!(
            "  {:>4} {:>9.2} % {:>16} {:>9} {:>8.2} % x{:.2} {:>9} {:>8.2} % x{:.2}",
            a.step,
            a.configured_percent,
            format!("{canary_weight}/{baseline_weight}"),
            a.requests,
            a.measured_percent(),
            a.measured_percent() / a.configured_percent,
            b.requests,
            b.measured_percent(),
            b.measured_percent() / b.configured_percent,
        );
    }
    flip_back(&s, &traffic, &dir, rps).await
}

/// One good canary on its own fleet; the steps as HAProxy counted them.
async fn canary(s: &Stack, traffic: &Deploys, dir: &Path, instances: usize, rps: u32, balance: Balance) -> anyhow::Result<Vec<ObservedStep>> {
    let name = match balance {
        Balance::RoundRobin => "canary-rr",
        Balance::Random => "canary-random",
    };
    let base = publish(&s.home, demo_build(name, "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build(name, "1.1.0", 0.002, 5)).await?;
    let fleet = BalancedFleet::start(&s.home, BalancedOptions { rps, balance, ..BalancedOptions::new(name, name, instances) }, base, dir).await?;
    let canary = fleet.ids()[..2].to_vec();
    let req = canary_request(name, &fleet, next, canary.clone());
    let Strategy::Canary(spec) = &req.strategy else { anyhow::bail!("not a canary") };
    let plan = plan_canary("strategy", &fleet.stats().await?.weights(), &canary, &spec.steps)?;
    let id = traffic.start(req, None).await?.id;
    let (seen, status) = observe_canary(traffic, &id, &fleet, &plan, DEPLOY_DEADLINE).await?;
    anyhow::ensure!(status.phase == Phase::Succeeded, "canary ended {:?}: {:?}", status.phase, status.reason);
    anyhow::ensure!(seen.steps.len() == plan.steps.len(), "HAProxy was seen in {} of {} steps", seen.steps.len(), plan.steps.len());
    for step in &seen.steps {
        anyhow::ensure!((share_percent(&step.weights, &canary) - step.configured_percent).abs() < 0.01, "HAProxy's weights at step {} are not the plan's", step.step);
    }
    Ok(seen.steps)
}

/// Blue/green to the flip, then a flip back while a client keeps requesting through HAProxy.
async fn flip_back(s: &Stack, traffic: &Deploys, dir: &Path, rps: u32) -> anyhow::Result<()> {
    let base = publish(&s.home, demo_build("flip", "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build("flip", "1.1.0", 0.002, 5)).await?;
    let fleet = BalancedFleet::start(&s.home, BalancedOptions { rps, idle: 3, ..BalancedOptions::new("flip", "flip", 6) }, base, dir).await?;
    let id = traffic.start(bluegreen_request("flip", &fleet, next, 600_000), None).await?.id;
    let flipped = wait_for("the flip", DEPLOY_DEADLINE, || async {
        let st = traffic.status(&id).await?;
        anyhow::ensure!(st.phase != Phase::RolledBack && st.phase != Phase::Failed, "ended before the flip: {:?}", st.reason);
        // Flipped: the rollout succeeded and blue is kept while the rollback window is open.
        Ok((st.phase == Phase::Succeeded && st.rollback_window_until.is_some()).then_some(st))
    })
    .await?;
    let green = flipped.traffic.clone().map(|t| t.new_set).unwrap_or_default();
    let served = fleet.served_through(50).await?;
    anyhow::ensure!(served.keys().all(|v| v == "1.1.0"), "after the flip HAProxy served {served:?}");
    let green_sessions = |stats: &signalbox_domain::traffic::LbStats| -> u64 {
        stats.servers.iter().filter(|sv| green.contains(&sv.name)).map(|sv| sv.sessions).sum()
    };

    // One client asks through HAProxy back to back, recording when each request was sent and
    // which version answered; the decision is sent from the same task, so both share a clock.
    let answers: RefCell<Vec<(Instant, String)>> = RefCell::new(Vec::new());
    let stop = Cell::new(false);
    let (count_tx, count_rx) = tokio::sync::watch::channel(0usize);
    let answered = |n: usize| {
        let mut rx = count_rx.clone();
        async move {
            let _ = rx.wait_for(|&c| c >= n).await;
        }
    };
    let probe = async {
        while !stop.get() {
            let sent = Instant::now();
            let version = match fleet.haproxy.get("/").await {
                Ok((_, body)) => serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["version"].as_str().map(str::to_owned)),
                Err(_) => None,
            };
            answers.borrow_mut().push((sent, version.unwrap_or_else(|| "unanswered".into())));
            count_tx.send_replace(answers.borrow().len());
        }
    };
    let decide = async {
        // Let the client see green first.
        answered(20).await;
        let decided = Instant::now();
        let status = traffic.rollback(&id, Command::new("bench", "benchmark: flip back")).await;
        let returned = decided.elapsed();
        // The update answers once the rollback is accepted; the flip back (the weights' undo, the
        // first compensation) follows: wait until HAProxy itself reports blue serving alone.
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        let after_return = loop {
            ticks.tick().await;
            match fleet.stats().await {
                Ok(stats) if stats.servers.iter().all(|sv| !green.contains(&sv.name) || sv.weight == 0) => break Ok(stats),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        // Keep asking a while after the flip back, so a straggler would be seen.
        let seen = answers.borrow().len();
        answered(seen + 200).await;
        stop.set(true);
        (decided, returned, status, after_return)
    };
    let ((), (decided, returned, status, after_return)) = tokio::join!(probe, decide);
    status?;
    let green_at_return = green_sessions(&after_return?);
    let answers = answers.into_inner();
    let last_green = answers.iter().rposition(|(_, v)| v != "1.0.0");
    let all_blue_from = match last_green {
        Some(i) => answers.get(i + 1).map(|a| a.0),
        None => answers.iter().find(|a| a.0 >= decided).map(|a| a.0),
    };
    let Some(all_blue_from) = all_blue_from else { anyhow::bail!("the client never saw blue serve everything") };
    let to_blue = all_blue_from.saturating_duration_since(decided);
    let straggling = green_sessions(&fleet.stats().await?) - green_at_return;

    let result = traffic.result(&id).await?;
    let rolled_back = decided.elapsed();
    anyhow::ensure!(result.phase == Phase::RolledBack, "blue/green ended {:?}", result.phase);
    let requests = answers.iter().filter(|a| a.0 >= decided).count();
    println!("blue/green flip back on HAProxy: 3 blue + 3 green instances, {rps} rps of load plus one client asking back to back ({requests} requests after the decision)");
    let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    println!("  {:<58} {:>9}   goal < 1 s (ratio {:.3} of goal)", "decision -> every client request served by blue", secs(to_blue), to_blue.as_secs_f64());
    println!("  {:<58} {:>9}", "decision -> rollback update accepted", secs(returned));
    println!("  {:<58} {:>9}", "requests HAProxy sent to green once its weights were 0", straggling);
    println!(
        "  {:<58} {:>9}   (x{:.0} the flip back)",
        "baseline: decision -> green back on the old build (restarts)",
        secs(rolled_back),
        rolled_back.as_secs_f64() / to_blue.as_secs_f64().max(1e-3)
    );
    Ok(())
}
