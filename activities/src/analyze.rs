//! `health.analyze`: a batch judged by the full analysis engine. Each window the direct-scrape
//! metric source reads the canary (updated instances) and the stable version (the rest) for the
//! policy's metrics, and the engine's [`Evaluator`] judges the sample; the loop stops at the
//! first decision or after the last window (undecided: inconclusive). The compact
//! [`AnalysisReport`] and the engine's input as it judged it (policy, baselines, samples) leave
//! the activity, into history, where `signalbox backtest export` finds the input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use signalbox_analysis::Decision;
use signalbox_domain::analysis::{self, AnalysisReport, ERROR_RATE, LOG_LINES, P99_MS, Recorder};
use signalbox_domain::contract::{AnalyzeInput, AnalyzeOutput};
use signalbox_metrics::{Group, Instance, LATENCY_P99_MS, Measure, REQUESTS, Scrape, Scraper};
use tracing::info;

use crate::substrate::HealthEndpoint;
use crate::{Error, Result};

/// The demo service's metrics under the names an analysis policy may use.
fn source() -> Scrape {
    let measures = [
        (ERROR_RATE, Measure::ErrorRate),
        (P99_MS, Measure::LatencyMs(0.99)),
        (LATENCY_P99_MS, Measure::LatencyMs(0.99)),
        (LOG_LINES, Measure::LogLinesPerSecond),
        (REQUESTS, Measure::Requests),
    ];
    Scrape::new(Scraper::default(), measures.map(|(n, m)| (n.to_owned(), m)).to_vec())
}

/// A metric-source group of `endpoints`: the scrape source wants `host:port`.
fn group(service: &str, endpoints: Vec<HealthEndpoint>) -> Group {
    let instances = endpoints
        .into_iter()
        .map(|e| {
            let address = e.metrics_url.trim_start_matches("http://").trim_end_matches("/metrics").to_owned();
            Instance { id: e.instance, address }
        })
        .collect();
    Group { service: service.to_owned(), instances, ..Group::default() }
}

/// A policy the engine refuses is bad input: never retried.
fn refused(e: signalbox_analysis::Error) -> Error {
    Error::Invalid(signalbox_domain::Error::invalid("analysis", e.to_string()))
}

/// Runs the analysis of one batch; `progress` counts the windows judged (the heartbeat).
pub async fn analyze(
    fleet: &impl crate::substrate::Substrate,
    input: AnalyzeInput,
    progress: &AtomicUsize,
) -> Result<AnalyzeOutput> {
    if input.dry_run {
        let report = AnalysisReport { decision: Decision::Pass, rule: None, summary: "dry run: not analysed".into(), metrics: vec![] };
        return Ok(AnalyzeOutput { report, input: None });
    }
    let canary = group(&input.service, fleet.health_endpoints(&input.canary).await?);
    let stable = match input.stable.is_empty() {
        true => None,
        false => Some(group(&input.service, fleet.health_endpoints(&input.stable).await?)),
    };
    let baselines = analysis::baselines(&input.policy, &input.baseline, input.baseline_span_ms);
    let mut recorder = Recorder::new(input.policy.clone(), baselines).map_err(refused)?;
    let source = source();
    source.prime(&canary).await;
    if let Some(stable) = &stable {
        source.prime(stable).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(input.window_ms));
    tick.tick().await;
    for n in 1..=input.windows as usize {
        tick.tick().await;
        let sample = signalbox_metrics::sample(&source, &input.policy, &canary, stable.as_ref(), SystemTime::now()).await;
        let decision = recorder.push(sample).map_err(refused)?;
        progress.store(n, Ordering::Relaxed);
        if decision != Decision::Continue {
            break;
        }
    }
    let (verdict, judged) = recorder.finish();
    let report = AnalysisReport::of(&verdict);
    info!(decision = ?report.decision, summary = %report.summary, samples = judged.timestamps.len(), "batch analysed");
    Ok(AnalyzeOutput { report, input: Some(judged) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_address_the_instances_metrics() {
        let g = group("checkout", vec![HealthEndpoint { instance: "i-1".into(), metrics_url: "http://127.0.0.1:9001/metrics".into() }]);
        assert_eq!(g.instances, vec![Instance { id: "i-1".into(), address: "127.0.0.1:9001".into() }]);
    }
}
