//! Both metric sources against real processes: four demo instances under load, two of them
//! moved to a build failing half its requests (as a canary batch would be), scraped directly
//! and by a real Prometheus; their observations judged by the analysis engine.

use std::time::{Duration, SystemTime};

use signalbox_store::Home;
use signalbox_substrate::Substrate;
use signalbox_analysis::detectors::ZScore;
use signalbox_analysis::{Decision, Direction, Evaluator, LowTraffic, Metric, Observation, Policy, Rules, Sample};
use signalbox_devstack::prometheus::{PrometheusServer, ScrapeTarget};
use signalbox_devstack::{free_port, wait_for};
use signalbox_localstack::{LoadedFleet, demo_build, publish};
use signalbox_metrics::{ERROR_RATE, Cohort, Instance, LATENCY_P99_MS, Prometheus, REQUESTS, Scrape, Source, sample, unix_seconds};
use signalbox_tests::{run, scratch};

const SERVICE: &str = "catalog";
const GOOD: &str = "3.0.0";
const BAD: &str = "3.1.0";
/// The PromQL rate window: ten one-second scrapes.
const WINDOW: Duration = Duration::from_secs(10);
/// Baselines: the good build's readings over the last 20 seconds, every 2 seconds.
const BASELINE_SPAN: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(2);

/// Error rate and p99 judged by z-score alone, with noise floors fit for 1-second scrapes of a
/// few hundred requests: this test proves the sources feed the engine, not the detectors.
fn policy() -> Policy {
    let metric = |name: &str, min_stddev: f64, critical: bool| Metric {
        critical,
        zscore: Some(ZScore { min_stddev, ..ZScore::default() }),
        ..Metric::bare(name, Direction::Increase)
    };
    let mut policy = Policy::new(vec![metric(ERROR_RATE, 0.01, true), metric(LATENCY_P99_MS, 10.0, false)]);
    policy.rules = Rules { consecutive_failures: 3, required_passes: 3, ..Rules::default() };
    policy.low_traffic = LowTraffic { min_requests: 10, ..LowTraffic::default() };
    policy
}

fn value(o: &Observation) -> f64 {
    o.value().unwrap_or_else(|| panic!("expected a value, got {o:?}"))
}

#[test]
fn both_sources_see_the_bad_build_and_the_analysis_fails_only_it() {
    run(async {
        let dir = scratch("metrics-sources");
        let home = Home::new(dir.join("home"));
        std::fs::create_dir_all(home.root())?;
        let good = publish(&home, demo_build(SERVICE, GOOD, 0.0, 5)).await?;
        let bad = publish(&home, demo_build(SERVICE, BAD, 0.5, 5)).await?;
        let fleet = LoadedFleet::start(&home, "metrics-sources", 4, good, 200, &dir).await?;
        let specs = fleet.fleet.instances().to_vec();
        for region in ["us-east", "eu-west"] {
            home.region_cache(region)?.copy_from(&home.store()?, &bad.digest).await?;
        }
        let canary: Vec<String> = specs[2..].iter().map(|s| s.id.clone()).collect();
        fleet.fleet.apply("metrics-sources", &canary, &bad, &|_| {}).await?;

        let group = |version: &str, range: std::ops::Range<usize>| Cohort {
            service: SERVICE.into(),
            version: version.into(),
            instances: specs[range].iter().map(|s| Instance { id: s.id.clone(), address: format!("127.0.0.1:{}", s.port) }).collect(),
            ..Cohort::default()
        };
        let (stable, canary) = (group(GOOD, 0..2), group(BAD, 2..4));
        let scrape = Scrape::default();
        scrape.prime(&stable).await;
        scrape.prime(&canary).await;

        let targets: Vec<ScrapeTarget> =
            specs.iter().map(|s| ScrapeTarget { address: format!("127.0.0.1:{}", s.port), instance_id: s.id.clone() }).collect();
        let server = PrometheusServer::start(&dir.join("prometheus"), &targets).await?;
        server.wait_targets_up(&targets, Duration::from_secs(30)).await?;
        let prometheus = Prometheus::demo(server.url(), WINDOW);

        // Until Prometheus has seen both versions under load for long enough to serve a
        // baseline: four readings of the good build's error rate, two seconds apart.
        let names = [ERROR_RATE, LATENCY_P99_MS, REQUESTS];
        let (bad_now, good_now) = wait_for("Prometheus to see both versions under load", Duration::from_secs(60), || async {
            let at = SystemTime::now();
            let (b, g) = (prometheus.read(&names, &canary, at).await, prometheus.read(&names, &stable, at).await);
            let ready = |r: &[Observation]| r.iter().all(|o| o.value().is_some()) && value(&r[2]) >= 100.0;
            let history = prometheus.history(ERROR_RATE, &stable, at - BASELINE_SPAN, at, STEP).await?;
            Ok((ready(&b) && ready(&g) && history.len() >= 4).then_some((b, g)))
        })
        .await?;
        assert!(value(&good_now[0]) <= 0.05, "good build error rate {good_now:?}");

        // The direct scrape's window: everything since it was primed.
        let now = SystemTime::now();
        let direct_bad = scrape.read(&names, &canary, now).await;
        let direct_good = scrape.read(&names, &stable, now).await;
        assert!(value(&direct_bad[2]) >= 50.0 && value(&direct_good[2]) >= 50.0, "{direct_bad:?} {direct_good:?}");
        assert!(value(&direct_bad[0]) >= 0.3, "direct: bad build error rate {direct_bad:?}");
        assert!(value(&direct_good[0]) <= 0.05, "direct: good build error rate {direct_good:?}");
        assert!(value(&bad_now[0]) - value(&good_now[0]) >= 0.25, "prometheus: {bad_now:?} vs {good_now:?}");

        // Instant queries over PromQL, range queries for the baseline.
        let promql = prometheus.render(ERROR_RATE, &canary)?;
        assert!(prometheus.instant(&promql, now).await?.is_some_and(|v| v >= 0.3));
        let since = now - BASELINE_SPAN;
        let policy = policy();
        let mut baselines = Vec::new();
        for metric in &policy.metrics {
            let history = prometheus.history(&metric.name, &stable, since, now, STEP).await?;
            assert!(history.len() >= 4, "{} history of the good build: {history:?}", metric.name);
            assert!(history.windows(2).all(|w| w[0].at < w[1].at));
            baselines.push(signalbox_analysis::Baseline { values: history.iter().map(|p| p.value).collect(), history, ..Default::default() });
        }

        // A metric nobody exposes is missing, not zero; a Prometheus nobody runs is an error.
        let ghost = prometheus.clone().with_query("ghost", r#"sum(rate(signalbox_demo_no_such_total{version="{{version}}"}[10s]))"#)?;
        assert_eq!(ghost.read(&["ghost"], &canary, now).await, [Observation::Missing]);
        let gone = Prometheus::demo(format!("http://127.0.0.1:{}", free_port()?), WINDOW);
        let read = gone.read(&names, &canary, now).await;
        assert!(read.iter().all(|o| matches!(o, Observation::Error { .. })), "{read:?}");

        // Two samples from Prometheus (in the past: it keeps them), then the direct scrape's.
        let direct = |canary: &[Observation], stable: Option<&[Observation]>| Sample {
            at: unix_seconds(now),
            traffic: canary[2].value().map(|v| v as u64),
            stable_traffic: stable.and_then(|s| s[2].value()).map(|v| v as u64),
            canary: canary[..2].to_vec(),
            stable: stable.map(|s| s[..2].to_vec()).unwrap_or_default(),
        };
        let judge = |canary_group: Cohort, stable_group: Option<Cohort>, last: Sample| {
            let (prometheus, policy, baselines) = (&prometheus, &policy, &baselines);
            async move {
                let mut evaluator = Evaluator::new(policy.clone(), baselines)?;
                for back in [4, 2] {
                    let at = now - Duration::from_secs(back);
                    evaluator.push(&sample(prometheus, policy, &canary_group, stable_group.as_ref(), at).await)?;
                }
                evaluator.push(&last)?;
                anyhow::Ok(evaluator.finish())
            }
        };
        let verdict = judge(canary.clone(), Some(stable.clone()), direct(&direct_bad, Some(&direct_good))).await?;
        assert_eq!(verdict.decision, Decision::Fail, "the bad build: {verdict}");
        let verdict = judge(stable.clone(), None, direct(&direct_good, None)).await?;
        assert_eq!(verdict.decision, Decision::Pass, "the good build: {verdict}");
        drop(server);
        Ok(())
    });
}
