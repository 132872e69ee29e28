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
//!
//! Better still is an A/A period: the instances that become the canary read alongside the
//! stable ones before the deploy ([`crate::Baseline::canary`]). Their differences are exactly
//! the chance differences between two groups serving the same traffic, whatever the background
//! does, so their spread is the noise of a difference and their mean a standing offset.
//!
//! A steady shift adds up: the mean of `n` differences has `1/sqrt(n)` of one difference's
//! noise, so a shift of 2 sigma, which three single readings rarely all show beyond 3 sigma,
//! stands 3.5 standard errors out after three samples. The `cumulative` test judges that mean
//! since the first canary sample and fails a critical metric at once when it is far enough out.

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
    /// The mean difference since the first canary sample, in standard errors (the noise of
    /// one difference over `sqrt(n)`), from the second sample on: beyond this on the bad side
    /// the metric is bad, and a critical metric fails the deploy at once (rule
    /// `cumulative_effect`). Needs a noise estimate from at least [`MIN_NOISE_POINTS`]
    /// differences. Default 4.5, which keeps false alarms on the deploy benchmark's clean
    /// deploys under 1% although it is checked after every sample on every critical metric.
    /// `null` turns it off.
    pub cumulative: Option<f64>,
}

/// Fewest differences (A/A pairs, or successive baseline readings) a noise estimate must come
/// from before the `cumulative` test trusts it: with fewer, one lucky quiet stretch would make
/// any shift look significant.
pub const MIN_NOISE_POINTS: usize = 6;

impl Default for Paired {
    fn default() -> Self {
        Paired {
            sigma: 3.0,
            min_stddev: 0.0,
            decisive: None,
            cumulative: Some(5.5),
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
        if let Some(c) = self.cumulative {
            check(&format!("{field}.cumulative"), c, c > 0.0, "must be > 0")?;
        }
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

    /// Judges `canary - stable` against `noise` (see [`Noise`]), its floors (`floor`, the
    /// z-score's, and this detector's own `min_stddev`, both per reading), and the running
    /// sum of earlier differences in `so_far`.
    pub(crate) fn check(
        &self,
        noise: Noise,
        floor: f64,
        direction: Direction,
        canary: f64,
        stable: f64,
        so_far: Running,
    ) -> (Finding, PairedReport) {
        let difference = canary - stable - noise.offset;
        let stddev = so_far
            .pooled(noise, difference)
            .max(std::f64::consts::SQRT_2 * self.min_stddev.max(floor));
        let z = standardized(difference, stddev);
        let running = so_far.with(difference, stddev);
        let cumulative_z =
            (self.cumulative.is_some() && noise.points >= MIN_NOISE_POINTS && running.n >= 2)
                .then(|| standardized(running.sum, running.variances.sqrt()));
        let beyond = |z: f64, limit: f64| direction.bad_side(z).filter(|_| z.abs() > limit);
        let single = beyond(z, self.sigma);
        let accumulated = cumulative_z
            .zip(self.cumulative)
            .and_then(|(z, limit)| beyond(z, limit));
        let finding = single.or(accumulated).map_or(Finding::Clear, Finding::Bad);
        (
            finding,
            PairedReport {
                stable,
                difference,
                z: finite(z),
                stddev,
                sigma: self.sigma,
                offset: noise.offset,
                noise_from: noise.source,
                cumulative: cumulative_z.map(|z| CumulativeReport {
                    samples: running.n,
                    mean: running.sum / running.n as f64,
                    z: finite(z),
                    limit: self.cumulative.unwrap_or_default(),
                    fired: accumulated.is_some(),
                }),
            },
        )
    }
}

fn standardized(difference: f64, stddev: f64) -> f64 {
    if stddev > 0.0 {
        difference / stddev
    } else if difference == 0.0 {
        0.0
    } else {
        difference.signum() * f64::INFINITY
    }
}

/// What the noise of one canary-minus-stable difference was estimated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSource {
    /// The A/A period's differences ([`crate::Baseline::canary`]).
    AaPeriod,
    /// The baseline's successive differences, times `sqrt(2)`.
    Successive,
}

/// The noise of one difference and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Noise {
    /// Standard deviation of one canary-minus-stable difference.
    pub(crate) stddev: f64,
    /// A standing difference between the groups to subtract (the A/A mean; 0 otherwise).
    pub(crate) offset: f64,
    /// How many differences the estimate rests on.
    pub(crate) points: usize,
    pub(crate) source: NoiseSource,
}

impl Noise {
    /// From an A/A period: the spread and mean of `canary - stable` over the pairs where
    /// both are finite. `None` below [`MIN_NOISE_POINTS`] pairs.
    pub(crate) fn aa_period(stable: &[f64], canary: &[f64]) -> Option<Noise> {
        let differences = stable
            .iter()
            .zip(canary)
            .map(|(s, c)| c - s)
            .filter(|d| d.is_finite());
        let moments = crate::stats::Moments::of(differences);
        (moments.count() >= MIN_NOISE_POINTS).then(|| Noise {
            stddev: moments.stddev(),
            offset: moments.mean(),
            points: moments.count(),
            source: NoiseSource::AaPeriod,
        })
    }

    /// From readings of the stable version in time order (see [`successive_noise`]).
    pub(crate) fn successive(values: impl ExactSizeIterator<Item = f64>) -> Option<Noise> {
        let points = values.len().saturating_sub(1);
        successive_noise(values).map(|noise| Noise {
            stddev: noise * std::f64::consts::SQRT_2,
            offset: 0.0,
            points,
            source: NoiseSource::Successive,
        })
    }
}

/// Running sum of a metric's paired differences since the first canary sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Running {
    pub(crate) n: u32,
    pub(crate) sum: f64,
    /// Sum of the variances the differences were judged with: the variance of `sum`.
    pub(crate) variances: f64,
    /// The latest difference, and the sum of squared changes between consecutive ones.
    last: f64,
    changes: f64,
}

impl Running {
    /// The sums with one more difference, judged with noise `stddev`.
    pub(crate) fn with(self, difference: f64, stddev: f64) -> Running {
        Running {
            n: self.n + 1,
            sum: self.sum + difference,
            variances: self.variances + stddev * stddev,
            last: difference,
            changes: self.changes_with(difference),
        }
    }

    fn changes_with(&self, difference: f64) -> f64 {
        match self.n {
            0 => 0.0,
            _ => self.changes + (difference - self.last).powi(2),
        }
    }

    /// The noise of one difference, pooled from the estimate made before the deploy and the
    /// changes between consecutive differences since: a steady shift leaves those changes
    /// alone, while noise grown since the A/A period (busier hours, a noisier level) shows in
    /// them. Each change weighs as much as one point of the estimate, so early on the prior
    /// estimate dominates. `difference` is the current one.
    pub(crate) fn pooled(&self, noise: Noise, difference: f64) -> f64 {
        let (prior, changes) = (noise.points as f64, f64::from(self.n));
        if changes == 0.0 {
            return noise.stddev;
        }
        // A change between two differences has twice the variance of one difference.
        let squares = self.changes_with(difference) / 2.0;
        ((prior * noise.stddev.powi(2) + squares) / (prior + changes)).sqrt()
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
    /// Standing offset between the groups subtracted from `difference` (the A/A period's
    /// mean difference; 0 without one). `difference` is net of it.
    #[serde(default)]
    pub offset: f64,
    /// Where `stddev` came from.
    #[serde(default = "successive")]
    pub noise_from: NoiseSource,
    /// The cumulative test, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cumulative: Option<CumulativeReport>,
}

fn successive() -> NoiseSource {
    NoiseSource::Successive
}

/// The numbers behind the cumulative test: the mean difference since the first canary sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CumulativeReport {
    /// Differences in the mean.
    pub samples: u32,
    /// Their mean (net of the offset).
    pub mean: f64,
    /// The mean in standard errors: `mean / (stddev / sqrt(samples))`.
    pub z: f64,
    /// Threshold in standard errors.
    pub limit: f64,
    /// Whether it fired.
    pub fired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Side;

    /// Noise of `per_reading` per reading from successive differences of 12 readings.
    fn noise(per_reading: f64) -> Noise {
        Noise {
            stddev: per_reading * std::f64::consts::SQRT_2,
            offset: 0.0,
            points: 11,
            source: NoiseSource::Successive,
        }
    }

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
        let (f, r) = p.check(
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 3.1 * sd,
            100.0,
            Running::default(),
        );
        assert_eq!(f, Finding::Bad(Side::High));
        assert!((r.z - 3.1).abs() < 1e-9);
        assert_eq!(
            p.check(
                noise(1.0),
                0.0,
                Direction::Increase,
                100.0 + 2.9 * sd,
                100.0,
                Running::default()
            )
            .0,
            Finding::Clear
        );
        assert_eq!(
            p.check(
                noise(1.0),
                0.0,
                Direction::Increase,
                90.0,
                100.0,
                Running::default()
            )
            .0,
            Finding::Clear
        );
        assert_eq!(
            p.check(
                noise(1.0),
                0.0,
                Direction::Decrease,
                90.0,
                100.0,
                Running::default()
            )
            .0,
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
        let (f, r) = p.check(
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 6.1 * sd,
            100.0,
            Running::default(),
        );
        assert!(p.is_decisive(f, r.z));
        let (f, r) = p.check(
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 5.9 * sd,
            100.0,
            Running::default(),
        );
        assert_eq!(f, Finding::Bad(Side::High));
        assert!(!p.is_decisive(f, r.z));
        let (f, r) = p.check(
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 - 9.0 * sd,
            100.0,
            Running::default(),
        );
        assert!(
            !p.is_decisive(f, r.z),
            "a drop is not bad for an increase metric"
        );
        let off = Paired::default();
        let (f, r) = off.check(
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 60.0 * sd,
            100.0,
            Running::default(),
        );
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
            p.check(
                noise(1.0),
                0.0,
                Direction::Increase,
                140.0,
                100.0,
                Running::default()
            )
            .0,
            Finding::Clear
        );
        // The z-score's floor, passed in, when larger.
        assert_eq!(
            Paired::default()
                .check(
                    noise(1.0),
                    10.0,
                    Direction::Increase,
                    140.0,
                    100.0,
                    Running::default()
                )
                .0,
            Finding::Clear
        );
        let (f, r) = Paired::default().check(
            noise(0.0),
            0.0,
            Direction::Increase,
            0.001,
            0.0,
            Running::default(),
        );
        assert_eq!(f, Finding::Bad(Side::High));
        assert_eq!(r.z, f64::MAX);
    }

    #[test]
    fn an_aa_period_gives_the_noise_of_a_difference_and_a_standing_offset() {
        let stable = [10.0, 12.0, 11.0, 13.0, 9.0, 10.0, 12.0, 11.0];
        // The canary group reads 2 above, +-1 alternately: mean difference 2, spread ~1.07.
        let canary: Vec<f64> = stable
            .iter()
            .enumerate()
            .map(|(i, s)| s + 2.0 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let aa = Noise::aa_period(&stable, &canary).unwrap();
        assert_eq!(
            (aa.offset, aa.points, aa.source),
            (2.0, 8, NoiseSource::AaPeriod)
        );
        assert!(
            (aa.stddev - (8.0f64 / 7.0).sqrt()).abs() < 1e-12,
            "{}",
            aa.stddev
        );
        // The offset is the groups' standing difference, not the deploy's doing.
        let (f, r) =
            Paired::default().check(aa, 0.0, Direction::Increase, 13.5, 11.0, Running::default());
        assert_eq!(f, Finding::Clear);
        assert!((r.difference - 0.5).abs() < 1e-12);
        assert!(
            Noise::aa_period(&stable[..5], &canary[..5]).is_none(),
            "too few pairs"
        );
    }

    #[test]
    fn a_steady_shift_too_small_for_single_readings_adds_up() {
        let p = Paired {
            cumulative: Some(4.0),
            ..Paired::default()
        };
        // 2.5 sigma per difference: never beyond 3 alone. The mean's z grows as sqrt(n) (a
        // little faster, since steady differences also pool a smaller noise).
        let sd = 2f64.sqrt();
        let mut so_far = Running::default();
        let (mut fired_at, mut previous) = (None, 0.0);
        for n in 1..=4 {
            let (f, r) = p.check(
                noise(1.0),
                0.0,
                Direction::Increase,
                100.0 + 2.5 * sd,
                100.0,
                so_far,
            );
            so_far = so_far.with(r.difference, r.stddev);
            assert!(r.z < 3.0, "sample {n}: z {}", r.z);
            let Some(c) = r.cumulative else {
                assert_eq!(n, 1, "the cumulative test starts at the second sample");
                continue;
            };
            assert_eq!(c.samples, n);
            assert!(
                c.z > previous && c.z >= 2.5 * f64::from(n).sqrt(),
                "{} at {n}",
                c.z
            );
            previous = c.z;
            if f != Finding::Clear && fired_at.is_none() {
                fired_at = Some(n);
                assert!(c.fired);
            }
        }
        assert_eq!(fired_at, Some(3), "3.6 after two samples, 4.5 after three");
        // A drop never adds up to a failure of an increase metric.
        let down = (0..5).fold(Running::default(), |r, _| r.with(-10.0, sd));
        assert_eq!(
            p.check(noise(1.0), 0.0, Direction::Increase, 90.0, 100.0, down)
                .0,
            Finding::Clear
        );
    }

    #[test]
    fn the_noise_pools_the_changes_between_differences_since_the_deploy() {
        // Differences swinging by 4 sigma from one sample to the next: noise has grown since
        // the baseline, and the pooled estimate follows it up.
        let sd = 2f64.sqrt();
        let swinging = (0..8).fold(Running::default(), |r, i| {
            r.with(if i % 2 == 0 { 2.0 * sd } else { -2.0 * sd }, sd)
        });
        let pooled = swinging.pooled(noise(1.0), 2.0 * sd);
        assert!(pooled > 1.5 * sd, "{pooled}");
        assert_eq!(
            Running::default().pooled(noise(1.0), 5.0),
            sd,
            "nothing to pool yet"
        );
    }

    #[test]
    fn the_cumulative_test_waits_for_enough_noise_points_and_can_be_off() {
        let sd = 2f64.sqrt();
        let steady = (0..8).fold(Running::default(), |r, _| r.with(2.5 * sd, sd));
        let value = 100.0 + 1.5 * sd;
        let thin = Noise {
            points: MIN_NOISE_POINTS - 1,
            ..noise(1.0)
        };
        let (f, r) = Paired::default().check(thin, 0.0, Direction::Increase, value, 100.0, steady);
        assert_eq!((f, r.cumulative), (Finding::Clear, None));
        let off = Paired {
            cumulative: None,
            ..Paired::default()
        };
        let (f, r) = off.check(noise(1.0), 0.0, Direction::Increase, value, 100.0, steady);
        assert_eq!((f, r.cumulative), (Finding::Clear, None));
        let (f, r) =
            Paired::default().check(noise(1.0), 0.0, Direction::Increase, value, 100.0, steady);
        assert_eq!(f, Finding::Bad(Side::High));
        assert!(r.cumulative.unwrap().fired && r.z < 3.0);
        assert!(
            Paired {
                cumulative: Some(0.0),
                ..Paired::default()
            }
            .validate("p")
            .is_err()
        );
    }
}
