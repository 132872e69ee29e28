//! Mann-Whitney U with tie correction, and the window of canary values that keeps it up to
//! date as canary values and concurrent baseline readings come and go.
//!
//! U counts the (canary, baseline) pairs in which the canary value is larger, ties counting
//! one half. Under "no difference" U is approximately normal with mean `n1 n2 / 2` and
//! tie-corrected variance `n1 n2 / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1)))`; p-values use
//! that approximation with a continuity correction of 1/2.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::metric::{Direction, Side};
use crate::stats::{Reference, tie_term};

/// A Mann-Whitney U statistic and its tie-corrected null distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the canary: pairs with the canary value larger, ties counting one half.
    pub u: f64,
    /// Canary values.
    pub n_canary: usize,
    /// Baseline values.
    pub n_baseline: usize,
    /// Sum of `t^3 - t` over groups of `t` tied values in the pooled sample.
    pub ties: f64,
}

impl MannWhitney {
    /// Mean of U under no difference: `n1 n2 / 2`.
    pub fn expected(&self) -> f64 {
        (self.n_canary * self.n_baseline) as f64 / 2.0
    }

    /// Tie-corrected standard deviation of U under no difference.
    pub fn stddev(&self) -> f64 {
        let (n1, n2) = (self.n_canary as f64, self.n_baseline as f64);
        let n = n1 + n2;
        if n < 2.0 {
            return 0.0;
        }
        (n1 * n2 / 12.0 * ((n + 1.0) - self.ties / (n * (n - 1.0))))
            .max(0.0)
            .sqrt()
    }

    /// The z held to the critical value and the side that is bad: one-sided towards the bad
    /// side, or for `either` the continuity-corrected `|U - mean|` towards the side U leans.
    pub(crate) fn towards_bad(&self, direction: Direction) -> (f64, Side) {
        match direction {
            Direction::Increase => (self.z(Side::High), Side::High),
            Direction::Decrease => (self.z(Side::Low), Side::Low),
            Direction::Either => {
                let side = if self.u >= self.expected() {
                    Side::High
                } else {
                    Side::Low
                };
                (self.z(side), side)
            }
        }
    }

    /// Continuity-corrected z towards `side` (positive when the canary leans that way).
    pub fn z(&self, side: Side) -> f64 {
        let sd = self.stddev();
        let d = self.u - self.expected();
        let towards = match side {
            Side::High => d,
            Side::Low => -d,
        };
        if sd == 0.0 { 0.0 } else { (towards - 0.5) / sd }
    }

    /// Two-sided p-value.
    pub fn p_two_sided(&self) -> f64 {
        if self.stddev() == 0.0 {
            return 1.0;
        }
        let z = ((self.u - self.expected()).abs() - 0.5) / self.stddev();
        (2.0 * standard_normal().sf(z)).min(1.0)
    }

    /// One-sided p-value towards `side`.
    pub fn p_one_sided(&self, side: Side) -> f64 {
        if self.stddev() == 0.0 {
            1.0
        } else {
            standard_normal().sf(self.z(side))
        }
    }
}

pub(crate) fn standard_normal() -> Normal {
    Normal::standard()
}

/// Mann-Whitney U of `canary` against `baseline`, from scratch. Non-finite values are
/// dropped. The streaming path keeps the same numbers incrementally, tested equal.
pub fn mann_whitney(canary: &[f64], baseline: &[f64]) -> Option<MannWhitney> {
    let reference = Reference::new(baseline, baseline.len());
    if reference.len() == 0 {
        return None;
    }
    let mut window = Window::new(None);
    for v in canary.iter().copied().filter(|v| v.is_finite()) {
        window.push(v, &reference);
    }
    (window.len() > 0).then(|| window.test(&reference))
}

/// Adds a concurrent baseline reading to `baseline`, pushing out its oldest value once full,
/// and keeps the canary window's U and ties exact.
pub(crate) fn slide(baseline: &mut Reference, window: Option<&mut Window>, value: f64) {
    let Some(window) = window else {
        if baseline.next_evicted().is_some() {
            baseline.remove_oldest();
        }
        baseline.insert(value);
        return;
    };
    // Each value is ranked once, for the window and the reference alike.
    if let Some(old) = baseline.next_evicted() {
        let rank = baseline.rank_of(old);
        window.baseline_changed(old, rank.1, false);
        baseline.remove_oldest_ranked(rank);
    }
    let rank = baseline.rank_of(value);
    window.baseline_changed(value, rank.1, true);
    baseline.insert_ranked(value, rank);
}

/// The most recent canary values of one metric, with their ranks among the baseline kept
/// up to date as values enter and leave, so each sample costs `O(log n + window)`.
///
/// Values and ranks are kept in parallel vectors whose live part starts at `start`: the loop
/// over the window that every baseline change runs then reads contiguous numbers, which the
/// compiler turns into vector instructions. Leaving values are dropped from the front in
/// batches.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    capacity: Option<usize>,
    start: usize,
    values: Vec<f64>,
    /// Baseline values strictly below each canary value, and equal to it.
    below: Vec<usize>,
    tied: Vec<usize>,
    /// Twice U, so that half-counted ties stay integers.
    twice_u: u64,
    /// Change in the pooled `sum(t^3 - t)` caused by the canary values.
    extra_ties: i64,
}

/// Values that have left the window before they are dropped from its vectors.
const COMPACT_AFTER: usize = 64;

impl Window {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Window {
            capacity,
            start: 0,
            values: Vec::new(),
            below: Vec::new(),
            tied: Vec::new(),
            twice_u: 0,
            extra_ties: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len() - self.start
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.live().iter().copied()
    }

    fn live(&self) -> &[f64] {
        &self.values[self.start..]
    }

    pub(crate) fn mean(&self) -> f64 {
        self.values().sum::<f64>() / self.len() as f64
    }

    pub(crate) fn push(&mut self, value: f64, baseline: &Reference) {
        if self.capacity.is_some_and(|c| self.len() >= c) {
            self.evict();
        }
        let (below, tied) = baseline.rank_of(value);
        // Group size of `value` in the pooled sample before this one joins.
        let g = (tied + self.count_equal(value)) as i64;
        self.extra_ties += 3 * g * g + 3 * g;
        self.twice_u += (2 * below + tied) as u64;
        self.values.push(value);
        self.below.push(below);
        self.tied.push(tied);
    }

    /// The same canary values ranked against `baseline` instead.
    pub(crate) fn rebuilt(&self, baseline: &Reference) -> Window {
        let mut window = Window::new(self.capacity);
        for v in self.values() {
            window.push(v, baseline);
        }
        window
    }

    fn evict(&mut self) {
        if self.len() == 0 {
            return;
        }
        let (value, below, tied) = (
            self.values[self.start],
            self.below[self.start],
            self.tied[self.start],
        );
        self.start += 1;
        // Group size including the leaving value.
        let g = (tied + self.count_equal(value) + 1) as i64;
        self.extra_ties -= 3 * g * g - 3 * g;
        self.twice_u -= (2 * below + tied) as u64;
        if self.start >= COMPACT_AFTER && 2 * self.start >= self.values.len() {
            self.values.drain(..self.start);
            self.below.drain(..self.start);
            self.tied.drain(..self.start);
            self.start = 0;
        }
    }

    /// Keeps U and the ties exact when `x` joins (`joins`) or leaves the baseline. `tied` is
    /// the number of baseline values equal to `x` before it joins, or including it when it
    /// leaves.
    fn baseline_changed(&mut self, x: f64, tied: usize, joins: bool) {
        // One pass: the canary values above `x` gain (or lose) a baseline value below them,
        // those equal to it a tie; the equal ones also size the tie group.
        // Without branches on the values: which way a comparison goes is a coin toss, and
        // mispredicted branches cost more than the arithmetic.
        let s = self.start;
        let (values, below, ties) = (&self.values[s..], &mut self.below[s..], &mut self.tied[s..]);
        let (mut above, mut equal) = (0usize, 0usize);
        for ((v, b), t) in values.iter().zip(below.iter_mut()).zip(ties.iter_mut()) {
            let (a, q) = (usize::from(x < *v), usize::from(x == *v));
            (above, equal) = (above + a, equal + q);
            if joins {
                (*b, *t) = (*b + a, *t + q);
            } else {
                (*b, *t) = (*b - a, *t - q);
            }
        }
        let (above, equal) = (above as u64, equal as u64);
        let change = 2 * above + equal;
        self.twice_u = if joins {
            self.twice_u + change
        } else {
            self.twice_u - change
        };
        let g_ref = tied as u64;
        let g = g_ref + equal;
        // Change of the pooled sum(t^3 - t), minus the part the baseline accounts for itself.
        let (pooled, own) = if joins {
            (
                tie_term(g + 1) - tie_term(g),
                tie_term(g_ref + 1) - tie_term(g_ref),
            )
        } else {
            (
                tie_term(g) - tie_term(g - 1),
                tie_term(g_ref) - tie_term(g_ref - 1),
            )
        };
        let delta = pooled as i64 - own as i64;
        self.extra_ties += if joins { delta } else { -delta };
    }

    fn count_equal(&self, value: f64) -> usize {
        self.live().iter().map(|v| usize::from(*v == value)).sum()
    }

    pub(crate) fn test(&self, baseline: &Reference) -> MannWhitney {
        let ties = baseline.ties as i64 + self.extra_ties;
        MannWhitney {
            u: self.twice_u as f64 / 2.0,
            n_canary: self.len(),
            n_baseline: baseline.sorted.len(),
            ties: ties as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-checked: canary X = [4, 5, 5, 7, 9], baseline Y = [1, 2, 3, 4, 5, 6].
    // Pooled ranks: 1,2,3 -> 1,2,3; the two 4s -> 4.5; the three 5s -> 7; 6 -> 9; 7 -> 10;
    // 9 -> 11. Rank sum of X = 4.5 + 7 + 7 + 10 + 11 = 39.5, so U = 39.5 - 5*6/2 = 24.5.
    // Mean 15. Ties: 2^3-2 + 3^3-3 = 30. Variance 30/12 * (12 - 30/110) = 29.318..., sd 5.4146.
    // z (greater, continuity-corrected) = (24.5 - 15 - 0.5) / 5.4146 = 1.6622, p = 0.04824.
    #[test]
    fn tie_corrected_textbook_example() {
        let t = mann_whitney(&[4.0, 5.0, 5.0, 7.0, 9.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(t.u, 24.5);
        assert_eq!(t.expected(), 15.0);
        assert_eq!(t.ties, 30.0);
        assert!((t.stddev() - 5.414_626_655).abs() < 1e-8, "{}", t.stddev());
        assert!((t.z(Side::High) - 1.662_164_46).abs() < 1e-7);
        assert!(
            (t.p_one_sided(Side::High) - 0.048_239_9).abs() < 1e-6,
            "{}",
            t.p_one_sided(Side::High)
        );
        assert!((t.p_two_sided() - 0.096_479_8).abs() < 1e-6);
        assert!(t.p_one_sided(Side::Low) > 0.9);
    }

    #[test]
    fn sliding_window_matches_a_fresh_computation() {
        let baseline: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let reference = Reference::new(&baseline, baseline.len());
        let canary: Vec<f64> = (0..30).map(|i| ((i * 5) % 9) as f64).collect();
        let mut window = Window::new(Some(6));
        for (i, v) in canary.iter().enumerate() {
            window.push(*v, &reference);
            let start = (i + 1).saturating_sub(6);
            let fresh = mann_whitney(&canary[start..=i], &baseline).unwrap();
            assert_eq!(window.test(&reference), fresh, "after {} values", i + 1);
        }
    }

    #[test]
    fn sliding_baseline_and_window_match_a_fresh_computation() {
        // Integer-valued data, so ties are everywhere; both sides slide.
        let initial: Vec<f64> = (0..10).map(|i| (i % 4) as f64).collect();
        let mut reference = Reference::new(&initial, 10);
        let mut baseline: Vec<f64> = initial.clone();
        let mut window = Window::new(Some(5));
        let mut canary = Vec::new();
        // Long enough for the window to drop its leaving values more than once.
        for i in 0..300usize {
            if i % 3 != 0 {
                let v = ((i * 7) % 5) as f64;
                slide(&mut reference, Some(&mut window), v);
                baseline.push(v);
            }
            let c = ((i * 11) % 6) as f64;
            window.push(c, &reference);
            canary.push(c);
            let fresh = mann_whitney(
                &canary[canary.len().saturating_sub(5)..],
                &baseline[baseline.len() - 10..],
            )
            .unwrap();
            assert_eq!(window.test(&reference), fresh, "step {i}");
        }
    }

    #[test]
    fn a_rebuilt_window_and_a_late_ranked_reference_match_fresh_computations() {
        let first: Vec<f64> = (0..20).map(|i| (i % 5) as f64).collect();
        let second: Vec<f64> = (0..8).map(|i| (i % 3) as f64 + 1.0).collect();
        let mut window = Window::new(Some(6));
        let canary: Vec<f64> = (0..9).map(|i| ((i * 7) % 6) as f64).collect();
        for v in &canary {
            window.push(*v, &Reference::new(&first, 20));
        }
        let other = Reference::new(&second, 8);
        let rebuilt = window.rebuilt(&other);
        assert_eq!(
            rebuilt.test(&other),
            mann_whitney(&canary[3..], &second).unwrap()
        );
        // Sorted only when asked, with the same ranks and ties as sorted at once.
        let mut late = Reference::unranked(&first, 20);
        assert!(late.sorted.is_empty());
        late.rank();
        let at_once = Reference::new(&first, 20);
        assert_eq!((&late.sorted, late.ties), (&at_once.sorted, at_once.ties));
    }
}
