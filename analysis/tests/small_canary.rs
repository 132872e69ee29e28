//! A small canary next to a large stable group, judged like with like: metric kinds, both
//! groups' request counts, large effects, advisory metrics, and the refusals of bad input.

use signalbox_analysis::detectors::NoiseSource;
use signalbox_analysis::{
    AnalysisInput, Baseline, Decision, Direction, Error, Evaluator, Kind, Metric, MetricData,
    Observation, Policy, Rule, Sample, judge,
};

/// Monday 2014-04-14 09:00:00 UTC.
const START: i64 = 1_397_466_000;
const STEP: i64 = 300;
/// One instance of a hundred, at 100 requests a second: its requests per sample, and the
/// other 99's.
const CANARY: u64 = 30_000;
const STABLE: u64 = 2_970_000;

/// A small deterministic generator: xorshift, uniform and standard normal draws, and Poisson
/// counts (what errors and log lines of a group are).
struct Draws(u64);

impl Draws {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn poisson(&mut self, mean: f64) -> f64 {
        if mean > 50.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0);
        }
        let (limit, mut k, mut product) = ((-mean).exp(), 0.0, self.uniform());
        while product > limit {
            k += 1.0;
            product *= self.uniform();
        }
        k
    }
}

/// The readings of one group serving `requests` in a sample: error rate (0.5% of requests,
/// times `errors`), p99 (200 ms plus `extra_ms`, with a quantile's sampling error), log lines
/// (2 per request, times `lines`).
fn readings(d: &mut Draws, requests: u64, errors: f64, extra_ms: f64, lines: f64) -> [f64; 3] {
    let n = requests as f64;
    [
        d.poisson(0.005 * errors * n) / n,
        200.0 * (1.0 + 2.16 / n.sqrt() * d.normal()) + extra_ms,
        d.poisson(2.0 * lines * n),
    ]
}

const NAMES: [&str; 3] = ["error_rate", "latency_p99_ms", "log_lines"];
const KINDS: [Kind; 3] = [Kind::Rate, Kind::Quantile, Kind::Count];

/// What a new user writes: each metric's name and kind, nothing else.
fn kinds_policy() -> Policy {
    Policy::new(
        NAMES
            .iter()
            .zip(KINDS)
            .map(|(name, kind)| Metric {
                kind: Some(kind),
                ..Metric::new(*name, Direction::Increase)
            })
            .collect(),
    )
}

/// A recorded window: 24 A/A readings of both groups, then `samples` samples with the canary
/// changed by `(errors, extra_ms, lines)`.
fn window(policy: Policy, samples: usize, change: (f64, f64, f64), seed: u64) -> AnalysisInput {
    let mut d = Draws(seed);
    let mut metrics: Vec<MetricData> = NAMES
        .iter()
        .map(|name| MetricData {
            name: (*name).to_owned(),
            baseline: Baseline::default(),
            canary: Vec::new(),
            stable: Vec::new(),
        })
        .collect();
    for _ in 0..24 {
        let (stable, canary) = (
            readings(&mut d, STABLE, 1.0, 0.0, 1.0),
            readings(&mut d, CANARY, 1.0, 0.0, 1.0),
        );
        for (m, data) in metrics.iter_mut().enumerate() {
            data.baseline.values.push(stable[m]);
            data.baseline.canary.push(canary[m]);
            data.baseline.traffic.push(CANARY);
            data.baseline.stable_traffic.push(STABLE);
        }
    }
    let (errors, extra_ms, lines) = change;
    for _ in 0..samples {
        let (stable, canary) = (
            readings(&mut d, STABLE, 1.0, 0.0, 1.0),
            readings(&mut d, CANARY, errors, extra_ms, lines),
        );
        for (m, data) in metrics.iter_mut().enumerate() {
            data.stable.push(Observation::Value(stable[m]));
            data.canary.push(Observation::Value(canary[m]));
        }
    }
    AnalysisInput {
        policy,
        timestamps: (0..samples as i64).map(|i| START + i * STEP).collect(),
        traffic: Some(vec![CANARY; samples]),
        stable_traffic: Some(vec![STABLE; samples]),
        metrics,
    }
}

const CLEAN: (f64, f64, f64) = (1.0, 0.0, 1.0);

#[test]
fn a_one_instance_canary_of_a_clean_build_promotes_with_kinds_alone() {
    let mut promoted = 0;
    for seed in 1..=20 {
        let verdict = judge(&window(kinds_policy(), 12, CLEAN, seed)).expect("valid input");
        assert_ne!(verdict.decision, Decision::Fail, "seed {seed}: {verdict}");
        promoted += usize::from(verdict.decision == Decision::Pass);
        if seed == 1 {
            let error_rate = &verdict.metrics[0];
            let paired = error_rate.paired.as_ref().expect("paired report");
            assert_eq!(paired.noise_from, NoiseSource::Requests, "{verdict}");
            // Judged like with like, the z-score stands aside.
            assert!(error_rate.zscore.is_none(), "{verdict}");
        }
    }
    assert_eq!(
        promoted, 20,
        "every clean deploy promotes within 12 samples"
    );
}

#[test]
fn the_same_canary_without_kinds_is_held_to_the_large_groups_spread() {
    // What the kinds fix: the same clean windows under the defaults without them rarely
    // promote, the small group's noise read as regressions.
    let bare = Policy::new(
        NAMES
            .iter()
            .map(|n| Metric::new(*n, Direction::Increase))
            .collect(),
    );
    let promoted = (1..=20)
        .filter(|&seed| {
            let verdict = judge(&window(bare.clone(), 12, CLEAN, seed)).expect("valid input");
            verdict.decision == Decision::Pass
        })
        .count();
    assert!(promoted < 10, "{promoted} of 20 promoted without kinds");
}

#[test]
fn clear_regressions_of_a_one_instance_canary_fail_within_three_samples() {
    // +50% errors, +50 ms p99, log volume x2: none of the metrics is critical, and each
    // fails the deploy on its own.
    for (what, change) in [
        ("error rate +50%", (1.5, 0.0, 1.0)),
        ("p99 +50 ms", (1.0, 50.0, 1.0)),
        ("log volume x2", (1.0, 0.0, 2.0)),
    ] {
        for seed in 1..=10 {
            let verdict = judge(&window(kinds_policy(), 12, change, seed)).expect("valid input");
            assert_eq!(
                verdict.decision,
                Decision::Fail,
                "{what}, seed {seed}: {verdict}"
            );
            assert!(verdict.tally.samples <= 3, "{what}, seed {seed}: {verdict}");
        }
    }
}

#[test]
fn a_large_effect_fails_samples_of_a_metric_nobody_marked_critical() {
    // Log volume x3 and no cumulative test: only the large effect can fail the samples;
    // three failing samples in a row roll back, where a marginal score would only pause.
    let mut policy = kinds_policy();
    policy.score.marginal = 60.0;
    for m in &mut policy.metrics {
        if let Some(p) = &mut m.paired {
            p.cumulative = None;
        }
    }
    let verdict = judge(&window(policy.clone(), 12, (1.0, 0.0, 3.0), 7)).expect("valid input");
    assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
    assert_eq!(verdict.rule, Some(Rule::ConsecutiveFailures), "{verdict}");
    // Without the large effect the same regression only makes samples marginal (one bad
    // metric of three scores 66.7, marginal from 60 here).
    policy.score.marginal = 60.0;
    for m in &mut policy.metrics {
        if let Some(p) = &mut m.paired {
            p.large_effect = None;
        }
    }
    let verdict = judge(&window(policy, 12, (1.0, 0.0, 3.0), 7)).expect("valid input");
    assert_eq!(verdict.decision, Decision::Inconclusive, "{verdict}");
}

#[test]
fn an_advisory_metric_is_reported_but_never_decides() {
    let mut policy = kinds_policy();
    policy.metrics[2].advisory = true;
    let verdict = judge(&window(policy, 12, (1.0, 0.0, 3.0), 7)).expect("valid input");
    assert_eq!(verdict.decision, Decision::Pass, "{verdict}");
    assert!(verdict.metrics[2].bad_samples > 0, "{verdict}");
}

#[test]
fn the_live_loop_and_the_backtest_reach_the_same_verdict() {
    let input = window(kinds_policy(), 12, (1.5, 0.0, 1.0), 3);
    let recorded = judge(&input).expect("valid input");
    let data = input.metrics.iter().collect::<Vec<_>>();
    let mut evaluator =
        Evaluator::new(input.policy.clone(), data.iter().map(|d| &d.baseline)).expect("valid");
    for (i, at) in input.timestamps.iter().enumerate() {
        let sample = Sample {
            at: *at,
            traffic: Some(CANARY),
            stable_traffic: Some(STABLE),
            canary: data.iter().map(|d| d.canary[i].clone()).collect(),
            stable: data.iter().map(|d| d.stable[i].clone()).collect(),
        };
        if evaluator.push(&sample).expect("well-formed") != Decision::Continue {
            break;
        }
    }
    assert_eq!(evaluator.finish(), recorded);
}

#[test]
fn bad_kind_settings_and_request_lists_are_refused_naming_the_field() {
    let refused = |input: AnalysisInput| match judge(&input) {
        Err(Error::Invalid { field, rule }) => format!("{field}: {rule}"),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut policy = kinds_policy();
    policy.metrics[0].quantile = Some(0.99);
    assert_eq!(
        refused(window(policy, 3, CLEAN, 1)),
        "policy.metrics[0].quantile: needs kind `quantile`"
    );
    let mut policy = kinds_policy();
    policy.metrics[1].quantile = Some(1.0);
    assert_eq!(
        refused(window(policy, 3, CLEAN, 1)),
        "policy.metrics[1].quantile: must be between 0 and 1 (exclusive)"
    );
    let mut policy = kinds_policy();
    (policy.metrics[2].critical, policy.metrics[2].advisory) = (true, true);
    assert!(refused(window(policy, 3, CLEAN, 1)).starts_with("policy.metrics[2].advisory: "));
    let mut input = window(kinds_policy(), 3, CLEAN, 1);
    input.stable_traffic = Some(vec![STABLE; 2]);
    assert_eq!(
        refused(input),
        "stable_traffic: has 2 entries, timestamps has 3"
    );
    let mut input = window(kinds_policy(), 3, CLEAN, 1);
    input.metrics[0].baseline.stable_traffic.pop();
    assert!(refused(input).starts_with("metrics[0].baseline.stable_traffic: has 23 entries"));
    // And in JSON, an unknown kind names the field too.
    let text = r#"{"policy": {"metrics": [{"name": "e", "kind": "ratio"}]}, "timestamps": [], "metrics": [{"name": "e", "canary": []}]}"#;
    let err = AnalysisInput::from_json(text).expect_err("unknown kind");
    assert!(err.to_string().contains("unknown variant `ratio`"), "{err}");
}

#[test]
fn an_undecided_analysis_says_how_many_passes_it_still_needs() {
    let input = window(kinds_policy(), 12, CLEAN, 5);
    let data = input.metrics.iter().collect::<Vec<_>>();
    let mut evaluator =
        Evaluator::new(input.policy.clone(), data.iter().map(|d| &d.baseline)).expect("valid");
    for i in 0..4 {
        let sample = Sample {
            at: input.timestamps[i],
            traffic: Some(CANARY),
            stable_traffic: Some(STABLE),
            canary: data.iter().map(|d| d.canary[i].clone()).collect(),
            stable: data.iter().map(|d| d.stable[i].clone()).collect(),
        };
        assert_eq!(evaluator.push(&sample).expect("well-formed"), Decision::Continue);
    }
    let so_far = evaluator.verdict();
    assert_eq!(so_far.passes_needed, Some(10 - so_far.tally.passes), "{so_far}");
    assert!(so_far.to_string().contains("passing samples short of promoting"), "{so_far}");
    // Ended there, it is inconclusive, never a pass on missing evidence.
    let ended = evaluator.finish();
    assert_eq!((ended.decision, ended.rule), (Decision::Inconclusive, Some(Rule::EndOfInput)));
    // Decided, nothing is needed.
    assert_eq!(judge(&input).expect("valid").passes_needed, None);
}


/// A whole fleet judged against its readings before the change (no stable group left, as in a
/// rolling deploy's last batch), whose few windows happened to see no error.
fn without_a_stable_group(canary_rate: f64) -> AnalysisInput {
    let input = serde_json::json!({
        "policy": {
            "metrics": [{"name": "error_rate", "kind": "rate"}],
            "rules": {"required_passes": 3},
            "low_traffic": {"min_requests": 10}
        },
        "timestamps": (0..6).map(|i| START + i * STEP).collect::<Vec<_>>(),
        "traffic": [400, 400, 400, 400, 400, 400],
        "metrics": [{
            "name": "error_rate",
            "baseline": {"values": [0.0, 0.0, 0.0]},
            "canary": vec![canary_rate; 6]
        }]
    });
    AnalysisInput::from_json(&input.to_string()).expect("a valid input")
}

#[test]
fn a_rate_against_readings_that_saw_no_error_is_held_to_the_spread_of_its_requests() {
    // One error in 400 requests, every sample: a 0.25% error rate, no evidence against a
    // baseline of three windows without errors.
    let one = judge(&without_a_stable_group(1.0 / 400.0)).expect("valid");
    assert_eq!(one.decision, Decision::Pass, "{one}");
    // 30% of requests failing is.
    let bad = judge(&without_a_stable_group(0.30)).expect("valid");
    assert_eq!(bad.decision, Decision::Fail, "{bad}");
}
