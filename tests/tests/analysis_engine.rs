//! Deploys that opt in to the full analysis engine (`DeployRequest::analysis`): each batch is
//! judged by `health.analyze` on a real dev server, the worker as a process, 10 real instances
//! under real load.

use std::collections::BTreeMap;

use signalbox_analysis::{Decision, Policy};
use signalbox_domain::Phase;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish, request};
use signalbox_tests::{record_history, run, stack};

/// The engine's default policy (z-score and Mann-Whitney on both metrics) over the demo's
/// error rate and p99, sized for one-second windows of a 10-instance fleet at 400 rps:
///
/// - `required_passes: 3`: `health.analyze` takes at most `max(samples, required_passes) + 2`
///   = 6 windows a batch (the request's gate samples 4), and up to two of them are pending while
///   the detectors warm up, so a healthy batch reaches its third pass in time.
/// - `low_traffic.min_requests: 10`: the first batch is one instance serving ~40 requests a
///   window, below the default 100.
/// - noise floors (`zscore.min_stddev`): a one-instance canary moves its error rate in steps of
///   2.5% (1 error in 40) and its p99 between histogram buckets; without them a baseline of a few
///   near-identical stable readings fails on noise. A static `max` of 5% errors fails a broken
///   build from its first window; p99's comparison tolerates a 50% rise, as a p99 over 40
///   requests sits systematically above one over 360.
fn policy() -> Policy {
    serde_json::from_value(serde_json::json!({
        "metrics": [
            {"name": "error_rate", "critical": true, "thresholds": {"max": 0.05}, "zscore": {"min_stddev": 0.01}},
            {"name": "p99_ms", "critical": true, "zscore": {"min_stddev": 10.0}, "comparison": {"allowed_increase": 1.5}}
        ],
        "rules": {"required_passes": 3},
        "low_traffic": {"min_requests": 10}
    }))
    .expect("a valid policy")
}

#[test]
fn a_good_build_passes_every_batch_analysis() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("search", "3.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("search", "3.1.0", 0.002, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "engine-good", 10, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let mut req = request("search", "engine-good", next);
        req.analysis = Some(policy());

        let id = deploys.start(req).await?;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;

        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("3.1.0".to_owned(), 10)]));
        let analysis = status.last_analysis.as_ref().expect("the engine judged the batches");
        assert_eq!(analysis.decision, Decision::Pass, "{analysis:#?}");
        assert!(analysis.summary.starts_with("Pass (RequiredPasses)"), "{}", analysis.summary);
        assert!(status.last_verdict.is_none(), "the first-version gate did not run");
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("3.1.0")), "instances answer {served:?}");
        record_history(&deploys, &id, "analysis_engine_good").await
    });
}

#[test]
fn a_build_failing_thirty_percent_is_rolled_back_in_batch_one() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ledger", "4.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("ledger", "4.1.0", 0.30, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "engine-bad", 10, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let mut req = request("ledger", "engine-bad", bad);
        req.analysis = Some(policy());

        let id = deploys.start(req).await?;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;

        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        assert_eq!(status.current_batch, 1, "{status:#?}");
        let analysis = status.last_analysis.as_ref().expect("the engine judged batch 1");
        assert_eq!(analysis.decision, Decision::Fail, "{analysis:#?}");
        let error_rate = analysis.metrics.iter().find(|m| m.starts_with("error_rate:")).expect("error_rate explained");
        assert!(error_rate.starts_with("error_rate: High"), "{error_rate}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("batch 1: analysis failed: Fail"), "reason: {reason}");
        assert!(reason.contains("error_rate: High"), "reason: {reason}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("4.0.0".to_owned(), 10)]));
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("4.0.0")), "instances answer {served:?}");
        record_history(&deploys, &id, "analysis_engine_bad").await
    });
}
