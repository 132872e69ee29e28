//! Decision rules over the stream of per-sample judgements.

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::policy::{Fallback, Policy};

/// Limits that turn a stream of sample judgements into a decision. Checked after every
/// sample, in the order listed; the first that is reached decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Fail after this many failing samples in a row. Passing and marginal samples break a
    /// run; errors, missing data and warm-up samples do not (they say nothing). Default 3.
    pub consecutive_failures: u32,
    /// Fail after this many failing samples in all. Default 5.
    pub failure_limit: u32,
    /// After this many samples in a row with a metric-source error, decide `on_error_limit`.
    /// Default 3.
    pub consecutive_error_limit: u32,
    /// The decision when `consecutive_error_limit` is reached. Default `inconclusive`: the
    /// canary may be healthy, but it cannot be promoted blind.
    pub on_error_limit: Fallback,
    /// Stop as inconclusive after this many inconclusive samples in all (marginal scores, and
    /// no-data and low-traffic samples under the default fallback). Default 5.
    pub inconclusive_limit: u32,
    /// Pass after this many passing samples, if nothing above decided first. Default 10.
    pub required_passes: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            consecutive_failures: 3,
            failure_limit: 5,
            consecutive_error_limit: 3,
            on_error_limit: Fallback::Inconclusive,
            inconclusive_limit: 5,
            required_passes: 10,
        }
    }
}

impl Rules {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        let limits = [
            ("consecutive_failures", self.consecutive_failures),
            ("failure_limit", self.failure_limit),
            ("consecutive_error_limit", self.consecutive_error_limit),
            ("inconclusive_limit", self.inconclusive_limit),
            ("required_passes", self.required_passes),
        ];
        match limits.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(invalid(format!("{field}.{name}"), "must be >= 1")),
            None => Ok(()),
        }
    }
}

/// What one sample was judged to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// Score at or above the pass threshold, every metric had data and no source failed.
    Pass,
    /// A critical metric failed, or the score fell below the marginal threshold.
    Fail,
    /// Score between the marginal and pass thresholds.
    Marginal,
    /// A metric had no value, or nothing to compare it against.
    NoData,
    /// The canary served fewer requests than the low-traffic minimum; not judged.
    LowTraffic,
    /// A metric source failed. Never counts as a pass.
    SourceError,
    /// Detectors are still warming up (too few canary values); counts for nothing.
    Pending,
}

/// Where the analysis stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// No rule has decided yet; keep sampling.
    Continue,
    /// Healthy: promote.
    #[serde(alias = "Pass")]
    Pass,
    /// Regression: roll back.
    #[serde(alias = "Fail")]
    Fail,
    /// Cannot tell: pause for a human. Never promote.
    #[serde(alias = "Inconclusive")]
    Inconclusive,
}

/// The rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `consecutive_failures` failing samples in a row.
    ConsecutiveFailures,
    /// `failure_limit` failing samples in all.
    FailureLimit,
    /// A failing sample with a decisive effect on a critical metric (the paired detector's
    /// `decisive`): fails at once.
    DecisiveEffect,
    /// A failing sample in which a critical metric's mean paired difference since the first
    /// canary sample is beyond the paired detector's `cumulative` limit: fails at once.
    CumulativeEffect,
    /// `consecutive_error_limit` samples in a row with a source error.
    ConsecutiveErrors,
    /// `inconclusive_limit` inconclusive samples in all.
    InconclusiveLimit,
    /// `required_passes` passing samples.
    RequiredPasses,
    /// The input ended before any rule decided; without enough passes that is inconclusive.
    EndOfInput,
}

/// Running counts of sample judgements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Samples judged.
    pub samples: u32,
    /// Passing samples.
    pub passes: u32,
    /// Failing samples (including no-data or low-traffic samples under a `fail` fallback).
    pub failures: u32,
    /// Inconclusive samples.
    pub inconclusive: u32,
    /// Samples with a metric-source error.
    pub errors: u32,
    /// Warm-up samples.
    pub pending: u32,
    /// Current run of failing samples.
    pub consecutive_failures: u32,
    /// Current run of samples with a source error.
    pub consecutive_errors: u32,
}

impl Tally {
    /// Counts one judgement and returns the decision if a rule now decides.
    pub fn record(&mut self, judgement: Judgement, policy: &Policy) -> Option<(Decision, Rule)> {
        self.samples += 1;
        let counted = match judgement {
            Judgement::NoData => policy.no_data,
            Judgement::LowTraffic => policy.low_traffic.action,
            _ => Fallback::Inconclusive,
        };
        if judgement == Judgement::SourceError {
            self.errors += 1;
            self.consecutive_errors += 1;
        } else {
            self.consecutive_errors = 0;
        }
        match judgement {
            Judgement::Pass => {
                self.passes += 1;
                self.consecutive_failures = 0;
            }
            Judgement::Marginal => {
                self.inconclusive += 1;
                self.consecutive_failures = 0;
            }
            Judgement::Fail => self.fail(),
            Judgement::NoData | Judgement::LowTraffic if counted == Fallback::Fail => self.fail(),
            Judgement::NoData | Judgement::LowTraffic => self.inconclusive += 1,
            Judgement::SourceError => {}
            Judgement::Pending => self.pending += 1,
        }
        self.decide(&policy.rules)
    }

    fn fail(&mut self) {
        self.failures += 1;
        self.consecutive_failures += 1;
    }

    fn decide(&self, rules: &Rules) -> Option<(Decision, Rule)> {
        if self.consecutive_failures >= rules.consecutive_failures {
            Some((Decision::Fail, Rule::ConsecutiveFailures))
        } else if self.failures >= rules.failure_limit {
            Some((Decision::Fail, Rule::FailureLimit))
        } else if self.consecutive_errors >= rules.consecutive_error_limit {
            let decision = match rules.on_error_limit {
                Fallback::Inconclusive => Decision::Inconclusive,
                Fallback::Fail => Decision::Fail,
            };
            Some((decision, Rule::ConsecutiveErrors))
        } else if self.inconclusive >= rules.inconclusive_limit {
            Some((Decision::Inconclusive, Rule::InconclusiveLimit))
        } else if self.passes >= rules.required_passes {
            Some((Decision::Pass, Rule::RequiredPasses))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Direction, Metric};
    use Judgement::*;

    fn policy(rules: Rules) -> Policy {
        Policy {
            rules,
            ..Policy::new(vec![Metric::new("m", Direction::Increase)])
        }
    }

    /// Feeds judgements until a rule decides; returns the decision, the rule and how many
    /// samples it took.
    fn run(policy: &Policy, judgements: &[Judgement]) -> Option<(Decision, Rule, usize)> {
        let mut tally = Tally::default();
        judgements
            .iter()
            .enumerate()
            .find_map(|(i, j)| tally.record(*j, policy).map(|(d, r)| (d, r, i + 1)))
    }

    #[test]
    fn k_consecutive_failures_fail() {
        let p = policy(Rules::default());
        assert_eq!(
            run(&p, &[Pass, Fail, Fail, Pass, Fail, Fail, Fail]),
            Some((Decision::Fail, Rule::ConsecutiveFailures, 7))
        );
        // A pass breaks the run; errors and missing data do not.
        assert_eq!(run(&p, &[Fail, Fail, Pass, Fail]), None);
        assert_eq!(
            run(&p, &[Fail, SourceError, NoData, Fail, Fail]),
            Some((Decision::Fail, Rule::ConsecutiveFailures, 5))
        );
    }

    #[test]
    fn cumulative_failure_limit_fails() {
        let p = policy(Rules {
            failure_limit: 3,
            ..Rules::default()
        });
        assert_eq!(
            run(&p, &[Fail, Pass, Fail, Pass, Pass, Fail]),
            Some((Decision::Fail, Rule::FailureLimit, 6))
        );
    }

    #[test]
    fn inconclusive_limit_stops_inconclusive() {
        let p = policy(Rules {
            inconclusive_limit: 3,
            ..Rules::default()
        });
        assert_eq!(
            run(&p, &[Marginal, Pass, NoData, LowTraffic]),
            Some((Decision::Inconclusive, Rule::InconclusiveLimit, 4))
        );
    }

    #[test]
    fn consecutive_errors_never_pass() {
        let p = policy(Rules {
            required_passes: 2,
            ..Rules::default()
        });
        assert_eq!(
            run(&p, &[Pass, SourceError, SourceError, SourceError]),
            Some((Decision::Inconclusive, Rule::ConsecutiveErrors, 4))
        );
        // Errors interleaved with passes are not passes: still one pass short after them.
        assert_eq!(
            run(&p, &[SourceError, SourceError, Pass, SourceError]),
            None
        );
        let strict = policy(Rules {
            on_error_limit: Fallback::Fail,
            ..Rules::default()
        });
        assert_eq!(
            run(&strict, &[SourceError; 3]),
            Some((Decision::Fail, Rule::ConsecutiveErrors, 3))
        );
    }

    #[test]
    fn passes_only_after_enough_passing_samples() {
        let p = policy(Rules {
            required_passes: 3,
            ..Rules::default()
        });
        assert_eq!(
            run(&p, &[Pass, Pending, Pass, Marginal, Pass]),
            Some((Decision::Pass, Rule::RequiredPasses, 5))
        );
        assert_eq!(run(&p, &[Pending; 20]), None);
    }

    #[test]
    fn no_data_and_low_traffic_can_be_made_failures() {
        let mut p = policy(Rules::default());
        p.no_data = Fallback::Fail;
        assert_eq!(
            run(&p, &[NoData, NoData, NoData]),
            Some((Decision::Fail, Rule::ConsecutiveFailures, 3))
        );
        p.low_traffic.action = Fallback::Fail;
        assert_eq!(
            run(&p, &[LowTraffic, NoData, LowTraffic]),
            Some((Decision::Fail, Rule::ConsecutiveFailures, 3))
        );
    }
}
