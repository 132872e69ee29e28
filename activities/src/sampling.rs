//! Health sampling, one loop for every strategy: the pre-deploy baseline, and each step's
//! judgement by the analysis engine (`health.analyze`), reading the updated instances against
//! the others window by window, optionally under a verification load driven straight at both
//! (for instances the balancer sends nothing). The first-version gate's activities of older
//! runs (`health.evaluate`, `health.verify`) are this same loop under the gate preset.
//!
//! Only verdicts leave: the loop runs inside a heartbeating activity, and just the verdict
//! (with what the engine judged) goes into workflow history.

use std::time::{Duration, SystemTime};

use signalbox_analysis::{Decision, Sample};
use signalbox_contract::activities::{AaPeriodInput, AnalyzeInput, AnalyzeOutput, BaselineInput, EvaluateInput, VerifyInput};
use signalbox_domain::analysis::{self, AnalysisReport, Recorder, gate_policy};
use signalbox_domain::{GroupFigures, HealthPolicy, HealthReport};
use signalbox_metrics::exposition::{Counters, delta, quantile_ms, sum};
use signalbox_metrics::{Cohort, Instance, Scrape, Scraper};
use signalbox_substrate::{HealthEndpoint, Substrate};
use tokio::task::{JoinHandle, JoinSet};
use tracing::info;

use crate::heartbeat::Sampled;
use crate::{Error, Result};

/// A metric-source cohort of `endpoints`: the scrape source wants `host:port`.
fn cohort(service: &str, endpoints: &[HealthEndpoint]) -> Cohort {
    let instances = endpoints
        .iter()
        .map(|e| {
            let address = e.metrics_url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
            Instance { id: e.instance.clone(), address }
        })
        .collect();
    Cohort { service: service.to_owned(), instances, ..Cohort::default() }
}

/// A policy the engine refuses is bad input: never retried.
fn refused(e: signalbox_analysis::Error) -> Error {
    Error::Invalid(signalbox_domain::Error::invalid("analysis", e.to_string()))
}

/// A paced stream of `GET` requests over some instances' service URLs; stopped when dropped.
struct Load(JoinHandle<()>);

impl Load {
    fn start(http: reqwest::Client, urls: Vec<String>, rps: u32) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
            let mut in_flight = JoinSet::new();
            for url in urls.iter().cycle() {
                tick.tick().await;
                while in_flight.try_join_next().is_some() {}
                // Answers are not judged here: the instances' own metrics are, like live traffic's.
                in_flight.spawn(http.get(url).send());
            }
        }))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads metrics and drives verification loads.
#[derive(Debug, Clone)]
pub struct Sampler {
    scraper: Scraper,
    http: reqwest::Client,
}

impl Default for Sampler {
    fn default() -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("a plain HTTP client builds");
        Self { scraper: Scraper::default(), http }
    }
}

impl Sampler {
    /// What the instances did over one span before anything changed. The baseline is a
    /// reference, not a gate: instances that cannot be read are left out.
    pub async fn baseline(&self, substrate: &dyn Substrate, input: &BaselineInput) -> Result<GroupFigures> {
        if input.dry_run {
            return Ok(GroupFigures::default());
        }
        let urls: Vec<String> = substrate.health_endpoints(&input.instances).await?.into_iter().map(|e| e.metrics_url).collect();
        let span = Duration::from_millis(input.policy.sample_interval_ms.saturating_mul(u64::from(input.policy.consecutive_bad_samples)));
        let before = self.scraper.counters_all(&urls).await;
        let mut tick = tokio::time::interval(span);
        tick.tick().await;
        tick.tick().await;
        let after = self.scraper.counters_all(&urls).await;
        let deltas: Vec<Counters> = before.into_iter().zip(after).filter_map(|(b, a)| Some(delta(&b.ok()?, &a.ok()?))).collect();
        Ok(figures(&deltas))
    }

    /// Judges one step: each window the policy's metrics of the canary and of the stable
    /// instances, fed to the engine until it decides or the windows run out (undecided:
    /// inconclusive). `progress` counts the windows judged.
    pub async fn analyze(&self, substrate: &dyn Substrate, input: AnalyzeInput, progress: &Sampled) -> Result<AnalyzeOutput> {
        if input.dry_run {
            let report = AnalysisReport { decision: Decision::Pass, rule: None, summary: "dry run: not analysed".into(), metrics: vec![] };
            return Ok(AnalyzeOutput { report, input: None });
        }
        if !substrate.has_metrics() {
            return by_platform(substrate, &input, progress).await;
        }
        let canary_endpoints = substrate.health_endpoints(&input.canary).await?;
        let stable_endpoints = substrate.health_endpoints(&input.stable).await?;
        let _load = input.load_rps.map(|rps| self.load(&canary_endpoints, &stable_endpoints, rps));
        let canary = cohort(&input.service, &canary_endpoints);
        let stable = (!stable_endpoints.is_empty()).then(|| cohort(&input.service, &stable_endpoints));
        let baselines = analysis::aa_baselines(&input.policy, &input.aa)
            .unwrap_or_else(|| analysis::baselines(&input.policy, &input.baseline, input.baseline_span_ms));
        let mut recorder = Recorder::new(input.policy.clone(), baselines).map_err(refused)?;
        let source = Scrape::new(self.scraper.clone(), Scrape::default_measures());
        // The windows keep their pace from here, reads included: the first one closes a window
        // after the priming reads began, not after they ended.
        let mut tick = tokio::time::interval(Duration::from_millis(input.window_ms));
        tick.tick().await;
        let prime_stable = async {
            if let Some(stable) = &stable {
                source.prime(stable).await;
            }
        };
        futures::join!(source.prime(&canary), prime_stable);
        for n in 1..=input.windows as usize {
            tick.tick().await;
            let sample = signalbox_metrics::sample(&source, &input.policy, &canary, stable.as_ref(), SystemTime::now()).await;
            let decision = recorder.push(sample).map_err(refused)?;
            progress.record(n, recorder.passes_needed());
            if decision != Decision::Continue {
                break;
            }
        }
        let (verdict, judged) = recorder.finish();
        let report = AnalysisReport::of(&verdict);
        info!(decision = ?report.decision, summary = %report.summary, samples = judged.timestamps.len(), "step analysed");
        Ok(AnalyzeOutput { report, input: Some(judged) })
    }

    /// `rps` requests per second at each instance of both groups, until dropped.
    fn load(&self, canary: &[HealthEndpoint], stable: &[HealthEndpoint], rps: u32) -> Load {
        let urls: Vec<String> = canary.iter().chain(stable).map(|e| e.service_url.clone()).collect();
        let total = rps.saturating_mul(urls.len() as u32);
        Load::start(self.http.clone(), urls, total)
    }

    /// The live A/A period: the canary-to-be and the rest read side by side, one sample per
    /// window, before anything changes (under the step's verification load, if it has one).
    /// `progress` counts the windows read.
    pub async fn aa_period(&self, substrate: &dyn Substrate, input: &AaPeriodInput, progress: &Sampled) -> Result<Vec<Sample>> {
        if input.dry_run || input.stable.is_empty() {
            return Ok(Vec::new());
        }
        let canary_endpoints = substrate.health_endpoints(&input.canary).await?;
        let stable_endpoints = substrate.health_endpoints(&input.stable).await?;
        let _load = input.load_rps.map(|rps| self.load(&canary_endpoints, &stable_endpoints, rps));
        let canary = cohort(&input.service, &canary_endpoints);
        let stable = cohort(&input.service, &stable_endpoints);
        let source = Scrape::new(self.scraper.clone(), Scrape::default_measures());
        let mut tick = tokio::time::interval(Duration::from_millis(input.window_ms));
        tick.tick().await;
        futures::join!(source.prime(&canary), source.prime(&stable));
        let mut samples = Vec::with_capacity(input.windows as usize);
        for n in 1..=input.windows as usize {
            tick.tick().await;
            samples.push(signalbox_metrics::sample(&source, &input.policy, &canary, Some(&stable), SystemTime::now()).await);
            progress.record(n, None);
        }
        Ok(samples)
    }

    /// The first-version gate's `health.evaluate` of older runs: the engine under the gate
    /// preset, answered in the gate's report.
    pub async fn evaluate(&self, substrate: &dyn Substrate, input: EvaluateInput, progress: &Sampled) -> Result<HealthReport> {
        let analyze = gate_input(&input.policy, input.canary, input.control, input.baseline, None, input.dry_run, &input.fleet);
        let out = self.analyze(substrate, analyze, progress).await?;
        Ok(HealthReport { verdict: out.report.decision, summary: out.report.summary, baseline: input.baseline, samples: Vec::new() })
    }

    /// The legacy blue/green workflow's `health.verify`: the gate preset under a verification
    /// load on both sets.
    pub async fn verify(&self, substrate: &dyn Substrate, input: VerifyInput, progress: &Sampled) -> Result<HealthReport> {
        let analyze =
            gate_input(&input.policy, input.instances, input.reference, GroupFigures::default(), Some(input.rps_per_instance), false, &input.fleet);
        let out = self.analyze(substrate, analyze, progress).await?;
        Ok(HealthReport { verdict: out.report.decision, summary: out.report.summary, baseline: GroupFigures::default(), samples: Vec::new() })
    }
}

/// A `health.analyze` input under the gate preset of `policy`, for the activities older runs
/// schedule (`health.evaluate`, `health.verify`).
fn gate_input(
    policy: &HealthPolicy,
    canary: Vec<String>,
    stable: Vec<String>,
    baseline: GroupFigures,
    load_rps: Option<u32>,
    dry_run: bool,
    fleet: &signalbox_domain::Target,
) -> AnalyzeInput {
    let preset = gate_policy(policy);
    AnalyzeInput {
        fleet: fleet.clone(),
        service: String::new(),
        canary,
        stable,
        baseline,
        baseline_span_ms: policy.sample_interval_ms.saturating_mul(u64::from(policy.consecutive_bad_samples)),
        // The gate sampled `samples` windows, and the runs that schedule it gave it time for that
        // many and one more: the engine may take no more, so it ends inconclusive rather than late.
        windows: policy.samples.max(1),
        policy: preset,
        window_ms: policy.sample_interval_ms,
        dry_run,
        load_rps,
        aa: Vec::new(),
    }
}

/// Sums instance deltas into group figures.
pub fn figures(deltas: &[Counters]) -> GroupFigures {
    let total = sum(deltas);
    GroupFigures {
        requests: total.requests.round() as u64,
        errors: total.errors.round() as u64,
        p99_ms: quantile_ms(0.99, &total.buckets),
        log_lines: total.log_lines.round() as u64,
    }
}


/// How long the platform may go unread while a step is judged by it (a control plane
/// restarting) before the judgement gives up; within the activity's slack over its windows.
const PLATFORM_UNREAD_AT_MOST: Duration = Duration::from_secs(45);

/// Judges a step of a target without metrics by what its platform says of the canary, once per
/// window: the first unhealthy reading fails the step; healthy through every window passes. A
/// window the platform cannot be read in does not count, for up to [`PLATFORM_UNREAD_AT_MOST`].
async fn by_platform(substrate: &dyn Substrate, input: &AnalyzeInput, progress: &Sampled) -> Result<AnalyzeOutput> {
    let mut tick = tokio::time::interval(Duration::from_millis(input.window_ms));
    tick.tick().await;
    let mut unread_since: Option<tokio::time::Instant> = None;
    let mut n = 0;
    while n < input.windows as usize {
        tick.tick().await;
        match substrate.platform_health(&input.canary).await {
            Ok(Some(reason)) => {
                let summary = format!("fail: the platform reports the canary unhealthy in window {}: {reason}", n + 1);
                info!(%summary, "step judged by its platform");
                return Ok(AnalyzeOutput { report: AnalysisReport { decision: Decision::Fail, rule: None, summary, metrics: vec![] }, input: None });
            }
            Ok(None) => {
                unread_since = None;
                n += 1;
                progress.record(n, Some(input.windows.saturating_sub(n as u32)));
            }
            Err(e) if e.is_retryable() && unread_since.is_none_or(|t| t.elapsed() < PLATFORM_UNREAD_AT_MOST) => {
                tracing::warn!(error = %e, "the platform cannot be read: this window does not count");
                unread_since.get_or_insert_with(tokio::time::Instant::now);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let summary = format!("pass: the platform reports every canary instance healthy in {} windows (the target has no metrics to analyse)", input.windows);
    Ok(AnalyzeOutput { report: AnalysisReport { decision: Decision::Pass, rule: None, summary, metrics: vec![] }, input: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_sum_instances() {
        let a = Counters { requests: 10.0, errors: 1.0, buckets: vec![(0.01, 10.0), (f64::INFINITY, 10.0)], log_lines: 1.0 };
        let g = figures(&[a.clone(), a]);
        assert_eq!((g.requests, g.errors, g.log_lines), (20, 2, 2));
        assert!(g.p99_ms > 9.0 && g.p99_ms <= 10.0);
    }

    #[test]
    fn cohorts_address_the_instances_metrics() {
        let e = HealthEndpoint { instance: "i-1".into(), metrics_url: "http://127.0.0.1:9001/metrics".into(), service_url: "http://127.0.0.1:9001/".into() };
        assert_eq!(cohort("checkout", &[e]).instances, vec![Instance { id: "i-1".into(), address: "127.0.0.1:9001".into() }]);
    }
}
