//! A recorded deploy, re-judged: the first version's golden history of the rolling test's bad
//! build (30% errors on one instance of twenty, caught in batch 1) exported and judged again.

use std::path::PathBuf;

use signalbox_analysis::{Decision, judge};
use signalbox_metrics::recorded::{analysis_input, default_policy, evaluations};

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/histories")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_bad_rolling_deploy_fails_again_under_the_default_policy() {
    let found = evaluations(&golden("v1/rolling_bad.json")).unwrap();
    assert_eq!(
        found.len(),
        1,
        "one batch was evaluated before the rollback"
    );
    let evaluation = &found[0];
    assert_eq!(evaluation.input.canary.len(), 1);
    let input = analysis_input(evaluation, default_policy(&evaluation.input.policy));
    input.validate().unwrap();
    assert_eq!(input.timestamps.len(), evaluation.report.samples.len());
    let verdict = judge(&input).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
}

#[test]
fn a_good_deploy_has_one_evaluation_per_batch_and_none_fails() {
    let found = evaluations(&golden("v1/rolling_good.json")).unwrap();
    assert_eq!(found.len(), 4);
    assert!(
        found
            .windows(2)
            .all(|w| w[0].finished_at_ms <= w[1].finished_at_ms)
    );
    for evaluation in &found {
        let verdict = judge(&analysis_input(
            evaluation,
            default_policy(&evaluation.input.policy),
        ))
        .unwrap();
        assert_ne!(verdict.decision, Decision::Fail, "{verdict}");
    }
}

#[test]
fn what_is_not_a_history_is_refused_with_the_field() {
    let e = evaluations(b"{\"events\": 3}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "history.events: missing: not a workflow history"
    );
    assert!(
        evaluations(b"[")
            .unwrap_err()
            .to_string()
            .starts_with("history: not JSON")
    );
}
