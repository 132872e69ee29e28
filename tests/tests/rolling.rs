//! Rolling deploys end to end: a real dev server, the worker as a process, 20 real instances
//! under real load.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use signalbox_contract::deploy::DeployRun;
use signalbox_devstack::wait_for;
use signalbox_domain::analysis::{Decision, Rule};
use signalbox_domain::{BatchPlan, BatchStep, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish, request};
use signalbox_tests::{record_history, run, stack};
use temporalio_client::WorkflowCancelOptions;

#[test]
fn a_good_artifact_reaches_all_twenty_instances() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("checkout", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("checkout", "1.1.0", 0.002, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "good", 20, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;

        let id = deploys.start(request("checkout", "good", next), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;

        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("1.1.0".to_owned(), 20)]));
        assert_eq!((status.current_batch, status.total_batches), (4, 4));
        // The engine judged every batch, under the first-version gate's preset.
        let analysis = status.last_analysis.as_ref().expect("the engine's verdict");
        assert_eq!((analysis.decision, analysis.rule), (Decision::Pass, Some(Rule::RequiredPasses)), "{analysis:#?}");
        assert!(status.last_verdict.is_none(), "no separate gate judged");
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("1.1.0")), "instances answer {served:?}");
        record_history(&deploys, &id, "rolling_good").await
    });
}

#[test]
fn a_bad_artifact_is_caught_in_the_first_batch_and_rolled_back() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("payments", "2.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("payments", "2.1.0", 0.30, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "bad", 20, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;

        let id = deploys.start(request("payments", "bad", bad.clone()), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;

        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("batch 1: analysis failed: Fail (ConsecutiveFailures)"), "reason: {reason}");
        assert!(reason.contains("error_rate: High"), "the error rate decided: {reason}");
        assert_eq!(status.last_analysis.as_ref().map(|a| a.decision), Some(Decision::Fail));
        // Who ever ran the bad build: every restart onto it is in the fleet's operation log.
        let ran_bad: BTreeSet<String> =
            fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest == bad.digest).map(|e| e.instance).collect();
        assert!(!ran_bad.is_empty() && ran_bad.len() * 10 <= 20, "{} of 20 instances ran the bad build", ran_bad.len());
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("2.0.0")), "instances answer {served:?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("2.0.0".to_owned(), 20)]));
        record_history(&deploys, &id, "rolling_bad").await
    });
}

#[test]
fn an_aborted_deploy_still_rolls_back() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("inventory", "5.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("inventory", "5.1.0", 0.002, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "abort", 20, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let mut req = request("inventory", "abort", next);
        req.bake_ms = 120_000;
        req.batch_plan = BatchPlan { steps: vec![BatchStep::Percent(25.0), BatchStep::Percent(100.0)] };
        let id = deploys.start(req, None).await?.id;

        let baking = wait_for("the first batch to bake", Duration::from_secs(60), || async {
            let st = deploys.status(&id).await?;
            Ok((st.phase == Phase::Baking).then_some(st))
        })
        .await?;
        assert_eq!(baking.instances_per_version, BTreeMap::from([("5.0.0".to_owned(), 15), ("5.1.0".to_owned(), 5)]));
        // Abort is a cancellation of the workflow: `temporal workflow cancel` does the same.
        let handle = deploys.client().get_workflow_handle::<DeployRun>(id.clone());
        handle.cancel(WorkflowCancelOptions::builder().reason("operator abort").build()).await?;

        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        assert!(status.reason.as_deref().unwrap_or_default().contains("aborted while baking batch 1"), "{:?}", status.reason);
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("5.0.0")), "instances answer {served:?}");
        record_history(&deploys, &id, "rolling_abort").await
    });
}

/// Windows longer than the heartbeat timeout (10 s): the sampling activities heartbeat every 2 s
/// whatever the policy says, so a 12-second window is sampled, not timed out and retried.
#[test]
fn health_windows_longer_than_the_heartbeat_timeout_are_sampled_through() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("slow", "8.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("slow", "8.1.0", 0.002, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "slow", 4, base, 200, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let mut req = request("slow", "slow", next);
        req.batch_plan = BatchPlan { steps: vec![BatchStep::Percent(100.0)] };
        req.bake_ms = 0;
        req.health.sample_interval_ms = 12_000;
        req.health.samples = 1;
        req.health.consecutive_bad_samples = 1;
        let id = deploys.start(req, None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.last_analysis.as_ref().map(|a| a.decision), Some(Decision::Pass));
        // No sampling activity was retried: each ran once.
        let history = deploys.history_json(&id).await?;
        assert!(!history.contains("ActivityTaskTimedOutEventAttributes"), "no activity timed out");
        let history: serde_json::Value = serde_json::from_str(&history)?;
        let attempts: Vec<u64> = history["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["attributes"]["ActivityTaskStartedEventAttributes"]["attempt"].as_u64())
            .collect();
        assert!(!attempts.is_empty() && attempts.iter().all(|&a| a == 1), "every activity ran on its first attempt: {attempts:?}");
        record_history(&deploys, &id, "rolling_slow_windows").await
    });
}
