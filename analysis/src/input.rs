//! What an analysis is given: the policy, each metric's baseline and history, and the canary's
//! samples. A recorded [`AnalysisInput`] can be judged again later with [`crate::judge`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid};
use crate::metric::Observation;
use crate::policy::Policy;

/// A timestamped value from a metric's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Unix seconds; hour of day and weekday are taken in UTC.
    pub at: i64,
    /// The metric's value then.
    pub value: f64,
}

/// What a metric is compared against, known when the analysis starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Readings of the baseline (the stable version) before the first sample, for z-scores,
    /// relative thresholds and the Mann-Whitney comparison. Concurrent stable readings in the
    /// samples then slide this window forward (see [`Sample::stable`]).
    #[serde(default)]
    pub values: Vec<f64>,
    /// Past values over days or weeks up to the start of the analysis (the baseline period
    /// included), for seasonal thresholds at the same hour of day and day of week; the most
    /// recent points set the current level. Optional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Point>,
    /// The instances that become the canary, read at the same times as `values` while they
    /// still ran the stable version (an A/A period), one reading per value; optional. Their
    /// differences from `values` measure how far two groups serving the same traffic drift
    /// apart by chance, which the paired detector then uses as its noise (instead of the
    /// stable readings' successive differences), and their mean is a standing offset it
    /// subtracts. Every entry is used, not only the last `baseline_window`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary: Vec<f64>,
    /// Requests the canary group served over each A/A reading, one per value; optional. A
    /// paired detector with `per_request` takes the A/A period's noise relative to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<u64>,
    /// Requests the stable group served over each baseline reading, one per value; optional.
    /// With `traffic` and `canary`, the A/A period of a metric with a rate, quantile or count
    /// `kind` shows how far its noise departs from the requests' model (see [`crate::Kind`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_traffic: Vec<u64>,
}

impl Baseline {
    /// The first optional list that must hold one entry per value but does not: its field
    /// name, its length, and what its entries are.
    pub(crate) fn not_one_per_value(&self) -> Option<(&'static str, usize, &'static str)> {
        [
            (
                "canary",
                self.canary.len(),
                "one per baseline value, read at the same time",
            ),
            ("traffic", self.traffic.len(), "one per baseline value"),
            (
                "stable_traffic",
                self.stable_traffic.len(),
                "one per baseline value",
            ),
        ]
        .into_iter()
        .find(|(_, len, _)| *len > 0 && *len != self.values.len())
    }
}

/// One step of the canary stream: every metric's reading at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Unix seconds at which the sample was taken.
    pub at: i64,
    /// Canary requests served during the sample, for the low-traffic policy. `None` when not
    /// measured, which skips the low-traffic check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u64>,
    /// Requests the stable group served during the sample. With `traffic`, a metric with a
    /// rate, quantile or count `kind` is judged from the requests behind each group's reading,
    /// whatever the groups' sizes (see [`crate::Kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_traffic: Option<u64>,
    /// The canary's reading of each policy metric, in the policy's order.
    pub canary: Vec<Observation>,
    /// The stable (baseline) version's reading of each metric at the same time, in the
    /// policy's order, or empty when the baseline is not measured alongside. Each value joins
    /// the baseline, pushing out its oldest value, and moves the seasonal level, so drift that
    /// both versions share cancels out. Errors and missing values here are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable: Vec<Observation>,
}

/// A whole analysis window, as recorded for a backtest or re-judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisInput {
    /// How to judge.
    pub policy: Policy,
    /// Unix seconds of each canary sample, oldest first.
    pub timestamps: Vec<i64>,
    /// Canary requests per sample, parallel to `timestamps`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<u64>>,
    /// Stable-group requests per sample, parallel to `timestamps`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_traffic: Option<Vec<u64>>,
    /// Data for each policy metric, in any order.
    pub metrics: Vec<MetricData>,
}

/// One metric's data in an [`AnalysisInput`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricData {
    /// Name of the policy metric this is for.
    pub name: String,
    /// Baseline values and seasonal history.
    #[serde(default)]
    pub baseline: Baseline,
    /// Canary readings, parallel to `timestamps`: numbers, `null` for missing, or
    /// `{"error": "..."}` for a metric-source error.
    pub canary: Vec<Observation>,
    /// The stable version's readings at the same times, parallel to `timestamps`; optional
    /// (see [`Sample::stable`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable: Vec<Observation>,
}

impl AnalysisInput {
    /// Reads and validates a recorded input. Numbers are read bit-exactly, so a re-judged
    /// input reaches the verdict it reached when recorded.
    pub fn from_json(text: &str) -> Result<Self> {
        let input: AnalysisInput = serde_json::from_str(text).map_err(|e| Error::Json {
            what: "AnalysisInput",
            message: e.to_string(),
        })?;
        input.validate()?;
        Ok(input)
    }

    /// Checks the policy and that the data fits it: one entry per policy metric and every
    /// series as long as `timestamps`.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        let n = self.timestamps.len();
        if let Some(i) = self.timestamps.windows(2).position(|w| w[1] < w[0]) {
            return Err(invalid(
                format!("timestamps[{}]", i + 1),
                "must not be earlier than the one before (oldest first)",
            ));
        }
        if let Some(traffic) = &self.traffic
            && traffic.len() != n
        {
            return Err(invalid(
                "traffic",
                format!("has {} entries, timestamps has {n}", traffic.len()),
            ));
        }
        if let Some(traffic) = &self.stable_traffic
            && traffic.len() != n
        {
            return Err(invalid(
                "stable_traffic",
                format!("has {} entries, timestamps has {n}", traffic.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, data) in self.metrics.iter().enumerate() {
            if !self.policy.metrics.iter().any(|m| m.name == data.name) {
                return Err(invalid(
                    format!("metrics[{i}].name"),
                    format!("`{}` is not a policy metric", data.name),
                ));
            }
            if !seen.insert(data.name.as_str()) {
                return Err(invalid(
                    format!("metrics[{i}].name"),
                    format!("duplicate data for `{}`", data.name),
                ));
            }
            if data.canary.len() != n {
                return Err(invalid(
                    format!("metrics[{i}].canary"),
                    format!("has {} entries, timestamps has {n}", data.canary.len()),
                ));
            }
            if let Some((field, len, entries)) = data.baseline.not_one_per_value() {
                let rule = format!(
                    "has {len} entries, baseline.values has {} ({entries})",
                    data.baseline.values.len()
                );
                return Err(invalid(format!("metrics[{i}].baseline.{field}"), rule));
            }
            if !data.stable.is_empty() && data.stable.len() != n {
                let rule = format!(
                    "has {} entries, timestamps has {n} (leave it out when not measured)",
                    data.stable.len()
                );
                return Err(invalid(format!("metrics[{i}].stable"), rule));
            }
        }
        match self
            .policy
            .metrics
            .iter()
            .find(|m| !seen.contains(m.name.as_str()))
        {
            Some(m) => Err(invalid(
                "metrics",
                format!("no data for policy metric `{}`", m.name),
            )),
            None => Ok(()),
        }
    }

    /// Each policy metric's data, in the policy's order. Call after [`Self::validate`].
    pub(crate) fn in_policy_order(&self) -> Vec<&MetricData> {
        self.policy
            .metrics
            .iter()
            .filter_map(|m| self.metrics.iter().find(|d| d.name == m.name))
            .collect()
    }
}
