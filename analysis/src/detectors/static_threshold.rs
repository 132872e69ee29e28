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
}

impl StaticThreshold {
    pub(crate) fn validate(&self, field: &str, direction: Direction) -> Result<()> {
        let high = [("max", self.max), ("max_increase", self.max_increase)];
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
        {
            return Err(invalid(
                field,
                "sets no bound; set max, min, max_increase or max_decrease, or use null",
            ));
        }
        Ok(())
    }

    /// The bounds for a sample; relative bounds need the baseline mean.
    pub(crate) fn bounds(&self, baseline_mean: Option<f64>) -> Bounds {
        let absolute = Bounds {
            upper: self.max,
            lower: self.min,
        };
        let relative = match baseline_mean {
            Some(mean) => Bounds {
                upper: self.max_increase.map(|r| mean * (1.0 + r)),
                lower: self.max_decrease.map(|r| mean * (1.0 - r)),
            },
            None => Bounds::default(),
        };
        Bounds::strict(absolute, relative)
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
