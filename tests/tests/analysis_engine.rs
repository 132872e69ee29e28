//! Deploys that opt in to the full analysis engine (`DeployRequest::analysis`): each batch is
//! judged by `health.analyze` on a real dev server, the worker as a process, real instances
//! under real load. What the engine judged is in history: `signalbox backtest export` exports
//! it and `signalbox backtest` judges it again.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use signalbox_analysis::{AnalysisInput, Decision, Policy, judge};
use signalbox_devstack::workspace_binary;
use signalbox_domain::{Phase, Sampling};
use signalbox_domain::analysis::AnalysisReport;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish, request};
use signalbox_metrics::recorded::{aa_periods, analyses};
use signalbox_tests::{histories_dir, record_history, run, stack};

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

        let id = deploys.start(req, None).await?.id;
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

        let id = deploys.start(req, None).await?.id;
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

fn signalbox(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(workspace_binary("signalbox")?).args(args).output()?)
}

#[test]
fn a_deploy_judged_by_the_engine_exports_what_it_judged_and_is_judged_again_the_same() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("journal", "5.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("journal", "5.1.0", 0.30, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "engine-export", 5, base, 200, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let mut req = request("journal", "engine-export", bad);
        req.analysis = Some(policy());
        let id = deploys.start(req, None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!((status.phase, status.current_batch), (Phase::RolledBack, 1), "{status:#?}");
        let decided = status.last_analysis.clone().expect("the engine judged batch 1");
        assert_eq!(decided.decision, Decision::Fail, "{decided:#?}");
        assert!(decided.rule.is_some(), "the report names the deciding rule: {decided:#?}");
        record_history(&deploys, &id, "analysis_engine_exported").await?;

        // The operator's commands: export, then judge again.
        let export = signalbox(&["backtest", "export", "--temporal", &s.server.address(), &id])?;
        assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
        let exported: AnalysisInput = serde_json::from_slice(&export.stdout)?;
        let recorded = analyses(deploys.history_json(&id).await?.as_bytes())?;
        assert_eq!(recorded.len(), 1, "one batch judged");
        assert_eq!(Some(&exported), recorded[0].output.input.as_ref(), "the export is the recorded input, unconverted");
        assert_eq!(exported.policy, policy());
        assert_eq!(AnalysisReport::of(&judge(&exported)?), decided, "judged again in process: the deploy's verdict, line for line");

        let input = s.options.dir.join("engine-export-input.json");
        std::fs::write(&input, &export.stdout)?;
        let input = input.to_string_lossy().into_owned();
        let rejudged = signalbox(&["backtest", "--input", &input])?;
        assert_eq!(rejudged.status.code(), Some(1), "fail exits 1: {}", String::from_utf8_lossy(&rejudged.stderr));
        let report: serde_json::Value = serde_json::from_slice(&rejudged.stdout)?;
        assert_eq!(report["decision"], "fail", "{report:#}");
        assert_eq!(report["rule"], serde_json::to_value(decided.rule)?, "{report:#}");
        let summary = report["summary"].as_str().unwrap_or_default();
        assert_eq!(summary.lines().next(), Some(decided.summary.as_str()), "same tally and deciding sample");

        // `--batch` picks among the judged batches, and says which exist.
        let first = signalbox(&["backtest", "export", "--temporal", &s.server.address(), "--batch", "1", &id])?;
        assert_eq!(first.stdout, export.stdout);
        let beyond = signalbox(&["backtest", "export", "--temporal", &s.server.address(), "--batch", "2", &id])?;
        assert_eq!(beyond.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&beyond.stderr).contains("--batch: 2 is not between 1 and 1"), "{beyond:?}");

        // A policy that tolerates up to 90% errors and promotes on one passing sample passes
        // the same samples.
        let lenient = s.options.dir.join("engine-lenient-policy.json");
        std::fs::write(
            &lenient,
            r#"{"metrics": [{"name": "error_rate", "thresholds": {"max": 0.9}, "zscore": null, "comparison": null, "paired": null},
                            {"name": "p99_ms", "thresholds": {"max": 1000}, "zscore": null, "comparison": null, "paired": null}],
                "rules": {"required_passes": 1}, "low_traffic": {"min_requests": 10}}"#,
        )?;
        let lenient = lenient.to_string_lossy().into_owned();
        let rejudged = signalbox(&["backtest", "--input", &input, "--policy", &lenient])?;
        let report: serde_json::Value = serde_json::from_slice(&rejudged.stdout)?;
        assert_eq!((rejudged.status.code(), &report["decision"]), (Some(0), &serde_json::json!("pass")), "{report:#}");
        Ok(())
    });
}

/// What a user writes for the demo's metrics: each one's name and kind, a live A/A period of
/// three one-second windows, and the rules sized for this fleet as [`policy`] explains.
fn kinds_policy() -> Policy {
    serde_json::from_value(serde_json::json!({
        "metrics": [{"name": "error_rate", "kind": "rate"}, {"name": "p99_ms", "kind": "quantile"}],
        "rules": {"required_passes": 3},
        "low_traffic": {"min_requests": 10},
        "aa_windows": 3
    }))
    .expect("a valid policy")
}

/// The live A/A period: every batch with instances left on the old build reads its own just
/// before it changes anything (the batch's instances next to those that stay), in history as
/// that batch's baseline, shown in the status while it runs, and what a backtest of the deploy
/// judges.
#[test]
fn a_policy_with_kinds_reads_each_batchs_aa_period_first_and_judges_like_with_like() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("atlas", "6.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("atlas", "6.1.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("atlas", "6.2.0", 0.30, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "engine-kinds", 10, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;

        let mut req = request("atlas", "engine-kinds", next);
        req.analysis = Some(kinds_policy());
        let max = signalbox_domain::analysis::windows(&kinds_policy(), &req.health);
        let id = deploys.start(req, None).await?.id;
        // What the status says while the deploy samples, read as a person would, every 200 ms.
        let watched = async {
            let mut seen: Vec<Sampling> = Vec::new();
            loop {
                let status = deploys.status(&id).await?;
                if status.phase.is_final() {
                    return anyhow::Ok(seen);
                }
                seen.extend(status.sampling);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        let (status, seen) = tokio::time::timeout(DEPLOY_DEADLINE, async { tokio::join!(deploys.result(&id), watched) }).await?;
        let (status, seen) = (status?, seen?);
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert!(status.sampling.is_none(), "nothing samples once done: {:?}", status.sampling);

        let history = deploys.history_json(&id).await?;
        let recorded = analyses(history.as_bytes())?;
        let periods = aa_periods(history.as_bytes())?;
        assert!(recorded.len() >= 3, "{} batches", recorded.len());
        assert_eq!(periods.len(), recorded.len() - 1, "every batch but the last leaves instances on the old build to read beside it");
        let mut updated: Vec<String> = Vec::new();
        for (i, analysis) in recorded.iter().enumerate() {
            let batch: Vec<String> = analysis.input.canary.iter().filter(|c| !updated.contains(c)).cloned().collect();
            updated.clone_from(&analysis.input.canary);
            // The last batch has no stable group: the A/A period read before it stands.
            let period = &periods[i.min(periods.len() - 1)];
            if i < periods.len() {
                assert_eq!((&period.input.canary, &period.input.stable), (&batch, &analysis.input.stable), "batch {}: its instances next to those that stay", i + 1);
                assert!(period.finished_at_ms <= analysis.finished_at_ms);
            }
            assert_eq!(period.samples.len(), 3, "batch {}", i + 1);
            assert_eq!(analysis.input.aa, period.samples, "batch {}: judged on its own A/A period", i + 1);
            let input = analysis.output.input.as_ref().expect("the judged input");
            for m in &input.metrics {
                let b = &m.baseline;
                assert_eq!((b.values.len(), b.canary.len(), b.traffic.len(), b.stable_traffic.len()), (3, 3, 3, 3), "{}: {b:?}", m.name);
                if i == 0 {
                    assert!(b.traffic.iter().zip(&b.stable_traffic).all(|(c, s)| c < s), "one instance read next to nine: {b:?}");
                }
            }
            if i + 1 < recorded.len() {
                let both = input.stable_traffic.as_ref().is_some_and(|t| t.iter().all(|&n| n > 0));
                assert!(both, "batch {}: both groups' requests in every sample: {:?}", i + 1, input.stable_traffic);
            }
        }
        // The status said what was being sampled and how many samples were left.
        let counted = |s: &&Sampling| s.samples > 0;
        let aa = seen.iter().filter(|s| s.aa_period).find(counted);
        assert!(aa.is_some_and(|s| s.max_samples == 3 && s.step.starts_with("batch ")), "an A/A period with its samples counted: {seen:?}");
        let judging = seen.iter().filter(|s| !s.aa_period).find(counted);
        assert!(
            judging.is_some_and(|s| s.max_samples == max && s.passes_needed.is_some_and(|n| n <= 3)),
            "a judgement with the samples left and the passes it still needs: {seen:?}"
        );

        let last = status.last_analysis.clone().expect("judged");
        assert_eq!(AnalysisReport::of(&judge(recorded.last().and_then(|a| a.output.input.as_ref()).expect("input"))?), last, "a backtest judges what the deploy judged");
        record_history(&deploys, &id, "analysis_engine_kinds_every_batch").await?;

        // A build failing 30% of its requests is caught in batch 1, with no metric critical.
        let mut req = request("atlas", "engine-kinds", bad);
        req.analysis = Some(kinds_policy());
        let id = deploys.start(req, None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!((status.phase, status.current_batch), (Phase::RolledBack, 1), "{status:#?}");
        let decided = status.last_analysis.clone().expect("the engine judged batch 1");
        assert_eq!(decided.decision, Decision::Fail, "{decided:#?}");
        Ok(())
    });
}

/// Golden histories from before and after `health.analyze` kept its input: the old result
/// reads without input (export says so), the new one carries the input its verdict came from.
#[test]
fn recorded_analyses_read_from_histories_of_either_age() -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<_> { Ok(analyses(&std::fs::read(histories_dir().join("v1").join(name))?)?) };
    let old = read("analysis_engine_bad.json")?;
    assert_eq!(old.len(), 1);
    assert_eq!((old[0].output.report.decision, &old[0].output.input), (Decision::Fail, &None));
    let new = read("analysis_engine_exported.json")?;
    let input = new.last().and_then(|a| a.output.input.as_ref()).expect("the engine's input is recorded");
    // The golden history was judged by the engine of its day: after an engine change the
    // explanation may differ in detail (which detectors fired), the decision must not. The live
    // test above holds the current engine to the recorded report line for line.
    let (now, then) = (AnalysisReport::of(&judge(input)?), &new[new.len() - 1].output.report);
    assert_eq!((now.decision, now.rule, &now.summary), (then.decision, then.rule, &then.summary));
    Ok(())
}
