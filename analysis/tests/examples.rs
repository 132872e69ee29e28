//! The example inputs in `examples/`, documented in the README, judge as the README says.

use signalbox_analysis::{
    AnalysisInput, Decision, Detector, Judgement, Rule, Status, Verdict, judge,
};

fn judge_example(name: &str) -> Verdict {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let input = AnalysisInput::from_json(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    judge(&input).unwrap()
}

#[test]
fn healthy_canary_passes() {
    let v = judge_example("canary-pass.json");
    assert_eq!(
        (v.decision, v.rule),
        (Decision::Pass, Some(Rule::RequiredPasses)),
        "{v}"
    );
    assert_eq!(v.tally.samples, 10);
    assert!(
        v.metrics
            .iter()
            .all(|m| m.status == Status::Pass && m.bad_samples == 0),
        "{v}"
    );
}

#[test]
fn latency_regression_fails_on_the_third_sample() {
    let v = judge_example("canary-latency-regression.json");
    assert_eq!(
        (v.decision, v.rule),
        (Decision::Fail, Some(Rule::ConsecutiveFailures)),
        "{v}"
    );
    assert_eq!(v.tally.samples, 3, "{v}");
    let latency = v
        .metrics
        .iter()
        .find(|m| m.name == "latency_p99_ms")
        .unwrap();
    assert_eq!(latency.status, Status::High);
    assert_eq!(
        latency.fired,
        vec![Detector::Threshold, Detector::Zscore, Detector::MannWhitney]
    );
    // Beyond the critical ratio 1.3, so it fails the sample although its group weighs 1 of 4.
    assert!(latency.critical);
    let threshold = latency.threshold.as_ref().unwrap();
    let seasonal = threshold.seasonal.as_ref().unwrap();
    let fixed = threshold.fixed.unwrap().upper.unwrap();
    assert_eq!(
        threshold.effective.upper,
        Some(fixed.max(seasonal.bounds.upper.unwrap()))
    );
    assert!(latency.comparison.as_ref().unwrap().shift.is_some());
}

#[test]
fn source_errors_stop_the_analysis_inconclusive() {
    let v = judge_example("canary-source-errors.json");
    assert_eq!(
        (v.decision, v.rule),
        (Decision::Inconclusive, Some(Rule::ConsecutiveErrors)),
        "{v}"
    );
    assert_eq!(v.sample.as_ref().unwrap().index, 6);
    assert_eq!(v.sample.as_ref().unwrap().judgement, Judgement::SourceError);
    assert_eq!(
        (v.tally.passes, v.tally.errors, v.tally.inconclusive),
        (3, 3, 1),
        "{v}"
    );
    let logs = v.metrics.iter().find(|m| m.name == "log_lines").unwrap();
    assert_eq!(logs.missing_samples, 1);
}

#[test]
fn readme_example_is_valid_and_ends_inconclusive() {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    // The whole input; the README's policy fragments come before it.
    let fence = "```json\n{\n  \"policy\"";
    let start = readme.find(fence).expect("README has a JSON example") + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let input = AnalysisInput::from_json(&readme[start..end])
        .unwrap_or_else(|e| panic!("README example: {e}"));
    let v = judge(&input).unwrap();
    assert_eq!(
        (v.decision, v.rule),
        (Decision::Inconclusive, Some(Rule::EndOfInput)),
        "{v}"
    );
    assert_eq!(
        (v.tally.passes, v.tally.errors, v.tally.inconclusive),
        (2, 1, 1),
        "{v}"
    );
}

#[test]
fn readme_kinds_policy_parses_and_sets_each_kind() {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let fence = "```json\n{\"metrics\"";
    let start = readme.find(fence).expect("README has the kinds policy") + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let policy: signalbox_analysis::Policy =
        serde_json::from_str(&readme[start..end]).unwrap_or_else(|e| panic!("kinds policy: {e}"));
    policy.validate().unwrap();
    let kinds: Vec<_> = policy.metrics.iter().map(|m| m.kind).collect();
    use signalbox_analysis::Kind::*;
    assert_eq!(kinds, [Some(Rate), Some(Quantile), Some(Count), Some(Gauge)]);
}
