//! What a metric is: its name, which way is bad, its weight, and which detectors watch it.

use serde::{Deserialize, Serialize};

use crate::detectors::{Comparison, Paired, Seasonal, StaticThreshold, ZScore};
use crate::error::{Result, check, invalid};
use crate::kind::Kind;

/// Which direction of change is a regression.
///
/// A latency drop is not a failure, so latency is `increase`; a throughput or success-rate
/// drop is, so those are `decrease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is worse (error rate, latency, log volume). The default.
    #[default]
    Increase,
    /// Lower is worse (success rate, throughput).
    Decrease,
    /// Any departure is suspicious.
    Either,
}

impl Direction {
    /// Whether a departure on `side` counts as a regression for this direction.
    pub fn is_bad(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Direction::Either, _)
                | (Direction::Increase, Side::High)
                | (Direction::Decrease, Side::Low)
        )
    }

    /// The bad side for a signed departure (`delta > 0` is high), if that side is bad.
    pub(crate) fn bad_side(self, delta: f64) -> Option<Side> {
        let side = if delta > 0.0 {
            Side::High
        } else if delta < 0.0 {
            Side::Low
        } else {
            return None;
        };
        self.is_bad(side).then_some(side)
    }

    /// Whether an upper bound can ever fire for this direction.
    pub(crate) fn watches_high(self) -> bool {
        self != Direction::Decrease
    }

    /// Whether a lower bound can ever fire for this direction.
    pub(crate) fn watches_low(self) -> bool {
        self != Direction::Increase
    }
}

/// The side on which a value departed from what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Above the expected range.
    High,
    /// Below the expected range.
    Low,
}

/// One reading of one metric for one sample, as a metric source returned it.
///
/// In JSON a number is a value, `null` is a missing value and `{"error": "..."}` is a
/// metric-source error. An error never counts as a pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Observation {
    /// The metric's value. A non-finite value is treated as missing.
    Value(f64),
    /// The metric source failed for this sample (timeout, bad query, ...).
    Error {
        /// What the source said.
        error: String,
    },
    /// The source answered, but had no value for this sample.
    Missing,
}

impl Observation {
    /// The value, if there is a finite one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Observation::Value(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }
}

impl From<f64> for Observation {
    fn from(value: f64) -> Self {
        Observation::Value(value)
    }
}

impl From<Option<f64>> for Observation {
    fn from(value: Option<f64>) -> Self {
        value.map_or(Observation::Missing, Observation::Value)
    }
}

/// How one metric is judged.
///
/// Detectors left out of the JSON take their defaults (`zscore` and `comparison` on,
/// `thresholds` and `seasonal` off); set one to `null` to turn it off, or to `{}` to turn it on
/// with default settings. A metric is bad for a sample when any of its detectors fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Unique name, e.g. `error_rate` or `log_lines`.
    pub name: String,
    /// Which direction of change is a regression. Default `increase`.
    #[serde(default)]
    pub direction: Direction,
    /// Group the metric is scored in. Default `default`.
    #[serde(default = "default_group")]
    pub group: String,
    /// Weight within its group. Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// What the metric measures (`rate`, `quantile`, `count` or `gauge`), which sets how its
    /// sampling noise is modelled (see [`Kind`]). With a rate, quantile or count kind and both
    /// groups' request counts in the samples, the paired detector judges like with like from
    /// the requests behind each reading, and the z-score and comparison, which would judge a
    /// small canary's reading against a large group's spread, stand aside. Default none: the
    /// noise is estimated from readings only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// For a `quantile` metric, the quantile it reads, in (0, 1). Default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// When true, this metric failing fails the whole sample whatever the score.
    #[serde(default)]
    pub critical: bool,
    /// When true, the metric is judged and reported but never counts: not in the score, never
    /// a large effect or a cumulative effect. Cannot be critical.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
    /// Static thresholds, absolute and relative to the baseline. Default off.
    #[serde(default)]
    pub thresholds: Option<StaticThreshold>,
    /// Z-score of each canary value against the baseline distribution.
    #[serde(default = "some_default")]
    pub zscore: Option<ZScore>,
    /// Dynamic thresholds from history at the same hour of day and day of week. Where static
    /// thresholds are also set, the more lenient bound of the two applies. Default off: with
    /// the stable version measured alongside, shared drift cancels anyway and history bands
    /// only add false alarms; turn it on without a concurrent baseline.
    #[serde(default)]
    pub seasonal: Option<Seasonal>,
    /// Mann-Whitney comparison of recent canary values with the baseline, with effect size.
    #[serde(default = "some_default")]
    pub comparison: Option<Comparison>,
    /// The canary's reading minus the stable version's reading in the same sample, against
    /// the sampling noise of one reading (from the baseline's successive differences). Needs
    /// `stable` readings; without them it says nothing.
    #[serde(default = "some_default")]
    pub paired: Option<Paired>,
}

fn default_group() -> String {
    "default".to_owned()
}

fn one() -> f64 {
    1.0
}

fn some_default<T: Default>() -> Option<T> {
    Some(T::default())
}

impl Metric {
    /// A metric with the default detectors (z-score, comparison and paired).
    pub fn new(name: impl Into<String>, direction: Direction) -> Self {
        Metric {
            name: name.into(),
            direction,
            group: default_group(),
            weight: 1.0,
            kind: None,
            quantile: None,
            critical: false,
            advisory: false,
            thresholds: None,
            zscore: some_default(),
            seasonal: None,
            comparison: some_default(),
            paired: some_default(),
        }
    }

    /// The same metric with every detector turned off, to switch on one at a time.
    pub fn bare(name: impl Into<String>, direction: Direction) -> Self {
        Metric {
            zscore: None,
            comparison: None,
            paired: None,
            ..Metric::new(name, direction)
        }
    }

    /// Checks this metric's settings; `field` is its path, e.g. `policy.metrics[2]`.
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(invalid(format!("{field}.name"), "must not be empty"));
        }
        if self.group.trim().is_empty() {
            return Err(invalid(format!("{field}.group"), "must not be empty"));
        }
        check(
            &format!("{field}.weight"),
            self.weight,
            self.weight > 0.0,
            "must be > 0",
        )?;
        if self.critical && self.advisory {
            return Err(invalid(
                format!("{field}.advisory"),
                "cannot be set on a critical metric (an advisory metric never fails a sample)",
            ));
        }
        if let Some(q) = self.quantile {
            if self.kind != Some(Kind::Quantile) {
                return Err(invalid(
                    format!("{field}.quantile"),
                    "needs kind `quantile`",
                ));
            }
            check(
                &format!("{field}.quantile"),
                q,
                q > 0.0 && q < 1.0,
                "must be between 0 and 1 (exclusive)",
            )?;
        }
        if self.thresholds.is_none()
            && self.zscore.is_none()
            && self.seasonal.is_none()
            && self.comparison.is_none()
            && self.paired.is_none()
        {
            return Err(invalid(
                field,
                "needs at least one detector (thresholds, zscore, seasonal, comparison or paired)",
            ));
        }
        if let Some(t) = &self.thresholds {
            t.validate(&format!("{field}.thresholds"), self.direction)?;
        }
        if let Some(z) = &self.zscore {
            z.validate(&format!("{field}.zscore"))?;
        }
        if let Some(s) = &self.seasonal {
            s.validate(&format!("{field}.seasonal"))?;
        }
        if let Some(c) = &self.comparison {
            c.validate(&format!("{field}.comparison"))?;
        }
        if let Some(p) = &self.paired {
            p.validate(&format!("{field}.paired"))?;
        }
        Ok(())
    }
}
