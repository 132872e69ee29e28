//! The evaluator: samples in, decisions out. [`judge`] runs a recorded window through the same
//! [`Evaluator`] the in-deploy loop feeds sample by sample, so a backtest reproduces exactly
//! what the deploy would have decided.

use crate::error::{Result, invalid};
use crate::input::{AnalysisInput, Baseline, Sample};
use crate::metric::Observation;
use crate::policy::Policy;
use crate::rules::{Decision, Judgement, Rule, Tally};
use crate::score::{Vote, score};
use crate::verdict::{SampleReport, Status, Verdict};
use crate::watch::{Check, Watch};

/// Judges a whole recorded window: validates it, streams its samples through an
/// [`Evaluator`] until a rule decides, and returns the verdict. A window that ends before any
/// rule decides is inconclusive (rule `end_of_input`), never a pass.
pub fn judge(input: &AnalysisInput) -> Result<Verdict> {
    input.validate()?;
    let data = input.in_policy_order();
    let mut evaluator = Evaluator::new(input.policy.clone(), data.iter().map(|d| &d.baseline))?;
    let has_stable = data.iter().any(|d| !d.stable.is_empty());
    let mut sample = Sample {
        at: 0,
        traffic: None,
        stable_traffic: None,
        canary: Vec::with_capacity(data.len()),
        stable: Vec::new(),
    };
    for (i, at) in input.timestamps.iter().enumerate() {
        sample.at = *at;
        sample.traffic = input.traffic.as_ref().map(|t| t[i]);
        sample.stable_traffic = input.stable_traffic.as_ref().map(|t| t[i]);
        sample.canary.clear();
        sample
            .canary
            .extend(data.iter().map(|d| d.canary[i].clone()));
        if has_stable {
            sample.stable.clear();
            sample.stable.extend(
                data.iter()
                    .map(|d| d.stable.get(i).cloned().unwrap_or(Observation::Missing)),
            );
        }
        if evaluator.push(&sample)? != Decision::Continue {
            break;
        }
    }
    Ok(evaluator.finish())
}

/// Streaming analysis of one deploy step: feed it one [`Sample`] per interval with
/// [`Evaluator::push`] until the decision is no longer `Continue`. Pure and deterministic; it
/// can be rebuilt from the same inputs to replay a decision.
#[derive(Debug, Clone)]
pub struct Evaluator {
    policy: Policy,
    watches: Vec<Watch>,
    groups: usize,
    tally: Tally,
    decided: Option<(Decision, Rule)>,
    /// The last sample judged and its per-metric checks (buffer reused between samples).
    last: Option<SampleReport>,
    checks: Vec<Check>,
}

impl Evaluator {
    /// Prepares an analysis: one [`Baseline`] per policy metric, in the policy's order.
    pub fn new<'a>(
        policy: Policy,
        baselines: impl IntoIterator<Item = &'a Baseline>,
    ) -> Result<Self> {
        policy.validate()?;
        let baselines: Vec<&Baseline> = baselines.into_iter().collect();
        if baselines.len() != policy.metrics.len() {
            let rule = format!(
                "expected {} (one per policy metric), got {}",
                policy.metrics.len(),
                baselines.len()
            );
            return Err(invalid("baselines", rule));
        }
        for (i, baseline) in baselines.iter().enumerate() {
            if let Some((field, len, entries)) = baseline.not_one_per_value() {
                let rule = format!(
                    "has {len} entries, values has {} ({entries})",
                    baseline.values.len()
                );
                return Err(invalid(format!("baselines[{i}].{field}"), rule));
            }
        }
        let mut group_names: Vec<&str> = Vec::new();
        let mut watches = Vec::with_capacity(baselines.len());
        for (metric, baseline) in policy.metrics.iter().zip(baselines) {
            let group = group_names
                .iter()
                .position(|g| *g == metric.group)
                .unwrap_or_else(|| {
                    group_names.push(&metric.group);
                    group_names.len() - 1
                });
            watches.push(Watch::new(
                metric,
                baseline,
                policy.baseline_window,
                (group, policy.group_weight(&metric.group)),
            ));
        }
        let groups = group_names.len();
        let checks = Vec::with_capacity(watches.len());
        Ok(Evaluator {
            policy,
            watches,
            groups,
            tally: Tally::default(),
            decided: None,
            last: None,
            checks,
        })
    }

    /// Judges one sample and returns where the analysis stands. Once decided, the decision
    /// sticks and later samples are ignored.
    pub fn push(&mut self, sample: &Sample) -> Result<Decision> {
        if let Some((decision, _)) = self.decided {
            return Ok(decision);
        }
        let n = self.watches.len();
        if sample.canary.len() != n {
            return Err(invalid(
                "sample.canary",
                format!(
                    "expected {n} readings (one per policy metric), got {}",
                    sample.canary.len()
                ),
            ));
        }
        if !sample.stable.is_empty() && sample.stable.len() != n {
            let rule = format!(
                "expected {n} readings (one per policy metric) or none, got {}",
                sample.stable.len()
            );
            return Err(invalid("sample.stable", rule));
        }
        let index = self.tally.samples as usize;
        let low_traffic = sample
            .traffic
            .is_some_and(|t| t < self.policy.low_traffic.min_requests);
        // The stable version's readings join the baseline first, so the canary is compared
        // with the baseline as of the same time. They are real traffic even when the canary's
        // is low.
        for watch in &mut self.watches {
            watch.start_sample(sample.traffic, sample.stable_traffic);
        }
        for ((watch, metric), reading) in self
            .watches
            .iter_mut()
            .zip(&self.policy.metrics)
            .zip(&sample.stable)
        {
            if let Some(v) = reading.value() {
                watch.observe_stable(metric, v, sample.at);
            }
        }
        self.checks.clear();
        if low_traffic {
            self.checks.extend(
                sample
                    .canary
                    .iter()
                    .map(|o| Check::of(Status::Skipped, o.value())),
            );
        } else {
            let metrics = &self.policy.metrics;
            let checks = self
                .watches
                .iter_mut()
                .zip(metrics)
                .zip(&sample.canary)
                .map(|((w, m), o)| w.check(m, o, sample.at));
            self.checks.extend(checks);
        }
        let (judgement, score) = if low_traffic {
            (Judgement::LowTraffic, None)
        } else {
            self.judge_checks()
        };
        self.decided = self.tally.record(judgement, &self.policy);
        if self.decided.is_none() && judgement == Judgement::Fail {
            if self.checks.iter().any(|c| c.decisive) {
                self.decided = Some((Decision::Fail, Rule::DecisiveEffect));
            } else if self.checks.iter().any(|c| c.cumulative) {
                self.decided = Some((Decision::Fail, Rule::CumulativeEffect));
            }
        }
        self.last = Some(SampleReport {
            index,
            at: sample.at,
            traffic: sample.traffic,
            judgement,
            score,
        });
        Ok(self.decision())
    }

    /// The decision so far: `Continue` until a rule decides.
    pub fn decision(&self) -> Decision {
        self.decided.map_or(Decision::Continue, |(d, _)| d)
    }

    /// Counts of sample judgements so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The verdict so far, explaining the last sample judged (the deciding one once decided).
    pub fn verdict(&self) -> Verdict {
        let (decision, rule) = match self.decided {
            Some((d, r)) => (d, Some(r)),
            None => (Decision::Continue, None),
        };
        let at = self.last.as_ref().map_or(0, |s| s.at);
        let metrics = self
            .policy
            .metrics
            .iter()
            .zip(&self.watches)
            .enumerate()
            .map(|(i, (metric, watch))| watch.report(metric, self.checks.get(i), at))
            .collect();
        Verdict {
            decision,
            rule,
            tally: self.tally.clone(),
            sample: self.last.clone(),
            metrics,
            passes_needed: self.passes_needed(),
        }
    }

    /// Passing samples still needed to promote while undecided; `None` once decided.
    pub fn passes_needed(&self) -> Option<u32> {
        self.decided.is_none().then(|| {
            self.policy
                .rules
                .required_passes
                .saturating_sub(self.tally.passes)
        })
    }

    /// Ends the stream: an undecided analysis is inconclusive (rule `end_of_input`), since it
    /// never collected enough passing samples to promote.
    pub fn finish(self) -> Verdict {
        let mut verdict = self.verdict();
        if verdict.decision == Decision::Continue {
            verdict.decision = Decision::Inconclusive;
            verdict.rule = Some(Rule::EndOfInput);
        }
        verdict
    }

    /// A sample's judgement from its metrics. Evidence of failure among the metrics that were
    /// judged outranks missing data and errors elsewhere; a pass needs every metric judged.
    fn judge_checks(&self) -> (Judgement, Option<f64>) {
        let checks = &self.checks;
        let votes = checks
            .iter()
            .zip(&self.watches)
            .zip(&self.policy.metrics)
            .map(|((c, w), m)| Vote {
                group: w.group,
                group_weight: w.group_weight,
                weight: m.weight,
                passed: (!m.advisory
                    && matches!(c.status, Status::Pass | Status::High | Status::Low))
                .then_some(c.status == Status::Pass),
            });
        let score = score(votes, self.groups);
        let thresholds = &self.policy.score;
        let any = |s: Status| checks.iter().any(|c| c.status == s);
        let judgement = if checks
            .iter()
            .any(|c| c.status.is_bad() && (c.critical || c.large || c.cumulative))
            || score.is_some_and(|s| s < thresholds.marginal)
        {
            Judgement::Fail
        } else if any(Status::Error) {
            Judgement::SourceError
        } else if any(Status::NoData) {
            Judgement::NoData
        } else if any(Status::Pending) {
            Judgement::Pending
        } else if score.is_some_and(|s| s >= thresholds.pass) {
            Judgement::Pass
        } else {
            Judgement::Marginal
        };
        (judgement, score)
    }
}
