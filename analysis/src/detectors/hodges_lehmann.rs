//! Hodges-Lehmann estimate of the shift between canary and baseline, with its confidence
//! interval: the median, and two order statistics, of all `canary - baseline` differences.
//!
//! There are `n1 * n2` differences (a million for two samples of 1,000), so they are never
//! materialised: the k-th smallest is found by bisecting on the value, counting differences
//! at or below a candidate in `O(n1 + n2)` with two pointers over the sorted samples, and
//! enumerating only once few candidates remain.

use serde::{Deserialize, Serialize};
use statrs::distribution::ContinuousCDF;

use crate::detectors::rank_sum::standard_normal;

/// Estimated shift of the canary relative to the baseline, in the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Median of all pairwise `canary - baseline` differences.
    pub estimate: f64,
    /// Lower end of the confidence interval.
    pub lower: f64,
    /// Upper end of the confidence interval.
    pub upper: f64,
    /// Confidence of the interval, e.g. 0.95.
    pub confidence: f64,
}

/// The Hodges-Lehmann shift of `canary` against `baseline` with a `confidence` interval from
/// the normal approximation of U: the interval runs from the `C`-th to the `(n1 n2 + 1 - C)`-th
/// smallest difference, `C = floor(n1 n2 / 2 - z sqrt(n1 n2 (n1 + n2 + 1) / 12))`, at least 1.
/// `None` when either sample has no finite value.
pub fn hodges_lehmann(canary: &[f64], baseline: &[f64], confidence: f64) -> Option<Shift> {
    shift_of_sorted(&sorted_finite(canary), &sorted_finite(baseline), confidence)
}

/// [`hodges_lehmann`] for samples already sorted and finite.
pub(crate) fn shift_of_sorted(c: &[f64], b: &[f64], confidence: f64) -> Option<Shift> {
    if c.is_empty() || b.is_empty() {
        return None;
    }
    let m = c.len() * b.len();
    let estimate = if m % 2 == 1 {
        kth_difference(c, b, m.div_ceil(2))
    } else {
        (kth_difference(c, b, m / 2) + kth_difference(c, b, m / 2 + 1)) / 2.0
    };
    let z = standard_normal().inverse_cdf((1.0 + confidence) / 2.0);
    let (n1, n2) = (c.len() as f64, b.len() as f64);
    let spread = z * (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt();
    let k = ((m as f64 / 2.0 - spread).floor().max(1.0) as usize).min(m.div_ceil(2));
    Some(Shift {
        estimate,
        lower: kth_difference(c, b, k),
        upper: kth_difference(c, b, m + 1 - k),
        confidence,
    })
}

fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// Number of pairs with `c[i] - b[j] <= d`. For a fixed `i` the predicate turns true as `j`
/// grows, and the turning point only moves right as `i` grows: two pointers cost
/// `O(n1 + n2)`, a binary search per canary value `O(n1 log n2)`, cheaper for a short canary
/// window against a long baseline.
fn count_at_most(c: &[f64], b: &[f64], d: f64) -> usize {
    let log_b = (usize::BITS - b.len().leading_zeros()) as usize;
    if c.len() * log_b < c.len() + b.len() {
        return c
            .iter()
            .map(|&ci| b.len() - b.partition_point(|&bj| ci - bj > d))
            .sum();
    }
    let mut j = 0;
    let mut count = 0;
    for &ci in c {
        while j < b.len() && ci - b[j] > d {
            j += 1;
        }
        count += b.len() - j;
    }
    count
}

/// The `k`-th smallest (1-based) of all `c[i] - b[j]`; both slices sorted, non-empty.
fn kth_difference(c: &[f64], b: &[f64], k: usize) -> f64 {
    let mut lo = c[0] - b[b.len() - 1];
    let mut below = count_at_most(c, b, lo);
    if below >= k {
        return lo;
    }
    let mut hi = c[c.len() - 1] - b[0];
    let mut upto = c.len() * b.len();
    // Invariant: count(lo) = below < k <= upto = count(hi), so the answer lies in (lo, hi].
    loop {
        if upto - below <= c.len() + b.len() {
            return select_between(c, b, lo, hi, k - below);
        }
        let mid = lo / 2.0 + hi / 2.0;
        if mid <= lo || mid >= hi {
            // No float strictly between: the answer, a float in (lo, hi], is hi.
            return hi;
        }
        let n = count_at_most(c, b, mid);
        if n >= k {
            (hi, upto) = (mid, n);
        } else {
            (lo, below) = (mid, n);
        }
    }
}

/// The `rank`-th smallest (1-based) difference in `(lo, hi]`.
fn select_between(c: &[f64], b: &[f64], lo: f64, hi: f64, rank: usize) -> f64 {
    let mut found = Vec::new();
    for &ci in c {
        let start = b.partition_point(|&bj| ci - bj > hi);
        let end = b.partition_point(|&bj| ci - bj > lo);
        found.extend(b[start..end].iter().map(|bj| ci - bj));
    }
    let (_, kth, _) = found.select_nth_unstable_by(rank - 1, f64::total_cmp);
    *kth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(c: &[f64], b: &[f64]) -> Vec<f64> {
        let mut d: Vec<f64> = c
            .iter()
            .flat_map(|x| b.iter().map(move |y| x - y))
            .collect();
        d.sort_by(f64::total_cmp);
        d
    }

    // Hand-checked: the 30 differences of [4,5,5,7,9] - [1,2,3,4,5,6] sorted are
    // -2 -1 -1 -1 0 0 0 1 1 1 1 2 2 2 2 | 3 3 3 3 3 4 4 4 4 5 5 6 6 7 8; median (2+3)/2 = 2.5.
    // 95%: C = floor(15 - 1.96 * sqrt(30)) = 4, so the interval is [d(4), d(27)] = [-1, 6].
    #[test]
    fn textbook_example() {
        let s = hodges_lehmann(
            &[4.0, 5.0, 5.0, 7.0, 9.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            0.95,
        )
        .unwrap();
        assert_eq!(
            s,
            Shift {
                estimate: 2.5,
                lower: -1.0,
                upper: 6.0,
                confidence: 0.95
            }
        );
    }

    #[test]
    fn kth_matches_brute_force_with_ties_and_large_samples() {
        // Deterministic pseudo-random values with many ties, plus a continuous set.
        let tied_c: Vec<f64> = (0..37).map(|i| ((i * 17) % 11) as f64).collect();
        let tied_b: Vec<f64> = (0..53).map(|i| ((i * 7) % 13) as f64 * 0.5).collect();
        let cont_c: Vec<f64> = (0..41)
            .map(|i| ((i as f64) * 1.618).sin() * 10.0 + 3.0)
            .collect();
        let cont_b: Vec<f64> = (0..60).map(|i| ((i as f64) * 2.5).cos() * 7.0).collect();
        for (c, b) in [(tied_c, tied_b), (cont_c, cont_b)] {
            let (cs, bs) = (sorted_finite(&c), sorted_finite(&b));
            let all = brute(&cs, &bs);
            for k in [
                1,
                2,
                all.len() / 3,
                all.len() / 2,
                all.len() / 2 + 1,
                all.len() - 1,
                all.len(),
            ] {
                assert_eq!(kth_difference(&cs, &bs, k), all[k - 1], "k = {k}");
            }
        }
    }

    #[test]
    fn shift_recovers_a_known_offset() {
        let b: Vec<f64> = (0..200)
            .map(|i| (i as f64 * 0.37).sin() * 5.0 + 100.0)
            .collect();
        let c: Vec<f64> = b.iter().map(|v| v + 20.0).collect();
        let s = hodges_lehmann(&c, &b, 0.95).unwrap();
        assert!((s.estimate - 20.0).abs() < 1e-9, "{s:?}");
        assert!(
            s.lower < 20.0 && s.upper > 20.0 && s.upper - s.lower < 3.0,
            "{s:?}"
        );
    }
}
