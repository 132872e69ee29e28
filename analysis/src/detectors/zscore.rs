//! Z-score of each canary value against the baseline distribution.

use serde::{Deserialize, Serialize};

use crate::detectors::Finding;
use crate::error::{Result, check};
use crate::metric::Direction;
use crate::stats::{Moments, finite};

/// Settings of the z-score detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZScore {
    /// A value this many baseline standard deviations away on the bad side fires. Default 3.
    pub sigma: f64,
    /// Floor for the baseline standard deviation, in the metric's unit. A baseline that never
    /// moved (an error rate stuck at 0) would otherwise make any change infinitely many sigmas.
    /// Default 0.
    pub min_stddev: f64,
}

impl Default for ZScore {
    fn default() -> Self {
        ZScore {
            sigma: 3.0,
            min_stddev: 0.0,
        }
    }
}

impl ZScore {
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
        )
    }

    /// Scores `value` against the baseline; fires only on the side `direction` calls bad.
    pub(crate) fn check(
        &self,
        baseline: &Moments,
        direction: Direction,
        value: f64,
    ) -> (Finding, ZScoreReport) {
        let stddev = baseline.stddev().max(self.min_stddev);
        let delta = value - baseline.mean();
        let z = if stddev > 0.0 {
            delta / stddev
        } else if delta == 0.0 {
            0.0
        } else {
            delta.signum() * f64::INFINITY
        };
        let finding = match direction.bad_side(z) {
            Some(side) if z.abs() > self.sigma => Finding::Bad(side),
            _ => Finding::Clear,
        };
        (
            finding,
            ZScoreReport {
                z: finite(z),
                mean: baseline.mean(),
                stddev,
                sigma: self.sigma,
            },
        )
    }
}

/// The numbers behind a z-score finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZScoreReport {
    /// `(value - mean) / stddev`; the largest float when the baseline never moved.
    pub z: f64,
    /// Baseline mean.
    pub mean: f64,
    /// Baseline standard deviation used (after the `min_stddev` floor).
    pub stddev: f64,
    /// Threshold in standard deviations.
    pub sigma: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Side;

    #[test]
    fn fires_beyond_sigma_on_the_bad_side_only() {
        let b = Moments::of([90.0, 110.0]);
        let z = ZScore::default();
        let sd = b.stddev();
        assert!((sd - 200f64.sqrt()).abs() < 1e-9);
        let (f, r) = z.check(&b, Direction::Increase, 100.0 + 3.1 * sd);
        assert_eq!(f, Finding::Bad(Side::High));
        assert!((r.z - 3.1).abs() < 1e-9);
        assert_eq!(
            z.check(&b, Direction::Increase, 100.0 + 2.9 * sd).0,
            Finding::Clear
        );
        // A latency drop is not a failure.
        assert_eq!(
            z.check(&b, Direction::Increase, 100.0 - 10.0 * sd).0,
            Finding::Clear
        );
        assert_eq!(
            z.check(&b, Direction::Decrease, 100.0 - 10.0 * sd).0,
            Finding::Bad(Side::Low)
        );
        assert_eq!(
            z.check(&b, Direction::Either, 100.0 - 10.0 * sd).0,
            Finding::Bad(Side::Low)
        );
        assert_eq!(
            z.check(&b, Direction::Decrease, 100.0 + 10.0 * sd).0,
            Finding::Clear
        );
    }

    #[test]
    fn flat_baseline_fires_on_any_bad_change_unless_floored() {
        let flat = Moments::of([0.0; 10]);
        let (f, r) = ZScore::default().check(&flat, Direction::Increase, 0.001);
        assert_eq!(f, Finding::Bad(Side::High));
        assert_eq!(r.z, f64::MAX, "kept finite for JSON");
        assert_eq!(
            ZScore::default().check(&flat, Direction::Increase, 0.0).0,
            Finding::Clear
        );
        let floored = ZScore {
            min_stddev: 0.01,
            ..ZScore::default()
        };
        assert_eq!(
            floored.check(&flat, Direction::Increase, 0.001).0,
            Finding::Clear
        );
        assert_eq!(
            floored.check(&flat, Direction::Increase, 0.031).0,
            Finding::Bad(Side::High)
        );
    }
}
