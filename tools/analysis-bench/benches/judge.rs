//! Criterion bench: judging 20 metrics x 1,000 samples (goal: under 5 ms), next to a plain
//! mean/stddev pass over the same data as the baseline. Run with
//! `cargo bench -p signalbox-analysis-bench --bench judge`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use signalbox_analysis::judge;
use signalbox_analysis_bench::speed::{
    SAMPLES, add_all_detectors, add_concurrent, input, plain_zscore,
};

fn bench(c: &mut Criterion) {
    let default = input(7);
    let mut concurrent = input(7);
    add_concurrent(&mut concurrent, 7);
    let mut all = concurrent.clone();
    add_all_detectors(&mut all);
    for i in [&default, &concurrent, &all] {
        assert_eq!(
            judge(i).unwrap().tally.samples as usize,
            SAMPLES,
            "every sample is judged"
        );
    }
    let mut group = c.benchmark_group("20 metrics x 1000 samples");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("judge, default detectors", |b| {
        b.iter(|| judge(black_box(&default)).unwrap())
    });
    group.bench_function("judge, default detectors, stable alongside", |b| {
        b.iter(|| judge(black_box(&concurrent)).unwrap())
    });
    group.bench_function("judge, all detectors, stable alongside", |b| {
        b.iter(|| judge(black_box(&all)).unwrap())
    });
    group.bench_function("plain mean-stddev baseline", |b| {
        b.iter(|| plain_zscore(black_box(&default)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
