//! Static thresholds: fixed bounds, absolute or relative to the baseline mean.

use serde::{Deserialize, Serialize};

use crate::detectors::seasonal::SeasonalReport;
use crate::error::{Result, check, invalid};
use crate::metric::{Direction, Side};
use crate::stats::Bounds;

/// Fixed bounds for a metric. Absolute and relative bounds on the same side combine to the
/// stricter one; only the sides the metric's direction watches may be set.
///
/// Relative bounds assume a non-negative metric (rates, latencies, counts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticThreshold {
    /// A canary value above this is high, e.g. `0.05` for a 5% error rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A canary value below this is low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// High above `baseline mean * (1 + max_increase)`; `0.2` allows +20%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// Low below `baseline mean * (1 - max_decrease)`; `0.2` allows -20%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decrease: Option<f64>,
    /// High above `baseline mean + max_delta`, in the metric's unit: `50` allows a p99 50 ms
    /// above the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delta: Option<f64>,
    /// A relative rise (`max_increase`) counts only when it is also at least this much above
    /// the baseline mean, in the metric's unit: with `max_increase: 0.2, min_delta: 0.02`, an
    /// error rate fails at +20% and at least +2 points, so 1 error in 60 requests against a
    /// 0.5% baseline is noise, not a regression. Needs `max_increase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delta: Option<f64>,
    /// What the relative bounds (`max_increase`, `max_decrease`, `max_delta`) are taken from.
    /// Default `baseline`.
    #[serde(default, skip_serializing_if = "RelativeTo::is_baseline")]
    pub relative_to: RelativeTo,
}

/// What a static threshold's relative bounds are taken from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelativeTo {
    /// The mean of the baseline window (the readings before the deploy, slid forward by the
    /// stable version's concurrent readings). The default.
    #[default]
    Baseline,
    /// The baseline mean and the stable version's reading in the same sample, whichever gives
    /// the more lenient bound: the canary is bad only when it is worse than every reference, so
    /// trouble the whole fleet shares this minute is not the canary's fault (the first-version
    /// gate's rule).
    Every,
}

impl RelativeTo {
    fn is_baseline(&self) -> bool {
        *self == RelativeTo::Baseline
    }
}

impl StaticThreshold {
    pub(crate) fn validate(&self, field: &str, direction: Direction) -> Result<()> {
        let high = [("max", self.max), ("max_increase", self.max_increase), ("max_delta", self.max_delta), ("min_delta", self.min_delta)];
        let low = [("min", self.min), ("max_decrease", self.max_decrease)];
        for (name, value) in high.iter().chain(&low) {
            if let Some(v) = value {
                check(
                    &format!("{field}.{name}"),
                    *v,
                    true,
                    "must be a finite number",
                )?;
            }
        }
        let unwatched = match direction {
            Direction::Increase => low.iter().find(|(_, v)| v.is_some()),
            Direction::Decrease => high.iter().find(|(_, v)| v.is_some()),
            Direction::Either => None,
        };
        if let Some((name, _)) = unwatched {
            return Err(invalid(
                format!("{field}.{name}"),
                format!(
                    "never fires for a metric whose direction is {direction:?}; remove it or change the direction"
                ),
            ));
        }
        if let Some(v) = self.max_increase {
            check(
                &format!("{field}.max_increase"),
                v,
                v >= 0.0,
                "must be >= 0",
            )?;
        }
        for (name, value) in [("max_delta", self.max_delta), ("min_delta", self.min_delta)] {
            if let Some(v) = value {
                check(&format!("{field}.{name}"), v, v >= 0.0, "must be >= 0")?;
            }
        }
        if self.min_delta.is_some() && self.max_increase.is_none() {
            return Err(invalid(
                format!("{field}.min_delta"),
                "only qualifies a relative rise; set max_increase too",
            ));
        }
        if let Some(v) = self.max_decrease {
            check(
                &format!("{field}.max_decrease"),
                v,
                (0.0..=1.0).contains(&v),
                "must be within 0..=1",
            )?;
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            check(&format!("{field}.min"), min, min <= max, "must be <= max")?;
        }
        if self.max.is_none()
            && self.min.is_none()
            && self.max_increase.is_none()
            && self.max_decrease.is_none()
            && self.max_delta.is_none()
        {
            return Err(invalid(
                field,
                "sets no bound; set max, min, max_increase, max_decrease or max_delta, or use null",
            ));
        }
        Ok(())
    }

    /// The bounds for a sample: relative bounds need the baseline mean, and under
    /// [`RelativeTo::Every`] also take the stable version's concurrent reading, if any.
    pub(crate) fn bounds_for(&self, baseline_mean: Option<f64>, stable: Option<f64>) -> Bounds {
        match (self.relative_to, stable) {
            (RelativeTo::Every, Some(stable)) => Bounds::lenient(self.bounds(baseline_mean), self.bounds(Some(stable))),
            _ => self.bounds(baseline_mean),
        }
    }

    /// The bounds for a sample; relative bounds need the baseline mean.
    pub(crate) fn bounds(&self, baseline_mean: Option<f64>) -> Bounds {
        let absolute = Bounds {
            upper: self.max,
            lower: self.min,
        };
        let relative = match baseline_mean {
            Some(mean) => Bounds {
                // A floor on the relative rise makes its bound more lenient, never stricter.
                upper: self
                    .max_increase
                    .map(|r| mean * (1.0 + r))
                    .map(|u| self.min_delta.map_or(u, |d| u.max(mean + d))),
                lower: self.max_decrease.map(|r| mean * (1.0 - r)),
            },
            None => Bounds::default(),
        };
        let delta = Bounds {
            upper: baseline_mean.zip(self.max_delta).map(|(mean, d)| mean + d),
            lower: None,
        };
        Bounds::strict(Bounds::strict(absolute, relative), delta)
    }
}

/// Which bounds applied to a sample and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdReport {
    /// Bounds from the static thresholds, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Bounds>,
    /// Bounds from the seasonal history, if it had enough points for this hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonal: Option<SeasonalReport>,
    /// The bounds applied: the more lenient of `fixed` and `seasonal`.
    pub effective: Bounds,
}

/// Checks `value` against the effective bounds, for the sides `direction` watches.
pub(crate) fn breach(direction: Direction, bounds: Bounds, value: f64) -> Option<Side> {
    if direction.watches_high() && bounds.upper.is_some_and(|u| value > u) {
        return Some(Side::High);
    }
    if direction.watches_low() && bounds.lower.is_some_and(|l| value < l) {
        return Some(Side::Low);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_combine_to_the_stricter_bound() {
        let t = StaticThreshold {
            max: Some(0.05),
            max_increase: Some(0.5),
            ..Default::default()
        };
        // Relative: 0.02 * 1.5 = 0.03, stricter than 0.05.
        assert_eq!(t.bounds(Some(0.02)).upper, Some(0.03));
        // Relative: 0.1 * 1.5 = 0.15, so the absolute 0.05 wins.
        assert_eq!(t.bounds(Some(0.1)).upper, Some(0.05));
        // No baseline: only the absolute bound is known.
        assert_eq!(t.bounds(None).upper, Some(0.05));
    }

    #[test]
    fn a_floor_on_a_relative_rise_and_an_absolute_rise_bound_the_upper_side() {
        let gate = StaticThreshold {
            max_increase: Some(0.2),
            min_delta: Some(0.02),
            ..Default::default()
        };
        // 0.5% * 1.2 = 0.6%, but a rise must also be 2 points: 2.5%.
        assert!((gate.bounds(Some(0.005)).upper.unwrap() - 0.025).abs() < 1e-12);
        // 20% * 1.2 = 24% is already more than 2 points up.
        assert!((gate.bounds(Some(0.2)).upper.unwrap() - 0.24).abs() < 1e-12);
        let p99 = StaticThreshold {
            max_delta: Some(50.0),
            ..Default::default()
        };
        assert_eq!(p99.bounds(Some(10.0)).upper, Some(60.0));
        assert_eq!(p99.bounds(None).upper, None, "no baseline, no relative bound");
        p99.validate("t", Direction::Increase).unwrap();
        let lonely = StaticThreshold {
            min_delta: Some(0.02),
            ..Default::default()
        };
        let err = lonely.validate("t", Direction::Increase).unwrap_err();
        assert!(err.to_string().starts_with("t.min_delta: only qualifies"), "{err}");
    }

    #[test]
    fn relative_to_every_reference_takes_the_more_lenient_bound() {
        let every = StaticThreshold {
            max_increase: Some(0.2),
            min_delta: Some(0.02),
            relative_to: RelativeTo::Every,
            ..Default::default()
        };
        // The whole fleet at 20% errors while the baseline mean still says 5%: bound from stable.
        assert!((every.bounds_for(Some(0.05), Some(0.2)).upper.unwrap() - 0.24).abs() < 1e-12);
        // No concurrent reading: the baseline alone.
        assert!((every.bounds_for(Some(0.05), None).upper.unwrap() - 0.07).abs() < 1e-12);
        let baseline = StaticThreshold { relative_to: RelativeTo::Baseline, ..every };
        assert!((baseline.bounds_for(Some(0.05), Some(0.2)).upper.unwrap() - 0.07).abs() < 1e-12);
    }

    #[test]
    fn breach_respects_direction() {
        let b = Bounds {
            upper: Some(10.0),
            lower: Some(2.0),
        };
        assert_eq!(breach(Direction::Increase, b, 11.0), Some(Side::High));
        assert_eq!(
            breach(Direction::Increase, b, 1.0),
            None,
            "a drop is not a failure for increase metrics"
        );
        assert_eq!(breach(Direction::Decrease, b, 1.0), Some(Side::Low));
        assert_eq!(breach(Direction::Decrease, b, 11.0), None);
        assert_eq!(breach(Direction::Either, b, 1.0), Some(Side::Low));
        assert_eq!(
            breach(Direction::Either, b, 10.0),
            None,
            "equal to the bound is within it"
        );
    }

    #[test]
    fn bounds_for_an_unwatched_side_are_refused() {
        let t = StaticThreshold {
            min: Some(1.0),
            ..Default::default()
        };
        let err = t
            .validate("policy.metrics[0].thresholds", Direction::Increase)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("policy.metrics[0].thresholds.min: never fires"),
            "{err}"
        );
    }
}
