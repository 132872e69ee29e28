//! What a metric measures, and the sampling noise that follows from it.
//!
//! A canary serving 1% of the requests next to a stable group serving 99% reads several times
//! noisier: its error rate is a proportion of a few hundred requests, its p99 an order
//! statistic of a few hundred latencies. Judging it against the spread of the stable group's
//! readings (or against the stable readings' own successive changes) calls that noise a
//! regression. When the policy says what a metric is and the samples carry both groups'
//! request counts, the paired detector compares like with like instead: each reading's noise
//! comes from the requests behind it.
//!
//! - `rate` (errors over requests) and `count` (log lines, any events a group's requests
//!   cause): given the `k` events both groups saw together, the canary's share of them is
//!   binomial with the canary's share of the requests, `n_c / (n_c + n_s)`, when nothing
//!   regressed. The test is exact for few events (one error in 300 requests next to none in
//!   30,000 is no evidence) and takes the normal approximation for many; a mid-p value turned
//!   into a z keeps its scale the same as every other detector's.
//! - `quantile` (a p99): the relative standard error of a sample quantile over `n` requests,
//!   with an exponential tail, is `sqrt(q / (1 - q)) / ln(1 / (1 - q)) / sqrt(n)` (2.16 /
//!   sqrt(n) at the 99th percentile); the log ratio of the two groups' quantiles over that
//!   error is the z.
//! - `gauge` (CPU, memory: a level per instance): no request model; the paired detector's
//!   noise comes from the A/A period or the stable readings, taken relative to the level.
//!
//! Real noise is seldom exactly binomial or exponential-tailed. An A/A period with both
//! groups' requests measures how far the model is off: the mean square of its z's (a
//! dispersion factor, as a quasi-binomial model has) shrunk towards 1 and never below it,
//! divides every later z by its square root.

use serde::{Deserialize, Serialize};
use statrs::distribution::ContinuousCDF;
use statrs::function::gamma::ln_gamma;

use crate::detectors::NoiseScale;
use crate::detectors::rank_sum::standard_normal;

/// What a metric measures: sets how its sampling noise is modelled (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A proportion of requests: error rate, timeout rate. Readings in [0, 1].
    Rate,
    /// A latency quantile over the requests served (`quantile`, default 0.99).
    Quantile,
    /// Events over the sample, in proportion to the requests served: log lines, retries.
    /// Readings are the group's total, so a canary serving 1% logs 1% as much.
    Count,
    /// A level that does not scale with requests: CPU, memory, queue depth.
    Gauge,
}

/// The quantile a `quantile` metric reads when the policy does not say.
pub const DEFAULT_QUANTILE: f64 = 0.99;

/// How many A/A points' worth of belief the model's own dispersion (1) carries: with fewer
/// A/A readings than this, a quiet or a loud stretch moves the estimate only part way.
pub const DISPERSION_PRIOR: f64 = 6.0;

/// Below this approximate z the count test takes the normal approximation whatever the
/// counts: every limit a count's z is held to is 3 or more.
const NEAR_THE_MEAN: f64 = 1.5;

/// Where a z beyond the floats' reach is clamped, so reports stay finite.
const Z_LIMIT: f64 = 38.0;

/// Variance below which the count test sums exact binomial terms; above it the normal
/// approximation with continuity correction is within a few hundredths of a z.
const EXACT_BELOW: f64 = 100.0;

impl Kind {
    /// Whether the noise follows from the requests served (all but `gauge`).
    pub fn is_modelled(self) -> bool {
        self != Kind::Gauge
    }

    /// How the paired detector's noise scales when it has to be estimated from readings (no
    /// request counts for both groups): with the level, and whether with the requests.
    pub fn noise_defaults(self) -> (NoiseScale, bool) {
        match self {
            Kind::Rate | Kind::Count => (NoiseScale::Sqrt, true),
            Kind::Quantile => (NoiseScale::Linear, true),
            Kind::Gauge => (NoiseScale::Linear, false),
        }
    }
}

/// The noise model of one metric for an analysis: its kind, and the dispersion its A/A period
/// showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Model {
    kind: Kind,
    /// Relative standard error of a quantile reading times `sqrt(n)`.
    quantile_error: f64,
    /// Variance of a z under the model when nothing regressed, as the A/A period showed it
    /// (shrunk towards 1, never below). z's are divided by its square root.
    pub(crate) dispersion: f64,
    /// A/A pairs the dispersion rests on.
    pub(crate) points: usize,
}

impl Model {
    /// The model for a metric of `kind`; `quantile` for a quantile metric; the A/A period as
    /// stable readings, the canary group's readings, and each group's requests (one of each
    /// per reading; pairs with a missing part are left out).
    pub(crate) fn new(
        kind: Kind,
        quantile: Option<f64>,
        stable: &[f64],
        canary: &[f64],
        canary_requests: &[u64],
        stable_requests: &[u64],
    ) -> Option<Model> {
        if !kind.is_modelled() {
            return None;
        }
        let q = quantile.unwrap_or(DEFAULT_QUANTILE);
        let mut model = Model {
            kind,
            quantile_error: (q / (1.0 - q)).sqrt() / (1.0 / (1.0 - q)).ln(),
            dispersion: 1.0,
            points: 0,
        };
        let n = stable.len();
        if canary.len() == n && canary_requests.len() == n && stable_requests.len() == n {
            let (mut squares, mut points) = (0.0, 0usize);
            for i in 0..n {
                let (c, s) = (canary[i], stable[i]);
                let (nc, ns) = (canary_requests[i] as f64, stable_requests[i] as f64);
                if let Some(z) = model.raw_z(c, nc, s, ns) {
                    squares += z * z;
                    points += 1;
                }
            }
            model.dispersion =
                ((DISPERSION_PRIOR + squares) / (DISPERSION_PRIOR + points as f64)).max(1.0);
            model.points = points;
        }
        Some(model)
    }

    /// The canary's reading against the stable group's, in noise standard deviations of the
    /// model (the A/A period's dispersion applied); positive when the canary reads higher.
    /// `None` when either group served no requests or a reading cannot be judged (a quantile
    /// at or below 0).
    #[cfg(test)]
    pub(crate) fn z(&self, canary: f64, nc: f64, stable: f64, ns: f64) -> Option<f64> {
        self.raw_z(canary, nc, stable, ns)
            .map(|z| z / self.dispersion.sqrt())
    }

    /// The dispersion in force after the samples in `totals`: the A/A period's (or the
    /// model's 1), pooled with the changes between consecutive samples' z's since the
    /// deploy. A steady shift leaves those changes alone; noise the model understates
    /// (heavier tails, bursty errors) shows in them, with or without an A/A period. Each
    /// change weighs one point; the prior weighs [`DISPERSION_PRIOR`] plus its A/A points.
    pub(crate) fn dispersion_with(&self, totals: &Totals) -> f64 {
        let prior = DISPERSION_PRIOR + self.points as f64;
        let changes = f64::from(totals.n.saturating_sub(1));
        // A change between two z's has twice the variance of one.
        ((prior * self.dispersion + totals.z_changes / 2.0) / (prior + changes)).max(1.0)
    }

    /// The z of one sample under the model alone, no dispersion applied.
    pub(crate) fn raw_z(&self, canary: f64, nc: f64, stable: f64, ns: f64) -> Option<f64> {
        if !(canary.is_finite() && stable.is_finite() && nc >= 1.0 && ns >= 1.0) {
            return None;
        }
        match self.kind {
            Kind::Rate => Some(count_z(
                (canary.clamp(0.0, 1.0) * nc).round(),
                nc,
                (stable.clamp(0.0, 1.0) * ns).round(),
                ns,
            )),
            Kind::Count => Some(count_z(
                canary.max(0.0).round(),
                nc,
                stable.max(0.0).round(),
                ns,
            )),
            Kind::Quantile => (canary > 0.0 && stable > 0.0).then(|| {
                let error = self.quantile_error * (1.0 / nc + 1.0 / ns).sqrt();
                ((canary / stable).ln() / error).clamp(-Z_LIMIT, Z_LIMIT)
            }),
            Kind::Gauge => None,
        }
    }

    /// What the canary's reading would be if it behaved like the stable group, in the
    /// reading's unit: the same rate or quantile, or the stable count scaled to the canary's
    /// requests.
    pub(crate) fn expected(&self, stable: f64, nc: f64, ns: f64) -> f64 {
        match self.kind {
            Kind::Count => stable * nc / ns.max(1.0),
            _ => stable,
        }
    }

    /// The model's standard deviation of the canary's reading minus [`Self::expected`], in
    /// the reading's unit (dispersion applied): what a difference is judged against.
    pub(crate) fn stddev(
        &self,
        canary: f64,
        nc: f64,
        stable: f64,
        ns: f64,
        dispersion: f64,
    ) -> f64 {
        let (nc, ns) = (nc.max(1.0), ns.max(1.0));
        let spread = match self.kind {
            Kind::Rate => {
                let p = (self.events(canary, nc) + self.events(stable, ns) + 0.5) / (nc + ns + 1.0);
                (p * (1.0 - p) * (1.0 / nc + 1.0 / ns)).sqrt()
            }
            Kind::Count => {
                let per_request = (canary.max(0.0) + stable.max(0.0) + 0.5) / (nc + ns);
                (per_request * nc * (1.0 + nc / ns)).sqrt()
            }
            Kind::Quantile => stable.abs() * self.quantile_error * (1.0 / nc + 1.0 / ns).sqrt(),
            Kind::Gauge => 0.0,
        };
        spread * dispersion.sqrt()
    }

    /// The model's standard deviation of one group's reading over `n` requests when its true
    /// value is `reference` (dispersion applied): the least spread a reading can have, which
    /// floors a z-score against readings that happened to agree (a few windows without an
    /// error). A rate is taken at one event in `n` at least. `None` for counts (a group's
    /// total, whose reference would be another group's) and gauges.
    pub(crate) fn reading_stddev(&self, reference: f64, n: u64) -> Option<f64> {
        let n = (n as f64).max(1.0);
        let spread = match self.kind {
            Kind::Rate => {
                let p = reference.clamp(1.0 / n, 1.0);
                (p * (1.0 - p) / n).sqrt()
            }
            Kind::Quantile => reference.abs() * self.quantile_error / n.sqrt(),
            Kind::Count | Kind::Gauge => return None,
        };
        Some(spread * self.dispersion.sqrt())
    }

    /// Whether the evidence of several samples is judged from their summed events (rates and
    /// counts), rather than by summing their z's (quantiles).
    pub(crate) fn sums_events(&self) -> bool {
        matches!(self.kind, Kind::Rate | Kind::Count)
    }

    /// The events behind a reading served by `n` requests.
    pub(crate) fn events(&self, reading: f64, n: f64) -> f64 {
        match self.kind {
            Kind::Rate => (reading.clamp(0.0, 1.0) * n).round(),
            _ => reading.max(0.0).round(),
        }
    }

    /// The z of everything since the first sample, under `dispersion`: of the summed events
    /// (rates, counts), or of the summed z's (quantiles).
    pub(crate) fn totals_z(&self, totals: &Totals, dispersion: f64) -> f64 {
        let z = if self.sums_events() {
            count_z(
                totals.canary_events,
                totals.canary_requests,
                totals.stable_events,
                totals.stable_requests,
            )
        } else {
            totals.z_sum / f64::from(totals.n.max(1)).sqrt()
        };
        (z / dispersion.sqrt()).clamp(-Z_LIMIT, Z_LIMIT)
    }
}

/// What the cumulative test of a modelled metric adds up since the first canary sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Totals {
    pub(crate) n: u32,
    pub(crate) canary_events: f64,
    pub(crate) canary_requests: f64,
    pub(crate) stable_events: f64,
    pub(crate) stable_requests: f64,
    /// Sum of the samples' z's under the model alone, for quantiles.
    pub(crate) z_sum: f64,
    /// The latest of them, and the sum of squared changes between consecutive ones.
    pub(crate) z_last: f64,
    pub(crate) z_changes: f64,
    /// Sum of the readings' differences from what was expected, in the reading's unit.
    pub(crate) difference: f64,
}

impl Totals {
    /// The totals with one more sample whose z under the model alone is `z`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with(
        self,
        model: &Model,
        canary: f64,
        nc: f64,
        stable: f64,
        ns: f64,
        z: f64,
    ) -> Totals {
        Totals {
            n: self.n + 1,
            canary_events: self.canary_events + model.events(canary, nc),
            canary_requests: self.canary_requests + nc,
            stable_events: self.stable_events + model.events(stable, ns),
            stable_requests: self.stable_requests + ns,
            z_sum: self.z_sum + z,
            z_last: z,
            z_changes: match self.n {
                0 => 0.0,
                _ => self.z_changes + (z - self.z_last).powi(2),
            },
            difference: self.difference + canary - model.expected(stable, nc, ns),
        }
    }
}

/// The canary's `kc` of the `kc + ks` events two groups saw, against a binomial share of
/// `nc / (nc + ns)`: the mid-p value of where `kc` falls, as a signed standard normal z
/// (positive: more than its share). Exact below [`EXACT_BELOW`] variance, normal with
/// continuity correction above. No events at all is no evidence (0).
pub(crate) fn count_z(kc: f64, nc: f64, ks: f64, ns: f64) -> f64 {
    let k = kc + ks;
    if k < 1.0 || nc <= 0.0 || ns <= 0.0 {
        return 0.0;
    }
    let share = nc / (nc + ns);
    let (mean, variance) = (k * share, k * share * (1.0 - share));
    let d = kc - mean;
    let approximate = (d - 0.5 * d.signum()).abs().copysign(d) / variance.sqrt();
    // Near the mean no decision hangs on the second decimal, and there the approximation
    // errs on the low side by a few tenths at most: the exact sum is kept for the tails.
    let z = if variance >= EXACT_BELOW || approximate.abs() < NEAR_THE_MEAN {
        approximate
    } else {
        let tail = mid_tail(kc, k, share);
        let z = -standard_normal().inverse_cdf(tail.max(f64::MIN_POSITIVE));
        if kc >= mean { z } else { -z }
    };
    if z.is_finite() {
        z.clamp(-Z_LIMIT, Z_LIMIT)
    } else {
        0.0
    }
}

/// The mid-p tail of `Binomial(k, p)` at `x` on the side `x` lies, away from the mean:
/// `P(X > x) + P(X = x) / 2` at or above the mean, `P(X < x) + P(X = x) / 2` below. Summed
/// outward from `x` by the terms' recurrence until they vanish, so it costs a few dozen
/// multiplications, not an incomplete beta function, and stays accurate in the far tail.
fn mid_tail(x: f64, k: f64, p: f64) -> f64 {
    let ln_pmf = ln_gamma(k + 1.0) - ln_gamma(x + 1.0) - ln_gamma(k - x + 1.0)
        + x * p.ln()
        + (k - x) * (-p).ln_1p();
    let at = ln_pmf.exp();
    let odds = p / (1.0 - p);
    let (mut term, mut sum, mut i) = (at, 0.0, x);
    if x >= k * p {
        while i < k {
            term *= (k - i) / (i + 1.0) * odds;
            sum += term;
            i += 1.0;
            if term <= sum * 1e-17 {
                break;
            }
        }
    } else {
        while i > 0.0 {
            term *= i / (k - i + 1.0) / odds;
            sum += term;
            i -= 1.0;
            if term <= sum * 1e-17 {
                break;
            }
        }
    }
    (sum + 0.5 * at).min(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_events_are_weak_evidence_and_many_are_strong() {
        // One error in 300 requests next to none in 29,700: the canary saw the only event,
        // which it would one time in a hundred by chance. Not 3 sigma.
        let one = count_z(1.0, 300.0, 0.0, 29_700.0);
        assert!(one > 1.5 && one < 3.0, "z {one}");
        // Twelve errors where its share of 60 is 0.6: far beyond chance.
        let many = count_z(12.0, 300.0, 48.0, 29_700.0);
        assert!(many > 6.0, "z {many}");
        // Its exact share: no evidence either way.
        assert!(count_z(10.0, 1_000.0, 90.0, 9_000.0).abs() < 0.2);
        // Fewer than its share reads low.
        assert!(count_z(0.0, 5_000.0, 100.0, 5_000.0) < -8.0);
    }

    #[test]
    fn the_summed_tail_is_the_binomial_one() {
        use statrs::distribution::{Binomial, Discrete, DiscreteCDF};
        for (x, k, p) in [
            (0u64, 40u64, 0.01),
            (3, 40, 0.01),
            (12, 60, 0.01),
            (30, 60, 0.5),
            (20, 60, 0.5),
            (9_990, 10_000, 0.999),
        ] {
            let b = Binomial::new(p, k).expect("valid");
            let half = 0.5 * b.pmf(x);
            let want = if x as f64 >= k as f64 * p {
                b.sf(x) + half
            } else {
                b.cdf(x) - half
            };
            let got = mid_tail(x as f64, k as f64, p);
            assert!(
                (got - want.min(0.5)).abs() <= 1e-9 + 1e-6 * want,
                "{x} of {k} at {p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_exact_and_approximate_count_tests_agree_where_they_meet() {
        // Variance just below and just above the switch: a z within a tenth.
        let share = 0.5;
        let k_below = (EXACT_BELOW - 1.0) / (share * (1.0 - share));
        let k_above = (EXACT_BELOW + 1.0) / (share * (1.0 - share));
        for extra in [10.0, 20.0, 30.0] {
            let below = count_z(
                (k_below / 2.0).round() + extra,
                1.0,
                (k_below / 2.0).round() - extra,
                1.0,
            );
            let above = count_z(
                (k_above / 2.0).round() + extra,
                1.0,
                (k_above / 2.0).round() - extra,
                1.0,
            );
            assert!((below - above).abs() < 0.15, "{below} vs {above}");
        }
    }

    #[test]
    fn a_quantile_is_judged_by_the_requests_behind_each_group() {
        let model = Model::new(Kind::Quantile, None, &[], &[], &[], &[]).expect("modelled");
        // The same 10% rise is noise over 300 requests and a regression over 30,000.
        let small = model.z(220.0, 300.0, 200.0, 29_700.0).expect("z");
        let large = model.z(220.0, 30_000.0, 200.0, 29_700.0).expect("z");
        assert!(small < 1.0, "z {small}");
        assert!(large > 4.0, "z {large}");
        assert!(model.z(-1.0, 300.0, 200.0, 300.0).is_none());
    }

    #[test]
    fn an_aa_period_louder_than_the_model_widens_it_and_a_quiet_one_never_narrows_it() {
        // A/A pairs 3 sigma apart every time: dispersion near 9, shrunk by the prior.
        let model = Model::new(Kind::Quantile, None, &[], &[], &[], &[]).expect("modelled");
        let error = model.quantile_error * (2.0f64 / 10_000.0).sqrt();
        let stable = vec![100.0; 24];
        let loud: Vec<f64> = (0..24)
            .map(|i| 100.0 * (if i % 2 == 0 { 3.0 } else { -3.0 } * error).exp())
            .collect();
        let requests = vec![10_000; 24];
        let wide = Model::new(Kind::Quantile, None, &stable, &loud, &requests, &requests)
            .expect("modelled");
        assert!(
            (wide.dispersion - (6.0 + 24.0 * 9.0) / 30.0).abs() < 0.01,
            "{}",
            wide.dispersion
        );
        assert_eq!(wide.points, 24);
        let quiet = Model::new(Kind::Quantile, None, &stable, &stable, &requests, &requests)
            .expect("modelled");
        assert_eq!(quiet.dispersion, 1.0);
        // A gauge has no model.
        assert!(Model::new(Kind::Gauge, None, &[], &[], &[], &[]).is_none());
    }

    #[test]
    fn counts_are_compared_per_request() {
        let model = Model::new(Kind::Count, None, &[], &[], &[], &[]).expect("modelled");
        // 1% of the requests and 1% of the log lines: as expected.
        let same = model.z(1_000.0, 1_000.0, 99_000.0, 99_000.0).expect("z");
        assert!(same.abs() < 0.5, "z {same}");
        // Twice its share: a regression.
        let twice = model.z(2_000.0, 1_000.0, 99_000.0, 99_000.0).expect("z");
        assert!(twice > 20.0, "z {twice}");
        assert_eq!(model.expected(99_000.0, 1_000.0, 99_000.0), 1_000.0);
    }
}
