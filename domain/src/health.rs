//! The first health gate: updated instances against the live control group and the pre-deploy
//! baseline, judged sample by sample.
//!
//! A sample is bad when the canary's error rate rises by more than the allowed relative increase
//! (and by a minimum absolute amount, so that 1 error in 40 requests against 0 in 400 is not a
//! "regression"), or its p99 rises by more than the allowed milliseconds. The gate fails on K
//! consecutive bad samples. Too little traffic is never read as health: it makes the verdict
//! inconclusive, and an inconclusive verdict does not promote.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Thresholds and sampling of the health gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
        if !(50..=600_000).contains(&self.sample_interval_ms) {
            return bad("sample_interval_ms", "must be between 50 and 600000");
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
}

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Healthy: go on.
    Pass,
    /// A regression: roll back.
    Fail,
    /// Not enough evidence either way: never promote on it.
    Inconclusive,
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

/// The verdict with the figures behind it, as recorded in workflow history and shown by status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// One line saying why.
    pub summary: String,
    /// The pre-deploy baseline used for comparison.
    pub baseline: GroupFigures,
    /// The judged windows, in order.
    pub samples: Vec<SampleJudgement>,
}

/// Judges one window of the canary against the control group (if any) and the baseline.
///
/// The canary must be worse than every reference it is compared with: a fleet-wide problem that
/// hits the control group as hard is not the new version's fault.
pub fn judge_sample(policy: &HealthPolicy, canary: GroupFigures, control: Option<GroupFigures>, baseline: GroupFigures) -> SampleJudgement {
    let enough = |g: &GroupFigures| g.requests >= policy.min_requests_per_sample;
    if !enough(&canary) || control.as_ref().is_some_and(|c| !enough(c)) {
        return SampleJudgement { canary, control, bad: None, reasons: vec![format!("too little traffic (canary {} requests)", canary.requests)] };
    }
    let mut reasons = Vec::new();
    let references: Vec<(&str, GroupFigures)> =
        control.iter().map(|c| ("control", *c)).chain(std::iter::once(("baseline", baseline))).collect();

    let error_worse = references.iter().all(|(_, r)| {
        let (c, b) = (canary.error_rate(), r.error_rate());
        c > b * (1.0 + policy.max_error_rate_increase) && c - b >= policy.min_error_rate_delta
    });
    if error_worse {
        let refs: Vec<String> = references.iter().map(|(n, r)| format!("{n} {:.2}%", r.error_rate() * 100.0)).collect();
        reasons.push(format!(
            "error rate {:.2}% exceeds +{:.0}% over {}",
            canary.error_rate() * 100.0,
            policy.max_error_rate_increase * 100.0,
            refs.join(", ")
        ));
    }
    let latency_worse = references.iter().all(|(_, r)| canary.p99_ms > r.p99_ms + policy.max_p99_increase_ms);
    if latency_worse {
        let refs: Vec<String> = references.iter().map(|(n, r)| format!("{n} {:.1} ms", r.p99_ms)).collect();
        reasons.push(format!("p99 {:.1} ms exceeds +{:.0} ms over {}", canary.p99_ms, policy.max_p99_increase_ms, refs.join(", ")));
    }
    SampleJudgement { canary, control, bad: Some(!reasons.is_empty()), reasons }
}

/// Folds judged windows into a decision: `Some` as soon as one is reached.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    consecutive_bad: u32,
    counted: u32,
    seen: u32,
}

impl Gate {
    /// Takes the next window; returns a final verdict once the policy reaches one.
    pub fn push(&mut self, policy: &HealthPolicy, sample: &SampleJudgement) -> Option<Verdict> {
        self.seen += 1;
        match sample.bad {
            Some(true) => {
                self.counted += 1;
                self.consecutive_bad += 1;
                if self.consecutive_bad >= policy.consecutive_bad_samples {
                    return Some(Verdict::Fail);
                }
            }
            Some(false) => {
                self.counted += 1;
                self.consecutive_bad = 0;
            }
            None => {}
        }
        (self.seen >= policy.samples).then(|| self.finish(policy))
    }

    /// The verdict when sampling ends without a failure.
    pub fn finish(&self, policy: &HealthPolicy) -> Verdict {
        if self.counted < policy.consecutive_bad_samples { Verdict::Inconclusive } else { Verdict::Pass }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(requests: u64, errors: u64, p99_ms: f64) -> GroupFigures {
        GroupFigures { requests, errors, p99_ms, log_lines: requests }
    }

    #[test]
    fn error_rate_rise_past_both_references_is_bad() {
        let p = HealthPolicy::default();
        let s = judge_sample(&p, g(50, 10, 8.0), Some(g(900, 5, 8.0)), g(1000, 5, 8.0));
        assert_eq!(s.bad, Some(true));
        assert!(s.reasons[0].contains("error rate 20.00%"), "{:?}", s.reasons);
    }

    #[test]
    fn noise_at_tiny_rates_is_not_a_regression() {
        let p = HealthPolicy::default();
        // 1 error in 60 (1.7%) against 0.5%: relatively +233%, but only 1.2 points.
        assert_eq!(judge_sample(&p, g(60, 1, 8.0), Some(g(900, 4, 8.0)), g(1000, 5, 8.0)).bad, Some(false));
    }

    #[test]
    fn fleet_wide_trouble_is_not_the_canary_fault() {
        let p = HealthPolicy::default();
        let s = judge_sample(&p, g(50, 10, 8.0), Some(g(900, 180, 8.0)), g(1000, 5, 8.0));
        assert_eq!(s.bad, Some(false));
    }

    #[test]
    fn p99_rise_of_more_than_50ms_is_bad_and_a_drop_is_fine() {
        let p = HealthPolicy::default();
        assert_eq!(judge_sample(&p, g(50, 0, 70.0), Some(g(900, 0, 10.0)), g(1000, 0, 10.0)).bad, Some(true));
        assert_eq!(judge_sample(&p, g(50, 0, 55.0), Some(g(900, 0, 10.0)), g(1000, 0, 10.0)).bad, Some(false));
        assert_eq!(judge_sample(&p, g(50, 0, 1.0), None, g(1000, 0, 40.0)).bad, Some(false));
    }

    #[test]
    fn without_control_the_baseline_decides() {
        let p = HealthPolicy::default();
        assert_eq!(judge_sample(&p, g(500, 100, 8.0), None, g(1000, 5, 8.0)).bad, Some(true));
    }

    #[test]
    fn three_consecutive_bad_samples_fail_and_a_good_one_resets() {
        let p = HealthPolicy { samples: 10, ..Default::default() };
        let bad = judge_sample(&p, g(50, 10, 8.0), None, g(1000, 5, 8.0));
        let good = judge_sample(&p, g(50, 0, 8.0), None, g(1000, 5, 8.0));
        let mut gate = Gate::default();
        assert_eq!(gate.push(&p, &bad), None);
        assert_eq!(gate.push(&p, &bad), None);
        assert_eq!(gate.push(&p, &good), None);
        assert_eq!(gate.push(&p, &bad), None);
        assert_eq!(gate.push(&p, &bad), None);
        assert_eq!(gate.push(&p, &bad), Some(Verdict::Fail));
    }

    #[test]
    fn no_traffic_is_inconclusive_never_pass() {
        let p = HealthPolicy::default();
        let empty = judge_sample(&p, g(0, 0, 0.0), None, g(1000, 5, 8.0));
        assert_eq!(empty.bad, None);
        let mut gate = Gate::default();
        let verdicts: Vec<_> = (0..p.samples).map(|_| gate.push(&p, &empty)).collect();
        assert_eq!(verdicts.last().unwrap(), &Some(Verdict::Inconclusive));
    }

    #[test]
    fn healthy_windows_pass_after_all_samples() {
        let p = HealthPolicy::default();
        let good = judge_sample(&p, g(50, 0, 8.0), Some(g(900, 4, 8.0)), g(1000, 5, 8.0));
        let mut gate = Gate::default();
        let verdicts: Vec<_> = (0..p.samples).map(|_| gate.push(&p, &good)).collect();
        assert!(verdicts[..4].iter().all(Option::is_none));
        assert_eq!(verdicts[4], Some(Verdict::Pass));
    }

    #[test]
    fn policy_validation_names_the_field() {
        let p = HealthPolicy { samples: 2, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field(), "health.samples");
        let p = HealthPolicy { max_error_rate_increase: f64::NAN, ..Default::default() };
        assert_eq!(p.validate().unwrap_err().field(), "health.max_error_rate_increase");
    }
}
