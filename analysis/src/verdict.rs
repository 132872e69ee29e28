//! The verdict and its explanation, as recorded in workflow history and shown in a deploy's
//! status.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::detectors::{ComparisonReport, Detector, PairedReport, ThresholdReport, ZScoreReport};
use crate::metric::Direction;
use crate::rules::{Decision, Judgement, Rule, Tally};

/// The outcome of an analysis, with what led to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass, Fail or Inconclusive; `continue` only for a stream still in progress.
    pub decision: Decision,
    /// The rule that decided, if one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// Counts of sample judgements.
    pub tally: Tally,
    /// The last sample judged: the deciding one once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<SampleReport>,
    /// Every metric as of that sample, in policy order.
    pub metrics: Vec<MetricReport>,
    /// Unless a rule decided: how many more passing samples would promote
    /// (`rules.required_passes` less those so far). A stream never promotes on fewer; one that
    /// ends first is inconclusive, this many short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes_needed: Option<u32>,
}

/// How one sample was judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleReport {
    /// Position in the stream, from 0.
    pub index: usize,
    /// Unix seconds.
    pub at: i64,
    /// Canary requests in the sample, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u64>,
    /// The sample's judgement.
    pub judgement: Judgement,
    /// Score 0-100 over the metrics that were judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// One metric in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within every detector's bounds.
    Pass,
    /// Regressed upwards.
    High,
    /// Regressed downwards.
    Low,
    /// No value, or nothing to compare it with.
    NoData,
    /// The metric source failed.
    Error,
    /// Detectors still warming up.
    Pending,
    /// Not judged: the sample had too little traffic.
    Skipped,
}

impl Status {
    /// Whether the metric regressed.
    pub fn is_bad(self) -> bool {
        matches!(self, Status::High | Status::Low)
    }
}

/// One metric's explanation: its value, the bounds and statistics each detector used, and
/// which detectors fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// Metric name.
    pub name: String,
    /// Which direction is bad.
    pub direction: Direction,
    /// Whether this metric's failure failed the whole sample (a critical metric, or an effect
    /// beyond the critical ratio).
    pub critical: bool,
    /// Status in the reported sample.
    pub status: Status,
    /// Detectors that fired in the reported sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fired: Vec<Detector>,
    /// The canary value in the reported sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The metric source's error in the reported sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Static and seasonal bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdReport>,
    /// Z-score against the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zscore: Option<ZScoreReport>,
    /// Mann-Whitney comparison, effect size and Hodges-Lehmann shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonReport>,
    /// Canary minus the stable version's concurrent reading, against its noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedReport>,
    /// Samples in which this metric regressed, over the whole analysis.
    pub bad_samples: u32,
    /// Samples in which it had no value.
    pub missing_samples: u32,
    /// Samples in which its source failed.
    pub error_samples: u32,
}

impl fmt::Display for Verdict {
    /// A few lines for a deploy's status: the decision and rule, then one line per metric.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.decision)?;
        if let Some(rule) = self.rule {
            write!(f, " ({rule:?})")?;
        }
        let t = &self.tally;
        write!(
            f,
            ": {} samples, {} pass, {} fail, {} inconclusive, {} error",
            t.samples, t.passes, t.failures, t.inconclusive, t.errors
        )?;
        if let Some(s) = &self.sample {
            write!(f, "; sample {} {:?}", s.index, s.judgement)?;
            if let Some(score) = s.score {
                write!(f, " score {score:.1}")?;
            }
        }
        if let Some(n) = self.passes_needed {
            write!(f, "; {n} passing samples short of promoting")?;
        }
        for m in &self.metrics {
            write!(f, "\n  {}: {:?}", m.name, m.status)?;
            if let Some(v) = m.value {
                write!(f, " value {v}")?;
            }
            if !m.fired.is_empty() {
                write!(f, " fired {:?}", m.fired)?;
            }
            if let Some(z) = &m.zscore {
                write!(f, " z {:.2} (mean {}, sd {})", z.z, z.mean, z.stddev)?;
            }
            if let Some(t) = &m.threshold {
                write!(
                    f,
                    " bounds [{:?}, {:?}]",
                    t.effective.lower, t.effective.upper
                )?;
            }
            if let Some(c) = &m.comparison {
                write!(f, " p {:.4} ratio {:.3}", c.p_value, c.mean_ratio)?;
                if let Some(s) = c.shift {
                    write!(
                        f,
                        " shift {:.4} [{:.4}, {:.4}]",
                        s.estimate, s.lower, s.upper
                    )?;
                }
            }
            if let Some(e) = &m.error {
                write!(f, " error {e}")?;
            }
        }
        Ok(())
    }
}
