//! Health sampling and the first-version gate's thresholds.
//!
//! [`HealthPolicy`] says how a step's health is sampled (window length, how many windows, how
//! much traffic a window needs) and holds the thresholds of the first-version gate: an error
//! rate up 20% and at least 2 points, or a p99 up 50 ms, in 3 consecutive windows fails the
//! step. Every step is judged by the analysis engine; without a policy of its own a deploy is
//! judged by those thresholds as an engine preset ([`crate::analysis::gate_policy`]).
//!
//! [`GroupFigures`] is what a group of instances did over a window; [`HealthReport`] is the
//! gate's verdict as deploys recorded it before the engine judged every step (their statuses
//! and histories still carry it).
use serde::{Deserialize, Serialize};

use signalbox_analysis::Decision;

use crate::bounds::{MAX_EVALUATION_MS, MAX_SAMPLES};
use crate::{Error, Result};

/// Thresholds and sampling of the health gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthPolicy {
    /// Allowed relative rise of the error rate (0.20 = +20%).
    pub max_error_rate_increase: f64,
    /// Absolute error-rate rise below which a relative rise is noise (0.02 = 2 points).
    pub min_error_rate_delta: f64,
    /// Allowed p99 latency rise in milliseconds.
    pub max_p99_increase_ms: f64,
    /// Consecutive bad samples that fail the gate.
    pub consecutive_bad_samples: u32,
    /// Samples taken per evaluation (at most; the gate stops early on failure).
    pub samples: u32,
    /// Length of one sample window in milliseconds.
    pub sample_interval_ms: u64,
    /// Requests a group must serve in one window for the window to count.
    pub min_requests_per_sample: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            max_error_rate_increase: 0.20,
            min_error_rate_delta: 0.02,
            max_p99_increase_ms: 50.0,
            consecutive_bad_samples: 3,
            samples: 5,
            sample_interval_ms: 2_000,
            min_requests_per_sample: 20,
        }
    }
}

impl HealthPolicy {
    /// Checks the policy; errors name the field under `health`.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, rule: &str| Err(Error::invalid(format!("health.{f}"), rule));
        if !(self.max_error_rate_increase >= 0.0 && self.max_error_rate_increase.is_finite()) {
            return bad("max_error_rate_increase", "must be a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.min_error_rate_delta) {
            return bad("min_error_rate_delta", "must be in [0, 1]");
        }
        if !(self.max_p99_increase_ms >= 0.0 && self.max_p99_increase_ms.is_finite()) {
            return bad("max_p99_increase_ms", "must be a finite number >= 0");
        }
        if self.consecutive_bad_samples == 0 {
            return bad("consecutive_bad_samples", "must be at least 1");
        }
        if self.samples < self.consecutive_bad_samples {
            return bad("samples", "must be at least consecutive_bad_samples, or a failure could never be seen");
        }
        if self.samples > MAX_SAMPLES {
            return Err(Error::invalid("health.samples", format!("must be at most {MAX_SAMPLES}")));
        }
        if !(50..=600_000).contains(&self.sample_interval_ms) {
            return bad("sample_interval_ms", "must be between 50 and 600000");
        }
        if u64::from(self.samples) * self.sample_interval_ms > MAX_EVALUATION_MS {
            return bad("samples", "times sample_interval_ms must be at most 86400000 (one evaluation within a day)");
        }
        if self.min_requests_per_sample > 1_000_000_000 {
            return bad("min_requests_per_sample", "must be at most 1000000000");
        }
        Ok(())
    }
}

/// What a group of instances did in one window (or, for the baseline, on average).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupFigures {
    /// Requests served.
    pub requests: u64,
    /// Requests answered with a server error.
    pub errors: u64,
    /// 99th percentile latency in milliseconds (0 when there were no requests).
    pub p99_ms: f64,
    /// Log lines written: a non-traditional health signal.
    pub log_lines: u64,
}

impl GroupFigures {
    /// Errors per request; 0 for no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// Several groups as one: their requests, errors and log lines summed, the worst p99 (a
    /// p99 of the union is at most that).
    pub fn together(groups: &[GroupFigures]) -> GroupFigures {
        groups.iter().fold(GroupFigures::default(), |all, g| GroupFigures {
            requests: all.requests + g.requests,
            errors: all.errors + g.errors,
            p99_ms: all.p99_ms.max(g.p99_ms),
            log_lines: all.log_lines + g.log_lines,
        })
    }
}

impl HealthPolicy {
    /// Whether `now` (a window of a target that runs the new build) regressed from `before`
    /// (the same target before it was deployed), by the gate's thresholds: in words with the
    /// figures, or `None` when it did not or the window had too little traffic to say.
    pub fn regression(&self, before: &GroupFigures, now: &GroupFigures) -> Option<String> {
        if now.requests < self.min_requests_per_sample {
            return None;
        }
        let (was, is) = (before.error_rate(), now.error_rate());
        let mut why = Vec::new();
        if is > was * (1.0 + self.max_error_rate_increase) && is - was >= self.min_error_rate_delta {
            why.push(format!("error rate {:.2}% against {:.2}% before", 100.0 * is, 100.0 * was));
        }
        if before.requests > 0 && now.p99_ms - before.p99_ms > self.max_p99_increase_ms {
            why.push(format!("p99 {:.0} ms against {:.0} ms before", now.p99_ms, before.p99_ms));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// One judged window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleJudgement {
    /// The updated instances.
    pub canary: GroupFigures,
    /// Not-yet-updated instances over the same window, when any remain.
    pub control: Option<GroupFigures>,
    /// `None` when the window had too little traffic to judge.
    pub bad: Option<bool>,
    /// Which thresholds were crossed, in words with figures.
    pub reasons: Vec<String>,
}

/// The first-version gate's verdict with the figures behind it, as deploys recorded it before
/// the engine judged every step; it still reads from their histories and statuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Pass, fail or inconclusive: written `pass`, `fail`, `inconclusive`; the first version's
    /// `Pass`, `Fail`, `Inconclusive` still read.
    pub verdict: Decision,
    /// One line saying why.
    pub summary: String,
    /// The pre-deploy baseline used for comparison.
    pub baseline: GroupFigures,
    /// The judged windows, in order.
    pub samples: Vec<SampleJudgement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: u64, p99_ms: f64) -> GroupFigures {
        GroupFigures { requests, errors, p99_ms, log_lines: 0 }
    }

    #[test]
    fn a_window_regresses_by_the_gates_thresholds_with_enough_traffic() {
        let p = HealthPolicy::default();
        let before = figures(1000, 2, 20.0);
        assert_eq!(p.regression(&before, &figures(1000, 3, 30.0)), None, "within the thresholds");
        assert_eq!(p.regression(&before, &figures(1000, 300, 20.0)).as_deref(), Some("error rate 30.00% against 0.20% before"));
        assert_eq!(p.regression(&before, &figures(1000, 2, 90.0)).as_deref(), Some("p99 90 ms against 20 ms before"));
        assert_eq!(p.regression(&before, &figures(10, 10, 90.0)), None, "too little traffic to say");
        // +20% relative but less than 2 points absolute is noise.
        assert_eq!(p.regression(&figures(1000, 100, 20.0), &figures(1000, 130, 20.0)).as_deref(), Some("error rate 13.00% against 10.00% before"));
        assert_eq!(p.regression(&figures(1000, 10, 20.0), &figures(1000, 25, 20.0)), None);
    }

    #[test]
    fn groups_together_sum_their_traffic_and_keep_the_worst_p99() {
        let all = GroupFigures::together(&[figures(10, 1, 30.0), figures(15, 4, 80.0)]);
        assert_eq!(all, figures(25, 5, 80.0));
        // Neither group alone has the 20 requests a window needs; together they do.
        let p = HealthPolicy::default();
        assert_eq!(p.regression(&figures(25, 0, 10.0), &figures(10, 5, 10.0)), None);
        assert!(p.regression(&figures(25, 0, 10.0), &all).is_some());
    }

    #[test]
    fn policy_validation_names_the_field() {
        let p = HealthPolicy { samples: 2, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field(), "health.samples");
        let p = HealthPolicy { max_error_rate_increase: f64::NAN, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field(), "health.max_error_rate_increase");
        let p = HealthPolicy { samples: u32::MAX, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().to_string(), "health.samples: must be at most 1000");
        let p = HealthPolicy { samples: 1000, sample_interval_ms: 600_000, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field(), "health.samples", "a thousand ten-minute windows is a week");
    }

    #[test]
    fn a_gate_report_recorded_before_the_engine_still_reads() {
        let old = r#"{"verdict":"Fail","summary":"3 consecutive bad samples","baseline":{"requests":10,"errors":0,"p99_ms":5.0,"log_lines":10},"samples":[]}"#;
        let report: HealthReport = serde_json::from_str(old).unwrap();
        assert_eq!(report.verdict, Decision::Fail);
    }
}
