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

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::detectors::Finding;
use crate::error::{Result, check};
use crate::kind::{Model, Totals};
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
    /// differences. Default 5: it is checked after every sample on every critical metric, so
    /// it must be strict to keep false alarms rare. `null` turns the test off, the early look
    /// included.
    pub cumulative: Option<f64>,
    /// One planned look, at `samples` samples, held to a lower `limit` than `cumulative`
    /// (see [`EarlyLook`]). Default at 3 samples, 3.4. `null`: every look at `cumulative`.
    pub early_look: Option<EarlyLook>,
    /// How the noise of one reading grows with the metric's level (see [`NoiseScale`]).
    /// Default: as the metric's `kind` says (`sqrt` for rates and counts, `linear` for
    /// quantiles and gauges), `flat` without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_scale: Option<NoiseScale>,
    /// The reading is estimated from the requests a sample served (an error rate, a p99), so
    /// its noise shrinks as `1 / sqrt(requests)`: the A/A period's noise is taken relative to
    /// the requests of each of its readings (`baseline.traffic`) and applied relative to the
    /// sample's `traffic`. Without `baseline.traffic` it has no effect. Default: true for a
    /// rate, count or quantile `kind`, false otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_request: Option<bool>,
    /// A difference this many noise standard deviations beyond the noise on the bad side (one
    /// sample's, or the mean since the first sample's) fails the sample whatever the metric's
    /// criticality and the score: a regression far beyond any noise decides (log volume x3
    /// on a metric nobody marked critical). Not on an `advisory` metric. Default 8; `null`
    /// turns it off.
    pub large_effect: Option<f64>,
}

/// A planned early look of the cumulative test: when the mean difference rests on exactly
/// `samples` samples, it is held to `limit` standard errors instead of `cumulative`.
///
/// A deploy wants its verdict while the canary is still small (ReleaseBot: before 10% of the
/// fleet runs the build), and the cumulative test checked after every sample pays for each
/// look with false alarms. Group-sequential designs set a boundary per look; this one spends
/// most of the false-alarm budget at the look where the verdict matters and keeps every other
/// look strict. On the deploy benchmark (seed 1) the look at 3 samples with 3.4 catches 95.3%
/// of the goal regressions within 3 samples for 0.4% false positives. One limit for every look
/// catches 92.7% at 5 (0.2% false positives), and needs 3.5 for 95.1%, at 1.4%.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyLook {
    /// The number of samples in the mean at the look; at least 2.
    pub samples: u32,
    /// The limit there, in standard errors; > 0.
    pub limit: f64,
}

/// How the sampling noise of one reading grows with the metric's level. The noise estimated
/// before the deploy is taken relative to the level then, and applied relative to the level
/// now (the mean of the stable version's last [`LEVEL_READINGS`] readings), so a busier hour
/// with more errors, or a slower one with a wider p99, does not read as a regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseScale {
    /// The same whatever the level.
    #[default]
    Flat,
    /// Like the square root of the level: counts and rates of rare events (Poisson and
    /// binomial noise), e.g. error rates and log lines.
    Sqrt,
    /// In proportion to the level: quantiles and other readings whose error is a share of
    /// their size, e.g. a p99 latency.
    Linear,
}

/// Stable readings the level is the mean of: enough to steady the level of a sparse count,
/// few enough to follow a busy hour.
pub const LEVEL_READINGS: usize = 3;

impl NoiseScale {
    /// The noise of one reading at `level`, relative to a unit level. A level that is not
    /// positive (no errors at all lately) counts as the smallest positive one, so the noise
    /// estimate stays finite and the floors apply.
    pub(crate) fn factor(self, level: f64) -> f64 {
        let level = level.abs().max(f64::MIN_POSITIVE.sqrt());
        match self {
            NoiseScale::Flat => 1.0,
            NoiseScale::Sqrt => level.sqrt(),
            NoiseScale::Linear => level,
        }
    }

    /// The factor for every reading of `values` (in time order), at the level up to it.
    pub(crate) fn factors(self, values: &[f64]) -> impl Iterator<Item = f64> + '_ {
        let mut level = Level::default();
        values.iter().map(move |v| {
            level.push(*v);
            self.factor(level.mean())
        })
    }
}

/// The level of a metric: the mean of the finite ones among its last [`LEVEL_READINGS`]
/// readings.
/// A ring of fixed size: the level is taken for every reading of an A/A period, and a
/// queue's bookkeeping cost more than the mean.
#[derive(Debug, Clone, Default)]
struct Level {
    recent: [f64; LEVEL_READINGS],
    len: usize,
    next: usize,
}

impl Level {
    fn push(&mut self, value: f64) {
        self.recent[self.next] = value;
        self.next = (self.next + 1) % LEVEL_READINGS;
        self.len = (self.len + 1).min(LEVEL_READINGS);
    }

    /// 0 without a finite reading. Summed oldest first.
    fn mean(&self) -> f64 {
        let oldest = (self.next + LEVEL_READINGS - self.len) % LEVEL_READINGS;
        let (mut sum, mut n) = (0.0, 0usize);
        for i in 0..self.len {
            let v = self.recent[(oldest + i) % LEVEL_READINGS];
            if v.is_finite() {
                (sum, n) = (sum + v, n + 1);
            }
        }
        sum / n.max(1) as f64
    }
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
            cumulative: Some(5.0),
            early_look: Some(EarlyLook {
                samples: 3,
                limit: 3.4,
            }),
            noise_scale: None,
            per_request: None,
            large_effect: Some(DEFAULT_LARGE_EFFECT),
        }
    }
}

/// A paired difference this many sigma out fails the sample, critical metric or not.
pub const DEFAULT_LARGE_EFFECT: f64 = 8.0;

impl Paired {
    /// The noise scale in force: the policy's, else the one the metric's kind implies.
    pub fn noise_scale(&self) -> NoiseScale {
        self.noise_scale.unwrap_or_default()
    }

    /// Whether the noise is per request: the policy's choice, else the kind's.
    pub fn per_request(&self) -> bool {
        self.per_request.unwrap_or(false)
    }

    /// These settings with what the policy left unset taken from the metric's kind.
    pub(crate) fn resolved(&self, kind: Option<crate::kind::Kind>) -> Paired {
        let (scale, per_request) = kind.map_or((NoiseScale::Flat, false), |k| k.noise_defaults());
        Paired {
            noise_scale: Some(self.noise_scale.unwrap_or(scale)),
            per_request: Some(self.per_request.unwrap_or(per_request)),
            ..self.clone()
        }
    }

    /// Whether a z (one sample's or the mean's) is a large effect on the bad side.
    pub(crate) fn is_large(&self, direction: Direction, z: f64) -> bool {
        self.large_effect
            .is_some_and(|limit| direction.bad_side(z).is_some() && z.abs() >= limit)
    }

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
        if let Some(l) = self.large_effect {
            check(
                &format!("{field}.large_effect"),
                l,
                l >= self.sigma,
                "must be >= sigma",
            )?;
        }
        if let Some(c) = self.cumulative {
            check(&format!("{field}.cumulative"), c, c > 0.0, "must be > 0")?;
        }
        if let Some(look) = self.early_look {
            check(
                &format!("{field}.early_look.samples"),
                f64::from(look.samples),
                look.samples >= 2,
                "must be >= 2 (the cumulative test starts at the second sample)",
            )?;
            check(
                &format!("{field}.early_look.limit"),
                look.limit,
                look.limit > 0.0,
                "must be > 0",
            )?;
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

    /// The cumulative test's limit when its mean rests on `samples` samples.
    fn cumulative_limit(&self, samples: u32) -> Option<f64> {
        let early = self.early_look.filter(|look| look.samples == samples);
        self.cumulative
            .map(|limit| early.map_or(limit, |look| look.limit))
    }

    /// Whether a finding with this z is decisive: on the bad side and beyond `decisive`.
    pub(crate) fn is_decisive(&self, finding: Finding, z: f64) -> bool {
        matches!(finding, Finding::Bad(_)) && self.decisive.is_some_and(|d| z.abs() >= d)
    }

    /// Judges `canary - stable` against `noise` (see [`Noise`], relative to a unit level
    /// under [`Self::noise_scale`]) at the stable version's current `level` and the sample's `requests`, its floors
    /// (`floor`, the z-score's, and this detector's own `min_stddev`, both per reading), and
    /// the running sum of earlier differences in `so_far`, which it returns with this one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        &self,
        noise: Noise,
        floor: f64,
        direction: Direction,
        canary: f64,
        stable: f64,
        level: f64,
        requests: Option<u64>,
        so_far: Running,
    ) -> (Finding, PairedReport, Running) {
        let scale = self.noise_scale().factor(level) * noise.per_request(requests);
        let unit = (canary - stable) / scale - noise.offset;
        let stddev = so_far
            .pooled(noise, unit)
            .max(std::f64::consts::SQRT_2 * self.min_stddev.max(floor) / scale);
        let z = standardized(unit, stddev);
        let running = so_far.with(unit, stddev, unit * scale);
        let cumulative_z =
            (self.cumulative.is_some() && noise.points >= MIN_NOISE_POINTS && running.n >= 2)
                .then(|| standardized(running.sum, running.sum_variance(noise).sqrt()));
        let (difference, stddev) = (unit * scale, stddev * scale);
        let (finding, cumulative) =
            self.finding(direction, z, cumulative_z, running.n, running.raw);
        (
            finding,
            PairedReport {
                stable,
                difference,
                z: finite(z),
                stddev,
                sigma: self.sigma,
                offset: noise.offset * scale,
                noise_from: noise.source,
                cumulative,
                dispersion: None,
            },
            running,
        )
    }

    /// Judges a metric whose noise follows from the requests (see [`Model`]): the canary's
    /// reading over `nc` requests against the stable group's over `ns`, one sample alone and,
    /// from the second sample, everything since the first (`so_far`, returned with this one).
    /// `None` when the model cannot judge the pair (no requests, a quantile at 0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_model(
        &self,
        model: &Model,
        direction: Direction,
        canary: f64,
        nc: u64,
        stable: f64,
        ns: u64,
        so_far: Totals,
    ) -> Option<(Finding, PairedReport, Totals)> {
        let (nc, ns) = (nc as f64, ns as f64);
        let raw = model.raw_z(canary, nc, stable, ns)?;
        let totals = so_far.with(model, canary, nc, stable, ns, raw);
        let dispersion = model.dispersion_with(&totals);
        let z = raw / dispersion.sqrt();
        let cumulative_z = (self.cumulative.is_some() && totals.n >= 2)
            .then(|| model.totals_z(&totals, dispersion));
        let (finding, cumulative) =
            self.finding(direction, z, cumulative_z, totals.n, totals.difference);
        Some((
            finding,
            PairedReport {
                stable,
                difference: canary - model.expected(stable, nc, ns),
                z: finite(z),
                stddev: model.stddev(canary, nc, stable, ns, dispersion),
                sigma: self.sigma,
                offset: 0.0,
                noise_from: NoiseSource::Requests,
                cumulative,
                dispersion: Some(dispersion),
            },
            totals,
        ))
    }
}

impl Paired {
    /// One sample's finding from its z and, once it ran, the cumulative test's z over
    /// `samples` samples whose differences sum to `total` (in the metric's unit): bad when
    /// either is beyond its limit on the bad side.
    fn finding(
        &self,
        direction: Direction,
        z: f64,
        cumulative_z: Option<f64>,
        samples: u32,
        total: f64,
    ) -> (Finding, Option<CumulativeReport>) {
        let beyond = |z: f64, limit: f64| direction.bad_side(z).filter(|_| z.abs() > limit);
        let single = beyond(z, self.sigma);
        let limit = self.cumulative_limit(samples);
        let accumulated = cumulative_z
            .zip(limit)
            .and_then(|(z, limit)| beyond(z, limit));
        let finding = single.or(accumulated).map_or(Finding::Clear, Finding::Bad);
        let report = cumulative_z.map(|z| CumulativeReport {
            samples,
            mean: total / f64::from(samples),
            z: finite(z),
            limit: limit.unwrap_or_default(),
            fired: accumulated.is_some(),
        });
        (finding, report)
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
    /// The model of the metric's kind over both groups' requests in the sample (see
    /// [`crate::Kind`]), widened by the A/A period's dispersion when there is one.
    Requests,
}

/// The noise of one difference and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Noise {
    /// Standard deviation of one canary-minus-stable difference.
    pub(crate) stddev: f64,
    /// A standing difference between the groups to subtract (the A/A mean; 0 otherwise).
    pub(crate) offset: f64,
    /// The variance of `offset` as an estimate (the A/A variance over its pairs; 0 without
    /// one). Every difference is net of the same estimate, so its error does not average out
    /// over samples: it adds `n^2` times this to the variance of a sum of `n` differences.
    pub(crate) offset_variance: f64,
    /// How many differences the estimate rests on.
    pub(crate) points: usize,
    /// When the estimate is relative to requests (see [`Paired::per_request`]): the A/A
    /// period's mean requests per reading, which stands in for a sample's unmeasured traffic.
    pub(crate) requests: Option<f64>,
    pub(crate) source: NoiseSource,
}

impl Noise {
    /// From an A/A period: the spread and mean of `canary - stable` over the pairs where
    /// both are finite, each relative to the noise `settings` give the level then and, with
    /// `per_request` and one count per pair in `traffic`, to its requests. `None` below
    /// [`MIN_NOISE_POINTS`] pairs.
    pub(crate) fn aa_period(
        stable: &[f64],
        canary: &[f64],
        traffic: &[u64],
        settings: &Paired,
    ) -> Option<Noise> {
        if canary.len() < MIN_NOISE_POINTS {
            return None;
        }
        let per_request = settings.per_request() && traffic.len() == stable.len();
        let requests = |i: usize| match per_request {
            true => 1.0 / (traffic[i].max(1) as f64).sqrt(),
            false => 1.0,
        };
        let differences = stable
            .iter()
            .zip(canary)
            .zip(settings.noise_scale().factors(stable))
            .enumerate()
            .map(|(i, ((s, c), f))| (c - s) / (f * requests(i)))
            .filter(|d| d.is_finite());
        let moments = crate::stats::Moments::of(differences);
        let mean_requests = per_request
            .then(|| traffic.iter().map(|&t| t.max(1) as f64).sum::<f64>() / traffic.len() as f64);
        (moments.count() >= MIN_NOISE_POINTS).then(|| Noise {
            stddev: moments.stddev(),
            offset: moments.mean(),
            offset_variance: moments.stddev().powi(2) / moments.count() as f64,
            points: moments.count(),
            requests: mean_requests,
            source: NoiseSource::AaPeriod,
        })
    }

    /// The noise factor of a sample that served `requests` (1 unless the estimate is per
    /// request; unmeasured traffic counts as the A/A period's mean).
    fn per_request(&self, requests: Option<u64>) -> f64 {
        self.requests.map_or(1.0, |mean| {
            1.0 / requests.map_or(mean, |r| r.max(1) as f64).sqrt()
        })
    }
}

/// The stable version's readings in the baseline window, each relative to the noise its
/// level gives (see [`NoiseScale`]), with the sum of squared changes between consecutive ones
/// kept up to date as the window slides: the noise of one reading by von Neumann's mean square
/// successive difference, `sqrt(sum((x[i] - x[i-1])^2) / (2 (n - 1)))`, at O(1) a sample.
#[derive(Debug, Clone)]
pub(crate) struct Successive {
    scale: NoiseScale,
    capacity: usize,
    relative: VecDeque<f64>,
    level: Level,
    squares: f64,
}

impl Successive {
    /// The last `capacity` finite `values` (in time order) under `scale`.
    pub(crate) fn new(
        values: impl IntoIterator<Item = f64>,
        capacity: usize,
        scale: NoiseScale,
    ) -> Self {
        let mut successive = Successive {
            scale,
            capacity: capacity.max(1),
            relative: VecDeque::new(),
            level: Level::default(),
            squares: 0.0,
        };
        values.into_iter().for_each(|v| successive.push(v));
        successive
    }

    /// Takes in the next reading, pushing out the oldest once the window is full.
    pub(crate) fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.level.push(value);
        let relative = value / self.scale.factor(self.level.mean());
        if let Some(last) = self.relative.back() {
            self.squares += (relative - last).powi(2);
        }
        self.relative.push_back(relative);
        if self.relative.len() > self.capacity {
            let oldest = self.relative.pop_front().unwrap_or_default();
            if let Some(next) = self.relative.front() {
                self.squares -= (next - oldest).powi(2);
            }
        }
    }

    /// The noise of one difference (`sqrt(2)` times one reading's), relative to a unit
    /// level; `None` below two readings.
    pub(crate) fn noise(&self) -> Option<Noise> {
        let points = self.relative.len().checked_sub(1).filter(|n| *n > 0)?;
        let per_reading = (self.squares.max(0.0) / (2.0 * points as f64)).sqrt();
        Some(Noise {
            stddev: per_reading * std::f64::consts::SQRT_2,
            offset: 0.0,
            offset_variance: 0.0,
            points,
            requests: None,
            source: NoiseSource::Successive,
        })
    }
}

/// Running sum of a metric's paired differences since the first canary sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Running {
    pub(crate) n: u32,
    /// The differences relative to their levels' noise (see [`NoiseScale`]); the same as
    /// `raw` when the noise is flat.
    pub(crate) sum: f64,
    /// The differences in the metric's unit.
    pub(crate) raw: f64,
    /// Sum of the variances the differences were judged with: the variance of `sum`.
    pub(crate) variances: f64,
    /// The latest difference, and the sum of squared changes between consecutive ones.
    last: f64,
    changes: f64,
}

impl Running {
    /// The sums with one more difference, judged with noise `stddev`, and `raw` in the
    /// metric's unit.
    pub(crate) fn with(self, difference: f64, stddev: f64, raw: f64) -> Running {
        Running {
            n: self.n + 1,
            sum: self.sum + difference,
            raw: self.raw + raw,
            variances: self.variances + stddev * stddev,
            last: difference,
            changes: self.changes_with(difference),
        }
    }

    /// The variance of `sum`: the noise of each difference, plus that of the offset
    /// subtracted from every one of them.
    pub(crate) fn sum_variance(&self, noise: Noise) -> f64 {
        self.variances + f64::from(self.n).powi(2) * noise.offset_variance
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
/// `sqrt(sum((x[i] - x[i-1])^2) / (2 (n - 1)))`. `None` below two values. The streaming
/// path keeps the same number in [`Successive`], tested equal.
#[cfg(test)]
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
    /// With noise from the requests: the variance of a z on A/A readings, by which the
    /// model's noise was widened (1: the model held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
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

    /// [`Paired::check`] at a flat noise and unmeasured traffic: the finding and report.
    fn check(
        p: &Paired,
        noise: Noise,
        floor: f64,
        direction: Direction,
        canary: f64,
        stable: f64,
        so_far: Running,
    ) -> (Finding, PairedReport) {
        let (finding, report, _) =
            p.check(noise, floor, direction, canary, stable, 1.0, None, so_far);
        (finding, report)
    }

    /// Noise of `per_reading` per reading from successive differences of 12 readings.
    fn noise(per_reading: f64) -> Noise {
        Noise {
            stddev: per_reading * std::f64::consts::SQRT_2,
            offset: 0.0,
            offset_variance: 0.0,
            points: 11,
            requests: None,
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
        let (f, r) = check(
            &p,
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
            check(
                &p,
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
            check(
                &p,
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
            check(
                &p,
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
        let (f, r) = check(
            &p,
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 6.1 * sd,
            100.0,
            Running::default(),
        );
        assert!(p.is_decisive(f, r.z));
        let (f, r) = check(
            &p,
            noise(1.0),
            0.0,
            Direction::Increase,
            100.0 + 5.9 * sd,
            100.0,
            Running::default(),
        );
        assert_eq!(f, Finding::Bad(Side::High));
        assert!(!p.is_decisive(f, r.z));
        let (f, r) = check(
            &p,
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
        let (f, r) = check(
            &off,
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
            check(
                &p,
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
            check(
                &Paired::default(),
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
        let (f, r) = check(
            &Paired::default(),
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
        let aa = Noise::aa_period(&stable, &canary, &[], &Paired::default()).unwrap();
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
        let (f, r) = check(
            &Paired::default(),
            aa,
            0.0,
            Direction::Increase,
            13.5,
            11.0,
            Running::default(),
        );
        assert_eq!(f, Finding::Clear);
        assert!((r.difference - 0.5).abs() < 1e-12);
        assert!(
            Noise::aa_period(&stable[..5], &canary[..5], &[], &Paired::default()).is_none(),
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
            let (f, r) = check(
                &p,
                noise(1.0),
                0.0,
                Direction::Increase,
                100.0 + 2.5 * sd,
                100.0,
                so_far,
            );
            so_far = so_far.with(r.difference, r.stddev, r.difference);
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
        let down = (0..5).fold(Running::default(), |r, _| r.with(-10.0, sd, -10.0));
        assert_eq!(
            check(&p, noise(1.0), 0.0, Direction::Increase, 90.0, 100.0, down).0,
            Finding::Clear
        );
    }

    #[test]
    fn the_noise_pools_the_changes_between_differences_since_the_deploy() {
        // Differences swinging by 4 sigma from one sample to the next: noise has grown since
        // the baseline, and the pooled estimate follows it up.
        let sd = 2f64.sqrt();
        let swinging = (0..8).fold(Running::default(), |r, i| {
            r.with(
                if i % 2 == 0 { 2.0 * sd } else { -2.0 * sd },
                sd,
                if i % 2 == 0 { 2.0 * sd } else { -2.0 * sd },
            )
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
        let steady = (0..8).fold(Running::default(), |r, _| r.with(2.5 * sd, sd, 2.5 * sd));
        let value = 100.0 + 1.5 * sd;
        let thin = Noise {
            points: MIN_NOISE_POINTS - 1,
            ..noise(1.0)
        };
        let (f, r) = check(
            &Paired::default(),
            thin,
            0.0,
            Direction::Increase,
            value,
            100.0,
            steady,
        );
        assert_eq!((f, r.cumulative), (Finding::Clear, None));
        let off = Paired {
            cumulative: None,
            ..Paired::default()
        };
        let (f, r) = check(
            &off,
            noise(1.0),
            0.0,
            Direction::Increase,
            value,
            100.0,
            steady,
        );
        assert_eq!((f, r.cumulative), (Finding::Clear, None));
        let (f, r) = check(
            &Paired::default(),
            noise(1.0),
            0.0,
            Direction::Increase,
            value,
            100.0,
            steady,
        );
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

    /// A/A readings at level 100 whose differences alternate +-1 around 0.
    fn aa_at_100() -> (Vec<f64>, Vec<f64>) {
        let stable = vec![100.0; 12];
        let canary = (0..12)
            .map(|i| 100.0 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        (stable, canary)
    }

    #[test]
    fn a_noise_scale_judges_the_noise_at_the_level_now() {
        let (stable, canary) = aa_at_100();
        let z_at_200 = |scale: NoiseScale| {
            let p = Paired {
                noise_scale: Some(scale),
                ..Paired::default()
            };
            let aa = Noise::aa_period(&stable, &canary, &[], &p).unwrap();
            // The stable version now reads 200: the same difference of 3.5 A/A sigma.
            let difference = 3.5 * aa.stddev * scale.factor(100.0);
            let (f, r, _) = p.check(
                aa,
                0.0,
                Direction::Increase,
                200.0 + difference,
                200.0,
                200.0,
                None,
                Running::default(),
            );
            (f, r.z)
        };
        let (flat, z) = z_at_200(NoiseScale::Flat);
        assert_eq!(flat, Finding::Bad(Side::High));
        assert!((z - 3.5).abs() < 1e-9, "{z}");
        // In proportion: twice the level, twice the noise.
        let (linear, z) = z_at_200(NoiseScale::Linear);
        assert_eq!(linear, Finding::Clear);
        assert!((z - 1.75).abs() < 1e-9, "{z}");
        // Square root: sqrt(2) times the noise.
        let (_, z) = z_at_200(NoiseScale::Sqrt);
        assert!((z - 3.5 / 2f64.sqrt()).abs() < 1e-9, "{z}");
        // No errors at all lately: the factor stays finite and positive.
        let tiny = NoiseScale::Sqrt.factor(0.0);
        assert!(tiny > 0.0 && tiny.is_finite());
        assert_eq!(NoiseScale::Flat.factor(0.0), 1.0);
    }

    #[test]
    fn per_request_noise_shrinks_with_the_requests_a_sample_served() {
        let (stable, canary) = aa_at_100();
        let p = Paired {
            per_request: Some(true),
            ..Paired::default()
        };
        let traffic = vec![10_000; 12];
        let aa = Noise::aa_period(&stable, &canary, &traffic, &p).unwrap();
        assert_eq!(aa.requests, Some(10_000.0));
        let difference = 3.5 * aa.stddev / 100.0;
        let z = |requests: Option<u64>| {
            let (_, r, _) = p.check(
                aa,
                0.0,
                Direction::Increase,
                100.0 + difference,
                100.0,
                100.0,
                requests,
                Running::default(),
            );
            r.z
        };
        assert!((z(Some(10_000)) - 3.5).abs() < 1e-9);
        // A quarter of the requests: twice the noise.
        assert!((z(Some(2_500)) - 1.75).abs() < 1e-9);
        // Unmeasured traffic counts as the A/A period's.
        assert!((z(None) - 3.5).abs() < 1e-9);
        // Without counts for the A/A readings, requests play no part.
        let without = Noise::aa_period(&stable, &canary, &[], &p).unwrap();
        assert_eq!(without.requests, None);
        assert_eq!(without.per_request(Some(1)), 1.0);
    }

    #[test]
    fn the_offset_estimate_adds_its_own_variance_to_a_sum() {
        let (stable, canary) = aa_at_100();
        let aa = Noise::aa_period(&stable, &canary, &[], &Paired::default()).unwrap();
        assert!((aa.offset_variance - aa.stddev.powi(2) / 12.0).abs() < 1e-12);
        let four = (0..4).fold(Running::default(), |r, _| r.with(1.0, 2.0, 1.0));
        assert!((four.sum_variance(aa) - (16.0 + 16.0 * aa.offset_variance)).abs() < 1e-12);
        // Successive noise subtracts no offset, so it adds nothing.
        assert_eq!(four.sum_variance(noise(1.0)), 16.0);
    }

    #[test]
    fn the_early_look_holds_one_sample_count_to_its_own_limit() {
        let p = Paired::default();
        assert_eq!(
            [2, 3, 4].map(|n| p.cumulative_limit(n)),
            [Some(5.0), Some(3.4), Some(5.0)]
        );
        let off = Paired {
            cumulative: None,
            ..Paired::default()
        };
        assert_eq!(
            off.cumulative_limit(3),
            None,
            "off turns the early look off too"
        );
        // A mean 4 standard errors out fails at the look, not a sample later.
        let sd = 2f64.sqrt();
        let z4 = 4.0 / 3f64.sqrt();
        let two = (0..2).fold(Running::default(), |r, _| r.with(z4 * sd, sd, z4 * sd));
        let aa = Noise {
            points: 24,
            ..noise(1.0)
        };
        let (f, r) = check(
            &p,
            aa,
            0.0,
            Direction::Increase,
            100.0 + z4 * sd,
            100.0,
            two,
        );
        let c = r.cumulative.unwrap();
        assert_eq!(
            (f, c.samples, c.limit, c.fired),
            (Finding::Bad(Side::High), 3, 3.4, true)
        );
        let three = two.with(z4 * sd, sd, z4 * sd);
        let z45 = 4.5 * 2.0 - 3.0 * z4;
        let (f, r) = check(
            &p,
            aa,
            0.0,
            Direction::Increase,
            100.0 + z45 * sd,
            100.0,
            three,
        );
        let c = r.cumulative.unwrap();
        assert!(
            c.z > 4.0 && c.z < 5.0,
            "beyond the early look's limit: {c:?}"
        );
        assert_eq!((f, c.limit, c.fired), (Finding::Clear, 5.0, false));
        for (look, field) in [
            (
                EarlyLook {
                    samples: 1,
                    limit: 3.0,
                },
                "p.early_look.samples",
            ),
            (
                EarlyLook {
                    samples: 3,
                    limit: 0.0,
                },
                "p.early_look.limit",
            ),
        ] {
            let bad = Paired {
                early_look: Some(look),
                ..Paired::default()
            };
            let error = bad.validate("p").unwrap_err().to_string();
            assert!(error.starts_with(field), "{error}");
        }
    }

    #[test]
    fn streaming_successive_noise_matches_a_fresh_computation() {
        let values: Vec<f64> = (0..40)
            .map(|i| ((i * 37) % 11) as f64 + 0.5 * i as f64)
            .collect();
        let mut streaming = Successive::new(values[..5].iter().copied(), 10, NoiseScale::Flat);
        for end in 5..values.len() {
            streaming.push(values[end]);
            let window = &values[(end + 1).saturating_sub(10)..=end];
            let fresh = successive_noise(window.iter().copied()).unwrap();
            let noise = streaming.noise().unwrap();
            assert!(
                (noise.stddev - fresh * std::f64::consts::SQRT_2).abs() < 1e-9,
                "at {end}"
            );
            assert_eq!(noise.points, window.len() - 1);
        }
        assert!(
            Successive::new([1.0], 10, NoiseScale::Flat)
                .noise()
                .is_none()
        );
        // Scaled: each reading relative to the mean of the readings up to it.
        let scaled = Successive::new([100.0, 100.0, 400.0], 10, NoiseScale::Sqrt);
        let relative = [10.0, 10.0, 400.0 / 200f64.sqrt()];
        let expected = successive_noise(relative).unwrap() * std::f64::consts::SQRT_2;
        assert!((scaled.noise().unwrap().stddev - expected).abs() < 1e-12);
    }
}
