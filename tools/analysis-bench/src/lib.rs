//! Shared workloads of the analysis benchmarks: the speed input is built once here and judged
//! both by the benchmark command and by the criterion bench.

pub mod speed;
