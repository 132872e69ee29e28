//! One metric's state through an analysis: its baseline window, seasonal profile and canary
//! window, the check of each canary reading, and the explanation of the last one.

use crate::detectors::Paired;
use crate::detectors::paired::{LEVEL_READINGS, Noise, Running, Successive};
use crate::detectors::rank_sum::{Window, slide};
use crate::detectors::seasonal::Profile;
use crate::detectors::static_threshold::breach;
use crate::detectors::{Detector, Finding, PairedReport, ThresholdReport, ZScore};
use crate::input::Baseline;
use crate::kind::{Kind, Model, Totals};
use crate::metric::{Metric, Observation, Side};
use crate::stats::{Bounds, Reference};
use crate::verdict::{MetricReport, Status};

/// Per-metric state: the prepared baseline and history, and the recent canary window.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    baseline: Reference,
    profile: Option<Profile>,
    window: Option<Window>,
    /// The stable version's readings at the times of the canary window, once the samples
    /// carry them: what the comparison judges the canary window against from then on, as
    /// Kayenta compares canary and baseline over the same interval. Against the readings
    /// before the deploy, a background that drifted since reads as a difference.
    concurrent: Option<Reference>,
    /// The stable version's reading in the current sample, for the paired detector.
    stable: Option<f64>,
    /// Canary and stable requests in the current sample, when measured.
    requests: Option<u64>,
    stable_requests: Option<u64>,
    /// The paired detector's settings with the metric's kind filling what the policy left
    /// unset.
    paired: Option<Paired>,
    /// The noise model of a metric with a rate, quantile or count kind.
    model: Option<Model>,
    /// Under the model: the events and requests since the first canary sample, before the
    /// current sample and with it.
    totals_before: Totals,
    totals: Totals,
    /// The paired detector's noise from the A/A period, when the baseline has one.
    aa: Option<Noise>,
    /// Without one, the stable readings in the baseline window that its noise comes from,
    /// from the first concurrent stable reading on (before it, nothing is paired).
    successive: Option<Successive>,
    /// Paired differences since the first canary sample: before the current sample, and
    /// with it.
    before: Running,
    running: Running,
    /// The comparison's critical z, computed once.
    critical_z: f64,
    /// Index of the metric's group in the score.
    pub(crate) group: usize,
    /// Weight of the metric's group.
    pub(crate) group_weight: f64,
    bad: u32,
    missing: u32,
    errors: u32,
}

/// What a paired check carries to the next sample: the running sum of differences, or under
/// the requests' model the summed events.
enum Progress {
    Running(Running),
    Totals(Totals),
}

/// One metric in one sample: just what the rules need. The numbers behind it are rebuilt
/// from the same state when a verdict is asked for, so streaming pays for no reports.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) status: Status,
    value: Option<f64>,
    fired: [bool; 4],
    pub(crate) critical: bool,
    /// A bad critical metric whose paired difference is decisive: fails the deploy at once.
    pub(crate) decisive: bool,
    /// A bad critical metric, or one judged from its requests, whose mean paired difference
    /// crossed the cumulative limit: fails the deploy at once.
    pub(crate) cumulative: bool,
    /// A bad, non-advisory metric with a paired difference beyond `large_effect`: fails the
    /// sample.
    pub(crate) large: bool,
    error: Option<String>,
}

const DETECTORS: [Detector; 4] = [
    Detector::Threshold,
    Detector::Zscore,
    Detector::MannWhitney,
    Detector::Paired,
];

impl Check {
    pub(crate) fn of(status: Status, value: Option<f64>) -> Self {
        Check {
            status,
            value,
            fired: [false; 4],
            critical: false,
            decisive: false,
            cumulative: false,
            large: false,
            error: None,
        }
    }
}

impl Watch {
    /// Prepares a metric's state from its baseline; `window` is the baseline window's size
    /// and `group` the metric's group index and weight.
    pub(crate) fn new(
        metric: &Metric,
        baseline: &Baseline,
        window: usize,
        group: (usize, f64),
    ) -> Self {
        let reference = Reference::unranked(&baseline.values, window);
        let paired = metric.paired.as_ref().map(|p| p.resolved(metric.kind));
        let aa = paired.as_ref().and_then(|p| {
            Noise::aa_period(&baseline.values, &baseline.canary, &baseline.traffic, p)
        });
        let model = paired.as_ref().and(metric.kind).and_then(|kind| {
            Model::new(
                kind,
                metric.quantile,
                &baseline.values,
                &baseline.canary,
                &baseline.traffic,
                &baseline.stable_traffic,
            )
        });
        Watch {
            baseline: reference,
            profile: metric
                .seasonal
                .as_ref()
                .filter(|_| !baseline.history.is_empty())
                .map(|s| Profile::build(s, &baseline.history)),
            window: metric.comparison.as_ref().map(|c| Window::new(c.window)),
            concurrent: None,
            stable: None,
            requests: None,
            stable_requests: None,
            paired,
            model,
            totals_before: Totals::default(),
            totals: Totals::default(),
            aa,
            successive: None,
            before: Running::default(),
            running: Running::default(),
            critical_z: metric
                .comparison
                .as_ref()
                .map_or(f64::INFINITY, |c| c.critical_z(metric.direction)),
            group: group.0,
            group_weight: group.1,
            bad: 0,
            missing: 0,
            errors: 0,
        }
    }

    /// Starts a sample in which the canary served `requests` and the stable group
    /// `stable_requests`: forgets the previous sample's stable reading.
    pub(crate) fn start_sample(&mut self, requests: Option<u64>, stable_requests: Option<u64>) {
        self.stable = None;
        self.requests = requests;
        // A stable group that served nothing gives no evidence: as if not measured, which is
        // how a recorded input says "not measured" for one sample.
        self.stable_requests = stable_requests.filter(|&n| n > 0);
        self.before = self.running;
        self.totals_before = self.totals;
    }

    /// Whether this sample is judged from the requests behind each group's reading: a
    /// modelled kind, a stable reading, and both groups' request counts.
    fn modelled(&self) -> bool {
        self.model.is_some()
            && self.stable.is_some()
            && self.requests.is_some()
            && self.stable_requests.is_some()
    }

    /// Whether this sample's paired check compares like with like: from the requests' model,
    /// or, for a gauge, against an A/A period of the canary group itself. Then the z-score and
    /// the comparison, which would hold the canary to the stable group's spread, stand
    /// aside, and the cumulative test decides as it does for a critical metric.
    fn like_with_like(&self, metric: &Metric) -> bool {
        self.modelled()
            || (metric.kind == Some(Kind::Gauge) && self.stable.is_some() && self.aa.is_some())
    }

    /// The z-score settings for this sample: with a kind and the canary's requests, the
    /// baseline's spread is floored by the model's spread of a reading over those requests,
    /// so readings that happened to agree (three windows without an error) do not make one
    /// error a breach.
    fn zscore_floored(&self, z: &ZScore) -> ZScore {
        let floor = self
            .model
            .as_ref()
            .zip(self.requests)
            .and_then(|(model, n)| model.reading_stddev(self.baseline.moments.mean(), n));
        match floor {
            Some(floor) if floor > z.min_stddev => ZScore {
                min_stddev: floor,
                ..z.clone()
            },
            _ => z.clone(),
        }
    }

    /// Takes in a concurrent reading of the stable version.
    pub(crate) fn observe_stable(&mut self, metric: &Metric, value: f64, at: i64) {
        self.stable = Some(value);
        if let Some(paired) = self.paired.as_ref().filter(|_| self.aa.is_none()) {
            self.successive.get_or_insert_with(|| {
                let capacity = self.baseline.capacity();
                Successive::new(self.baseline.values(), capacity, paired.noise_scale())
            });
        }
        slide(&mut self.baseline, None, value);
        if let Some(successive) = self.successive.as_mut() {
            successive.push(value);
        }
        // Judged like with like, the comparison stands aside: its window is not kept either,
        // and ranks only the samples it judged.
        let like = self.like_with_like(metric);
        if let Some(window) = self.window.as_mut().filter(|_| !like) {
            let concurrent = self.concurrent.get_or_insert_with(|| {
                // The first concurrent reading: from now on the window is ranked against
                // the concurrent readings instead of the baseline.
                let capacity = metric
                    .comparison
                    .as_ref()
                    .and_then(|c| c.window)
                    .unwrap_or(usize::MAX);
                let empty = Reference::new(&[], capacity);
                *window = window.rebuilt(&empty);
                self.baseline.stop_ranking();
                empty
            });
            slide(concurrent, Some(window), value);
        }
        if let (Some(profile), Some(settings)) = (self.profile.as_mut(), &metric.seasonal) {
            profile.observe(settings, at, value);
        }
    }

    /// Runs the metric's detectors on one canary reading.
    pub(crate) fn check(&mut self, metric: &Metric, observation: &Observation, at: i64) -> Check {
        let value = match (observation, observation.value()) {
            (Observation::Error { error }, _) => {
                self.errors += 1;
                return Check {
                    error: Some(error.clone()),
                    ..Check::of(Status::Error, None)
                };
            }
            (_, Some(v)) => v,
            (_, None) => {
                self.missing += 1;
                return Check::of(Status::NoData, None);
            }
        };
        let like = self.like_with_like(metric);
        if let Some(window) = self.window.as_mut().filter(|_| !like) {
            let reference = match self.concurrent.as_ref() {
                Some(concurrent) => concurrent,
                None => {
                    // Until the samples carry stable readings, the window ranks against the
                    // baseline, sorted the first time it is needed.
                    self.baseline.rank();
                    &self.baseline
                }
            };
            if reference.len() > 0 {
                window.push(value, reference);
            }
        }
        let mut critical = false;
        let mut decisive = false;
        let mut cumulative = false;
        let mut large = false;
        // Judged from the requests, the z-score and the comparison stand aside: they would
        // hold a small group's reading to a large group's spread.
        let findings = [
            (metric.thresholds.is_some() || metric.seasonal.is_some()).then(|| {
                match self.bounds(metric, at).1 {
                    b if b.is_empty() => Finding::NoReference,
                    b => breach(metric.direction, b, value).map_or(Finding::Clear, Finding::Bad),
                }
            }),
            metric.zscore.as_ref().filter(|_| !like).map(|z| {
                match self.baseline.moments.count() >= 2 {
                    true => {
                        self.zscore_floored(z)
                            .check(&self.baseline.moments, metric.direction, value)
                            .0
                    }
                    false => Finding::NoReference,
                }
            }),
            metric.comparison.as_ref().filter(|_| !like).map(|c| {
                match (&self.window, self.compared_with()) {
                    (Some(window), b) if b.len() > 0 => {
                        match c.finding(window, b, metric.direction, self.critical_z) {
                            Some((finding, breach_is_critical)) => {
                                critical = breach_is_critical;
                                finding
                            }
                            None => Finding::Warmup,
                        }
                    }
                    _ => Finding::NoReference,
                }
            }),
            self.paired
                .clone()
                .map(|settings| match self.paired(metric, value) {
                    Some((finding, report, progress)) => {
                        decisive = settings.is_decisive(finding, report.z);
                        cumulative = report.cumulative.as_ref().is_some_and(|c| c.fired);
                        large = settings.is_large(metric.direction, report.z)
                            || report
                                .cumulative
                                .as_ref()
                                .is_some_and(|c| settings.is_large(metric.direction, c.z));
                        match progress {
                            Progress::Running(running) => self.running = running,
                            Progress::Totals(totals) => self.totals = totals,
                        }
                        finding
                    }
                    None => Finding::NoReference,
                }),
        ];
        let found = |f: Finding| findings.iter().flatten().any(|x| *x == f);
        let status = if found(Finding::Bad(Side::High)) {
            Status::High
        } else if found(Finding::Bad(Side::Low)) {
            Status::Low
        } else if found(Finding::Clear) {
            Status::Pass
        } else if found(Finding::Warmup) {
            Status::Pending
        } else {
            Status::NoData
        };
        if status.is_bad() {
            self.bad += 1;
        }
        Check {
            status,
            value: Some(value),
            fired: findings.map(|f| matches!(f, Some(Finding::Bad(_)))),
            critical: status.is_bad() && (critical || metric.critical),
            decisive: decisive && metric.critical,
            cumulative: cumulative && (metric.critical || like) && !metric.advisory,
            large: status.is_bad() && large && !metric.advisory,
            error: None,
        }
    }

    /// What the comparison ranks the canary window against: the concurrent stable readings
    /// once there are any, the baseline before.
    fn compared_with(&self) -> &Reference {
        self.concurrent.as_ref().unwrap_or(&self.baseline)
    }

    /// The paired detector's finding on `value`, if there is a stable reading in this sample
    /// and a noise estimate: from the requests behind both readings when the metric's kind
    /// models them, else from the A/A period or the stable readings.
    fn paired(&self, metric: &Metric, value: f64) -> Option<(Finding, PairedReport, Progress)> {
        let settings = self.paired.as_ref()?;
        let stable = self.stable?;
        if self.modelled() {
            let (model, nc, ns) = (self.model.as_ref()?, self.requests?, self.stable_requests?);
            return settings
                .check_model(
                    model,
                    metric.direction,
                    value,
                    nc,
                    stable,
                    ns,
                    self.totals_before,
                )
                .map(|(f, r, t)| (f, r, Progress::Totals(t)));
        }
        let noise = self.aa.or_else(|| self.successive.as_ref()?.noise())?;
        let floor = metric.zscore.as_ref().map_or(0.0, |z| z.min_stddev);
        let level = self.baseline.recent_mean(LEVEL_READINGS);
        let (finding, report, running) = settings.check(
            noise,
            floor,
            metric.direction,
            value,
            stable,
            level,
            self.requests,
            self.before,
        );
        Some((finding, report, Progress::Running(running)))
    }

    /// Static bounds and the seasonal band at `at`, and the more lenient of the two.
    fn bounds(&self, metric: &Metric, at: i64) -> (Option<ThresholdReport>, Bounds) {
        let mean = (self.baseline.len() > 0).then(|| self.baseline.moments.mean());
        let fixed = metric
            .thresholds
            .as_ref()
            .map(|t| t.bounds_for(mean, self.stable));
        let seasonal = metric
            .seasonal
            .as_ref()
            .zip(self.profile.as_ref())
            .and_then(|(s, p)| p.band(s, at));
        let effective = Bounds::lenient(
            fixed.unwrap_or_default(),
            seasonal.as_ref().map(|s| s.bounds).unwrap_or_default(),
        );
        let report = (!effective.is_empty()).then(|| ThresholdReport {
            fixed: fixed.filter(|b| !b.is_empty()),
            seasonal,
            effective,
        });
        (report, effective)
    }

    /// The metric's explanation for a verdict: the check of the last sample with the numbers
    /// each detector used, rebuilt from the state that produced it.
    pub(crate) fn report(&self, metric: &Metric, check: Option<&Check>, at: i64) -> MetricReport {
        let judged = check.filter(|c| {
            matches!(
                c.status,
                Status::Pass | Status::High | Status::Low | Status::Pending
            )
        });
        let value = judged.and_then(|c| c.value);
        let threshold = value.and(
            if metric.thresholds.is_some() || metric.seasonal.is_some() {
                self.bounds(metric, at).0
            } else {
                None
            },
        );
        let baseline = Some(&self.baseline).filter(|b| b.len() > 0);
        let like = self.like_with_like(metric);
        let zscore = value.filter(|_| !like).and_then(|v| {
            let b = baseline.filter(|b| b.moments.count() >= 2)?;
            Some(
                self.zscore_floored(metric.zscore.as_ref()?)
                    .check(&b.moments, metric.direction, v)
                    .1,
            )
        });
        let paired = value
            .and_then(|v| self.paired(metric, v))
            .map(|(_, r, _)| r);
        let comparison = value.filter(|_| !like).and_then(|_| {
            let reference = Some(self.compared_with()).filter(|r| r.len() > 0)?;
            metric
                .comparison
                .as_ref()?
                .report(self.window.as_ref()?, reference, metric.direction)
        });
        MetricReport {
            name: metric.name.clone(),
            direction: metric.direction,
            critical: check.is_some_and(|c| c.critical),
            status: check.map_or(Status::Pending, |c| c.status),
            fired: check
                .map(|c| {
                    DETECTORS
                        .iter()
                        .zip(c.fired)
                        .filter(|(_, f)| *f)
                        .map(|(d, _)| *d)
                        .collect()
                })
                .unwrap_or_default(),
            value: check.and_then(|c| c.value),
            error: check.and_then(|c| c.error.clone()),
            threshold,
            zscore,
            comparison,
            paired,
            bad_samples: self.bad,
            missing_samples: self.missing,
            error_samples: self.errors,
        }
    }
}
