//! Every step of every deploy is judged by the analysis engine (`signalbox_analysis`): the
//! compact report that goes into history and status, the first-version gate as an engine
//! preset ([`gate_policy`]), and the pure decisions around them.
//!
//! A request that sets [`DeployRequest::analysis`](crate::DeployRequest::analysis) is judged by
//! its own policy; every other request by [`gate_policy`] of its `health` thresholds.

mod record;

use serde::{Deserialize, Serialize};
use signalbox_analysis::{Baseline, Verdict};
pub use signalbox_analysis::{AnalysisInput, Decision, Policy, Rule, Sample};
use signalbox_analysis::detectors::{RelativeTo, StaticThreshold};
use signalbox_analysis::{Direction, Fallback, LowTraffic, Metric, Rules};

pub use self::record::Recorder;
use crate::bounds::{MAX_EVALUATION_MS, MAX_ITEMS, MAX_SAMPLES, check_count, check_text};
use crate::metric::{ERROR_RATE, LATENCY_P99_MS, LOG_LINES, P99_MS};
use crate::{Error, GroupFigures, HealthPolicy, Result};

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

    /// Why the step (`what`, e.g. `batch 2`) must not go on, or `None` to continue.
    /// Inconclusive rolls back too: a deploy is never promoted on missing evidence.
    pub fn stop_reason(&self, what: &str) -> Option<String> {
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
            Decision::Fail => Some(format!("{what}: analysis failed: {}", explained())),
            Decision::Inconclusive | Decision::Continue => Some(format!("{what}: analysis inconclusive: {}", explained())),
        }
    }
}

/// Checks a request's analysis policy with the engine's own rules and signalbox's bounds; the
/// field path starts with `analysis.` (the engine says `policy.`). `health` sizes the windows.
pub fn validate(policy: &Policy, health: &HealthPolicy) -> Result<()> {
    policy.validate().map_err(|e| match e {
        signalbox_analysis::Error::Invalid { field, rule } => {
            let rest = field.strip_prefix("policy").unwrap_or(&field);
            Error::invalid(format!("analysis{rest}"), rule)
        }
        other => Error::invalid("analysis", other.to_string()),
    })?;
    check_count("analysis.metrics", policy.metrics.len(), MAX_ITEMS)?;
    check_count("analysis.groups", policy.groups.len(), MAX_ITEMS)?;
    for (i, m) in policy.metrics.iter().enumerate() {
        check_text(&format!("analysis.metrics[{i}].name"), &m.name, 128)?;
        check_text(&format!("analysis.metrics[{i}].group"), &m.group, 128)?;
    }
    for (i, g) in policy.groups.iter().enumerate() {
        check_text(&format!("analysis.groups[{i}].name"), &g.name, 128)?;
    }
    if policy.rules.required_passes > MAX_SAMPLES {
        return Err(Error::invalid("analysis.rules.required_passes", format!("must be at most {MAX_SAMPLES}")));
    }
    if policy.baseline_window > 10_000 {
        return Err(Error::invalid("analysis.baseline_window", "must be at most 10000"));
    }
    if u64::from(windows(policy, health)) * health.sample_interval_ms > MAX_EVALUATION_MS + 2 * 600_000 {
        return Err(Error::invalid("analysis.rules.required_passes", "with health.sample_interval_ms, makes one evaluation longer than a day"));
    }
    Ok(())
}

/// The first-version gate as an engine policy, the default judge of every deploy:
///
/// - `error_rate`, critical: bad above the baseline by `max_error_rate_increase` (+20%) and by at
///   least `min_error_rate_delta` (2 points);
/// - `p99_ms`, critical: bad above the baseline by `max_p99_increase_ms` (50 ms);
/// - `consecutive_bad_samples` (3) failing windows in a row fail the step, and `samples` (5)
///   passing windows pass it; windows below `min_requests_per_sample` requests are low
///   traffic (inconclusive), so too little evidence never promotes.
///
/// Both thresholds are relative to every reference: the pre-deploy figures (slid forward by the
/// readings of the instances not yet updated) and the not-yet-updated instances in the same
/// window. The canary is bad only when it is worse than all of them, so trouble the whole fleet
/// shares that minute is not the new build's fault.
pub fn gate_policy(health: &HealthPolicy) -> Policy {
    let gate = |name: &str, thresholds: StaticThreshold| Metric {
        critical: true,
        thresholds: Some(thresholds),
        ..Metric::bare(name, Direction::Increase)
    };
    let every = StaticThreshold { relative_to: RelativeTo::Every, ..StaticThreshold::default() };
    let error_rate = StaticThreshold { max_increase: Some(health.max_error_rate_increase), min_delta: Some(health.min_error_rate_delta), ..every.clone() };
    let p99 = StaticThreshold { max_delta: Some(health.max_p99_increase_ms), ..every };
    let mut policy = Policy::new(vec![gate(ERROR_RATE, error_rate), gate(P99_MS, p99)]);
    policy.rules = Rules {
        consecutive_failures: health.consecutive_bad_samples,
        required_passes: health.samples,
        ..Rules::default()
    };
    policy.low_traffic = LowTraffic { min_requests: health.min_requests_per_sample, action: Fallback::Inconclusive };
    policy
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
                P99_MS | LATENCY_P99_MS if figures.requests > 0 => Some(figures.p99_ms),
                LOG_LINES if span_ms > 0 => Some(figures.log_lines as f64 * 1000.0 / span_ms as f64),
                _ => None,
            };
            Baseline { values: value.filter(|v| v.is_finite()).into_iter().collect(), ..Baseline::default() }
        })
        .collect()
}

/// Each policy metric's baseline from a live A/A period (`aa`, samples of the canary-to-be and
/// the rest): the stable group's readings as values, the canary group's beside them, with both
/// groups' requests; only windows where all four are known, so every list has one entry per
/// value. `None` without any A/A sample, when the pre-deploy figures stand.
pub fn aa_baselines(policy: &Policy, aa: &[Sample]) -> Option<Vec<Baseline>> {
    if aa.is_empty() {
        return None;
    }
    let baselines = (0..policy.metrics.len())
        .map(|m| {
            let mut b = Baseline::default();
            for s in aa {
                let (Some(stable), Some(canary)) = (s.stable.get(m).and_then(|o| o.value()), s.canary.get(m).and_then(|o| o.value())) else {
                    continue;
                };
                let (Some(nc), Some(ns)) = (s.traffic, s.stable_traffic) else { continue };
                b.values.push(stable);
                b.canary.push(canary);
                b.traffic.push(nc);
                b.stable_traffic.push(ns);
            }
            b
        })
        .collect();
    Some(baselines)
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
        let h = HealthPolicy::default();
        assert_eq!(validate(&p, &h).unwrap_err().field(), "analysis.metrics[1].weight");
        validate(&policy(), &h).unwrap();
        let mut slow = policy();
        slow.rules.required_passes = 1_000;
        let minutes = HealthPolicy { sample_interval_ms: 600_000, ..h };
        assert_eq!(validate(&slow, &minutes).unwrap_err().field(), "analysis.rules.required_passes");
    }

    #[test]
    fn only_a_pass_goes_on() {
        let v = Evaluator::new(policy(), &baselines(&policy(), &GroupFigures::default(), 1000)).unwrap().finish();
        let report = AnalysisReport::of(&v);
        assert_eq!(report.decision, Decision::Inconclusive);
        assert_eq!(report.metrics.len(), 2);
        assert!(report.stop_reason("batch 1").unwrap().starts_with("batch 1: analysis inconclusive: Inconclusive (EndOfInput)"));
        let pass = AnalysisReport { decision: Decision::Pass, ..report };
        assert_eq!(pass.stop_reason("batch 1"), None);
    }

    #[test]
    fn an_aa_period_becomes_each_metrics_baseline_where_every_part_is_known() {
        let window = |canary: [f64; 2], stable: Option<[f64; 2]>, traffic: Option<u64>| Sample {
            at: 0,
            traffic,
            stable_traffic: Some(9_000),
            canary: canary.iter().map(|v| (*v).into()).collect(),
            stable: stable.map(|s| s.iter().map(|v| (*v).into()).collect()).unwrap_or_default(),
        };
        let aa = [window([0.01, 12.0], Some([0.02, 11.0]), Some(100)), window([0.03, 13.0], None, Some(100)), window([0.04, 14.0], Some([0.05, 15.0]), None)];
        assert_eq!(aa_baselines(&policy(), &[]), None);
        let b = aa_baselines(&policy(), &aa).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].values.clone(), b[0].canary.clone(), b[0].traffic.clone(), b[0].stable_traffic.clone()), (vec![0.02], vec![0.01], vec![100], vec![9_000]));
        assert_eq!((b[1].values.clone(), b[1].canary.clone()), (vec![11.0], vec![12.0]));
    }

    #[test]
    fn baselines_follow_the_policy_order() {
        let figures = GroupFigures { requests: 200, errors: 2, p99_ms: 12.0, log_lines: 50 };
        let b = baselines(&policy(), &figures, 5000);
        assert_eq!((b[0].values.clone(), b[1].values.clone()), (vec![0.01], vec![12.0]));
        let mut e = Evaluator::new(policy(), &b).unwrap();
        let sample = Sample { at: 0, traffic: Some(200), stable_traffic: None, canary: vec![0.01.into(), 12.0.into()], stable: vec![] };
        e.push(&sample).unwrap();
    }

    /// Judges canary windows `(requests, errors, p99)` against concurrent stable windows with
    /// the gate preset; returns each window's decision.
    fn gate(canary: &[(u64, u64, f64)], stable: Option<(u64, u64, f64)>, baseline: (u64, u64, f64)) -> Vec<Decision> {
        let health = HealthPolicy::default();
        let policy = gate_policy(&health);
        let figures = |(requests, errors, p99_ms)| GroupFigures { requests, errors, p99_ms, log_lines: 0 };
        let mut e = Evaluator::new(policy.clone(), &baselines(&policy, &figures(baseline), 6_000)).unwrap();
        let reading = |(r, err, p99): (u64, u64, f64)| vec![(err as f64 / r as f64).into(), p99.into()];
        canary
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let sample = Sample { at: i as i64, traffic: Some(c.0), stable_traffic: None, canary: reading(c), stable: stable.map(reading).unwrap_or_default() };
                e.push(&sample).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_gate_preset_fails_an_error_rate_up_20_percent_and_2_points_three_windows_in_a_row() {
        let bad = gate(&[(50, 10, 8.0); 3], Some((900, 5, 8.0)), (1000, 5, 8.0));
        assert_eq!(bad, vec![Decision::Continue, Decision::Continue, Decision::Fail]);
        // 1 error in 60 (1.7%) against 0.5%: relatively +233%, but only 1.2 points.
        let noise = gate(&[(60, 1, 8.0); 5], Some((900, 4, 8.0)), (1000, 5, 8.0));
        assert_eq!(noise.last(), Some(&Decision::Pass), "{noise:?}");
    }

    #[test]
    fn the_gate_preset_does_not_blame_the_canary_for_fleet_wide_trouble() {
        let shared = gate(&[(50, 10, 8.0); 5], Some((900, 180, 8.0)), (1000, 5, 8.0));
        assert_eq!(shared.last(), Some(&Decision::Pass), "{shared:?}");
    }

    #[test]
    fn the_gate_preset_fails_a_p99_up_more_than_50_ms_and_not_a_drop() {
        let slow = gate(&[(50, 0, 70.0); 3], Some((900, 0, 10.0)), (1000, 0, 10.0));
        assert_eq!(slow.last(), Some(&Decision::Fail));
        let fine = gate(&[(50, 0, 55.0); 5], Some((900, 0, 10.0)), (1000, 0, 10.0));
        assert_eq!(fine.last(), Some(&Decision::Pass));
        let faster = gate(&[(50, 0, 1.0); 5], None, (1000, 0, 40.0));
        assert_eq!(faster.last(), Some(&Decision::Pass), "without a stable group the baseline decides");
    }

    #[test]
    fn the_gate_preset_never_passes_on_too_little_traffic() {
        let quiet = gate(&[(3, 0, 8.0); 7], Some((900, 5, 8.0)), (1000, 5, 8.0));
        assert!(quiet.iter().all(|d| *d != Decision::Pass), "{quiet:?}");
        let e = Evaluator::new(gate_policy(&HealthPolicy::default()), &baselines(&gate_policy(&HealthPolicy::default()), &GroupFigures::default(), 1)).unwrap();
        assert_eq!(e.finish().decision, Decision::Inconclusive);
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
