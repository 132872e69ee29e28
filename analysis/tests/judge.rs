//! End-to-end behaviour of `judge` and `Evaluator`: decisions, explanations and refusals.

use signalbox_analysis::detectors::{Comparison, NoiseSource, Paired, Seasonal, StaticThreshold};
use signalbox_analysis::{
    AnalysisInput, Baseline, Decision, Detector, Direction, Evaluator, Judgement, Metric,
    MetricData, Observation, Point, Policy, Rule, Rules, Sample, Status, judge,
};

/// Monday 2014-04-14 09:00:00 UTC.
const START: i64 = 1_397_466_000;
const STEP: i64 = 300;

/// Deterministic noise in [-1, 1].
fn noise(i: usize, salt: usize) -> f64 {
    (((i * 7919 + salt * 104_729) % 1000) as f64 / 500.0) - 1.0
}

fn around(level: f64, spread: f64, n: usize, salt: usize) -> Vec<f64> {
    (0..n).map(|i| level + spread * noise(i, salt)).collect()
}

fn values(v: Vec<f64>) -> Vec<Observation> {
    v.into_iter().map(Observation::Value).collect()
}

/// An input over `metrics`, each with its baseline and canary readings.
fn input(policy: Policy, data: Vec<(Baseline, Vec<Observation>)>) -> AnalysisInput {
    let n = data[0].1.len();
    let metrics = policy
        .metrics
        .iter()
        .zip(data)
        .map(|(m, (baseline, canary))| MetricData {
            name: m.name.clone(),
            baseline,
            canary,
            stable: Vec::new(),
        })
        .collect();
    AnalysisInput {
        policy,
        timestamps: (0..n as i64).map(|i| START + i * STEP).collect(),
        traffic: None,
        stable_traffic: None,
        metrics,
    }
}

fn baseline(v: Vec<f64>) -> Baseline {
    Baseline {
        values: v,
        ..Baseline::default()
    }
}

/// Error rate around 1%, latency around 200 ms.
fn healthy_pair(policy: Policy, n: usize, canary_latency: Vec<f64>) -> AnalysisInput {
    input(
        policy,
        vec![
            (
                baseline(around(0.01, 0.001, 60, 1)),
                values(around(0.01, 0.001, n, 2)),
            ),
            (baseline(around(200.0, 10.0, 60, 3)), values(canary_latency)),
        ],
    )
}

fn two_metrics(latency: Direction) -> Policy {
    Policy::new(vec![
        Metric::new("error_rate", Direction::Increase),
        Metric::new("latency_p99", latency),
    ])
}

#[test]
fn healthy_canary_passes_after_required_passes() {
    let verdict = judge(&healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(200.0, 10.0, 30, 4),
    ))
    .unwrap();
    assert_eq!(verdict.decision, Decision::Pass, "{verdict}");
    assert_eq!(verdict.rule, Some(Rule::RequiredPasses));
    assert_eq!(verdict.tally.passes, 10);
    assert_eq!(verdict.sample.as_ref().unwrap().index, 9);
}

#[test]
fn latency_regression_fails_with_explanation() {
    let verdict = judge(&healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(260.0, 10.0, 30, 4),
    ))
    .unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert_eq!(verdict.rule, Some(Rule::ConsecutiveFailures));
    assert_eq!(verdict.tally.samples, 3, "detected within K = 3 samples");
    let latency = &verdict.metrics[1];
    assert_eq!(latency.status, Status::High);
    assert!(
        latency.fired.contains(&Detector::Zscore),
        "{:?}",
        latency.fired
    );
    assert!(
        latency.fired.contains(&Detector::MannWhitney),
        "{:?}",
        latency.fired
    );
    let z = latency.zscore.as_ref().unwrap();
    assert!(z.z > 3.0);
    let c = latency.comparison.as_ref().unwrap();
    assert!(c.p_value < 0.01 && c.mean_ratio > 1.2, "{c:?}");
    let shift = c.shift.expect("verdicts carry the Hodges-Lehmann shift");
    assert!(shift.lower < shift.estimate && shift.estimate < shift.upper);
    assert!((40.0..80.0).contains(&shift.estimate), "{shift:?}");
    assert_eq!(verdict.metrics[0].status, Status::Pass);
}

#[test]
fn a_latency_drop_is_not_a_failure_but_a_throughput_drop_is() {
    let faster = around(120.0, 10.0, 30, 4);
    let verdict = judge(&healthy_pair(
        two_metrics(Direction::Increase),
        30,
        faster.clone(),
    ))
    .unwrap();
    assert_eq!(verdict.decision, Decision::Pass, "{verdict}");
    let verdict = judge(&healthy_pair(
        two_metrics(Direction::Decrease),
        30,
        faster.clone(),
    ))
    .unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert_eq!(verdict.metrics[1].status, Status::Low);
    let verdict = judge(&healthy_pair(two_metrics(Direction::Either), 30, faster)).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
}

#[test]
fn no_data_is_inconclusive_never_pass() {
    let policy = two_metrics(Direction::Increase);
    let all_missing = input(
        policy.clone(),
        vec![
            (
                baseline(around(0.01, 0.001, 60, 1)),
                vec![Observation::Missing; 30],
            ),
            (
                baseline(around(200.0, 10.0, 60, 3)),
                vec![Observation::Missing; 30],
            ),
        ],
    );
    let verdict = judge(&all_missing).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive);
    assert_eq!(verdict.rule, Some(Rule::InconclusiveLimit));

    // One metric has no data at all while the other is healthy: still never a pass.
    let mut p = policy.clone();
    p.rules.inconclusive_limit = 1000;
    let half = input(
        p,
        vec![
            (
                baseline(around(0.01, 0.001, 60, 1)),
                values(around(0.01, 0.001, 30, 2)),
            ),
            (
                baseline(around(200.0, 10.0, 60, 3)),
                vec![Observation::Missing; 30],
            ),
        ],
    );
    let verdict = judge(&half).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive);
    assert_eq!(verdict.rule, Some(Rule::EndOfInput));
    assert_eq!(verdict.tally.passes, 0);
    assert_eq!(verdict.metrics[1].missing_samples, 30);

    // No baseline to compare against is no data too.
    let no_baseline = input(
        policy,
        vec![
            (baseline(vec![]), values(around(0.01, 0.001, 30, 2))),
            (baseline(vec![]), values(around(200.0, 10.0, 30, 4))),
        ],
    );
    let verdict = judge(&no_baseline).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive, "{verdict}");
    assert_eq!(verdict.metrics[0].status, Status::NoData);
}

#[test]
fn source_errors_never_count_as_passes() {
    let policy = two_metrics(Direction::Increase);
    let erroring = |every: usize| -> Vec<Observation> {
        around(200.0, 10.0, 30, 4)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if i % every == 0 {
                    Observation::Error {
                        error: "prometheus: timeout".into(),
                    }
                } else {
                    Observation::Value(v)
                }
            })
            .collect()
    };
    let always = healthy_pair(policy.clone(), 30, vec![]);
    let mut always = always;
    always.metrics[1].canary = erroring(1);
    let verdict = judge(&always).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive);
    assert_eq!(verdict.rule, Some(Rule::ConsecutiveErrors));
    assert_eq!(verdict.tally.passes, 0);
    assert_eq!(
        verdict.metrics[1].error.as_deref(),
        Some("prometheus: timeout")
    );

    // Every other sample errors: only the clean ones count, so the pass takes 20 samples.
    let mut alternating = healthy_pair(policy, 30, vec![]);
    alternating.metrics[1].canary = erroring(2);
    let verdict = judge(&alternating).unwrap();
    assert_eq!(verdict.decision, Decision::Pass);
    assert_eq!(
        (
            verdict.tally.samples,
            verdict.tally.passes,
            verdict.tally.errors
        ),
        (20, 10, 10)
    );
}

#[test]
fn critical_metric_fails_the_whole_judgement() {
    // Five metrics; only the last regresses, so the score is 80: marginal, not failing.
    let mut metrics: Vec<Metric> = (0..5)
        .map(|i| Metric::new(format!("m{i}"), Direction::Increase))
        .collect();
    let data = |bad: bool| -> Vec<(Baseline, Vec<Observation>)> {
        (0..5)
            .map(|i| {
                let level = if bad && i == 4 { 150.0 } else { 100.0 };
                (
                    baseline(around(100.0, 5.0, 60, i)),
                    values(around(level, 5.0, 30, i + 10)),
                )
            })
            .collect()
    };
    let verdict = judge(&input(Policy::new(metrics.clone()), data(true))).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive, "{verdict}");
    assert_eq!(
        verdict.sample.as_ref().unwrap().judgement,
        Judgement::Marginal
    );
    assert_eq!(verdict.sample.as_ref().unwrap().score, Some(80.0));

    metrics[4].critical = true;
    let verdict = judge(&input(Policy::new(metrics), data(true))).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert!(verdict.metrics[4].critical);
    assert_eq!(verdict.tally.samples, 3);
}

#[test]
fn critical_effect_size_fails_the_whole_judgement() {
    let mut metrics: Vec<Metric> = (0..5)
        .map(|i| Metric::new(format!("m{i}"), Direction::Increase))
        .collect();
    metrics[4].comparison.as_mut().unwrap().critical_increase = Some(1.3);
    let data = (0..5)
        .map(|i| {
            let level = if i == 4 { 150.0 } else { 100.0 };
            (
                baseline(around(100.0, 5.0, 60, i)),
                values(around(level, 5.0, 30, i + 10)),
            )
        })
        .collect();
    let verdict = judge(&input(Policy::new(metrics), data)).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert!(verdict.metrics[4].critical);
    assert!(!verdict.metrics[4].fired.is_empty());
}

/// Seasonal history: at 09:00-10:00 UTC the metric runs at `level` with a little spread.
fn history_at_nine(level: f64) -> Vec<Point> {
    (0..14)
        .flat_map(|day| (0..12).map(move |k| (day, k)))
        .map(|(day, k)| Point {
            at: START - (day + 1) * 86_400 + k * STEP,
            value: level + noise((day * 12 + k) as usize, 5),
        })
        .collect()
}

fn threshold_only(max: f64) -> Policy {
    let mut m = Metric::bare("queue_depth", Direction::Increase);
    m.thresholds = Some(StaticThreshold {
        max: Some(max),
        ..Default::default()
    });
    m.seasonal = Some(Seasonal::default());
    let mut policy = Policy::new(vec![m]);
    policy.rules = Rules {
        required_passes: 3,
        ..Rules::default()
    };
    policy
}

fn seasonal_case(max: f64, history_level: f64, canary: f64) -> signalbox_analysis::Verdict {
    let data = vec![(
        Baseline {
            values: vec![],
            history: history_at_nine(history_level),
            ..Baseline::default()
        },
        values(vec![canary; 6]),
    )];
    judge(&input(threshold_only(max), data)).unwrap()
}

#[test]
fn effective_threshold_is_the_higher_of_static_and_dynamic() {
    // History at this hour runs at 150 (band up to about 153): a static 100 alone would fire
    // at 150, but the higher, seasonal bound applies.
    let v = seasonal_case(100.0, 150.0, 150.0);
    assert_eq!(v.decision, Decision::Pass, "{v}");
    let t = v.metrics[0].threshold.as_ref().unwrap();
    assert_eq!(t.fixed.unwrap().upper, Some(100.0));
    assert!(t.effective.upper.unwrap() > 150.0);
    assert_eq!(seasonal_case(100.0, 150.0, 160.0).decision, Decision::Fail);

    // History runs at 60 (band up to about 63): the static 100 is higher, so 90 passes.
    assert_eq!(seasonal_case(100.0, 60.0, 90.0).decision, Decision::Pass);
    let v = seasonal_case(100.0, 60.0, 110.0);
    assert_eq!(v.decision, Decision::Fail);
    assert_eq!(v.metrics[0].fired, vec![Detector::Threshold]);
    assert_eq!(
        v.metrics[0].threshold.as_ref().unwrap().effective.upper,
        Some(100.0)
    );
}

#[test]
fn low_traffic_is_inconclusive_by_default() {
    let mut low = healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(200.0, 10.0, 30, 4),
    );
    low.traffic = Some(vec![40; 30]);
    let verdict = judge(&low).unwrap();
    assert_eq!(verdict.decision, Decision::Inconclusive);
    assert_eq!(verdict.rule, Some(Rule::InconclusiveLimit));
    assert_eq!(
        verdict.sample.as_ref().unwrap().judgement,
        Judgement::LowTraffic
    );
    assert_eq!(verdict.metrics[1].status, Status::Skipped);

    low.traffic = Some(vec![5_000; 30]);
    assert_eq!(judge(&low).unwrap().decision, Decision::Pass);
}

#[test]
fn log_volume_spike_fails_like_any_metric() {
    let policy = Policy::new(vec![Metric::new("log_lines", Direction::Increase)]);
    let spike = input(
        policy,
        vec![(
            baseline(around(5_000.0, 400.0, 60, 1)),
            values(around(15_000.0, 400.0, 30, 2)),
        )],
    );
    let verdict = judge(&spike).unwrap();
    assert_eq!(verdict.decision, Decision::Fail);
    assert_eq!(verdict.tally.samples, 3);
}

#[test]
fn streaming_and_whole_window_agree() {
    let window = healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(230.0, 15.0, 30, 4),
    );
    let whole = judge(&window).unwrap();
    let mut evaluator = Evaluator::new(
        window.policy.clone(),
        window.metrics.iter().map(|m| &m.baseline),
    )
    .unwrap();
    let mut decisions = Vec::new();
    for (i, at) in window.timestamps.iter().enumerate() {
        let canary = window.metrics.iter().map(|m| m.canary[i].clone()).collect();
        let d = evaluator
            .push(&Sample {
                at: *at,
                traffic: None,
                stable_traffic: None,
                canary,
                stable: Vec::new(),
            })
            .unwrap();
        decisions.push(d);
    }
    let decided = decisions
        .iter()
        .position(|d| *d != Decision::Continue)
        .expect("decides");
    assert!(
        decisions[decided..]
            .iter()
            .all(|d| *d == decisions[decided]),
        "decisions stick"
    );
    assert_eq!(evaluator.finish(), whole);
}

#[test]
fn concurrent_stable_readings_cancel_shared_drift() {
    // Traffic ramps up after the baseline was taken: both versions' latency climbs 40%.
    let policy = Policy::new(vec![Metric::new("latency_p99", Direction::Increase)]);
    let ramp = |i: usize| 200.0 * (1.0 + 0.4 * (i as f64 / 29.0).min(1.0) + 0.1);
    let canary: Vec<f64> = (0..30).map(|i| ramp(i) + 10.0 * noise(i, 2)).collect();
    let stable: Vec<f64> = (0..30).map(|i| ramp(i) + 10.0 * noise(i, 3)).collect();
    let mut window = input(
        policy,
        vec![(baseline(around(200.0, 10.0, 24, 1)), values(canary.clone()))],
    );
    let alone = judge(&window).unwrap();
    assert_eq!(
        alone.decision,
        Decision::Fail,
        "without the stable version the drift looks like a regression: {alone}"
    );

    window.metrics[0].stable = values(stable.clone());
    let together = judge(&window).unwrap();
    assert_eq!(together.decision, Decision::Pass, "{together}");

    // The same drift plus a real +60 ms regression on the canary still fails.
    window.metrics[0].canary = values(canary.iter().map(|v| v + 60.0).collect());
    let regressed = judge(&window).unwrap();
    assert_eq!(regressed.decision, Decision::Fail, "{regressed}");
    assert!(regressed.tally.samples <= 3, "{regressed}");
}

#[test]
fn inputs_and_verdicts_round_trip_through_json() {
    let window = healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(260.0, 10.0, 30, 4),
    );
    let json = serde_json::to_string(&window).unwrap();
    let back = AnalysisInput::from_json(&json).unwrap();
    assert_eq!(back, window);
    let verdict = judge(&back).unwrap();
    let again: signalbox_analysis::Verdict =
        serde_json::from_str(&serde_json::to_string(&verdict).unwrap()).unwrap();
    assert_eq!(again, verdict);
}

#[test]
fn observations_read_numbers_nulls_and_errors() {
    let parsed: Vec<Observation> =
        serde_json::from_str(r#"[0.5, null, {"error": "timeout"}]"#).unwrap();
    assert_eq!(
        parsed,
        vec![
            Observation::Value(0.5),
            Observation::Missing,
            Observation::Error {
                error: "timeout".into()
            }
        ]
    );
}

#[test]
fn validation_names_the_field_and_the_rule() {
    let policy = r#"{"metrics": [{"name": "a"}, {"name": "b"}, {"name": "c", "weight": 0}]}"#;
    let policy: Policy = serde_json::from_str(policy).unwrap();
    assert_eq!(
        policy.validate().unwrap_err().to_string(),
        "policy.metrics[2].weight: must be > 0"
    );

    let cases: [(&str, &str); 6] = [
        (
            r#"{"metrics": []}"#,
            "policy.metrics: must list at least one metric",
        ),
        (
            r#"{"metrics": [{"name": "a"}, {"name": "a"}]}"#,
            "policy.metrics[1].name: duplicate metric name `a`",
        ),
        (
            r#"{"metrics": [{"name": "a", "zscore": {"sigma": -1}}]}"#,
            "policy.metrics[0].zscore.sigma: must be > 0",
        ),
        (
            r#"{"metrics": [{"name": "a", "comparison": {"alpha": 1.5}}]}"#,
            "policy.metrics[0].comparison.alpha: must be within 0..1 (exclusive)",
        ),
        (
            r#"{"metrics": [{"name": "a"}], "rules": {"consecutive_failures": 0}}"#,
            "policy.rules.consecutive_failures: must be >= 1",
        ),
        (
            r#"{"metrics": [{"name": "a"}], "score": {"pass": 70, "marginal": 80}}"#,
            "policy.score.marginal: must be within 0..=pass",
        ),
    ];
    for (json, expected) in cases {
        let policy: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(
            policy.validate().unwrap_err().to_string(),
            expected,
            "{json}"
        );
    }

    let mut window = healthy_pair(
        two_metrics(Direction::Increase),
        30,
        around(200.0, 10.0, 30, 4),
    );
    window.metrics[1].canary.pop();
    assert_eq!(
        judge(&window).unwrap_err().to_string(),
        "metrics[1].canary: has 29 entries, timestamps has 30"
    );
}

/// Latency swinging by +-150 ms over two hours (24 samples), with +-5 ms noise: `baseline`
/// values before the deploy, then the stable version's and the canary's (`shift` higher). The
/// deploy starts at the crest, after an hour's climb.
fn swinging(shift: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let level = |i: usize| 300.0 + 150.0 * (i as f64 * std::f64::consts::TAU / 24.0).cos();
    let base = (0..24).map(|i| level(i) + 5.0 * noise(i, 1)).collect();
    let stable = (24..36).map(|i| level(i) + 5.0 * noise(i, 2)).collect();
    let canary = (24..36)
        .map(|i| level(i) + shift + 5.0 * noise(i, 3))
        .collect();
    (base, stable, canary)
}

fn swinging_input(metric: Metric, shift: f64) -> AnalysisInput {
    let (base, stable, canary) = swinging(shift);
    let mut window = input(
        Policy::new(vec![metric]),
        vec![(baseline(base), values(canary))],
    );
    window.metrics[0].stable = values(stable);
    window
}

#[test]
fn paired_difference_sees_a_steady_shift_on_a_swinging_background() {
    let metric = Metric {
        critical: true,
        ..Metric::new("latency_p99", Direction::Increase)
    };
    let without = judge(&swinging_input(
        Metric {
            paired: None,
            ..metric.clone()
        },
        100.0,
    ))
    .unwrap();
    assert!(
        without.decision != Decision::Fail || without.tally.samples > 3,
        "the swing hides +100 ms from the z-score in samples 1-2: {without}"
    );

    let with = judge(&swinging_input(metric.clone(), 100.0)).unwrap();
    assert_eq!(with.decision, Decision::Fail, "{with}");
    assert_eq!(with.rule, Some(Rule::ConsecutiveFailures));
    assert_eq!(with.tally.samples, 3, "{with}");
    let report = &with.metrics[0];
    assert!(report.fired.contains(&Detector::Paired), "{report:?}");
    let paired = report.paired.as_ref().unwrap();
    assert!(
        paired.z > paired.sigma && paired.difference > 80.0,
        "{paired:?}"
    );

    // The same swing without a regression passes.
    let clean = judge(&swinging_input(metric, 0.0)).unwrap();
    assert_eq!(clean.decision, Decision::Pass, "{clean}");
}

#[test]
fn a_decisive_paired_effect_fails_at_once_when_enabled() {
    let metric = |decisive: Option<f64>, critical: bool| Metric {
        critical,
        paired: Some(Paired {
            decisive,
            ..Paired::default()
        }),
        ..Metric::new("latency_p99", Direction::Increase)
    };
    let verdict = judge(&swinging_input(metric(Some(6.0), true), 250.0)).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert_eq!(verdict.rule, Some(Rule::DecisiveEffect));
    assert_eq!(verdict.tally.samples, 1, "{verdict}");

    // Off by default (the cumulative test, on by default, decides at the second sample),
    // and never on a non-critical metric: the run of K decides.
    let verdict = judge(&swinging_input(metric(None, true), 250.0)).unwrap();
    assert_eq!(verdict.rule, Some(Rule::CumulativeEffect), "{verdict}");
    assert_eq!(verdict.tally.samples, 2, "{verdict}");
    let verdict = judge(&swinging_input(metric(Some(6.0), false), 250.0)).unwrap();
    assert_eq!(verdict.rule, Some(Rule::ConsecutiveFailures), "{verdict}");
    assert_eq!(verdict.tally.samples, 3, "{verdict}");
}

/// [`swinging_input`] with an A/A period: the canary group read alongside the baseline, with
/// the same +-5 ms noise.
fn with_aa_period(mut window: AnalysisInput) -> AnalysisInput {
    let level = |i: usize| 300.0 + 150.0 * (i as f64 * std::f64::consts::TAU / 24.0).cos();
    window.metrics[0].baseline.canary = (0..24).map(|i| level(i) + 5.0 * noise(i, 4)).collect();
    window
}

#[test]
fn an_aa_period_and_the_running_mean_catch_a_small_shift_sooner() {
    let metric = Metric {
        critical: true,
        paired: Some(Paired {
            cumulative: Some(4.0),
            ..Paired::default()
        }),
        ..Metric::new("latency_p99", Direction::Increase)
    };
    let shift = 8.0;
    // Without the A/A period the swing's successive changes swamp an 8 ms shift.
    let blind = judge(&swinging_input(metric.clone(), shift)).unwrap();
    assert_ne!(blind.decision, Decision::Fail, "{blind}");

    let verdict = judge(&with_aa_period(swinging_input(metric.clone(), shift))).unwrap();
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert_eq!(verdict.rule, Some(Rule::CumulativeEffect), "{verdict}");
    let paired = verdict.metrics[0].paired.as_ref().unwrap();
    assert_eq!(paired.noise_from, NoiseSource::AaPeriod);
    let cumulative = paired.cumulative.as_ref().unwrap();
    assert!(
        cumulative.fired && cumulative.z > cumulative.limit,
        "{cumulative:?}"
    );
    assert_eq!(cumulative.samples, verdict.tally.samples);
    // Single differences alone take longer to make a run of three.
    let single = Metric {
        paired: Some(Paired {
            cumulative: None,
            ..Paired::default()
        }),
        ..metric.clone()
    };
    let later = judge(&with_aa_period(swinging_input(single, shift))).unwrap();
    assert!(
        later.decision != Decision::Fail || later.tally.samples > verdict.tally.samples,
        "{later}"
    );

    // The same A/A period with no shift passes.
    let clean = judge(&with_aa_period(swinging_input(metric, 0.0))).unwrap();
    assert_eq!(clean.decision, Decision::Pass, "{clean}");

    // A/A readings must pair one to one with the baseline values.
    let mut broken = with_aa_period(swinging_input(
        Metric::new("latency_p99", Direction::Increase),
        0.0,
    ));
    broken.metrics[0].baseline.canary.pop();
    assert_eq!(
        judge(&broken).unwrap_err().to_string(),
        "metrics[0].baseline.canary: has 23 entries, baseline.values has 24 (one per baseline value, read at the same time)"
    );
}

#[test]
fn with_stable_readings_the_comparison_ranks_the_canary_against_them() {
    let metric = Metric {
        critical: true,
        comparison: Some(Comparison::default()),
        ..Metric::bare("latency_p99", Direction::Increase)
    };
    // The background rose 30% since the baseline was taken; both versions read it.
    let risen = |salt| around(130.0, 2.0, 12, salt);
    let with_stable = |canary: Vec<f64>| {
        let mut window = input(
            Policy::new(vec![metric.clone()]),
            vec![(baseline(around(100.0, 2.0, 24, 1)), values(canary))],
        );
        window.metrics[0].stable = values(risen(2));
        window
    };
    let shared = judge(&with_stable(risen(3))).unwrap();
    assert_eq!(shared.decision, Decision::Pass, "{shared}");
    let report = shared.metrics[0].comparison.as_ref().unwrap();
    assert!(
        report.baseline_samples == 12 && (report.mean_ratio - 1.0).abs() < 0.05,
        "{report:?}"
    );

    // Against the readings before the deploy alone, the same rise reads as a regression.
    let alone = judge(&input(
        Policy::new(vec![metric.clone()]),
        vec![(baseline(around(100.0, 2.0, 24, 1)), values(risen(3)))],
    ))
    .unwrap();
    assert_eq!(alone.decision, Decision::Fail, "{alone}");

    // The canary 20% above the stable version it runs beside still fails.
    let shifted = judge(&with_stable(around(156.0, 2.0, 12, 3))).unwrap();
    assert_eq!(shifted.decision, Decision::Fail, "{shifted}");
    assert!(
        shifted.metrics[0].fired.contains(&Detector::MannWhitney),
        "{shifted}"
    );
}

#[test]
fn a_per_request_noise_needs_one_count_per_aa_reading() {
    let mut window = with_aa_period(swinging_input(
        Metric::new("latency_p99", Direction::Increase),
        0.0,
    ));
    window.metrics[0].baseline.traffic = vec![1_000; 23];
    assert_eq!(
        judge(&window).unwrap_err().to_string(),
        "metrics[0].baseline.traffic: has 23 entries, baseline.values has 24 (one per baseline value)"
    );
    window.metrics[0].baseline.traffic.push(1_000);
    assert!(judge(&window).is_ok());
}
