//! Running the labelled deploy cases through each detector configuration and the baselines.

use signalbox_analysis::detectors::{
    Comparison, NoiseScale, Paired, Seasonal, StaticThreshold, ZScore,
};
use signalbox_analysis::{Baseline, Decision, Evaluator, Metric, Policy, Sample};

use crate::cases::{Case, HORIZON, Kind, METRICS};

/// Static thresholds used by the static configurations: 25% above the baseline mean.
pub const STATIC_INCREASE: f64 = 0.25;

/// How a configuration decides a case.
pub enum Method {
    /// The analysis engine under this policy (decision rules included), given the canary
    /// group's A/A readings before the deploy or not.
    Engine { policy: Policy, aa: bool },
    /// Baseline: alarm on the first canary value above `(1 + r) *` the stable version's
    /// concurrent reading (or the baseline mean without one).
    PlainStatic(f64),
    /// Baseline: alarm on the first canary value more than `sigma` baseline standard
    /// deviations from the baseline mean, either side.
    PlainZScore(f64),
}

/// A configuration with its name in the report.
pub struct Named {
    /// Column or row label.
    pub name: &'static str,
    /// How it decides.
    pub method: Method,
}

/// The configurations compared: each detector alone (with the default decision rules), the
/// default policy (z-score, Mann-Whitney and paired), the default policy without the paired
/// detector (the previous default, for the before/after ratio), and the two plain baselines.
pub fn methods() -> Vec<Named> {
    let with = |f: fn(&mut Metric)| {
        let metrics = METRICS
            .iter()
            .map(|(name, direction, critical)| {
                let mut m = Metric::bare(*name, *direction);
                m.critical = *critical;
                f(&mut m);
                m
            })
            .collect();
        Method::Engine {
            policy: Policy::new(metrics),
            aa: true,
        }
    };
    let default = |aa, change: fn(&mut Metric)| {
        let mut policy = default_policy();
        policy.metrics.iter_mut().for_each(change);
        Method::Engine { policy, aa }
    };
    vec![
        Named {
            name: "static +25%",
            method: with(|m| {
                m.thresholds = Some(StaticThreshold {
                    max_increase: Some(STATIC_INCREASE),
                    ..Default::default()
                })
            }),
        },
        Named {
            name: "z-score 3σ",
            method: with(|m| m.zscore = Some(ZScore::default())),
        },
        Named {
            name: "seasonal 3σ",
            method: with(|m| m.seasonal = Some(Seasonal::default())),
        },
        Named {
            name: "mann-whitney",
            method: with(|m| m.comparison = Some(Comparison::default())),
        },
        Named {
            name: "paired 3σ",
            method: with(|m| m.paired = Some(Paired::default())),
        },
        Named {
            name: "DEFAULT POLICY",
            method: default(true, |_| {}),
        },
        Named {
            name: "default, no A/A",
            method: default(false, |_| {}),
        },
        Named {
            name: "default, flat noise",
            method: default(true, |m| {
                if let Some(p) = &mut m.paired {
                    (p.noise_scale, p.per_request) = (Some(NoiseScale::Flat), Some(false))
                }
            }),
        },
        Named {
            name: "default, limit 5",
            method: default(true, |m| {
                if let Some(p) = &mut m.paired {
                    p.early_look = None
                }
            }),
        },
        Named {
            name: "default, limit 3.5",
            method: default(true, |m| {
                if let Some(p) = &mut m.paired {
                    (p.early_look, p.cumulative) = (None, Some(3.5))
                }
            }),
        },
        Named {
            name: "default w/o cumul.",
            method: default(true, |m| {
                if let Some(p) = &mut m.paired {
                    p.cumulative = None
                }
            }),
        },
        Named {
            name: "default w/o paired",
            method: default(false, |m| m.paired = None),
        },
        Named {
            name: "plain static +25%",
            method: Method::PlainStatic(STATIC_INCREASE),
        },
        Named {
            name: "plain 3σ z-score",
            method: Method::PlainZScore(3.0),
        },
    ]
}

/// The default detectors and rules on the case metrics, golden signals critical, each
/// metric's paired noise growing with its level as its kind of reading does (see
/// [`noise_scale`]).
pub fn default_policy() -> Policy {
    Policy::new(
        METRICS
            .iter()
            .map(|(n, d, critical)| {
                let mut metric = Metric {
                    critical: *critical,
                    ..Metric::new(*n, *d)
                };
                if let Some(p) = &mut metric.paired {
                    let (scale, per_request) = noise_model(n);
                    (p.noise_scale, p.per_request) = (Some(scale), Some(per_request));
                }
                metric
            })
            .collect(),
    )
}

/// How each case metric's sampling noise grows with its level, and whether it is estimated
/// from the requests served: what an operator knows of each kind of reading. A rate of rare
/// events grows like the square root of its level and shrinks with requests (binomial); a p99
/// is a share of its level and shrinks with requests (a quantile's estimation error); log
/// lines are a count (Poisson); CPU's instance noise is a share of its level.
pub fn noise_model(metric: &str) -> (NoiseScale, bool) {
    match metric {
        "error_rate" => (NoiseScale::Sqrt, true),
        "latency_p99_ms" => (NoiseScale::Linear, true),
        "log_lines" => (NoiseScale::Sqrt, false),
        _ => (NoiseScale::Linear, false),
    }
}

/// How a configuration decided one case.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Pass, Fail or Inconclusive (an undecided case ends inconclusive).
    pub decision: Decision,
    /// Canary samples seen when it decided.
    pub samples: usize,
}

/// Whether the analysis sees the stable version's readings alongside the canary's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Canary analysis proper: both versions measured at the same times.
    Concurrent,
    /// The canary against the stable version's readings before the deploy only.
    BeforeAfter,
}

/// Decides `case` with `method`.
pub fn run(method: &Method, case: &Case, mode: Mode) -> Outcome {
    match method {
        Method::Engine { policy, aa } => engine(policy, *aa, case, mode),
        Method::PlainStatic(r) => plain(case, mode, |reference, now, v| {
            v > (1.0 + r) * now.unwrap_or_else(|| mean(reference))
        }),
        Method::PlainZScore(sigma) => plain(case, mode, |reference, _, v| {
            let (m, sd) = (mean(reference), stddev(reference));
            (v - m).abs() > sigma * sd && sd > 0.0
        }),
    }
}

fn engine(policy: &Policy, aa: bool, case: &Case, mode: Mode) -> Outcome {
    let stripped: Vec<Baseline>;
    let baselines = if aa {
        &case.baselines
    } else {
        stripped = case
            .baselines
            .iter()
            .map(|b| Baseline {
                canary: Vec::new(),
                ..b.clone()
            })
            .collect();
        &stripped
    };
    let mut evaluator = Evaluator::new(policy.clone(), baselines).expect("valid policy");
    for k in 0..HORIZON {
        let stable = match mode {
            Mode::Concurrent => case.stable.iter().map(|m| m[k].clone()).collect(),
            Mode::BeforeAfter => Vec::new(),
        };
        let sample = Sample {
            at: case.times[k],
            traffic: Some(case.traffic[k]),
            stable_traffic: (mode == Mode::Concurrent).then(|| case.stable_traffic[k]),
            canary: case.canary.iter().map(|m| m[k].clone()).collect(),
            stable,
        };
        if evaluator.push(&sample).expect("well-formed sample") != Decision::Continue {
            break;
        }
    }
    let verdict = evaluator.finish();
    Outcome {
        decision: verdict.decision,
        samples: verdict.tally.samples as usize,
    }
}

/// A plain alarm on any metric. Its reference is the baseline, slid forward by the stable
/// readings when concurrent (as the engine's is), and `now` is the stable reading at the same
/// time when there is one.
fn plain(case: &Case, mode: Mode, alarm: impl Fn(&[f64], Option<f64>, f64) -> bool) -> Outcome {
    let mut references: Vec<Vec<f64>> = case.baselines.iter().map(|b| b.values.clone()).collect();
    for k in 0..HORIZON {
        let mut fired = false;
        for (m, reference) in references.iter_mut().enumerate() {
            // A count (log lines) is compared per request: the stable group's scaled to the
            // canary's share (1 when both serve alike).
            let ratio = if m == LOG_LINES {
                case.count_ratio[k]
            } else {
                1.0
            };
            let now = if mode == Mode::Concurrent {
                case.stable[m][k].value().map(|v| v * ratio)
            } else {
                None
            };
            if let Some(v) = now {
                reference.remove(0);
                reference.push(v);
            }
            fired |= case.canary[m][k].value().is_some_and(|v| match ratio {
                1.0 => alarm(reference, now, v),
                _ => alarm(
                    &reference.iter().map(|r| r * ratio).collect::<Vec<_>>(),
                    now,
                    v,
                ),
            });
        }
        if fired {
            return Outcome {
                decision: Decision::Fail,
                samples: k + 1,
            };
        }
    }
    Outcome {
        decision: Decision::Pass,
        samples: HORIZON,
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn stddev(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() as f64 - 1.0)).sqrt()
}

/// Index of the log-lines metric in [`METRICS`].
pub const LOG_LINES: usize = 3;

/// Whether a regression falls in a bucket.
pub type InBucket = fn(Kind) -> bool;

/// Regression size buckets for the breakdown.
pub const BUCKETS: &[(&str, InBucket)] = &[
    (
        "error rate +5-10%",
        |k| matches!(k, Kind::ErrorRate(r) if r < 0.10),
    ),
    (
        "error rate +10-20%",
        |k| matches!(k, Kind::ErrorRate(r) if (0.10..0.20).contains(&r)),
    ),
    (
        "error rate +20-50%",
        |k| matches!(k, Kind::ErrorRate(r) if (0.20..0.50).contains(&r)),
    ),
    (
        "error rate +50-100%",
        |k| matches!(k, Kind::ErrorRate(r) if r >= 0.50),
    ),
    (
        "latency +10-25 ms",
        |k| matches!(k, Kind::Latency(ms) if ms < 25.0),
    ),
    (
        "latency +25-50 ms",
        |k| matches!(k, Kind::Latency(ms) if (25.0..50.0).contains(&ms)),
    ),
    (
        "latency +50-100 ms",
        |k| matches!(k, Kind::Latency(ms) if (50.0..100.0).contains(&ms)),
    ),
    (
        "latency +100-200 ms",
        |k| matches!(k, Kind::Latency(ms) if ms >= 100.0),
    ),
    (
        "log volume x1.5-2",
        |k| matches!(k, Kind::LogVolume(f) if f < 2.0),
    ),
    (
        "log volume x2-5",
        |k| matches!(k, Kind::LogVolume(f) if f >= 2.0),
    ),
];

/// Whether a case is in the goal set: at least +20% error rate or +50 ms p99.
pub fn in_goal(kind: Kind) -> bool {
    matches!(kind, Kind::ErrorRate(r) if r >= 0.20)
        || matches!(kind, Kind::Latency(ms) if ms >= 50.0)
}
