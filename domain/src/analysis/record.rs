//! The engine's input of one batch, kept as the engine saw it: `health.analyze` returns it with
//! its verdict, so a deploy's history holds exactly what was judged and `signalbox backtest`
//! can judge it again.

use signalbox_analysis::{AnalysisInput, Baseline, Decision, Evaluator, MetricData, Observation, Policy, Result, Sample, Verdict};

/// An [`Evaluator`] that records every sample it judges. [`Recorder::finish`] returns the
/// verdict and an [`AnalysisInput`] that `signalbox_analysis::judge` takes to the same verdict.
#[derive(Debug, Clone)]
pub struct Recorder {
    evaluator: Evaluator,
    input: AnalysisInput,
    /// Canary requests per sample, `None` where not measured.
    traffic: Vec<Option<u64>>,
    /// Stable-group requests per sample, `None` where not measured.
    stable_traffic: Vec<Option<u64>>,
    /// Whether any sample carried the stable version's readings.
    stable: bool,
}

impl Recorder {
    /// Starts an analysis under `policy` from one baseline per policy metric, in the policy's
    /// order; refuses what [`Evaluator::new`] refuses.
    pub fn new(policy: Policy, baselines: Vec<Baseline>) -> Result<Self> {
        let evaluator = Evaluator::new(policy.clone(), &baselines)?;
        let metrics = policy
            .metrics
            .iter()
            .zip(baselines)
            .map(|(m, baseline)| MetricData { name: m.name.clone(), baseline, canary: Vec::new(), stable: Vec::new() })
            .collect();
        let input = AnalysisInput { policy, timestamps: Vec::new(), traffic: None, stable_traffic: None, metrics };
        Ok(Self { evaluator, input, traffic: Vec::new(), stable_traffic: Vec::new(), stable: false })
    }

    /// Judges `sample` and records it. Once decided, samples are neither judged nor recorded,
    /// as `judge` stops at the decision too.
    pub fn push(&mut self, sample: Sample) -> Result<Decision> {
        if self.evaluator.decision() != Decision::Continue {
            return Ok(self.evaluator.decision());
        }
        let decision = self.evaluator.push(&sample)?;
        self.input.timestamps.push(sample.at);
        self.traffic.push(sample.traffic);
        self.stable_traffic.push(sample.stable_traffic);
        self.stable |= !sample.stable.is_empty();
        let mut stable = sample.stable.into_iter();
        for (data, canary) in self.input.metrics.iter_mut().zip(sample.canary) {
            data.canary.push(canary);
            // `judge` reads a stable reading a sample lacks as missing, which the engine skips
            // just as it skips an empty `stable`.
            data.stable.push(stable.next().unwrap_or(Observation::Missing));
        }
        Ok(decision)
    }

    /// Passing samples still needed to promote while undecided; `None` once decided.
    pub fn passes_needed(&self) -> Option<u32> {
        self.evaluator.passes_needed()
    }

    /// Ends the stream (undecided: inconclusive) and returns the verdict and what it judged.
    ///
    /// A sample whose traffic was not measured skips the low-traffic check. The input's
    /// `traffic` cannot say "not measured" for one sample, so when only some were measured the
    /// others are recorded as `u64::MAX`, which no low-traffic minimum exceeds: the same check
    /// skipped, under any policy.
    pub fn finish(mut self) -> (Verdict, AnalysisInput) {
        if !self.stable {
            for data in &mut self.input.metrics {
                data.stable.clear();
            }
        }
        if self.traffic.iter().any(Option::is_some) {
            self.input.traffic = Some(self.traffic.iter().map(|t| t.unwrap_or(u64::MAX)).collect());
        }
        // The engine reads a stable group's 0 requests as not measured, as it reads `None`.
        if self.stable_traffic.iter().any(Option::is_some) {
            self.input.stable_traffic = Some(self.stable_traffic.iter().map(|t| t.unwrap_or(0)).collect());
        }
        (self.evaluator.finish(), self.input)
    }
}

#[cfg(test)]
mod tests {
    use signalbox_analysis::{Direction, Metric, Rule, judge};

    use super::*;

    fn policy() -> Policy {
        let mut p = Policy::new(vec![Metric::new("error_rate", Direction::Increase), Metric::new("p99_ms", Direction::Increase)]);
        p.low_traffic.min_requests = 10;
        p.rules.required_passes = 3;
        p
    }

    fn baselines() -> Vec<Baseline> {
        vec![Baseline { values: vec![0.01, 0.012, 0.011], ..Baseline::default() }, Baseline { values: vec![20.0, 21.0, 19.5], ..Baseline::default() }]
    }

    fn sample(at: i64, traffic: Option<u64>, rate: f64, stable: bool) -> Sample {
        let canary = vec![rate.into(), Observation::Value(20.5)];
        let stable = if stable { vec![Observation::Value(0.011), Observation::Missing] } else { vec![] };
        Sample { at, traffic, stable_traffic: None, canary, stable }
    }

    /// Feeds `samples` until a decision, as `health.analyze` does; returns the live verdict and
    /// the recorded input.
    fn record(samples: Vec<Sample>) -> (Verdict, AnalysisInput) {
        let mut r = Recorder::new(policy(), baselines()).unwrap();
        for s in samples {
            if r.push(s).unwrap() != Decision::Continue {
                break;
            }
        }
        r.finish()
    }

    #[test]
    fn the_recorded_input_is_judged_to_the_live_verdict() {
        let bad = (0..8).map(|i| sample(1_700_000_000 + i, Some(40), if i < 2 { 0.011 } else { 0.4 }, true)).collect();
        let (live, input) = record(bad);
        assert_eq!(live.decision, Decision::Fail, "{live}");
        input.validate().unwrap();
        assert_eq!(judge(&input).unwrap(), live);
        assert!(input.timestamps.len() < 8, "samples after the decision are not recorded");
        assert_eq!(input.metrics[0].stable.len(), input.timestamps.len());

        let good = (0..8).map(|i| sample(1_700_000_000 + i, Some(40), 0.011, false)).collect();
        let (live, input) = record(good);
        assert_eq!((live.decision, live.rule), (Decision::Pass, Some(Rule::RequiredPasses)), "{live}");
        assert!(input.metrics.iter().all(|m| m.stable.is_empty()), "no stable readings, none recorded");
        assert_eq!(judge(&input).unwrap(), live);
    }

    #[test]
    fn unmeasured_traffic_and_missing_stable_readings_judge_as_they_did() {
        // Low traffic, then unmeasured traffic (judged), then stable readings in some samples only.
        let samples = vec![
            sample(10, Some(3), 0.011, false),
            sample(11, None, 0.011, true),
            sample(12, Some(40), 0.011, false),
            sample(13, Some(40), 0.9, true),
        ];
        let (live, input) = record(samples);
        assert_eq!(input.traffic, Some(vec![3, u64::MAX, 40, 40]));
        assert_eq!(input.metrics[0].stable[0], Observation::Missing);
        assert_eq!(judge(&input).unwrap(), live);
        let (live, input) = record(vec![sample(10, None, 0.011, false)]);
        assert_eq!((input.traffic, live.decision), (None, Decision::Inconclusive));
    }
}
