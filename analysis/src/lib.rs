//! Pure health analysis for progressive delivery: samples and a policy in, a verdict and its
//! explanation out. No async, no I/O, no clock, no randomness, so the same input always gives
//! the same verdict, in a Temporal activity, in a backtest, or in a test.
//!
//! Per metric, each sample runs the detectors the policy enables (see [`detectors`]); the
//! metric is bad when any fires on its bad side ([`Direction`]). A sample's [`Judgement`]
//! comes from a Kayenta-style weighted score over metric groups, a failing critical metric
//! failing it outright. Decision [`Rules`] then turn the stream of judgements into a
//! [`Decision`]: K consecutive failures, a failure limit, an inconclusive limit, a
//! consecutive source-error limit, and a number of passes required to promote. No data, low
//! traffic and source errors never count as a pass.
//!
//! Each sample may carry the stable version's readings alongside the canary's
//! ([`Sample::stable`]); they slide the baseline forward so drift both versions share cancels.
//!
//! Two entry points share one code path: [`Evaluator::push`] for the in-deploy loop, one
//! sample at a time, and [`judge`] for a recorded [`AnalysisInput`] (the JSON format is
//! described in the crate's README).

pub mod detectors;
mod error;
mod input;
mod judge;
mod kind;
mod metric;
mod policy;
mod rules;
mod score;
mod stats;
mod verdict;
mod watch;

pub use detectors::Detector;
pub use error::{Error, Result};
pub use input::{AnalysisInput, Baseline, MetricData, Point, Sample};
pub use judge::{Evaluator, judge};
pub use kind::{DEFAULT_QUANTILE, Kind};
pub use metric::{Direction, Metric, Observation, Side};
pub use policy::{
    DEFAULT_AA_WINDOWS, Fallback, Group, LowTraffic, MAX_AA_WINDOWS, Policy, ScoreThresholds,
};
pub use rules::{Decision, Judgement, Rule, Rules, Tally};
pub use stats::Bounds;
pub use verdict::{MetricReport, SampleReport, Status, Verdict};
