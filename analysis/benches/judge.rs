//! Criterion bench: judging 20 metrics x 1,000 samples (goal: under 5 ms), next to a plain
//! mean/stddev pass over the same data as the baseline. Run with
//! `cargo bench -p signalbox-analysis --bench judge`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use signalbox_analysis::detectors::{Seasonal, StaticThreshold};
use signalbox_analysis::{
    AnalysisInput, Baseline, Direction, Metric, MetricData, Observation, Point, Policy, Rules,
    judge,
};

const METRICS: usize = 20;
const SAMPLES: usize = 1_000;

/// SplitMix64: a deterministic stream of uniforms in [0, 1), so every run judges the same data.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// 20 metrics, each with 1,000 baseline values, 1,000 canary samples and two weeks of 5-minute
/// history; limits raised so every sample is judged.
fn input(all_detectors: bool) -> AnalysisInput {
    let mut noise = Noise(7);
    let start = 1_397_466_000;
    let (mut metrics, mut data) = (Vec::new(), Vec::new());
    for m in 0..METRICS {
        let name = format!("metric_{m:02}");
        let mut metric = Metric::new(name.clone(), Direction::Increase);
        if all_detectors {
            metric.thresholds = Some(StaticThreshold {
                max_increase: Some(0.5),
                ..Default::default()
            });
            metric.seasonal = Some(Seasonal::default());
        }
        metrics.push(metric);
        let level = 1.0 + 999.0 * noise.next();
        let mut value = || level * (0.9 + 0.2 * noise.next());
        data.push(MetricData {
            name,
            baseline: Baseline {
                values: (0..SAMPLES).map(|_| value()).collect(),
                history: (0..4032)
                    .map(|i| Point {
                        at: start - (4032 - i) * 300,
                        value: value(),
                    })
                    .collect(),
            },
            canary: (0..SAMPLES).map(|_| Observation::Value(value())).collect(),
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
        metrics: data,
    }
}

/// The baseline: per metric, mean and standard deviation of the baseline, then a 3-sigma check
/// of every canary value.
fn plain(input: &AnalysisInput) -> usize {
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

fn bench(c: &mut Criterion) {
    let default = input(false);
    let all = input(true);
    assert_eq!(
        judge(&default).unwrap().tally.samples as usize,
        SAMPLES,
        "every sample is judged"
    );
    let mut group = c.benchmark_group("20 metrics x 1000 samples");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("judge, default detectors", |b| {
        b.iter(|| judge(black_box(&default)).unwrap())
    });
    group.bench_function("judge, all four detectors", |b| {
        b.iter(|| judge(black_box(&all)).unwrap())
    });
    group.bench_function("plain mean-stddev baseline", |b| {
        b.iter(|| plain(black_box(&default)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
