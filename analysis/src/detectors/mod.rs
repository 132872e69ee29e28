//! The detectors. Each turns one canary value (and what came before it) into a finding and
//! a report of the numbers it used; `judge` combines the findings of a metric.
//!
//! - [`StaticThreshold`]: fixed bounds, absolute or relative to the baseline mean.
//! - [`Seasonal`]: bounds from history at the same hour of day and day of week. With static
//!   thresholds on the same metric, the more lenient bound applies (Slack's ReleaseBot).
//! - [`ZScore`]: how many baseline standard deviations the canary value is away.
//! - [`Paired`]: the canary's reading minus the stable version's concurrent reading, against
//!   the sampling noise of one reading, so a swing both versions share cancels.
//! - [`Comparison`]: Mann-Whitney U on recent canary values against the baseline, gated by
//!   effect size (Kayenta-style), with the Hodges-Lehmann shift for the explanation.

use serde::{Deserialize, Serialize};

use crate::metric::Side;

pub(crate) mod hodges_lehmann;
pub(crate) mod mann_whitney;
pub(crate) mod paired;
pub(crate) mod rank_sum;
pub(crate) mod seasonal;
pub(crate) mod static_threshold;
pub(crate) mod zscore;

pub use hodges_lehmann::{Shift, hodges_lehmann};
pub use mann_whitney::{Comparison, ComparisonReport};
pub use paired::{
    CumulativeReport, DEFAULT_LARGE_EFFECT, EarlyLook, LEVEL_READINGS, MIN_NOISE_POINTS,
    NoiseScale, NoiseSource, Paired, PairedReport,
};
pub use rank_sum::{MannWhitney, mann_whitney};
pub use seasonal::{Season, Seasonal, SeasonalReport};
pub use static_threshold::{RelativeTo, StaticThreshold, ThresholdReport};
pub use zscore::{ZScore, ZScoreReport};

/// A detector, as named in explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Static and/or seasonal (dynamic) bounds.
    Threshold,
    /// Z-score against the baseline.
    Zscore,
    /// Mann-Whitney comparison with effect size.
    MannWhitney,
    /// Canary minus the stable version's concurrent reading.
    Paired,
}

/// What one detector concluded about one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Within bounds.
    Clear,
    /// A regression on this side.
    Bad(Side),
    /// Not enough canary values yet; says nothing either way.
    Warmup,
    /// Nothing to compare against (no baseline, no history at this hour).
    NoReference,
}
