//! Labelled deploy cases, generated reproducibly from a seed on real NAB backgrounds.
//!
//! A case is one canary analysis of four metrics of one service. Each metric's background is
//! a real NAB series: traffic (ELB request count or Twitter volume), load modulating the error
//! rate (EC2/RDS CPU), p99 latency (MN/DOT travel time, or inverted road speed), CPU, and log
//! lines (Twitter volume). All are regridded to 5 minutes and aligned on the same hour of
//! week, so diurnal and weekly seasonality and drift are real.
//!
//! The stable version and the canary serve that same background at the same rate; they differ
//! by sampling noise (binomial errors, the p99's estimation error over the requests served,
//! Poisson log counts, 5% CPU instance noise) and, in half the cases, by one regression
//! injected from the first canary sample. Each case carries the stable version's readings
//! before the deploy (baseline: 2 hours; history: 7-14 days) and alongside the canary, and the
//! canary group's readings in the baseline's 2 hours, while it still ran the stable version
//! (the A/A period). Those come from a second random stream, so adding them left every other
//! number of a case as it was.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use signalbox_analysis::{Baseline, Direction, Observation, Point};

use crate::nab::Grid;

/// Grid step: NAB's native 5 minutes.
pub const STEP: i64 = 300;
/// Baseline samples before the deploy (2 hours).
pub const BASELINE: usize = 24;
/// Canary samples per case (1 hour).
pub const HORIZON: usize = 12;
const DAY: usize = 288;
const WEEK: usize = 7 * DAY;
const MAX_HISTORY: usize = 2 * WEEK;

/// The metrics of every case, in order: name, the direction that is bad, and whether the
/// policy marks it critical (the golden signals are; CPU is a bystander that only lowers the
/// score).
pub const METRICS: [(&str, Direction, bool); 4] = [
    ("error_rate", Direction::Increase, true),
    ("latency_p99_ms", Direction::Increase, true),
    ("cpu_pct", Direction::Increase, false),
    ("log_lines", Direction::Increase, true),
];

/// What was injected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Nothing.
    Clean,
    /// Error rate multiplied by `1 + r` (relative: +20% takes 1.0% to 1.2%).
    ErrorRate(f64),
    /// p99 latency plus this many milliseconds.
    Latency(f64),
    /// Log volume multiplied by this factor.
    LogVolume(f64),
}

/// One labelled case.
pub struct Case {
    /// The label.
    pub kind: Kind,
    /// Per metric (in [`METRICS`] order): the stable version's readings in the 2 hours before
    /// the deploy, and its history up to the deploy.
    pub baselines: Vec<Baseline>,
    /// Per metric: canary readings.
    pub canary: Vec<Vec<Observation>>,
    /// Per metric: the stable version's readings at the same times.
    pub stable: Vec<Vec<Observation>>,
    /// Canary sample times.
    pub times: Vec<i64>,
    /// Canary requests per sample.
    pub traffic: Vec<u64>,
    /// Stable-group requests per sample.
    pub stable_traffic: Vec<u64>,
    /// Per sample: the canary group's share of the fleet over the stable group's, which
    /// scales a stable count (log lines) to what the canary would count alike (1 when both
    /// serve alike).
    pub count_ratio: Vec<f64>,
    /// For error-rate and latency regressions: the injected shift over the sampling noise of a
    /// canary-minus-stable difference at the first sample, i.e. the z a perfect single-sample
    /// detector would see. 0 otherwise.
    pub snr: f64,
    /// Per metric, per canary sample: the true standard deviation of a canary-minus-stable
    /// difference when nothing regressed, from the generator's own noise model. No detector
    /// sees it; the oracle row uses it to bound what any detector could do.
    pub noise: Vec<Vec<f64>>,
}

/// Background series for each role.
pub struct Pools {
    /// Request counts: ELB requests, Twitter volume.
    pub traffic: Vec<Grid>,
    /// CPU utilisation: EC2 and RDS instances.
    pub cpu: Vec<Grid>,
    /// Latency-like: travel times, and road speeds (inverted).
    pub latency: Vec<Grid>,
    /// Log-volume-like: Twitter volume.
    pub logs: Vec<Grid>,
}

/// Names of the NAB series used for each role.
pub const TRAFFIC: &[&str] = &[
    "realAWSCloudwatch/elb_request_count_8c0756.csv",
    "realTweets/Twitter_volume_AAPL.csv",
    "realTweets/Twitter_volume_AMZN.csv",
    "realTweets/Twitter_volume_GOOG.csv",
];
/// CPU series (error-rate modulation and the CPU metric).
pub const CPU: &[&str] = &[
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_ac20cd.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv",
    "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
    "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
];
/// Latency series; `speed_*` are inverted (travel time is distance over speed).
pub const LATENCY: &[&str] = &[
    "realTraffic/TravelTime_387.csv",
    "realTraffic/TravelTime_451.csv",
    "realTraffic/speed_6005.csv",
    "realTraffic/speed_t4013.csv",
    "realTraffic/speed_7578.csv",
];
/// Log-volume series.
pub const LOGS: &[&str] = &[
    "realTweets/Twitter_volume_FB.csv",
    "realTweets/Twitter_volume_AAPL.csv",
    "realTweets/Twitter_volume_AMZN.csv",
    "realTweets/Twitter_volume_GOOG.csv",
];

/// How the requests split between the two groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// Both versions serve the same number of requests (20-500 rps each): the original cases.
    Equal,
    /// The canary serves this share of a fleet's requests (1,000-50,000 rps in all, over
    /// [`FLEET_INSTANCES`] instances) and the stable group the rest. Each group's readings are
    /// noisy in proportion to what it served: its error rate and p99 over its own requests,
    /// its log lines a count of its own requests' lines, its CPU a mean over its instances.
    /// With `heavy`, the noise is heavier than the textbook models the engine knows: a p99
    /// with a lognormal tail (3.73 / sqrt(n), not 2.16), error rates that burst (each
    /// group's rate jitters by 30% a sample on top of the binomial draw), log lines four
    /// times as variable as Poisson.
    Share { share: f64, heavy: bool },
}

/// Instances in a fleet of [`Split::Share`] cases: a 1% canary is one instance.
pub const FLEET_INSTANCES: f64 = 100.0;

/// Generates `n` cases, half clean, from `rng`, with both groups serving alike.
pub fn generate(pools: &Pools, n: usize, rng: &mut ChaCha8Rng) -> Vec<Case> {
    generate_split(pools, n, Split::Equal, rng)
}

/// Generates `n` cases, half clean, from `rng`, with the requests split as `split` says.
pub fn generate_split(pools: &Pools, n: usize, split: Split, rng: &mut ChaCha8Rng) -> Vec<Case> {
    generate_bounded(pools, n, split, rng, usize::MAX).expect("unbounded tries place every case")
}

/// [`generate_split`], giving up (`None`) when a case cannot be placed on the pools'
/// backgrounds within `attempts` tries: a series too short for a week of history before the
/// baseline, or without a stretch of positive values.
pub fn generate_bounded(
    pools: &Pools,
    n: usize,
    split: Split,
    rng: &mut ChaCha8Rng,
    attempts: usize,
) -> Option<Vec<Case>> {
    let mut aa = rng.clone();
    aa.set_stream(1);
    (0..n)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Kind::Clean
            } else {
                match rng.gen_range(0..3) {
                    0 => Kind::ErrorRate(rng.gen_range(0.05..=1.0)),
                    1 => Kind::Latency(rng.gen_range(10.0..=200.0)),
                    _ => Kind::LogVolume(rng.gen_range(1.5..=5.0)),
                }
            };
            (0..attempts).find_map(|_| try_case(pools, kind, split, rng, &mut aa))
        })
        .collect()
}

/// A background placed in a case: the grid and the grid index of the first canary sample.
struct Placed<'a> {
    grid: &'a Grid,
    deploy: usize,
}

impl Placed<'_> {
    /// Value `k` samples after the deploy (negative: before).
    fn at(&self, k: isize) -> f64 {
        self.grid.values[(self.deploy as isize + k) as usize]
    }

    /// Level relative to the series' median.
    fn relative(&self, k: isize) -> f64 {
        self.at(k) / self.grid.median
    }
}

/// A random grid index at second-of-week `slot` with at least a week of history before the
/// baseline, and the baseline and canary windows inside the series and free of gaps.
fn place<'a>(grid: &'a Grid, slot: i64, rng: &mut ChaCha8Rng) -> Option<Placed<'a>> {
    let week = WEEK as i64 * STEP;
    let first = (slot - (grid.start + 3 * 86_400).rem_euclid(week)).rem_euclid(week) / STEP;
    let candidates: Vec<usize> = (first as usize..grid.values.len())
        .step_by(WEEK)
        .filter(|&p| p >= WEEK + BASELINE && p + HORIZON <= grid.values.len())
        .filter(|&p| {
            grid.values[p - BASELINE..p + HORIZON]
                .iter()
                .all(|v| v.is_finite() && *v > 0.0)
        })
        .collect();
    candidates
        .choose(rng)
        .map(|&deploy| Placed { grid, deploy })
}

fn try_case(
    pools: &Pools,
    kind: Kind,
    split: Split,
    rng: &mut ChaCha8Rng,
    aa: &mut ChaCha8Rng,
) -> Option<Case> {
    let slot = rng.gen_range(0..WEEK as i64) * STEP;
    let traffic = place(pools.traffic.choose(rng)?, slot, rng)?;
    let load = place(pools.cpu.choose(rng)?, slot, rng)?;
    let latency = place(pools.latency.choose(rng)?, slot, rng)?;
    let cpu = place(pools.cpu.choose(rng)?, slot, rng)?;
    let logs = place(pools.logs.choose(rng)?, slot, rng)?;
    let placed = [&traffic, &load, &latency, &cpu, &logs];
    let history = placed
        .iter()
        .map(|p| p.deploy - BASELINE)
        .min()?
        .min(MAX_HISTORY);
    let fleet = Fleet {
        rps: match split {
            Split::Equal => log_uniform(rng, 20.0, 500.0),
            Split::Share { .. } => log_uniform(rng, 1_000.0, 50_000.0),
        },
        error_rate: log_uniform(rng, 0.002, 0.05),
        latency_ms: rng.gen_range(80.0..400.0),
        cpu_pct: rng.gen_range(15.0..70.0),
        log_lines: log_uniform(rng, 2_000.0, 50_000.0),
        inverted: latency.grid.name.contains("speed_"),
        heavy: matches!(split, Split::Share { heavy: true, .. }),
    };
    let deploy_time = traffic.grid.time(traffic.deploy);
    let time = |k: isize| deploy_time + k as i64 * STEP;

    let mut baselines = vec![Baseline::default(); METRICS.len()];
    let (mut canary, mut stable) = (
        vec![Vec::new(); METRICS.len()],
        vec![Vec::new(); METRICS.len()],
    );
    let mut canary_traffic = Vec::new();
    let mut stable_traffic = Vec::new();
    let mut count_ratio = Vec::new();
    let mut snr = 0.0;
    let mut noise = vec![Vec::new(); METRICS.len()];
    for k in -((BASELINE + history) as isize)..HORIZON as isize {
        let shared = placed.map(|p| p.relative(k));
        if shared.iter().any(|v| !v.is_finite() || *v <= 0.0) {
            // A gap: skipped in the history, but the baseline and canary must be whole.
            if k >= -(BASELINE as isize) {
                return None;
            }
            continue;
        }
        let served = (fleet.rps * STEP as f64 * shared[0]).round() as u64;
        let (canary_group, stable_group) = match split {
            Split::Equal => (Group::whole(served), Group::whole(served)),
            Split::Share { share, .. } => {
                (Group::part(served, share), Group::part(served, 1.0 - share))
            }
        };
        let old = fleet.readings(&shared, stable_group, Kind::Clean, rng);
        if (-(BASELINE as isize)..0).contains(&k) {
            let group = fleet.readings(&shared, canary_group, Kind::Clean, aa);
            for (m, (s, c)) in old.iter().zip(group).enumerate() {
                if s.is_some() {
                    baselines[m].canary.push(c.unwrap_or(f64::NAN));
                    baselines[m].traffic.push(canary_group.requests);
                    if split != Split::Equal {
                        baselines[m].stable_traffic.push(stable_group.requests);
                    }
                }
            }
        }
        for (m, v) in old.iter().enumerate() {
            match (k, v) {
                (k, Some(value)) if k < 0 => {
                    baselines[m].history.push(Point {
                        at: time(k),
                        value: *value,
                    });
                    if k >= -(BASELINE as isize) {
                        baselines[m].values.push(*value);
                    }
                }
                (k, _) if k < 0 => {}
                (_, v) => stable[m].push(Observation::from(*v)),
            }
        }
        if k == 0 {
            snr = fleet.snr(&shared, canary_group, stable_group, kind);
        }
        if k >= 0 {
            for (m, v) in fleet
                .readings(&shared, canary_group, kind, rng)
                .into_iter()
                .enumerate()
            {
                canary[m].push(Observation::from(v));
            }
            canary_traffic.push(canary_group.requests);
            stable_traffic.push(stable_group.requests);
            count_ratio.push(canary_group.share / stable_group.share);
            for (m, sd) in fleet
                .noise(&shared, canary_group, stable_group)
                .into_iter()
                .enumerate()
            {
                noise[m].push(sd);
            }
        }
    }
    Some(Case {
        kind,
        baselines,
        canary,
        stable,
        times: (0..HORIZON as isize).map(time).collect(),
        stable_traffic,
        traffic: canary_traffic,
        count_ratio,
        snr,
        noise,
    })
}

/// One service: both versions serve the same traffic pattern (the shared NAB backgrounds) at
/// the same rate, so what differs between them is sampling noise, plus the regression.
struct Fleet {
    rps: f64,
    error_rate: f64,
    latency_ms: f64,
    cpu_pct: f64,
    log_lines: f64,
    inverted: bool,
    heavy: bool,
}

/// What one group of instances served in a sample: its requests, its share of the fleet's
/// log lines and its instances (for the CPU mean).
#[derive(Debug, Clone, Copy)]
struct Group {
    requests: u64,
    share: f64,
    instances: f64,
}

impl Group {
    /// A group serving as the whole reference fleet does (the original, equal cases).
    fn whole(requests: u64) -> Group {
        Group {
            requests,
            share: 1.0,
            instances: 1.0,
        }
    }

    /// `share` of a fleet that served `served` requests.
    fn part(served: u64, share: f64) -> Group {
        Group {
            requests: ((served as f64 * share).round() as u64).max(1),
            share,
            instances: (FLEET_INSTANCES * share).round().max(1.0),
        }
    }
}

impl Fleet {
    /// See [`Case::snr`].
    fn snr(&self, shared: &[f64; 5], canary: Group, stable: Group, kind: Kind) -> f64 {
        let load = shared[1];
        let noise = self.noise(shared, canary, stable);
        match kind {
            Kind::ErrorRate(r) => r * (self.error_rate * load.clamp(0.25, 4.0)).min(0.5) / noise[0],
            Kind::Latency(ms) => ms / noise[1],
            _ => 0.0,
        }
    }

    /// See [`Case::noise`]: the model [`Self::readings`] draws from, for two versions alike:
    /// the standard deviation of the canary's reading minus the stable group's (its count
    /// scaled to the canary's share).
    fn noise(&self, shared: &[f64; 5], canary: Group, stable: Group) -> [f64; 4] {
        let (nc, ns) = (canary.requests.max(1) as f64, stable.requests.max(1) as f64);
        let [_, load, latency, cpu, logs] = *shared;
        let p = (self.error_rate * load.clamp(0.25, 4.0)).min(1.0);
        let level = if self.inverted {
            1.0 / latency
        } else {
            latency
        };
        let lines = self.log_lines * logs;
        let ratio = canary.share / stable.share;
        let (tail, burst, lines_factor) = self.noise_shape();
        let binomial = p * (1.0 - p) * (1.0 / nc + 1.0 / ns);
        [
            (binomial + 2.0 * (burst * p).powi(2)).sqrt(),
            self.latency_ms * level * tail * (1.0 / nc + 1.0 / ns).sqrt(),
            0.05 * self.cpu_pct * cpu * (1.0 / canary.instances + 1.0 / stable.instances).sqrt(),
            (lines_factor * (lines * canary.share + ratio * ratio * lines * stable.share)).sqrt(),
        ]
    }

    /// The p99's relative error times `sqrt(n)`, the error rate's relative jitter per
    /// sample, and the log lines' variance over Poisson's.
    fn noise_shape(&self) -> (f64, f64, f64) {
        match self.heavy {
            false => (2.16, 0.0, 1.0),
            true => (3.73, 0.3, 4.0),
        }
    }

    /// One group's readings for one sample, given the backgrounds' levels relative to their
    /// medians (`[traffic, load, latency, cpu, logs]`) and what it served.
    fn readings(
        &self,
        shared: &[f64; 5],
        group: Group,
        kind: Kind,
        rng: &mut ChaCha8Rng,
    ) -> [Option<f64>; 4] {
        let requests = group.requests;
        let [_, load, latency, cpu, logs] = *shared;
        let (mut rate, mut extra_ms, mut log_factor) =
            (self.error_rate * load.clamp(0.25, 4.0), 0.0, 1.0);
        match kind {
            Kind::ErrorRate(r) => rate *= 1.0 + r,
            Kind::Latency(ms) => extra_ms = ms,
            Kind::LogVolume(f) => log_factor = f,
            Kind::Clean => {}
        }
        let (tail, burst, lines_factor) = self.noise_shape();
        if burst > 0.0 {
            rate *= (1.0 + burst * normal(rng)).max(0.0);
        }
        let error_rate =
            (requests > 0).then(|| binomial(rng, requests, rate.min(1.0)) as f64 / requests as f64);
        // Sampling error of a p99 over n requests with an exponential tail:
        // sd(q) / q = sqrt(p / ((1 - p) n)) / ln(1 / (1 - p)) = 2.16 / sqrt(n) at p = 0.99
        // (3.73 with a lognormal tail of sigma 1).
        let p99_error = tail / (requests.max(1) as f64).sqrt();
        let level = if self.inverted {
            1.0 / latency
        } else {
            latency
        };
        let p99 = self.latency_ms * level * (1.0 + p99_error * normal(rng)) + extra_ms;
        // Instance-to-instance CPU noise: an assumption, 5%, averaged over the group.
        let cpu_noise = 0.05 / group.instances.sqrt();
        let cpu_pct = (self.cpu_pct * cpu * (1.0 + cpu_noise * normal(rng))).clamp(0.0, 100.0);
        let lines = self.log_lines * logs * log_factor * group.share;
        let lines = (lines + (lines_factor * lines).sqrt() * normal(rng))
            .round()
            .max(0.0);
        [error_rate, Some(p99), Some(cpu_pct), Some(lines)]
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.r#gen::<f64>().max(f64::MIN_POSITIVE), rng.r#gen());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.gen_range(lo.ln()..hi.ln())).exp()
}

/// Binomial draw: the Poisson approximation for means below 30 (error rates are small), the
/// normal approximation above.
fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    let mean = n as f64 * p;
    if mean < 30.0 {
        // Knuth: multiply uniforms until the product drops below e^-mean.
        let limit = (-mean).exp();
        let mut k = 0;
        let mut prod: f64 = rng.r#gen();
        while prod > limit {
            k += 1;
            prod *= rng.r#gen::<f64>();
        }
        return k.min(n);
    }
    let sd = (mean * (1.0 - p)).sqrt();
    (mean + sd * normal(rng)).round().clamp(0.0, n as f64) as u64
}
