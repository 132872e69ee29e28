//! Opt-in judgement of a batch by the full analysis engine (`signalbox_analysis`): the compact
//! report that goes into history and status, and the pure decisions around it.
//!
//! A request that sets [`DeployRequest::analysis`](crate::DeployRequest::analysis) has each
//! batch judged by the `health.analyze` activity instead of the first-version gate of
//! [`crate::health`]; without it nothing here runs.

mod record;

use serde::{Deserialize, Serialize};
use signalbox_analysis::{Baseline, Verdict};
pub use signalbox_analysis::{AnalysisInput, Decision, Policy, Rule};

pub use self::record::Recorder;
use crate::{Error, GroupFigures, HealthPolicy, Result};

/// Error rate (5xx per request, 0-1) as the engine reads it from the demo service.
pub const ERROR_RATE: &str = "error_rate";
/// 99th-percentile latency in milliseconds (`latency_p99_ms` is accepted too).
pub const P99_MS: &str = "p99_ms";
/// Log lines written per second.
pub const LOG_LINES: &str = "log_lines";

/// The engine's verdict on one batch, compact enough for history and the status query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    /// Pass, Fail or Inconclusive (an undecided stream ends inconclusive, never a pass).
    pub decision: Decision,
    /// The rule that decided (`None` for a dry run, and in reports recorded before the field:
    /// their `summary` names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// The engine's first line: decision, deciding rule and tally.
    pub summary: String,
    /// One line per policy metric, as the engine explains it (status, value, detectors).
    pub metrics: Vec<String>,
}

impl AnalysisReport {
    /// The compact form of an engine verdict: its `Display` lines, split into summary and
    /// per-metric explanation.
    pub fn of(verdict: &Verdict) -> Self {
        let text = verdict.to_string();
        let mut lines = text.lines();
        let summary = lines.next().unwrap_or_default().to_owned();
        Self { decision: verdict.decision, rule: verdict.rule, summary, metrics: lines.map(|l| l.trim().to_owned()).collect() }
    }

    /// Why the batch must not go on, or `None` to continue. Inconclusive rolls back too: a
    /// deploy is never promoted on missing evidence.
    pub fn stop_reason(&self, batch: u32) -> Option<String> {
        let explained = || {
            let mut s = self.summary.clone();
            for m in &self.metrics {
                s.push_str("; ");
                s.push_str(m);
            }
            s
        };
        match self.decision {
            Decision::Pass => None,
            Decision::Fail => Some(format!("batch {batch}: analysis failed: {}", explained())),
            Decision::Inconclusive | Decision::Continue => Some(format!("batch {batch}: analysis inconclusive: {}", explained())),
        }
    }
}

/// Checks a request's analysis policy with the engine's own rules; the field path starts
/// with `analysis.` (the engine says `policy.`).
pub fn validate(policy: &Policy) -> Result<()> {
    policy.validate().map_err(|e| match e {
        signalbox_analysis::Error::Invalid { field, rule } => {
            let rest = field.strip_prefix("policy").unwrap_or(&field);
            Error::invalid(format!("analysis{rest}"), rule)
        }
        other => Error::invalid("analysis", other.to_string()),
    })
}

/// How many windows `health.analyze` samples at most per batch: the gate's sample count, at
/// least the policy's required passes, plus two for detectors warming up. A stream that ends
/// undecided is inconclusive, so a policy needing more passes than this can never promote.
pub fn windows(policy: &Policy, health: &HealthPolicy) -> u32 {
    health.samples.max(policy.rules.required_passes) + 2
}

/// The engine's baseline for each policy metric, in the policy's order, from the pre-deploy
/// figures measured over `span_ms`. A figure it cannot give (no requests, unknown metric, not
/// finite) is an empty baseline, which concurrent stable readings then fill. Only finite values:
/// the baselines are recorded in history as JSON, which has no NaN.
pub fn baselines(policy: &Policy, figures: &GroupFigures, span_ms: u64) -> Vec<Baseline> {
    policy
        .metrics
        .iter()
        .map(|m| {
            let value = match m.name.as_str() {
                ERROR_RATE if figures.requests > 0 => Some(figures.errors as f64 / figures.requests as f64),
                P99_MS | "latency_p99_ms" if figures.requests > 0 => Some(figures.p99_ms),
                LOG_LINES if span_ms > 0 => Some(figures.log_lines as f64 * 1000.0 / span_ms as f64),
                _ => None,
            };
            Baseline { values: value.filter(|v| v.is_finite()).into_iter().collect(), ..Baseline::default() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use signalbox_analysis::{Direction, Evaluator, Metric, Sample};

    use super::*;

    fn policy() -> Policy {
        Policy::new(vec![Metric::new(ERROR_RATE, Direction::Increase), Metric::new(P99_MS, Direction::Increase)])
    }

    #[test]
    fn a_broken_policy_names_its_field_under_analysis() {
        let mut p = policy();
        p.metrics[1].weight = 0.0;
        assert_eq!(validate(&p).unwrap_err().field(), "analysis.metrics[1].weight");
        validate(&policy()).unwrap();
    }

    #[test]
    fn only_a_pass_goes_on() {
        let v = Evaluator::new(policy(), &baselines(&policy(), &GroupFigures::default(), 1000)).unwrap().finish();
        let report = AnalysisReport::of(&v);
        assert_eq!(report.decision, Decision::Inconclusive);
        assert_eq!(report.metrics.len(), 2);
        assert!(report.stop_reason(1).unwrap().starts_with("batch 1: analysis inconclusive: Inconclusive (EndOfInput)"));
        let pass = AnalysisReport { decision: Decision::Pass, ..report };
        assert_eq!(pass.stop_reason(1), None);
    }

    #[test]
    fn baselines_follow_the_policy_order() {
        let figures = GroupFigures { requests: 200, errors: 2, p99_ms: 12.0, log_lines: 50 };
        let b = baselines(&policy(), &figures, 5000);
        assert_eq!((b[0].values.clone(), b[1].values.clone()), (vec![0.01], vec![12.0]));
        let mut e = Evaluator::new(policy(), &b).unwrap();
        let sample = Sample { at: 0, traffic: Some(200), canary: vec![0.01.into(), 12.0.into()], stable: vec![] };
        e.push(&sample).unwrap();
    }

    #[test]
    fn windows_leave_room_for_the_required_passes() {
        let mut p = policy();
        p.rules.required_passes = 3;
        let h = HealthPolicy { samples: 4, ..HealthPolicy::default() };
        assert_eq!(windows(&p, &h), 6);
        p.rules.required_passes = 10;
        assert_eq!(windows(&p, &h), 12);
    }
}
