//! Health sampling: scrape the instances' Prometheus-format `/metrics` at the start and end of
//! a window and turn the counter deltas into [`GroupFigures`].
//!
//! Only figures leave this module: the sampling loop runs inside a heartbeating activity, and
//! just the verdict goes into workflow history.

use std::time::Duration;

use futures::{StreamExt, stream};
use signalbox_domain::GroupFigures;

use crate::substrate::HealthEndpoint;
use crate::{Error, Result};

/// Requests served, by status code.
pub const REQUESTS_TOTAL: &str = "signalbox_demo_requests_total";
/// Request latency histogram, in seconds.
pub const REQUEST_DURATION: &str = "signalbox_demo_request_duration_seconds";
/// Log lines written.
pub const LOG_LINES_TOTAL: &str = "signalbox_demo_log_lines_total";

/// Cumulative counters of one instance at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests served.
    pub requests: f64,
    /// Requests answered 5xx.
    pub errors: f64,
    /// Latency histogram: (upper bound in seconds, cumulative count), ascending, +Inf last.
    pub buckets: Vec<(f64, f64)>,
    /// Log lines written.
    pub log_lines: f64,
}

/// Parses Prometheus text exposition into [`Counters`].
pub fn parse(text: &str) -> std::result::Result<Counters, String> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).map_err(|e| e.to_string())?;
    let mut c = Counters::default();
    for s in scrape.samples {
        match (s.metric.as_str(), &s.value) {
            (REQUESTS_TOTAL, prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
                c.requests += v;
                if s.labels.get("code").is_some_and(|code| code.starts_with('5')) {
                    c.errors += v;
                }
            }
            (REQUEST_DURATION, prometheus_parse::Value::Histogram(hs)) => {
                c.buckets = hs.iter().map(|h| (h.less_than, h.count)).collect();
                c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            (LOG_LINES_TOTAL, prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => c.log_lines += v,
            _ => {}
        }
    }
    Ok(c)
}

/// What happened between two scrapes. A counter that went down was reset by a restart, so its
/// new value is all that happened since (as Prometheus' `rate` treats it).
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    let d = |a: f64, b: f64| if b >= a { b - a } else { b };
    let reset = after.requests < before.requests;
    let buckets = after
        .buckets
        .iter()
        .map(|&(le, n)| {
            let prev = if reset { 0.0 } else { before.buckets.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1) };
            (le, d(prev, n))
        })
        .collect();
    if reset {
        return Counters { buckets, ..after.clone() };
    }
    Counters { requests: d(before.requests, after.requests), errors: d(before.errors, after.errors), buckets, log_lines: d(before.log_lines, after.log_lines) }
}

/// The `q` quantile in milliseconds of cumulative buckets, interpolated linearly inside the
/// bucket as `histogram_quantile` does; an observation past the last finite bound counts as
/// that bound.
pub fn quantile_ms(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return prev.0 * 1000.0;
            }
            let within = if n > prev.1 { (rank - prev.1) / (n - prev.1) } else { 1.0 };
            return (prev.0 + (le - prev.0) * within) * 1000.0;
        }
        prev = (le, n);
    }
    prev.0 * 1000.0
}

/// Sums instance deltas into group figures.
pub fn group(deltas: &[Counters]) -> GroupFigures {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for d in deltas {
        for &(le, n) in &d.buckets {
            match buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += n,
                None => buckets.push((le, n)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    GroupFigures {
        requests: deltas.iter().map(|d| d.requests).sum::<f64>().round() as u64,
        errors: deltas.iter().map(|d| d.errors).sum::<f64>().round() as u64,
        p99_ms: quantile_ms(0.99, &buckets),
        log_lines: deltas.iter().map(|d| d.log_lines).sum::<f64>().round() as u64,
    }
}

/// Scrapes many instances concurrently.
#[derive(Debug, Clone)]
pub struct Scraper {
    http: reqwest::Client,
}

impl Default for Scraper {
    fn default() -> Self {
        Self { http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("a plain HTTP client builds") }
    }
}

impl Scraper {
    /// Reads one instance's counters. A source that does not answer is an error, never a pass.
    pub async fn scrape(&self, endpoint: &HealthEndpoint) -> Result<Counters> {
        let err = |message: String| Error::Metrics { instance: endpoint.instance.clone(), message };
        let resp = self.http.get(&endpoint.metrics_url).send().await.map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let text = resp.text().await.map_err(|e| err(e.to_string()))?;
        parse(&text).map_err(err)
    }

    /// Scrapes all `endpoints`, in order; each entry is that instance's result.
    pub async fn scrape_all(&self, endpoints: &[HealthEndpoint]) -> Vec<Result<Counters>> {
        let scrapes = endpoints.iter().cloned().map(|e| {
            let scraper = self.clone();
            async move { scraper.scrape(&e).await }
        });
        stream::iter(scrapes).buffered(64).collect().await
    }
}

/// Group figures over one window from scrapes at its start and end; the first instance that
/// could not be read at either end makes the whole group unreadable.
pub fn window(before: Vec<Result<Counters>>, after: Vec<Result<Counters>>) -> Result<GroupFigures> {
    let mut deltas = Vec::with_capacity(after.len());
    for (b, a) in before.into_iter().zip(after) {
        deltas.push(delta(&b?, &a?));
    }
    Ok(group(&deltas))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP signalbox_demo_requests_total Requests.\n# TYPE signalbox_demo_requests_total counter\nsignalbox_demo_requests_total{code=\"200\"} 90\nsignalbox_demo_requests_total{code=\"500\"} 10\n# HELP signalbox_demo_request_duration_seconds Latency.\n# TYPE signalbox_demo_request_duration_seconds histogram\nsignalbox_demo_request_duration_seconds_bucket{le=\"0.01\"} 50\nsignalbox_demo_request_duration_seconds_bucket{le=\"0.1\"} 98\nsignalbox_demo_request_duration_seconds_bucket{le=\"+Inf\"} 100\nsignalbox_demo_request_duration_seconds_sum 3\nsignalbox_demo_request_duration_seconds_count 100\n# TYPE signalbox_demo_log_lines_total counter\nsignalbox_demo_log_lines_total 200\n";

    #[test]
    fn parses_requests_errors_histogram_and_logs() {
        let c = parse(TEXT).unwrap();
        assert_eq!((c.requests, c.errors, c.log_lines), (100.0, 10.0, 200.0));
        assert_eq!(c.buckets.len(), 3);
        assert!(c.buckets[2].0.is_infinite());
    }

    #[test]
    fn p99_interpolates_like_histogram_quantile() {
        // rank 99 of 100 falls past the last finite bound: reported as that bound.
        assert_eq!(quantile_ms(0.99, &[(0.01, 50.0), (0.1, 98.0), (f64::INFINITY, 100.0)]), 100.0);
        // rank 49.5 of 100 inside the first bucket [0, 10 ms): 9.9 ms.
        assert!((quantile_ms(0.495, &[(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)]) - 9.9).abs() < 1e-9);
        assert_eq!(quantile_ms(0.99, &[]), 0.0);
    }

    #[test]
    fn deltas_handle_counter_resets() {
        let before = Counters { requests: 100.0, errors: 10.0, buckets: vec![(f64::INFINITY, 100.0)], log_lines: 5.0 };
        let after = Counters { requests: 150.0, errors: 11.0, buckets: vec![(f64::INFINITY, 150.0)], log_lines: 9.0 };
        let d = delta(&before, &after);
        assert_eq!((d.requests, d.errors, d.buckets[0].1, d.log_lines), (50.0, 1.0, 50.0, 4.0));
        let restarted = Counters { requests: 7.0, errors: 1.0, buckets: vec![(f64::INFINITY, 7.0)], log_lines: 1.0 };
        assert_eq!(delta(&after, &restarted), restarted);
    }

    #[test]
    fn groups_sum_instances() {
        let a = Counters { requests: 10.0, errors: 1.0, buckets: vec![(0.01, 10.0), (f64::INFINITY, 10.0)], log_lines: 1.0 };
        let g = group(&[a.clone(), a]);
        assert_eq!((g.requests, g.errors, g.log_lines), (20, 2, 2));
        assert!(g.p99_ms > 9.0 && g.p99_ms <= 10.0);
    }
}
