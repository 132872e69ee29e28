//! Dynamic thresholds from history at the same time of day and day of week.
//!
//! A metric's history (timestamped values from past days and weeks, up to the start of the
//! analysis) is bucketed by UTC hour of week and hour of day. The expected value at time `t`
//! is the mean of `t`'s bucket (the same hour on the same weekday if that bucket holds enough
//! points, else the same hour on any day), shifted by the current level: how far the most
//! recent history ran above or below its own buckets. Real metrics drift from week to week, so
//! the shape comes from the season and the level from the last hour or two.
//!
//! The band is `expected ± sigma * spread`, where `spread` is calibrated on the same
//! predictor's errors over the history itself: a third of their 99.73% quantile, so that the
//! default 3-sigma band holds as often as it claims even for heavy-tailed metrics.
//!
//! When the stable version is measured alongside the canary, drift both share cancels in the
//! z-score and Mann-Whitney comparisons already, and bands from history only add false alarms
//! (on the NAB deploy benchmark: +2 points of false positives for +0.7 of detection), so this
//! detector is off by default. It is the better detector when there is no concurrent baseline,
//! and the way to relax static thresholds at busy hours.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Result, check};
use crate::input::Point;
use crate::stats::{Bounds, Moments};

/// Settings of the seasonal (dynamic threshold) detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Seasonal {
    /// Width of the band in error scales (see [`SeasonalReport::spread`]). Default 3.
    pub sigma: f64,
    /// Fewest history points a bucket needs before it is used. Default 6.
    pub min_points: usize,
    /// Prefer the same hour on the same weekday over the same hour on any day. Default true.
    pub weekly: bool,
    /// Most recent history points whose departure from their buckets sets the current level;
    /// 0 uses the season alone, as does a history shorter than twice this. Default 12 (an
    /// hour of 5-minute points).
    pub level_points: usize,
}

impl Default for Seasonal {
    fn default() -> Self {
        Seasonal {
            sigma: 3.0,
            min_points: 6,
            weekly: true,
            level_points: 12,
        }
    }
}

/// The most points one history bucket or the level window may ask for.
const MAX_POINTS: usize = 10_000;

impl Seasonal {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        check(
            &format!("{field}.sigma"),
            self.sigma,
            self.sigma > 0.0,
            "must be > 0",
        )?;
        let n = self.min_points as f64;
        check(
            &format!("{field}.min_points"),
            n,
            (2..=MAX_POINTS).contains(&self.min_points),
            "must be within 2..=10000",
        )?;
        // The level window is allocated up front, so its size is bounded like any count.
        check(
            &format!("{field}.level_points"),
            self.level_points as f64,
            self.level_points <= MAX_POINTS,
            "must be at most 10000",
        )
    }
}

/// Which history bucket a sample was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Season {
    /// Same UTC hour on the same weekday.
    HourOfWeek,
    /// Same UTC hour on any day.
    HourOfDay,
}

/// The seasonal band used for one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalReport {
    /// Bucket used.
    pub season: Season,
    /// History points in the bucket.
    pub points: usize,
    /// Mean of the bucket.
    pub seasonal_mean: f64,
    /// Current level: mean departure of the most recent history from its buckets.
    pub level: f64,
    /// Error scale of the predictor over the history: a third of the 99.73% quantile of its
    /// absolute errors (the standard deviation, for normal errors).
    pub spread: f64,
    /// `seasonal_mean + level ± sigma * spread`.
    pub bounds: Bounds,
}

/// History bucketed by UTC hour of week and hour of day, with the current level and the
/// predictor's error spread; built once per analysis in `O(history)`.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    hour_of_week: Vec<Moments>,
    hour_of_day: Vec<Moments>,
    /// Departures of the most recent points from their buckets; their mean is the level.
    recent: VecDeque<f64>,
    level: f64,
    spread: f64,
}

impl Profile {
    pub(crate) fn build(settings: &Seasonal, history: &[Point]) -> Self {
        let mut points: Vec<(usize, f64)> = Vec::with_capacity(history.len());
        if history.is_sorted_by_key(|p| p.at) {
            points.extend(
                history
                    .iter()
                    .filter(|p| p.value.is_finite())
                    .map(|p| (hour_of_week(p.at), p.value)),
            );
        } else {
            let mut sorted: Vec<Point> = history
                .iter()
                .copied()
                .filter(|p| p.value.is_finite())
                .collect();
            sorted.sort_by_key(|p| p.at);
            points.extend(sorted.iter().map(|p| (hour_of_week(p.at), p.value)));
        }
        let mut profile = Profile {
            hour_of_week: vec![Moments::default(); 168],
            hour_of_day: vec![Moments::default(); 24],
            recent: VecDeque::with_capacity(settings.level_points),
            level: 0.0,
            spread: 0.0,
        };
        // The most recent points only set the level: kept out of the buckets, they are
        // compared with the season rather than with themselves. A short history keeps all
        // its points for the season.
        let window = if points.len() >= 2 * settings.level_points {
            settings.level_points
        } else {
            0
        };
        for &(how, value) in &points[..points.len() - window] {
            profile.hour_of_week[how].add(value);
            profile.hour_of_day[how % 24].add(value);
        }
        // Departures of each point from its bucket; the level is their recent mean, and the
        // errors of "bucket mean + recent level" calibrate the band.
        let mut residuals = Vec::with_capacity(points.len());
        let mut errors = Vec::with_capacity(points.len());
        let mut sum = 0.0;
        for &(how, value) in &points {
            let Some((_, m)) = profile.bucket_at(settings, how) else {
                continue;
            };
            let r = value - m.mean();
            let i = residuals.len();
            if i >= window {
                errors.push(if window == 0 {
                    r
                } else {
                    r - sum / window as f64
                });
            }
            residuals.push(r);
            sum += r;
            if window > 0 && i >= window {
                sum -= residuals[i - window];
            }
        }
        if window > 0 && residuals.len() >= window {
            profile
                .recent
                .extend(&residuals[residuals.len() - window..]);
            profile.level = profile.recent.iter().sum::<f64>() / window as f64;
        }
        profile.spread = error_scale(&mut errors);
        profile
    }

    /// Moves the level with a concurrent reading of the stable version, so the band follows
    /// the baseline through the analysis. The buckets and the spread stay as built.
    pub(crate) fn observe(&mut self, settings: &Seasonal, at: i64, value: f64) {
        if settings.level_points == 0 || !value.is_finite() {
            return;
        }
        let Some(expected) = self.bucket(settings, at).map(|(_, m)| m.mean()) else {
            return;
        };
        if self.recent.len() == settings.level_points {
            self.recent.pop_front();
        }
        self.recent.push_back(value - expected);
        self.level = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
    }

    fn bucket(&self, settings: &Seasonal, at: i64) -> Option<(Season, &Moments)> {
        self.bucket_at(settings, hour_of_week(at))
    }

    fn bucket_at(&self, settings: &Seasonal, how: usize) -> Option<(Season, &Moments)> {
        let weekly = &self.hour_of_week[how];
        let daily = &self.hour_of_day[how % 24];
        if settings.weekly && weekly.count() >= settings.min_points {
            Some((Season::HourOfWeek, weekly))
        } else if daily.count() >= settings.min_points {
            Some((Season::HourOfDay, daily))
        } else {
            None
        }
    }

    /// The band for a sample taken at `at`, or `None` when no bucket has enough history.
    pub(crate) fn band(&self, settings: &Seasonal, at: i64) -> Option<SeasonalReport> {
        let (season, m) = self.bucket(settings, at)?;
        let expected = m.mean() + self.level;
        let width = settings.sigma * self.spread;
        Some(SeasonalReport {
            season,
            points: m.count(),
            seasonal_mean: m.mean(),
            level: self.level,
            spread: self.spread,
            bounds: Bounds {
                upper: Some(expected + width),
                lower: Some(expected - width),
            },
        })
    }
}

/// The error scale: a third of the 99.73% quantile of the absolute errors. For normal errors
/// that is their standard deviation (3 sigma covers 99.73%); for the heavy tails of real
/// metrics it is larger, so a 3-sigma band is breached about as rarely as it claims. Measured
/// on NAB backgrounds, a standard deviation or MAD put half again to five times as many clean
/// deploys outside the band.
fn error_scale(errors: &mut [f64]) -> f64 {
    if errors.len() < 2 {
        return 0.0;
    }
    let mut magnitudes: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    let k = ((magnitudes.len() as f64 * 0.9973) as usize).min(magnitudes.len() - 1);
    let (_, q, _) = magnitudes.select_nth_unstable_by(k, f64::total_cmp);
    *q / 3.0
}

/// UTC hour of week (Monday 00:00 = 0), so that `% 24` is the hour of day.
fn hour_of_week(at: i64) -> usize {
    let (weekday, hour) = weekday_hour(at);
    weekday * 24 + hour
}

/// UTC weekday (Monday = 0) and hour of a unix timestamp. UTC needs no calendar: days are
/// 86,400 seconds and 1970-01-01 was a Thursday.
pub(crate) fn weekday_hour(at: i64) -> (usize, usize) {
    let days = at.div_euclid(86_400);
    let hour = at.rem_euclid(86_400) / 3_600;
    ((days + 3).rem_euclid(7) as usize, hour as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_would_allocate_without_bound_are_refused_by_field() {
        let big = Seasonal { level_points: 1 << 40, ..Seasonal::default() };
        let err = big.validate("s").unwrap_err().to_string();
        assert!(err.contains("s.level_points") && err.contains("at most 10000"), "{err}");
        let big = Seasonal { min_points: 10_001, ..Seasonal::default() };
        let err = big.validate("s").unwrap_err().to_string();
        assert!(err.contains("s.min_points"), "{err}");
        assert!(Seasonal::default().validate("s").is_ok());
    }

    #[test]
    fn weekday_and_hour_in_utc() {
        // 2014-04-14 09:30:00 UTC was a Monday.
        assert_eq!(weekday_hour(1_397_467_800), (0, 9));
        // 1970-01-01 00:00:00 was a Thursday; one second earlier was Wednesday 23:59:59.
        assert_eq!(weekday_hour(0), (3, 0));
        assert_eq!(weekday_hour(-1), (2, 23));
    }

    /// Monday 2014-04-07 00:00 UTC plus `step` five-minute steps.
    fn at(step: i64) -> i64 {
        1_396_828_800 + step * 300
    }

    /// Two weeks of 5-minute points: a daily cycle, Mondays higher, and a little noise.
    fn history(level: impl Fn(i64) -> f64) -> Vec<Point> {
        (0..2 * 2016)
            .map(|i| {
                let hour = (i / 12) % 24;
                let monday = (i / 288) % 7 == 0;
                let value = 100.0
                    + 10.0 * hour as f64
                    + if monday { 50.0 } else { 0.0 }
                    + ((i * 37) % 7) as f64
                    - 3.0
                    + level(i);
                Point { at: at(i), value }
            })
            .collect()
    }

    #[test]
    fn band_follows_hour_and_weekday() {
        let settings = Seasonal::default();
        let profile = Profile::build(&settings, &history(|_| 0.0));
        // Monday 09:00 after the two weeks: 100 + 90 + 50, noise averaging out.
        let monday = profile.band(&settings, at(2 * 2016 + 9 * 12)).unwrap();
        assert_eq!(monday.season, Season::HourOfWeek);
        assert_eq!(monday.points, 24);
        assert!((monday.seasonal_mean - 240.0).abs() < 1.0, "{monday:?}");
        assert!(
            monday.spread > 0.5 && monday.spread < 4.0,
            "noise is uniform on -3..3: {monday:?}"
        );
        assert!(
            monday.bounds.upper.unwrap() > 243.0 && monday.bounds.upper.unwrap() < 252.0,
            "{monday:?}"
        );
        let tuesday = profile
            .band(&settings, at(2 * 2016 + 288 + 9 * 12))
            .unwrap();
        assert!((tuesday.seasonal_mean - 190.0).abs() < 1.0, "{tuesday:?}");

        let daily = Seasonal {
            weekly: false,
            ..settings.clone()
        };
        let band = Profile::build(&daily, &history(|_| 0.0))
            .band(&daily, at(2 * 2016 + 9 * 12))
            .unwrap();
        assert_eq!(band.season, Season::HourOfDay);
        assert_eq!(band.points, 14 * 12);
    }

    #[test]
    fn band_is_anchored_to_the_recent_level() {
        // The last day ran 40 higher than the season: the band moves up with it.
        let settings = Seasonal::default();
        let shifted = history(|i| if i >= 2 * 2016 - 288 { 40.0 } else { 0.0 });
        let band = Profile::build(&settings, &shifted)
            .band(&settings, at(2 * 2016 + 9 * 12))
            .unwrap();
        assert!(band.level > 30.0, "{band:?}");
        assert!(band.bounds.lower.unwrap() > 240.0, "{band:?}");
        let flat = Seasonal {
            level_points: 0,
            ..settings
        };
        let band = Profile::build(&flat, &shifted)
            .band(&flat, at(2 * 2016 + 9 * 12))
            .unwrap();
        assert_eq!(band.level, 0.0);
    }

    #[test]
    fn stable_readings_move_the_level() {
        let settings = Seasonal::default();
        let mut profile = Profile::build(&settings, &history(|_| 0.0));
        let now = 2 * 2016 + 9 * 12;
        let before = profile.band(&settings, at(now)).unwrap();
        for k in 0..12 {
            // The stable version now runs 40 above its season.
            let season = profile.band(&settings, at(now + k)).unwrap().seasonal_mean;
            profile.observe(&settings, at(now + k), season + 40.0);
        }
        let after = profile.band(&settings, at(now + 12)).unwrap();
        assert!(
            before.level.abs() < 3.0 && (after.level - 40.0).abs() < 1e-9,
            "{before:?} {after:?}"
        );
        assert_eq!(after.spread, before.spread);
    }

    #[test]
    fn falls_back_to_hour_of_day_and_abstains_without_history() {
        let history: Vec<Point> = (0..7)
            .map(|day| Point {
                at: at(day * 288 + 36),
                value: day as f64,
            })
            .collect();
        let settings = Seasonal::default();
        let profile = Profile::build(&settings, &history);
        let band = profile.band(&settings, at(7 * 288 + 36)).unwrap();
        assert_eq!(band.season, Season::HourOfDay);
        assert_eq!(band.points, 7);
        assert!(
            profile.band(&settings, at(7 * 288 + 60)).is_none(),
            "no history at 05:00"
        );
    }
}
