//! The analysis policy: metrics, groups, score thresholds, decision rules and what to do when
//! there is no data or too little traffic.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Result, check, invalid};
use crate::metric::Metric;
use crate::rules::Rules;

/// How a deploy is judged. Every field but `metrics` has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The metrics to judge, each with its detectors. At least one.
    pub metrics: Vec<Metric>,
    /// Weights of metric groups in the score. A group a metric names but this list leaves out
    /// weighs 1. Default empty (every group weighs 1).
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Score thresholds for a sample. Default pass 95, marginal 75.
    #[serde(default)]
    pub score: ScoreThresholds,
    /// Decision rules over the stream of sample judgements.
    #[serde(default)]
    pub rules: Rules,
    /// What a sample with a missing value counts as. Default `inconclusive`; never a pass.
    #[serde(default)]
    pub no_data: Fallback,
    /// Minimum canary traffic for a sample to be judged at all.
    #[serde(default)]
    pub low_traffic: LowTraffic,
    /// Size of each metric's baseline window: the most recent this-many baseline values, with
    /// each concurrent stable reading pushing out the oldest. Default 12 (an hour of 5-minute
    /// samples): on the NAB deploy benchmark a two-hour window let drift between the hour
    /// before the deploy and the hour after it fail 12% of clean deploys, an hour 0.2%.
    #[serde(default = "default_baseline_window")]
    pub baseline_window: usize,
    /// Live deploys only: how many sample windows to read the instances a deploy changes first
    /// next to the rest, with both groups' requests, before anything changes (the A/A period;
    /// it is recorded with the analysis, so a backtest judges what the deploy judged). Default:
    /// [`DEFAULT_AA_WINDOWS`] when any metric has a `kind`, else none; 0 turns it off. At most
    /// [`MAX_AA_WINDOWS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aa_windows: Option<u32>,
}

/// A/A windows a live deploy reads when a metric has a kind and the policy does not say.
pub const DEFAULT_AA_WINDOWS: u32 = 6;
/// The most A/A windows a policy may ask for.
pub const MAX_AA_WINDOWS: u32 = 100;

fn default_baseline_window() -> usize {
    12
}

impl Policy {
    /// A policy over these metrics with every other setting at its default.
    pub fn new(metrics: Vec<Metric>) -> Self {
        Policy {
            metrics,
            groups: Vec::new(),
            score: ScoreThresholds::default(),
            rules: Rules::default(),
            no_data: Fallback::default(),
            low_traffic: LowTraffic::default(),
            baseline_window: default_baseline_window(),
            aa_windows: None,
        }
    }

    /// The A/A windows a live deploy reads before its first change (see [`Self::aa_windows`]).
    pub fn aa_windows(&self) -> u32 {
        self.aa_windows.unwrap_or(if self.metrics.iter().any(|m| m.kind.is_some()) {
            DEFAULT_AA_WINDOWS
        } else {
            0
        })
    }

    /// Checks every setting; the error names the field and the rule it breaks, e.g.
    /// `policy.metrics[2].weight: must be > 0`.
    pub fn validate(&self) -> Result<()> {
        if self.metrics.is_empty() {
            return Err(invalid("policy.metrics", "must list at least one metric"));
        }
        let mut names = BTreeSet::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            let field = format!("policy.metrics[{i}]");
            metric.validate(&field)?;
            if !names.insert(metric.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("duplicate metric name `{}`", metric.name),
                ));
            }
        }
        if let Some(n) = self.aa_windows {
            check(
                "policy.aa_windows",
                f64::from(n),
                n <= MAX_AA_WINDOWS,
                &format!("must be at most {MAX_AA_WINDOWS}"),
            )?;
        }
        let mut groups = BTreeSet::new();
        for (i, group) in self.groups.iter().enumerate() {
            let field = format!("policy.groups[{i}]");
            if !groups.insert(group.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("duplicate group name `{}`", group.name),
                ));
            }
            if !self.metrics.iter().any(|m| m.group == group.name) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("no metric is in group `{}`", group.name),
                ));
            }
            check(
                &format!("{field}.weight"),
                group.weight,
                group.weight > 0.0,
                "must be > 0",
            )?;
        }
        if self.baseline_window < 2 {
            return Err(invalid("policy.baseline_window", "must be >= 2"));
        }
        self.score.validate("policy.score")?;
        self.rules.validate("policy.rules")
    }

    /// Weight of a group in the score.
    pub fn group_weight(&self, group: &str) -> f64 {
        self.groups
            .iter()
            .find(|g| g.name == group)
            .map_or(1.0, |g| g.weight)
    }
}

/// A named group of metrics and its weight in the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name, as metrics refer to it.
    pub name: String,
    /// Relative weight, > 0.
    pub weight: f64,
}

/// Kayenta-style score thresholds for one sample. The score is 0-100: the weighted share of
/// passing metrics, groups weighted by their weight and metrics within a group by theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreThresholds {
    /// At or above: the sample passes. Default 95.
    pub pass: f64,
    /// At or above but below `pass`: the sample is marginal (inconclusive); below: it fails.
    /// Default 75.
    pub marginal: f64,
}

impl Default for ScoreThresholds {
    fn default() -> Self {
        ScoreThresholds {
            pass: 95.0,
            marginal: 75.0,
        }
    }
}

impl ScoreThresholds {
    fn validate(&self, field: &str) -> Result<()> {
        check(
            &format!("{field}.pass"),
            self.pass,
            (0.0..=100.0).contains(&self.pass),
            "must be within 0..=100",
        )?;
        let m = self.marginal;
        check(
            &format!("{field}.marginal"),
            m,
            (0.0..=self.pass).contains(&m),
            "must be within 0..=pass",
        )
    }
}

/// What a sample that cannot be judged normally counts as. Never a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Counts towards the inconclusive limit, which pauses the deploy for a human. Default.
    #[default]
    Inconclusive,
    /// Counts as a failing sample.
    Fail,
}

/// Low-traffic policy: a sample whose canary served fewer requests says little.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowTraffic {
    /// Fewest canary requests in a sample for it to be judged. Default 100: below that an
    /// error rate moves in steps of 1% or more. Ignored for samples without a traffic count.
    pub min_requests: u64,
    /// What a low-traffic sample counts as. Default `inconclusive`.
    pub action: Fallback,
}

impl Default for LowTraffic {
    fn default() -> Self {
        LowTraffic {
            min_requests: 100,
            action: Fallback::Inconclusive,
        }
    }
}
