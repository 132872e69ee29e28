//! Baseline versus canary: Mann-Whitney U (see [`super::rank_sum`]) on the recent canary
//! values against the baseline, gated by effect size.
//!
//! A significant difference alone does not fail a metric: with large samples a 1% shift is
//! significant. As in Kayenta, the canary/baseline mean ratio must also leave the allowed
//! range, and leaving the critical range fails the whole judgement.

use serde::{Deserialize, Serialize};
use statrs::distribution::ContinuousCDF;

use crate::detectors::hodges_lehmann::shift_of_sorted;
use crate::detectors::rank_sum::{Window, standard_normal};
use crate::detectors::{Finding, Shift};
use crate::error::{Result, check, invalid};
use crate::metric::{Direction, Side};
use crate::stats::{Reference, finite};

/// Settings of the Mann-Whitney comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Comparison {
    /// Significance level; one-sided for `increase`/`decrease` metrics, two-sided for
    /// `either`. Default 0.01.
    pub alpha: f64,
    /// Compare the last this-many canary values; `null` compares all of them. A window keeps a
    /// late regression from being diluted by an early healthy stretch. Default 12.
    pub window: Option<usize>,
    /// Fewest canary values before the test speaks. Default 3.
    pub min_samples: usize,
    /// Largest tolerated canary/baseline mean ratio, e.g. 1.1 for +10%. Default 1.1.
    pub allowed_increase: f64,
    /// Smallest tolerated canary/baseline mean ratio, e.g. 0.9 for -10%. Default 0.9.
    pub allowed_decrease: f64,
    /// A significant increase beyond this ratio fails the whole judgement. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_increase: Option<f64>,
    /// A significant decrease below this ratio fails the whole judgement. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_decrease: Option<f64>,
    /// Confidence of the Hodges-Lehmann interval in explanations. Default 0.95.
    pub confidence: f64,
}

impl Default for Comparison {
    fn default() -> Self {
        Comparison {
            alpha: 0.01,
            window: Some(12),
            min_samples: 3,
            allowed_increase: 1.1,
            allowed_decrease: 0.9,
            critical_increase: None,
            critical_decrease: None,
            confidence: 0.95,
        }
    }
}

/// The most samples one comparison may keep for either side.
const MAX_WINDOW: usize = 10_000;

impl Comparison {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        let a = self.alpha;
        check(
            &format!("{field}.alpha"),
            a,
            a > 0.0 && a < 1.0,
            "must be within 0..1 (exclusive)",
        )?;
        let c = self.confidence;
        check(
            &format!("{field}.confidence"),
            c,
            c > 0.0 && c < 1.0,
            "must be within 0..1 (exclusive)",
        )?;
        if self.min_samples == 0 {
            return Err(invalid(format!("{field}.min_samples"), "must be >= 1"));
        }
        if self.min_samples > MAX_WINDOW || self.window.is_some_and(|w| w > MAX_WINDOW) {
            let name = if self.min_samples > MAX_WINDOW { "min_samples" } else { "window" };
            return Err(invalid(format!("{field}.{name}"), "must be at most 10000"));
        }
        if self.window.is_some_and(|w| w < self.min_samples) {
            return Err(invalid(format!("{field}.window"), "must be >= min_samples"));
        }
        let up = self.allowed_increase;
        check(
            &format!("{field}.allowed_increase"),
            up,
            up >= 1.0,
            "must be >= 1 (a ratio)",
        )?;
        let down = self.allowed_decrease;
        check(
            &format!("{field}.allowed_decrease"),
            down,
            down > 0.0 && down <= 1.0,
            "must be within 0..=1 (a ratio)",
        )?;
        if let Some(v) = self.critical_increase {
            check(
                &format!("{field}.critical_increase"),
                v,
                v >= up,
                "must be >= allowed_increase",
            )?;
        }
        if let Some(v) = self.critical_decrease {
            check(
                &format!("{field}.critical_decrease"),
                v,
                v > 0.0 && v <= down,
                "must be within 0..=allowed_decrease",
            )?;
        }
        Ok(())
    }

    /// The z a test must exceed: the standard normal quantile of `1 - alpha` (one-sided) or
    /// `1 - alpha / 2` (two-sided, for `either`). Computed once per analysis, so the streaming
    /// path compares numbers instead of evaluating the normal CDF for every sample.
    pub(crate) fn critical_z(&self, direction: Direction) -> f64 {
        let tail = if direction == Direction::Either {
            self.alpha / 2.0
        } else {
            self.alpha
        };
        standard_normal().inverse_cdf(1.0 - tail)
    }

    /// Tests the window against the baseline: the finding and whether the breach is critical,
    /// or `None` below `min_samples`. `critical_z` comes from [`Self::critical_z`].
    pub(crate) fn finding(
        &self,
        window: &Window,
        baseline: &Reference,
        direction: Direction,
        critical_z: f64,
    ) -> Option<(Finding, bool)> {
        if window.len() < self.min_samples {
            return None;
        }
        let test = window.test(baseline);
        let (z, side) = test.towards_bad(direction);
        let ratio = mean_ratio(window.mean(), baseline.moments.mean());
        let (beyond_allowed, beyond_critical) = match side {
            Side::High => (
                ratio > self.allowed_increase,
                self.critical_increase.is_some_and(|c| ratio > c),
            ),
            Side::Low => (
                ratio < self.allowed_decrease,
                self.critical_decrease.is_some_and(|c| ratio < c),
            ),
        };
        let bad = z > critical_z && beyond_allowed;
        Some((
            if bad {
                Finding::Bad(side)
            } else {
                Finding::Clear
            },
            bad && beyond_critical,
        ))
    }

    /// The numbers behind [`Self::finding`] for the same window, for explanations.
    pub(crate) fn report(
        &self,
        window: &Window,
        baseline: &Reference,
        direction: Direction,
    ) -> Option<ComparisonReport> {
        if window.len() < self.min_samples {
            return None;
        }
        let test = window.test(baseline);
        let (z, side) = test.towards_bad(direction);
        let p_value = match direction {
            Direction::Either => test.p_two_sided(),
            _ => test.p_one_sided(side),
        };
        let canary_mean = window.mean();
        let baseline_mean = baseline.moments.mean();
        let mut canary: Vec<f64> = window.values().collect();
        canary.sort_unstable_by(f64::total_cmp);
        Some(ComparisonReport {
            u: test.u,
            z: finite(z),
            p_value,
            alpha: self.alpha,
            canary_samples: test.n_canary,
            baseline_samples: test.n_baseline,
            canary_mean,
            baseline_mean,
            mean_ratio: finite(mean_ratio(canary_mean, baseline_mean)),
            shift: shift_of_sorted(&canary, &baseline.sorted, self.confidence),
        })
    }
}

/// Canary/baseline mean ratio; 1 when both are zero.
fn mean_ratio(canary: f64, baseline: f64) -> f64 {
    if baseline != 0.0 {
        canary / baseline
    } else if canary == 0.0 {
        1.0
    } else {
        canary.signum() * f64::INFINITY
    }
}

/// The numbers behind a comparison finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Mann-Whitney U of the canary (pairs with the canary larger, ties one half).
    pub u: f64,
    /// Continuity-corrected z towards the bad side.
    pub z: f64,
    /// p-value: one-sided towards the bad side, two-sided for `either`.
    pub p_value: f64,
    /// Significance level it was held to.
    pub alpha: f64,
    /// Canary values compared (the window).
    pub canary_samples: usize,
    /// Baseline values compared.
    pub baseline_samples: usize,
    /// Mean of the compared canary values.
    pub canary_mean: f64,
    /// Mean of the baseline.
    pub baseline_mean: f64,
    /// `canary_mean / baseline_mean`, the effect size held to the allowed/critical ratios.
    pub mean_ratio: f64,
    /// Hodges-Lehmann shift (canary minus baseline) with its confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<Shift>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::rank_sum::Window;

    fn check(
        c: &Comparison,
        w: &Window,
        b: &Reference,
        d: Direction,
    ) -> Option<(Finding, ComparisonReport, bool)> {
        let (finding, critical) = c.finding(w, b, d, c.critical_z(d))?;
        let report = c.report(w, b, d)?;
        // The streaming finding (z against a precomputed critical z) agrees with the p-value.
        if finding != Finding::Clear {
            assert!(report.p_value < c.alpha, "{report:?}");
        }
        Some((finding, report, critical))
    }

    #[test]
    fn significant_shift_inside_allowed_ratio_is_not_a_failure() {
        let baseline: Vec<f64> = (0..100).map(|i| 100.0 + (i % 10) as f64).collect();
        let reference = Reference::new(&baseline, baseline.len());
        let settings = Comparison::default();
        let mut window = Window::new(settings.window);
        // +8%: every canary value is above every baseline value, but within allowed 1.1.
        for _ in 0..12 {
            window.push(113.0, &reference);
        }
        let (finding, report, _) =
            check(&settings, &window, &reference, Direction::Increase).unwrap();
        assert!(report.p_value < 1e-6);
        assert_eq!(finding, Finding::Clear);
        // +30% fails, and is critical once a critical ratio is set.
        let strict = Comparison {
            critical_increase: Some(1.25),
            ..settings.clone()
        };
        let mut window = Window::new(settings.window);
        for _ in 0..3 {
            window.push(136.0, &reference);
        }
        let (finding, report, critical) =
            check(&strict, &window, &reference, Direction::Increase).unwrap();
        assert_eq!(finding, Finding::Bad(Side::High));
        assert!(critical);
        assert!((report.mean_ratio - 136.0 / 104.5).abs() < 1e-9);
        // The same data is fine for a metric where only a decrease is bad.
        assert_eq!(
            check(&strict, &window, &reference, Direction::Decrease)
                .unwrap()
                .0,
            Finding::Clear
        );
    }

    #[test]
    fn a_window_too_large_to_keep_is_refused_by_field() {
        let big = Comparison { window: Some(1 << 40), ..Comparison::default() };
        let err = big.validate("c").unwrap_err().to_string();
        assert!(err.contains("c.window") && err.contains("at most 10000"), "{err}");
        let big = Comparison { min_samples: 20_000, window: None, ..Comparison::default() };
        let err = big.validate("c").unwrap_err().to_string();
        assert!(err.contains("c.min_samples"), "{err}");
    }

    #[test]
    fn silent_below_min_samples() {
        let reference = Reference::new(&[1.0, 2.0, 3.0], 3);
        let mut window = Window::new(Some(12));
        window.push(100.0, &reference);
        window.push(100.0, &reference);
        assert!(
            check(
                &Comparison::default(),
                &window,
                &reference,
                Direction::Increase
            )
            .is_none()
        );
    }
}
