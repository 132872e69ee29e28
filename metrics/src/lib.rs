//! Metric sources: where the analysis engine's observations come from.
//!
//! A [`Source`] answers, for a [`Cohort`] of instances (one version of one service) and a time,
//! one [`Observation`](signalbox_analysis::Observation) per metric. Two implementations:
//!
//! - [`Scrape`], the embedded default: reads the instances' own Prometheus-format `/metrics`
//!   and measures the window between two reads ([`exposition`] holds the parsing, deltas and
//!   quantiles, shared with the deploy's health gate).
//! - [`Prometheus`]: instant and range queries against the Prometheus HTTP API, each metric a
//!   PromQL [`Template`] filled from the group's service, version and instances.
//!
//! Errors and timeouts are [`Observation::Error`](signalbox_analysis::Observation::Error) and
//! an empty result is [`Observation::Missing`](signalbox_analysis::Observation::Missing): never
//! a made-up zero, so a source that cannot see cannot pass a deploy.
//!
//! [`recorded`] turns a finished deploy's history back into an
//! [`AnalysisInput`](signalbox_analysis::AnalysisInput) for `signalbox backtest`.

mod error;
pub mod exposition;
mod prometheus;
pub mod recorded;
mod scrape;
mod source;
pub mod template;

pub use error::{Error, Result};
pub use prometheus::{Prometheus, demo_queries};
pub use scrape::{Measure, Scrape, Scraper};
pub use source::{
    Cohort, ERROR_RATE, Instance, LATENCY_P99_MS, LOG_LINES, P99_MS, REQUESTS, Source, sample, unix_seconds,
};
pub use template::Template;
