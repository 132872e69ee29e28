//! Small summaries shared by the detectors. Distributions themselves come from `statrs`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Count, mean and spread of a set of values, accumulated in one pass. Sums are kept relative
/// to the first value, which avoids the cancellation of the naive sum-of-squares formula
/// without Welford's division per value (history profiles add tens of thousands of points).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    n: usize,
    shift: f64,
    sum: f64,
    sum_sq: f64,
}

impl Moments {
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut m = Moments::default();
        for v in values {
            m.add(v);
        }
        m
    }

    pub(crate) fn add(&mut self, value: f64) {
        if self.n == 0 {
            self.shift = value;
        }
        let d = value - self.shift;
        self.n += 1;
        self.sum += d;
        self.sum_sq += d * d;
    }

    /// Removes a value that was added before.
    pub(crate) fn remove(&mut self, value: f64) {
        let d = value - self.shift;
        self.n -= 1;
        self.sum -= d;
        self.sum_sq -= d * d;
    }

    pub(crate) fn count(&self) -> usize {
        self.n
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.shift + self.sum / self.n as f64
        }
    }

    /// Sample standard deviation; zero below two values.
    pub(crate) fn stddev(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0))
            .max(0.0)
            .sqrt()
    }
}

/// The baseline of one metric: summary for z-scores and relative thresholds, sorted values
/// and tie counts for rank tests. A sliding window: once it holds `capacity` values, each new
/// value (a concurrent reading of the stable version) replaces the oldest.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub(crate) moments: Moments,
    pub(crate) sorted: Vec<f64>,
    arrival: VecDeque<f64>,
    capacity: usize,
    /// Sum of `t^3 - t` over groups of `t` equal values (tie correction).
    pub(crate) ties: u64,
    /// Whether `sorted` and `ties` are kept: only a rank test needs them, and keeping 1,000
    /// values sorted while the window slides costs more than everything else together.
    ranked: bool,
}

impl Reference {
    /// The last `capacity` finite values, and room for at least `capacity`, ready to rank
    /// against.
    pub(crate) fn new(values: &[f64], capacity: usize) -> Self {
        let mut reference = Reference::unranked(values, capacity);
        reference.rank();
        reference
    }

    /// [`Self::new`] without the sorted values, until [`Self::rank`] asks for them.
    pub(crate) fn unranked(values: &[f64], capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let mut arrival: VecDeque<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        while arrival.len() > capacity {
            arrival.pop_front();
        }
        Reference {
            moments: Moments::of(arrival.iter().copied()),
            sorted: Vec::new(),
            arrival,
            capacity,
            ties: 0,
            ranked: false,
        }
    }

    /// Sorts the values and counts their ties, once, and keeps them so from then on.
    pub(crate) fn rank(&mut self) {
        if self.ranked {
            return;
        }
        let mut sorted: Vec<f64> = self.arrival.iter().copied().collect();
        // Only finite values are kept, for which the plain comparison is a total order and
        // cheaper than `total_cmp`'s bit juggling.
        sorted.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        self.ties = sorted
            .chunk_by(|a, b| a == b)
            .map(|g| tie_term(g.len() as u64))
            .sum();
        self.sorted = sorted;
        self.ranked = true;
    }

    /// Stops keeping the values sorted (see [`Self::ranked`]): nothing ranks against this
    /// window any more. `sorted` is empty from then on.
    pub(crate) fn stop_ranking(&mut self) {
        self.ranked = false;
        self.sorted = Vec::new();
        self.ties = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.arrival.len()
    }

    /// How many values the window holds once full.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The values in the order they arrived, oldest first.
    pub(crate) fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.arrival.iter().copied()
    }

    /// Mean of the latest `k` values (fewer when there are fewer); NaN when empty.
    pub(crate) fn recent_mean(&self, k: usize) -> f64 {
        let recent = self.arrival.iter().rev().take(k);
        let n = recent.len();
        recent.sum::<f64>() / n as f64
    }

    /// Values strictly below `value`, and equal to it.
    pub(crate) fn rank_of(&self, value: f64) -> (usize, usize) {
        if self.sorted.len() <= LINEAR_RANK {
            // A comparison's window is a dozen values: counting them all, without a branch,
            // is quicker than a search whose every step waits on the one before.
            let (below, tied) = self.sorted.iter().fold((0, 0), |(b, t), x| {
                (b + usize::from(*x < value), t + usize::from(*x == value))
            });
            return (below, tied);
        }
        let below = self.sorted.partition_point(|b| *b < value);
        let rest = &self.sorted[below..];
        // Most values have no tie in the baseline: one comparison instead of a second search.
        let tied = if rest.first() == Some(&value) {
            rest.partition_point(|b| *b <= value)
        } else {
            0
        };
        (below, tied)
    }

    /// The value the next [`Self::insert`] would push out, if the window is full.
    pub(crate) fn next_evicted(&self) -> Option<f64> {
        (self.arrival.len() >= self.capacity).then(|| self.arrival[0])
    }

    /// Removes the oldest value (the one [`Self::next_evicted`] names).
    pub(crate) fn remove_oldest(&mut self) {
        if let Some(&old) = self.arrival.front() {
            let rank = if self.ranked {
                self.rank_of(old)
            } else {
                (0, 0)
            };
            self.remove_oldest_ranked(rank);
        }
    }

    /// [`Self::remove_oldest`] when the caller already knows the oldest value's
    /// [`Self::rank_of`].
    pub(crate) fn remove_oldest_ranked(&mut self, (below, tied): (usize, usize)) {
        if let Some(old) = self.arrival.pop_front() {
            if self.ranked {
                self.ties -= tie_term(tied as u64) - tie_term(tied as u64 - 1);
                self.sorted.remove(below);
            }
            self.moments.remove(old);
        }
    }

    /// Adds a finite value; call [`Self::remove_oldest`] first when the window is full.
    pub(crate) fn insert(&mut self, value: f64) {
        let rank = if self.ranked {
            self.rank_of(value)
        } else {
            (0, 0)
        };
        self.insert_ranked(value, rank);
    }

    /// [`Self::insert`] when the caller already knows `value`'s [`Self::rank_of`].
    pub(crate) fn insert_ranked(&mut self, value: f64, (below, tied): (usize, usize)) {
        if self.ranked {
            self.ties += tie_term(tied as u64 + 1) - tie_term(tied as u64);
            self.sorted.insert(below + tied, value);
        }
        self.arrival.push_back(value);
        self.moments.add(value);
    }
}

/// Largest reference ranked by counting rather than by binary search.
const LINEAR_RANK: usize = 32;

/// `t^3 - t`, the contribution of a group of `t` tied values to the rank-variance correction.
pub(crate) fn tie_term(t: u64) -> u64 {
    t * t * t - t
}

/// An upper and a lower bound, either of which may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Values above this are high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// Values below this are low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
}

impl Bounds {
    /// The more lenient of two sets of bounds: the higher upper and the lower lower bound.
    /// A side only one of them sets is taken from that one.
    pub fn lenient(a: Bounds, b: Bounds) -> Bounds {
        Bounds {
            upper: pick(a.upper, b.upper, f64::max),
            lower: pick(a.lower, b.lower, f64::min),
        }
    }

    /// The stricter of two sets of bounds: the lower upper and the higher lower bound.
    pub fn strict(a: Bounds, b: Bounds) -> Bounds {
        Bounds {
            upper: pick(a.upper, b.upper, f64::min),
            lower: pick(a.lower, b.lower, f64::max),
        }
    }

    /// Whether neither bound is set.
    pub fn is_empty(&self) -> bool {
        self.upper.is_none() && self.lower.is_none()
    }
}

fn pick(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Clamps an infinite statistic (a departure from a zero-spread reference) to the largest
/// finite float, so a verdict stays valid JSON (serde_json writes infinities as `null`).
pub(crate) fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match_two_pass_formulas() {
        let m = Moments::of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.count(), 8);
        assert!((m.mean() - 5.0).abs() < 1e-12);
        // Sample variance 32 / 7.
        assert!((m.stddev() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn reference_slides_and_keeps_its_summaries() {
        let mut r = Reference::new(&[5.0, 1.0, 3.0, 3.0], 4);
        assert_eq!(r.ties, 6);
        assert_eq!(r.next_evicted(), Some(5.0));
        r.remove_oldest();
        r.insert(3.0);
        // Now [1, 3, 3, 3]: one group of three.
        assert_eq!(r.sorted, vec![1.0, 3.0, 3.0, 3.0]);
        assert_eq!(r.ties, 24);
        assert_eq!(r.rank_of(3.0), (1, 3));
        let fresh = Moments::of([1.0, 3.0, 3.0, 3.0]);
        assert!((r.moments.mean() - fresh.mean()).abs() < 1e-12);
        assert!((r.moments.stddev() - fresh.stddev()).abs() < 1e-12);
        // Larger than its capacity at the start: keeps the most recent values.
        assert_eq!(Reference::new(&[9.0, 1.0, 2.0], 2).sorted, vec![1.0, 2.0]);
    }

    #[test]
    fn lenient_takes_higher_upper_and_fills_missing_sides() {
        let a = Bounds {
            upper: Some(10.0),
            lower: None,
        };
        let b = Bounds {
            upper: Some(12.0),
            lower: Some(1.0),
        };
        assert_eq!(
            Bounds::lenient(a, b),
            Bounds {
                upper: Some(12.0),
                lower: Some(1.0)
            }
        );
        assert_eq!(
            Bounds::strict(a, b),
            Bounds {
                upper: Some(10.0),
                lower: Some(1.0)
            }
        );
    }
}
