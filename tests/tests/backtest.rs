//! A past deploy judged again: a real deploy of a bad build to a small fleet rolls back, judged
//! by the engine under the first-version gate's preset; what it judged is exported from
//! Temporal (`signalbox backtest export`) and re-judged (`signalbox backtest`) under its own
//! policy, which fails it, and under a lenient one, which does not. Deploys recorded before the
//! engine judged every step exported their gate's windows, converted: a golden history of one
//! is converted and judged too.

use std::process::{Command, Output};

use signalbox_analysis::{Decision, judge};
use signalbox_devstack::workspace_binary;
use signalbox_domain::Phase;
use signalbox_domain::analysis::AnalysisReport;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish, request};
use signalbox_metrics::recorded::{analyses, analysis_input, default_policy, evaluations};
use signalbox_tests::{histories_dir, run, stack};

fn signalbox(args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(workspace_binary("signalbox")?).args(args).output()?)
}

#[test]
fn a_rolled_back_deploy_exports_and_fails_again_under_the_default_policy() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ledger", "7.0.0", 0.0, 5)).await?;
        let bad = publish(&s.home, demo_build("ledger", "7.1.0", 0.5, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "backtest", 5, base, 200, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let id = deploys.start(request("ledger", "backtest", bad), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");

        // In process: the history holds what the engine judged, and judging it again reaches the
        // deploy's verdict.
        let found = analyses(deploys.history_json(&id).await?.as_bytes())?;
        let last = found.last().expect("the deploy analysed its first batch");
        assert_eq!(Some(&last.output.report), status.last_analysis.as_ref(), "the history holds what status showed");
        let recorded = last.output.input.as_ref().expect("the engine's input is recorded");
        assert_eq!(AnalysisReport::of(&judge(recorded)?), last.output.report);

        // The commands, as an operator runs them.
        let address = s.server.address();
        let export = signalbox(&["backtest", "export", "--temporal", &address, &id])?;
        assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
        let input = s.options.dir.join("backtest-input.json");
        std::fs::write(&input, &export.stdout)?;
        let input = input.to_string_lossy().into_owned();

        let rejudged = signalbox(&["backtest", "--input", &input])?;
        assert_eq!(rejudged.status.code(), Some(1), "{}", String::from_utf8_lossy(&rejudged.stderr));
        let report: serde_json::Value = serde_json::from_slice(&rejudged.stdout)?;
        assert_eq!(report["decision"], "fail", "{report:#}");
        assert!(report["summary"].as_str().is_some_and(|s| s.contains("error_rate")), "{report:#}");

        // A policy that tolerates up to 90% errors does not fail it; with too few windows to
        // promote, it ends inconclusive.
        let lenient = s.options.dir.join("lenient-policy.json");
        std::fs::write(
            &lenient,
            r#"{"metrics": [{"name": "error_rate", "thresholds": {"max": 0.9}, "zscore": null, "comparison": null, "paired": null},
                            {"name": "p99_ms", "thresholds": {"max": 1000}, "zscore": null, "comparison": null, "paired": null}],
                "low_traffic": {"min_requests": 10}}"#,
        )?;
        let lenient = lenient.to_string_lossy().into_owned();
        let rejudged = signalbox(&["backtest", "--input", &input, "--policy", &lenient])?;
        assert_eq!(rejudged.status.code(), Some(3), "{}", String::from_utf8_lossy(&rejudged.stdout));

        // Bad input exits 2 and names the field.
        std::fs::write(s.options.dir.join("bad-policy.json"), r#"{"metrics": [{"name": "error_rate", "weight": 0}]}"#)?;
        let bad_policy = s.options.dir.join("bad-policy.json").to_string_lossy().into_owned();
        let refused = signalbox(&["backtest", "--input", &input, "--policy", &bad_policy])?;
        assert_eq!(refused.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("policy.metrics[0].weight"), "{refused:?}");
        Ok(())
    });
}

/// A deploy recorded when the first-version gate judged its batches (`health.evaluate`): its
/// windows convert into an analysis input that the engine fails too.
#[test]
fn a_gate_judged_history_converts_and_fails_again() -> anyhow::Result<()> {
    let history = std::fs::read(histories_dir().join("v1").join("rolling_bad.json"))?;
    let found = evaluations(&history)?;
    let last = found.last().expect("the deploy evaluated its first batch");
    assert_eq!(last.report.verdict, Decision::Fail);
    let verdict = judge(&analysis_input(last, default_policy(&last.input.policy)))?;
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    Ok(())
}
