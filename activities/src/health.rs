//! Health sampling: scrape the instances' Prometheus-format `/metrics` at the start and end of
//! a window and turn the counter deltas into [`GroupFigures`].
//!
//! Parsing, deltas and quantiles live in `signalbox_metrics::exposition`, shared with the
//! direct-scrape metric source; this module adapts them to the gate's figures and errors.
//! Only figures leave it: the sampling loop runs inside a heartbeating activity, and just the
//! verdict goes into workflow history.

use signalbox_domain::GroupFigures;
pub use signalbox_metrics::exposition::{Counters, LOG_LINES_TOTAL, REQUEST_DURATION, REQUESTS_TOTAL, delta, parse, quantile_ms};

use crate::substrate::HealthEndpoint;
use crate::{Error, Result};

/// Sums instance deltas into group figures.
pub fn group(deltas: &[Counters]) -> GroupFigures {
    let total = signalbox_metrics::exposition::sum(deltas);
    GroupFigures {
        requests: total.requests.round() as u64,
        errors: total.errors.round() as u64,
        p99_ms: quantile_ms(0.99, &total.buckets),
        log_lines: total.log_lines.round() as u64,
    }
}

/// Scrapes many instances concurrently.
#[derive(Debug, Clone, Default)]
pub struct Scraper {
    inner: signalbox_metrics::Scraper,
}

impl Scraper {
    /// Reads one instance's counters. A source that does not answer is an error, never a pass.
    pub async fn scrape(&self, endpoint: &HealthEndpoint) -> Result<Counters> {
        self.inner.counters(&endpoint.metrics_url).await.map_err(|e| metrics_error(endpoint, e))
    }

    /// Scrapes all `endpoints`, in order; each entry is that instance's result.
    pub async fn scrape_all(&self, endpoints: &[HealthEndpoint]) -> Vec<Result<Counters>> {
        let urls: Vec<String> = endpoints.iter().map(|e| e.metrics_url.clone()).collect();
        let read = self.inner.counters_all(&urls).await;
        endpoints.iter().zip(read).map(|(endpoint, r)| r.map_err(|e| metrics_error(endpoint, e))).collect()
    }
}

fn metrics_error(endpoint: &HealthEndpoint, e: signalbox_metrics::Error) -> Error {
    Error::Metrics { instance: endpoint.instance.clone(), message: e.to_string() }
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

    #[test]
    fn groups_sum_instances() {
        let a = Counters { requests: 10.0, errors: 1.0, buckets: vec![(0.01, 10.0), (f64::INFINITY, 10.0)], log_lines: 1.0 };
        let g = group(&[a.clone(), a]);
        assert_eq!((g.requests, g.errors, g.log_lines), (20, 2, 2));
        assert!(g.p99_ms > 9.0 && g.p99_ms <= 10.0);
    }

    #[test]
    fn an_unreadable_instance_makes_the_window_unreadable() {
        let ok = || Ok(Counters::default());
        let down = || Err(Error::Metrics { instance: "i-0001".into(), message: "refused".into() });
        assert!(window(vec![ok(), ok()], vec![ok(), down()]).is_err());
        assert_eq!(window(vec![ok()], vec![ok()]).unwrap(), GroupFigures::default());
    }
}
