//! The yardstick of the orchestration-overhead benchmark.

workflow!(
    /// Runs `n` no-op activities one after another; returns how many ran.
    NoopChainRun = "signalbox.bench.noop_chain": u32 => u32
);
