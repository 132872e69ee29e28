//! Recorded deploys as analysis inputs, read back from their Temporal history, so a past deploy
//! can be judged again under another policy (`signalbox backtest export`):
//!
//! - a deploy judged by the analysis engine recorded the engine's input with each
//!   `health.analyze` result ([`analyses`]): exported as it is, it is judged to the verdict the
//!   deploy reached;
//! - a deploy judged by the first-version gate recorded its `health.evaluate` windows
//!   ([`evaluations`]), which [`analysis_input`] converts.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;
use signalbox_analysis::detectors::ZScore;
use signalbox_analysis::{
    AnalysisInput, Baseline, Direction, Metric, MetricData, Observation, Policy, Sample,
};
use signalbox_contract::activities::{
    AaPeriodInput, AnalyzeHealth, AnalyzeInput, AnalyzeOutput, EvaluateHealth, EvaluateInput,
    SampleAaPeriod,
};
use signalbox_domain::health::SampleJudgement;
use signalbox_domain::{GroupFigures, HealthPolicy, HealthReport};

use crate::source::{ERROR_RATE, LATENCY_P99_MS};
use crate::{Error, Result};

/// One health evaluation of a deploy (one batch): what the gate was given, what it found,
/// and when it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// When the evaluation finished, which is when its last window closed: Unix milliseconds.
    pub finished_at_ms: i64,
    /// The canary and control instances, the baseline and the gate's policy.
    pub input: EvaluateInput,
    /// The verdict and every judged window.
    pub report: HealthReport,
}

/// One batch judged by the analysis engine (`health.analyze`): what it was given and what it
/// returned, the verdict and, since the activity records it, the engine's input as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// When the analysis finished: Unix milliseconds.
    pub finished_at_ms: i64,
    /// The canary and stable instances, the pre-deploy figures and the policy.
    pub input: AnalyzeInput,
    /// The verdict, and the recorded [`AnalysisInput`] (`None` in results recorded before
    /// `health.analyze` kept it).
    pub output: AnalyzeOutput,
}

/// Every completed health evaluation in a workflow history, oldest first. `history` is
/// Temporal's history JSON (`temporal workflow show --output json`, the SDK's
/// `WorkflowHistory::to_json`, or the golden files under `tests/histories/`).
pub fn evaluations(history: &[u8]) -> Result<Vec<Evaluation>> {
    Ok(completed(history, EvaluateHealth::NAME)?
        .into_iter()
        .map(|(finished_at_ms, input, report)| Evaluation {
            finished_at_ms,
            input,
            report,
        })
        .collect())
}

/// Every completed analysis by the engine in a workflow history, oldest first; `history` as
/// for [`evaluations`].
pub fn analyses(history: &[u8]) -> Result<Vec<Analysis>> {
    Ok(completed(history, AnalyzeHealth::NAME)?
        .into_iter()
        .map(|(finished_at_ms, input, output)| Analysis {
            finished_at_ms,
            input,
            output,
        })
        .collect())
}

/// One live A/A period (`health.aa_period`): the groups it read and the samples it returned.
#[derive(Debug, Clone, PartialEq)]
pub struct AaPeriod {
    /// When it finished: Unix milliseconds.
    pub finished_at_ms: i64,
    /// The instances about to change, the ones read beside them, the windows.
    pub input: AaPeriodInput,
    /// One sample per window.
    pub samples: Vec<Sample>,
}

/// Every completed live A/A period in a workflow history, oldest first; `history` as for
/// [`evaluations`].
pub fn aa_periods(history: &[u8]) -> Result<Vec<AaPeriod>> {
    Ok(completed(history, SampleAaPeriod::NAME)?
        .into_iter()
        .map(|(finished_at_ms, input, samples)| AaPeriod {
            finished_at_ms,
            input,
            samples,
        })
        .collect())
}

/// A recorded analysis input judged under another `policy`: the data of metrics the policy
/// leaves out is dropped, so a policy over fewer metrics applies; one naming a metric that was
/// not recorded is refused by [`AnalysisInput::validate`], naming the metric.
pub fn under_policy(mut input: AnalysisInput, policy: Policy) -> AnalysisInput {
    input
        .metrics
        .retain(|d| policy.metrics.iter().any(|m| m.name == d.name));
    input.policy = policy;
    input
}

/// Every completed `activity` in `history`, oldest first: completion time (Unix milliseconds),
/// the input it was scheduled with, and its result.
fn completed<I, O>(history: &[u8], activity: &str) -> Result<Vec<(i64, I, O)>>
where
    I: DeserializeOwned + Clone,
    O: DeserializeOwned,
{
    let history: Value = serde_json::from_slice(history)
        .map_err(|e| Error::invalid("history", format!("not JSON: {e}")))?;
    let events = history
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("history.events", "missing: not a workflow history"))?;
    let mut scheduled: Vec<(i64, I)> = Vec::new();
    let mut found = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let field = format!("events[{i}]");
        let Some(attributes) = event.get("attributes").and_then(Value::as_object) else {
            continue;
        };
        if let Some(a) = attributes.get("ActivityTaskScheduledEventAttributes")
            && a.pointer("/activity_type/name").and_then(Value::as_str) == Some(activity)
        {
            let id = event.get("event_id").and_then(Value::as_i64);
            let id = id.ok_or_else(|| Error::invalid(format!("{field}.event_id"), "missing"))?;
            scheduled.push((id, payload(a, "input", &format!("{field}.input"))?));
        }
        if let Some(a) = attributes.get("ActivityTaskCompletedEventAttributes") {
            let id = a.get("scheduled_event_id").and_then(Value::as_i64);
            let Some(input) = scheduled
                .iter()
                .find(|(s, _)| Some(*s) == id)
                .map(|(_, input)| input.clone())
            else {
                continue;
            };
            let time = event
                .get("event_time")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let finished = chrono::DateTime::parse_from_rfc3339(time).map_err(|e| {
                Error::invalid(format!("{field}.event_time"), format!("{time:?}: {e}"))
            })?;
            let output = payload(a, "result", &format!("{field}.result"))?;
            found.push((finished.timestamp_millis(), input, output));
        }
    }
    Ok(found)
}

/// Decodes the first JSON payload under `attributes[key].payloads`.
fn payload<T: DeserializeOwned>(attributes: &Value, key: &str, field: &str) -> Result<T> {
    let data = attributes
        .get(key)
        .and_then(|p| p.pointer("/payloads/0/data"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("{field}.payloads[0].data"), "missing"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            Error::invalid(
                format!("{field}.payloads[0].data"),
                format!("not base64: {e}"),
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(
            format!("{field}.payloads[0].data"),
            format!("not the expected JSON: {e}"),
        )
    })
}

/// The policy a recorded evaluation is re-judged under unless another is given: the analysis
/// engine's defaults over [`ERROR_RATE`] and [`LATENCY_P99_MS`], both critical, carrying over
/// what the recorded gate knew about its windows: z-score noise floors of a third of its
/// allowed rises (so 3 sigma is at least `min_error_rate_delta` and `max_p99_increase_ms`), its
/// minimum traffic, its run of bad samples, and its number of samples to pass.
pub fn default_policy(gate: &HealthPolicy) -> Policy {
    let metric = |name: &str, noise_floor: f64| {
        let zscore = ZScore::default();
        Metric {
            critical: true,
            zscore: Some(ZScore {
                min_stddev: noise_floor / zscore.sigma,
                ..zscore
            }),
            ..Metric::new(name, Direction::Increase)
        }
    };
    let mut policy = Policy::new(vec![
        metric(ERROR_RATE, gate.min_error_rate_delta),
        metric(LATENCY_P99_MS, gate.max_p99_increase_ms),
    ]);
    policy.low_traffic.min_requests = gate.min_requests_per_sample;
    policy.rules.consecutive_failures = gate.consecutive_bad_samples.max(1);
    policy.rules.required_passes = gate.samples.max(1);
    policy
}

/// The analysis input of a recorded evaluation under `policy`: per window, the canary's
/// error rate and p99 with the control group's as the stable readings and the canary's
/// requests as traffic; the baseline is the pre-deploy figures. Windows are timed back from
/// the evaluation's end, one sample interval apart.
///
/// A window without requests has no error rate or latency (missing, not 0); a canary the gate
/// could not read is a source error.
pub fn analysis_input(evaluation: &Evaluation, policy: Policy) -> AnalysisInput {
    let samples = &evaluation.report.samples;
    let n = samples.len() as i64;
    let interval_ms = evaluation.input.policy.sample_interval_ms as i64;
    let timestamps = (0..n)
        .map(|i| (evaluation.finished_at_ms - (n - 1 - i) * interval_ms).div_euclid(1000))
        .collect();
    let series = |read: fn(&GroupFigures) -> Option<f64>| {
        let canary = samples.iter().map(|s| canary_reading(s, read)).collect();
        let stable = samples
            .iter()
            .map(|s| Observation::from(s.control.as_ref().and_then(read)))
            .collect();
        let values = read(&evaluation.report.baseline).into_iter().collect();
        (
            canary,
            stable,
            Baseline {
                values,
                ..Baseline::default()
            },
        )
    };
    let metrics = [
        (ERROR_RATE, error_rate as fn(&GroupFigures) -> Option<f64>),
        (LATENCY_P99_MS, p99_ms),
    ]
    .into_iter()
    .filter(|(name, _)| policy.metrics.iter().any(|m| m.name == *name))
    .map(|(name, read)| {
        let (canary, stable, baseline) = series(read);
        MetricData {
            name: name.to_owned(),
            baseline,
            canary,
            stable,
        }
    })
    .collect();
    AnalysisInput {
        policy,
        timestamps,
        traffic: Some(samples.iter().map(|s| s.canary.requests).collect()),
        // Every window's or none: a partial list would not line up with the timestamps.
        stable_traffic: samples.iter().map(|s| s.control.as_ref().map(|c| c.requests)).collect(),
        metrics,
    }
}

fn error_rate(g: &GroupFigures) -> Option<f64> {
    (g.requests > 0).then(|| g.error_rate())
}

fn p99_ms(g: &GroupFigures) -> Option<f64> {
    (g.requests > 0).then_some(g.p99_ms)
}

fn canary_reading(sample: &SampleJudgement, read: fn(&GroupFigures) -> Option<f64>) -> Observation {
    // The gate records an unreadable canary as a bad window with empty figures and says so in
    // its first reason (`activities::deploy::judge_window`).
    match sample.reasons.first() {
        Some(reason) if reason.starts_with("canary unreadable") => Observation::Error {
            error: reason.clone(),
        },
        _ => Observation::from(read(&sample.canary)),
    }
}

#[cfg(test)]
mod tests {
    use signalbox_analysis::{Decision, judge};
    use signalbox_domain::Target;

    use super::*;

    fn figures(requests: u64, errors: u64, p99_ms: f64) -> GroupFigures {
        GroupFigures {
            requests,
            errors,
            p99_ms,
            log_lines: requests,
        }
    }

    fn evaluation(canary: &[(u64, u64)]) -> Evaluation {
        let gate = HealthPolicy {
            samples: 4,
            sample_interval_ms: 1_000,
            min_requests_per_sample: 10,
            ..HealthPolicy::default()
        };
        let samples = canary
            .iter()
            .map(|&(requests, errors)| SampleJudgement {
                canary: figures(requests, errors, 9.9),
                control: Some(figures(380, 1, 9.9)),
                bad: None,
                reasons: vec![],
            })
            .collect();
        Evaluation {
            finished_at_ms: 1_772_460_010_500,
            input: EvaluateInput {
                fleet: Target::local("f"),
                canary: vec!["i-0000".into()],
                control: vec!["i-0001".into()],
                baseline: figures(1200, 3, 9.9),
                policy: gate,
                dry_run: false,
            },
            report: HealthReport {
                verdict: Decision::Fail,
                summary: String::new(),
                baseline: figures(1200, 3, 9.9),
                samples,
            },
        }
    }

    #[test]
    fn windows_become_samples_with_control_as_stable() {
        let e = evaluation(&[(20, 7), (0, 0), (20, 6)]);
        let input = analysis_input(&e, default_policy(&e.input.policy));
        input.validate().unwrap();
        assert_eq!(
            input.timestamps,
            [1_772_460_008, 1_772_460_009, 1_772_460_010]
        );
        assert_eq!(input.traffic, Some(vec![20, 0, 20]));
        let rate = &input.metrics[0];
        assert_eq!(rate.name, ERROR_RATE);
        assert_eq!(
            rate.canary,
            [
                Observation::Value(0.35),
                Observation::Missing,
                Observation::Value(0.3)
            ]
        );
        assert_eq!(rate.stable[0], Observation::Value(1.0 / 380.0));
        assert_eq!(rate.baseline.values, [3.0 / 1200.0]);
        assert_eq!(input.metrics[1].canary[0], Observation::Value(9.9));
    }

    #[test]
    fn the_default_policy_fails_a_bad_canary_and_does_not_fail_a_good_one() {
        let bad = evaluation(&[(20, 7), (20, 5), (20, 6)]);
        let verdict = judge(&analysis_input(&bad, default_policy(&bad.input.policy))).unwrap();
        assert_eq!(verdict.decision, Decision::Fail, "{verdict}");
        let good = evaluation(&[(20, 0), (20, 0), (20, 0), (20, 0)]);
        let verdict = judge(&analysis_input(&good, default_policy(&good.input.policy))).unwrap();
        assert_eq!(verdict.decision, Decision::Pass, "{verdict}");
    }

    #[test]
    fn an_unreadable_canary_is_a_source_error_and_a_policy_picks_its_metrics() {
        let mut e = evaluation(&[(20, 7)]);
        e.report.samples[0].reasons =
            vec!["canary unreadable: metrics of i-0000: timed out".into()];
        let mut policy = default_policy(&e.input.policy);
        policy.metrics.truncate(1);
        let input = analysis_input(&e, policy);
        assert_eq!(input.metrics.len(), 1);
        assert!(
            matches!(&input.metrics[0].canary[0], Observation::Error { error } if error.contains("timed out"))
        );
    }
}
