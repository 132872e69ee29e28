//! Paired difference: the canary's reading minus the stable version's reading at the same
//! time, against the sampling noise of such a difference.
//!
//! Both versions serve the same traffic, so a swing of the background (a travel-time series
//! moving by hundreds of milliseconds within an hour) moves both readings alike and cancels in
//! the difference. The baseline's spread measures that swing, which is why a per-sample z-score
//! against it is slow to see a steady shift. The noise of one reading is estimated instead from
//! the baseline's successive differences (von Neumann's mean square successive difference):
//! slow swings barely move consecutive readings, sampling noise does. A difference of two
//! independent readings has `sqrt(2)` times that noise.

use serde::{Deserialize, Serialize};

use crate::detectors::Finding;
use crate::error::{Result, check};
use crate::metric::Direction;
use crate::stats::finite;

/// Settings of the paired canary-minus-stable detector. It needs the stable version's reading
/// in the same sample; without one it says nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paired {
    /// A difference this many noise standard deviations on the bad side fires. Default 3.
    pub sigma: f64,
    /// Floor for the standard deviation of one reading, in the metric's unit. The z-score's
    /// `min_stddev` also applies when it is larger, so a noise floor set once covers both.
    /// Default 0.
    pub min_stddev: f64,
    /// On a critical metric, a difference this many noise standard deviations on the bad side
    /// fails the deploy at once, without waiting for `consecutive_failures` bad samples in a
    /// row (rule `decisive_effect`), e.g. 6. Default off: on the deploy benchmark, 6 fails
    /// regressions a sample sooner on average but catches hardly more within 3 samples, for
    /// +0.1-0.2 points of false positives.
    pub decisive: Option<f64>,
}

impl Default for Paired {
    fn default() -> Self {
        Paired {
            sigma: 3.0,
            min_stddev: 0.0,
            decisive: None,
        }
    }
}

impl Paired {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        check(
            &format!("{field}.sigma"),
            self.sigma,
            self.sigma > 0.0,
            "must be > 0",
        )?;
        check(
            &format!("{field}.min_stddev"),
            self.min_stddev,
            self.min_stddev >= 0.0,
            "must be >= 0",
        )?;
        match self.decisive {
            Some(d) => check(
                &format!("{field}.decisive"),
                d,
                d >= self.sigma,
                "must be >= sigma",
            ),
            None => Ok(()),
        }
    }

    /// Whether a finding with this z is decisive: on the bad side and beyond `decisive`.
    pub(crate) fn is_decisive(&self, finding: Finding, z: f64) -> bool {
        matches!(finding, Finding::Bad(_)) && self.decisive.is_some_and(|d| z.abs() >= d)
    }

    /// Judges `canary - stable` against `noise`, the standard deviation of one reading (see
    /// [`successive_noise`]), floored at `floor` and this detector's own `min_stddev`.
    pub(crate) fn check(
        &self,
        noise: f64,
        floor: f64,
        direction: Direction,
        canary: f64,
        stable: f64,
    ) -> (Finding, PairedReport) {
        let noise = noise.max(self.min_stddev).max(floor);
        let stddev = noise * std::f64::consts::SQRT_2;
        let difference = canary - stable;
        let z = if stddev > 0.0 {
            difference / stddev
        } else if difference == 0.0 {
            0.0
        } else {
            difference.signum() * f64::INFINITY
        };
        let finding = match direction.bad_side(z) {
            Some(side) if z.abs() > self.sigma => Finding::Bad(side),
            _ => Finding::Clear,
        };
        (
            finding,
            PairedReport {
                stable,
                difference,
                z: finite(z),
                stddev,
                sigma: self.sigma,
            },
        )
    }
}

/// Standard deviation of one reading's sampling noise from values in time order:
/// `sqrt(sum((x[i] - x[i-1])^2) / (2 (n - 1)))`. `None` below two values.
pub(crate) fn successive_noise(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values = values.into_iter();
    let mut previous = values.next()?;
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += (v - previous) * (v - previous);
        n += 1;
        previous = v;
    }
    (n > 0).then(|| (sum / (2.0 * n as f64)).sqrt())
}

/// The numbers behind a paired finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedReport {
    /// The stable version's reading in the same sample.
    pub stable: f64,
    /// Canary minus stable.
    pub difference: f64,
    /// `difference / stddev`; the largest float when there is no noise at all.
    pub z: f64,
    /// Standard deviation of a difference used (`sqrt(2)` times one reading's noise).
    pub stddev: f64,
    /// Threshold in standard deviations.
    pub sigma: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Side;

    #[test]
    fn successive_noise_ignores_a_slow_swing() {
        // A ramp of 10 per step with +-1 alternating noise: the spread is ~36, the successive
        // differences are 8 (six times) and 12 (five times).
        let values: Vec<f64> = (0..12)
            .map(|i| 10.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let noise = successive_noise(values.iter().copied()).unwrap();
        let expected = ((6.0 * 64.0 + 5.0 * 144.0) / 22.0f64).sqrt();
        assert!((noise - expected).abs() < 1e-9, "{noise}");
        assert!(noise < crate::stats::Moments::of(values).stddev() / 4.0);
        assert_eq!(successive_noise([5.0]), None);
        assert_eq!(successive_noise([]), None);
    }

    #[test]
    fn fires_on_a_difference_beyond_sigma_on_the_bad_side_only() {
        let p = Paired::default();
        let sd = 2f64.sqrt();
        let (f, r) = p.check(1.0, 0.0, Direction::Increase, 100.0 + 3.1 * sd, 100.0);
        assert_eq!(f, Finding::Bad(Side::High));
        assert!((r.z - 3.1).abs() < 1e-9);
        assert_eq!(
            p.check(1.0, 0.0, Direction::Increase, 100.0 + 2.9 * sd, 100.0)
                .0,
            Finding::Clear
        );
        assert_eq!(
            p.check(1.0, 0.0, Direction::Increase, 90.0, 100.0).0,
            Finding::Clear
        );
        assert_eq!(
            p.check(1.0, 0.0, Direction::Decrease, 90.0, 100.0).0,
            Finding::Bad(Side::Low)
        );
    }

    #[test]
    fn decisive_only_beyond_its_threshold_on_the_bad_side() {
        let p = Paired {
            decisive: Some(6.0),
            ..Paired::default()
        };
        let sd = 2f64.sqrt();
        let (f, r) = p.check(1.0, 0.0, Direction::Increase, 100.0 + 6.1 * sd, 100.0);
        assert!(p.is_decisive(f, r.z));
        let (f, r) = p.check(1.0, 0.0, Direction::Increase, 100.0 + 5.9 * sd, 100.0);
        assert_eq!(f, Finding::Bad(Side::High));
        assert!(!p.is_decisive(f, r.z));
        let (f, r) = p.check(1.0, 0.0, Direction::Increase, 100.0 - 9.0 * sd, 100.0);
        assert!(
            !p.is_decisive(f, r.z),
            "a drop is not bad for an increase metric"
        );
        let off = Paired::default();
        let (f, r) = off.check(1.0, 0.0, Direction::Increase, 100.0 + 60.0 * sd, 100.0);
        assert!(!off.is_decisive(f, r.z));
        assert!(
            Paired {
                decisive: Some(2.0),
                ..Paired::default()
            }
            .validate("p")
            .is_err()
        );
    }

    #[test]
    fn floors_apply() {
        let p = Paired {
            min_stddev: 10.0,
            ..Paired::default()
        };
        assert_eq!(
            p.check(1.0, 0.0, Direction::Increase, 140.0, 100.0).0,
            Finding::Clear
        );
        // The z-score's floor, passed in, when larger.
        assert_eq!(
            Paired::default()
                .check(1.0, 10.0, Direction::Increase, 140.0, 100.0)
                .0,
            Finding::Clear
        );
        let (f, r) = Paired::default().check(0.0, 0.0, Direction::Increase, 0.001, 0.0);
        assert_eq!(f, Finding::Bad(Side::High));
        assert_eq!(r.z, f64::MAX);
    }
}
