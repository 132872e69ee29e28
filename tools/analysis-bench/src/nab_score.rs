//! NAB's scoring, reimplemented from `nab/sweeper.py`, and the streaming detectors run over
//! the corpus.
//!
//! Per series: the first 15% of rows (at most 750) are probationary and not scored. A window's
//! score is that of its earliest detection, `A_TP * S(y) / S(-1)` with the scaled sigmoid
//! `S(y) = 2 / (1 + e^(5y)) - 1` of the detection's relative position `y` in the window
//! (-1 at its start, 0 past its end), or `-A_FN` if nothing in it was detected. Every
//! detection outside a window scores `A_FP * S(y)`, `y` being its distance past the previous
//! window in window widths (-1 when no window precedes). Raw scores are summed over the
//! corpus and normalised to 100 * (raw - null) / (perfect - null), null detecting nothing and
//! perfect detecting every window at its first scored row.

use signalbox_analysis::detectors::Seasonal;
use signalbox_analysis::{Baseline, Decision, Direction, Evaluator, Metric, Point, Policy, Sample};

use crate::nab::{Costs, Series};

/// Raw score parts over one or more series.
#[derive(Debug, Clone, Copy, Default)]
pub struct Score {
    /// Sum of window scores (detected or missed) and false-positive scores.
    pub raw: f64,
    /// Same series, null detector.
    pub null: f64,
    /// Same series, perfect detector.
    pub perfect: f64,
    /// Windows detected.
    pub tp: usize,
    /// Windows missed.
    pub fn_: usize,
    /// Detections outside windows.
    pub fp: usize,
}

impl Score {
    /// NAB's normalised score.
    pub fn normalised(&self) -> f64 {
        100.0 * (self.raw - self.null) / (self.perfect - self.null)
    }

    fn add(&mut self, other: Score) {
        self.raw += other.raw;
        self.null += other.null;
        self.perfect += other.perfect;
        self.tp += other.tp;
        self.fn_ += other.fn_;
        self.fp += other.fp;
    }
}

fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Scores binary `detections` on one series with labelled `windows` (unix seconds).
pub fn score(times: &[i64], detections: &[bool], windows: &[(i64, i64)], costs: &Costs) -> Score {
    let n = times.len();
    let probation = ((0.15 * n as f64).floor()).min(0.15 * 5000.0) as usize;
    let max_tp = scaled_sigmoid(-1.0);
    let spans: Vec<(usize, usize)> = windows
        .iter()
        .filter_map(|(a, b)| {
            let left = times.iter().position(|t| t >= a)?;
            let right = times.iter().rposition(|t| t <= b)?;
            (left <= right).then_some((left, right))
        })
        .collect();
    let mut s = Score::default();
    // Best score per window; None until the window has a scored row.
    let mut best: Vec<Option<f64>> = vec![None; spans.len()];
    let mut first_scored: Vec<Option<f64>> = vec![None; spans.len()];
    let mut previous: Option<(usize, usize)> = None;
    for (i, &detected) in detections.iter().enumerate() {
        let inside = spans.iter().position(|(l, r)| (*l..=*r).contains(&i));
        let value = match inside {
            Some(w) => {
                let (l, r) = spans[w];
                let width = (r - l + 1) as f64;
                scaled_sigmoid(-((r - i + 1) as f64) / width) * costs.tp / max_tp
            }
            None => match previous {
                None => -costs.fp,
                Some((l, r)) => {
                    scaled_sigmoid((i - r) as f64 / ((r - l + 1) as f64 - 1.0)) * costs.fp
                }
            },
        };
        if i >= probation {
            match inside {
                Some(w) => {
                    let slot = best[w].get_or_insert(-costs.fn_);
                    first_scored[w].get_or_insert(value);
                    if detected {
                        *slot = slot.max(value);
                    }
                }
                None if detected => {
                    s.raw += value;
                    s.fp += 1;
                }
                None => {}
            }
        }
        if let Some(w) = inside
            && i == spans[w].1
        {
            previous = Some(spans[w]);
        }
    }
    for (b, first) in best.iter().zip(&first_scored) {
        if let (Some(b), Some(first)) = (b, first) {
            s.raw += b;
            s.null -= costs.fn_;
            s.perfect += first;
            if *b > -costs.fn_ {
                s.tp += 1
            } else {
                s.fn_ += 1
            }
        }
    }
    s
}

/// Points per streamed block: every block starts a fresh analysis, as a deploy step would.
pub const BLOCK: usize = 12;
/// Points given as baseline (the policy's window keeps the most recent), and the plain
/// z-score's rolling window: one day at 5 minutes.
pub const BASELINE: usize = 288;
/// Most history points used for seasonal bands: four weeks at 5 minutes.
pub const HISTORY: usize = 4 * 2016;

/// The default policy on one metric whose departures either way count. Its baseline window
/// (12 points) keeps the most recent of the [`BASELINE`] points given.
pub fn default_policy() -> Policy {
    Policy::new(vec![Metric::new("value", Direction::Either)])
}

/// The seasonal detector alone, default settings.
pub fn seasonal_policy() -> Policy {
    Policy::new(vec![Metric {
        seasonal: Some(Seasonal::default()),
        ..Metric::bare("value", Direction::Either)
    }])
}

/// Detections by `policy` with its rules: the corpus is cut into blocks of [`BLOCK`] points,
/// each judged by a fresh analysis given the previous [`BASELINE`] points as baseline and the
/// previous [`HISTORY`] points as seasonal history. A point is a detection when the analysis
/// decides Fail on it.
pub fn engine_detections(series: &Series, policy: &Policy) -> Vec<bool> {
    let n = series.values.len();
    let mut detections = vec![false; n];
    let mut start = BASELINE;
    while start < n {
        let baseline = Baseline {
            values: series.values[start - BASELINE..start].to_vec(),
            history: (start.saturating_sub(HISTORY)..start)
                .map(|i| Point {
                    at: series.times[i],
                    value: series.values[i],
                })
                .collect(),
            ..Baseline::default()
        };
        let mut evaluator = Evaluator::new(policy.clone(), [&baseline]).expect("valid policy");
        for (i, detected) in detections
            .iter_mut()
            .enumerate()
            .take((start + BLOCK).min(n))
            .skip(start)
        {
            let sample = Sample {
                at: series.times[i],
                traffic: None,
                stable_traffic: None,
                canary: vec![series.values[i].into()],
                stable: Vec::new(),
            };
            match evaluator.push(&sample).expect("well-formed sample") {
                Decision::Continue => {}
                Decision::Fail => {
                    *detected = true;
                    break;
                }
                _ => break,
            }
        }
        start += BLOCK;
    }
    detections
}

/// Detections by a plain rolling 3-sigma z-score over the previous [`BASELINE`] points.
pub fn zscore_detections(series: &Series) -> Vec<bool> {
    let v = &series.values;
    let (mut sum, mut sq) = (0.0, 0.0);
    let mut detections = vec![false; v.len()];
    for i in 0..v.len() {
        if i >= BASELINE {
            let n = BASELINE as f64;
            let mean = sum / n;
            let sd = ((sq - n * mean * mean) / (n - 1.0)).max(0.0).sqrt();
            detections[i] = sd > 0.0 && (v[i] - mean).abs() > 3.0 * sd;
            sum -= v[i - BASELINE];
            sq -= v[i - BASELINE] * v[i - BASELINE];
        }
        sum += v[i];
        sq += v[i] * v[i];
    }
    detections
}

/// Sums per-series scores.
pub fn total(scores: impl IntoIterator<Item = Score>) -> Score {
    let mut t = Score::default();
    for s in scores {
        t.add(s);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Costs = Costs {
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    };

    #[test]
    fn detection_at_window_start_is_perfect_and_nothing_is_null() {
        let times: Vec<i64> = (0..100).collect();
        let windows = [(50, 59)];
        let mut d = vec![false; 100];
        let null = score(&times, &d, &windows, &STANDARD);
        assert_eq!((null.raw, null.null, null.perfect), (-1.0, -1.0, 1.0));
        d[50] = true;
        let perfect = score(&times, &d, &windows, &STANDARD);
        assert!((perfect.raw - 1.0).abs() < 1e-12);
        assert!((perfect.normalised() - 100.0).abs() < 1e-9);
        // A late detection scores less; one far outside the window costs A_FP.
        let mut late = vec![false; 100];
        late[59] = true;
        late[99] = true;
        let s = score(&times, &late, &windows, &STANDARD);
        assert_eq!((s.tp, s.fp), (1, 1));
        let in_window = scaled_sigmoid(-0.1) / scaled_sigmoid(-1.0);
        let after = scaled_sigmoid(40.0 / 9.0) * 0.11;
        assert!((s.raw - (in_window + after)).abs() < 1e-12);
    }

    #[test]
    fn probationary_rows_are_not_scored() {
        let times: Vec<i64> = (0..100).collect();
        let mut d = vec![false; 100];
        d[3] = true;
        let s = score(&times, &d, &[], &STANDARD);
        assert_eq!((s.raw, s.fp), (0.0, 0));
    }
}
