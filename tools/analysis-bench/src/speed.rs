//! Speed: judging 20 metrics x 1,000 samples, next to a plain mean/stddev pass over the same
//! data.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use signalbox_analysis::detectors::{NoiseScale, Seasonal, StaticThreshold};
use signalbox_analysis::{
    AnalysisInput, Baseline, Direction, Kind, Metric, MetricData, Observation, Point, Policy,
    Rules, judge,
};

/// Metrics in the speed input.
pub const METRICS: usize = 20;
/// Canary samples (and baseline values) per metric.
pub const SAMPLES: usize = 1_000;

/// 20 metrics with the default detectors, 1,000 baseline values (all in the baseline window),
/// 1,000 canary samples and two weeks of 5-minute history each. Limits are raised so that all
/// 1,000 samples are judged.
pub fn input(seed: u64) -> AnalysisInput {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = 1_397_466_000;
    let mut metrics = Vec::new();
    let mut data = Vec::new();
    for m in 0..METRICS {
        let name = format!("metric_{m:02}");
        metrics.push(Metric::new(name.clone(), Direction::Increase));
        let level = rng.gen_range(1.0..1000.0);
        let noisy = |rng: &mut ChaCha8Rng| level * (1.0 + rng.gen_range(-0.1..0.1));
        data.push(MetricData {
            name,
            baseline: Baseline {
                values: (0..SAMPLES).map(|_| noisy(&mut rng)).collect(),
                history: (0..4032)
                    .map(|i| Point {
                        at: start - (4032 - i) * 300,
                        value: noisy(&mut rng),
                    })
                    .collect(),
                ..Baseline::default()
            },
            canary: (0..SAMPLES)
                .map(|_| Observation::Value(noisy(&mut rng)))
                .collect(),
            stable: Vec::new(),
        });
    }
    let limit = SAMPLES as u32 + 1;
    let rules = Rules {
        consecutive_failures: limit,
        failure_limit: limit,
        inconclusive_limit: limit,
        required_passes: limit,
        ..Rules::default()
    };
    AnalysisInput {
        policy: Policy {
            rules,
            baseline_window: SAMPLES,
            ..Policy::new(metrics)
        },
        timestamps: (0..SAMPLES as i64).map(|i| start + i * 300).collect(),
        traffic: None,
        stable_traffic: None,
        metrics: data,
    }
}

/// Median and minimum wall time of repeated calls, in seconds.
pub struct Timing {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
}

fn time(runs: usize, mut f: impl FnMut()) -> Timing {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    Timing {
        median: times[runs / 2].as_secs_f64(),
        min: times[0].as_secs_f64(),
    }
}

/// What the speed input carries beyond the canary's readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// The default detectors on canary readings alone: the paired detector has no stable
    /// reading to compare with and says nothing.
    Default,
    /// A canary analysis proper: the default detectors with the stable version's reading in
    /// every sample, an A/A period and traffic, so the paired detector and its cumulative
    /// test run, with noise scaled by level and requests, and Mann-Whitney ranks the canary
    /// window against the concurrent stable readings.
    Concurrent,
    /// [`Workload::Concurrent`] plus static thresholds and seasonal bands.
    AllDetectors,
    /// [`Workload::Concurrent`] with a kind on every metric (rates, quantiles, counts and
    /// gauges in turn) and both groups' requests, so each is judged from its requests' model.
    Kinds,
}

/// Times `judge` on [`input`] carrying `workload`; returns the timing and the samples judged.
pub fn measure_judge(seed: u64, workload: Workload) -> (Timing, u32) {
    let mut input = input(seed);
    if workload != Workload::Default {
        add_concurrent(&mut input, seed);
    }
    if workload == Workload::AllDetectors {
        add_all_detectors(&mut input);
    }
    if workload == Workload::Kinds {
        add_kinds(&mut input, seed);
    }
    let verdict = judge(&input).expect("valid input");
    if verdict.tally.samples as usize != SAMPLES {
        eprintln!("{verdict}");
    }
    let judged = verdict.tally.samples;
    let t = time(41, || {
        black_box(judge(black_box(&input)).expect("valid input"));
    });
    (t, judged)
}

/// Adds static thresholds and seasonal bands to every metric of `input`, so all four
/// detectors run.
pub fn add_all_detectors(input: &mut AnalysisInput) {
    for m in &mut input.policy.metrics {
        m.thresholds = Some(StaticThreshold {
            max_increase: Some(0.5),
            ..Default::default()
        });
        m.seasonal = Some(Seasonal::default());
    }
}

/// Adds the stable version's readings to every sample of `input`, an A/A period and traffic
/// to every baseline, traffic to every sample, and a noise model to every paired detector.
pub fn add_concurrent(input: &mut AnalysisInput, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let requests = |rng: &mut ChaCha8Rng| rng.gen_range(20_000..40_000u64);
    input.traffic = Some((0..SAMPLES).map(|_| requests(&mut rng)).collect());
    for (metric, data) in input.policy.metrics.iter_mut().zip(&mut input.metrics) {
        if let Some(p) = &mut metric.paired {
            p.noise_scale = Some(NoiseScale::Linear);
            p.per_request = Some(true);
        }
        let level = data.baseline.values[0];
        let noisy = |rng: &mut ChaCha8Rng| level * (1.0 + rng.gen_range(-0.1..0.1));
        data.stable = (0..SAMPLES)
            .map(|_| Observation::Value(noisy(&mut rng)))
            .collect();
        data.baseline.canary = (0..SAMPLES).map(|_| noisy(&mut rng)).collect();
        data.baseline.traffic = (0..SAMPLES).map(|_| requests(&mut rng)).collect();
    }
}

/// Gives every metric of `input` a kind in turn, rates rescaled to a 1% error rate, both
/// groups' requests to every sample and A/A reading (the stable group serving 99 times the
/// canary's), and the canary the stable group's readings.
pub fn add_kinds(input: &mut AnalysisInput, seed: u64) {
    let kinds = [Kind::Rate, Kind::Quantile, Kind::Count, Kind::Gauge];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b1d);
    let stable = |rng: &mut ChaCha8Rng| rng.gen_range(2_000_000..4_000_000u64);
    input.stable_traffic = Some((0..SAMPLES).map(|_| stable(&mut rng)).collect());
    for (i, (metric, data)) in input
        .policy
        .metrics
        .iter_mut()
        .zip(&mut input.metrics)
        .enumerate()
    {
        let kind = kinds[i % kinds.len()];
        metric.kind = Some(kind);
        data.baseline.stable_traffic = (0..SAMPLES).map(|_| stable(&mut rng)).collect();
        if kind == Kind::Rate {
            let scale = 0.01 / data.baseline.values[0];
            let rescale = |o: &mut Observation| {
                if let Observation::Value(v) = o {
                    *v *= scale;
                }
            };
            data.baseline.values.iter_mut().for_each(|v| *v *= scale);
            data.baseline.canary.iter_mut().for_each(|v| *v *= scale);
            data.stable.iter_mut().for_each(rescale);
        }
        // A clean deploy under the model: the canary reads as the stable group does, so no
        // rule decides early and every sample is judged.
        // A gauge's A/A readings here are noise unrelated to its canary's: without them its
        // paired noise comes from the stable readings, as in the concurrent workload.
        if kind == Kind::Gauge {
            data.baseline.canary.clear();
            data.baseline.traffic.clear();
            data.baseline.stable_traffic.clear();
        }
        // A count is the group's total: the canary's share of the stable group's.
        let (canary_requests, stable_requests) = (
            input.traffic.clone().unwrap_or_default(),
            input.stable_traffic.clone().unwrap_or_default(),
        );
        data.canary = data
            .stable
            .iter()
            .enumerate()
            .map(|(k, o)| match (kind, o) {
                (Kind::Count, Observation::Value(v)) => {
                    Observation::Value(v * canary_requests[k] as f64 / stable_requests[k] as f64)
                }
                _ => o.clone(),
            })
            .collect();
    }
}

/// Times the plain baseline on the same input.
pub fn measure_plain(seed: u64) -> Timing {
    let input = input(seed);
    time(401, || {
        black_box(plain_zscore(black_box(&input)));
    })
}

/// The plain baseline: per metric, baseline mean and stddev, then a 3-sigma check of every
/// canary value. Returns the number of alarms so the work cannot be optimised away.
pub fn plain_zscore(input: &AnalysisInput) -> usize {
    input
        .metrics
        .iter()
        .map(|m| {
            let b = &m.baseline.values;
            let n = b.len() as f64;
            let mean = b.iter().sum::<f64>() / n;
            let sd = (b.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            m.canary
                .iter()
                .filter_map(Observation::value)
                .filter(|v| (v - mean).abs() > 3.0 * sd)
                .count()
        })
        .sum()
}
