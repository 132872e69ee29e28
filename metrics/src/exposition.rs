//! The demo service's Prometheus text exposition, read into counters: parsing, deltas between
//! two scrapes, sums over instances and histogram quantiles. Pure; the deploy's health gate
//! and the direct-scrape [`Source`](crate::Source) share it.

use crate::{Error, Result};

/// Requests served, by status code (`code` label).
pub const REQUESTS_TOTAL: &str = "signalbox_demo_requests_total";
/// Request latency histogram, in seconds.
pub const REQUEST_DURATION: &str = "signalbox_demo_request_duration_seconds";
/// Log lines written.
pub const LOG_LINES_TOTAL: &str = "signalbox_demo_log_lines_total";
/// Constant 1, labelled with the `service`, `version` and `digest` an instance runs.
pub const BUILD_INFO: &str = "signalbox_demo_build_info";

/// The conventional names a user's build may expose instead (the Prometheus client libraries'
/// HTTP metrics): requests by status in `code` or `status`, latency in seconds, log lines.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Request latency histogram of a user's build, in seconds.
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Log lines a user's build wrote.
pub const HTTP_LOG_LINES_TOTAL: &str = "log_lines_total";

/// Cumulative counters of one instance at one moment, or what happened between two moments.
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
pub fn parse(text: &str) -> Result<Counters> {
    use prometheus_parse::{Scrape, Value};
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|e| Error::answer("exposition", e.to_string()))?;
    let mut c = Counters::default();
    for s in scrape.samples {
        match (s.metric.as_str(), &s.value) {
            (REQUESTS_TOTAL | HTTP_REQUESTS_TOTAL, Value::Counter(v) | Value::Untyped(v)) => {
                c.requests += v;
                if s.labels
                    .get("code")
                    .or_else(|| s.labels.get("status"))
                    .is_some_and(|code| code.starts_with('5'))
                {
                    c.errors += v;
                }
            }
            (REQUEST_DURATION | HTTP_REQUEST_DURATION, Value::Histogram(hs)) => {
                // Series of one histogram by label (path, method) add up bucket by bucket.
                let mut buckets: Vec<(f64, f64)> = hs.iter().map(|h| (h.less_than, h.count)).collect();
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                c.buckets = if c.buckets.is_empty() { buckets } else { add_buckets(&c.buckets, &buckets) };
            }
            (LOG_LINES_TOTAL | HTTP_LOG_LINES_TOTAL, Value::Counter(v) | Value::Untyped(v)) => c.log_lines += v,
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
            let prev = if reset {
                0.0
            } else {
                before
                    .buckets
                    .iter()
                    .find(|b| b.0 == le)
                    .map_or(0.0, |b| b.1)
            };
            (le, d(prev, n))
        })
        .collect();
    if reset {
        return Counters {
            buckets,
            ..after.clone()
        };
    }
    Counters {
        requests: d(before.requests, after.requests),
        errors: d(before.errors, after.errors),
        buckets,
        log_lines: d(before.log_lines, after.log_lines),
    }
}

/// Sums instances' counters (or deltas) into one group's, histograms bucket by bucket.
pub fn sum<'a>(counters: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut total = Counters::default();
    for c in counters {
        total.requests += c.requests;
        total.errors += c.errors;
        total.log_lines += c.log_lines;
        for &(le, n) in &c.buckets {
            match total.buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += n,
                None => total.buckets.push((le, n)),
            }
        }
    }
    total.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    total
}

/// Two cumulative histograms added bucket by bucket (bounds either lacks count as 0 there).
fn add_buckets(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut total = a.to_vec();
    for &(le, n) in b {
        match total.iter_mut().find(|t| t.0 == le) {
            Some(t) => t.1 += n,
            None => total.push((le, n)),
        }
    }
    total.sort_by(|x, y| x.0.total_cmp(&y.0));
    total
}

/// The `q` quantile in milliseconds of cumulative buckets, interpolated linearly inside the
/// bucket as `histogram_quantile` does; an observation past the last finite bound counts as
/// that bound. 0 for an empty histogram.
pub fn quantile_ms(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
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
            let within = if n > prev.1 {
                (rank - prev.1) / (n - prev.1)
            } else {
                1.0
            };
            return (prev.0 + (le - prev.0) * within) * 1000.0;
        }
        prev = (le, n);
    }
    prev.0 * 1000.0
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
        let buckets = [(0.01, 50.0), (0.1, 98.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile_ms(0.99, &buckets), 100.0);
        // rank 49.5 of 100 inside the first bucket [0, 10 ms): 9.9 ms.
        let buckets = [(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile_ms(0.495, &buckets) - 9.9).abs() < 1e-9);
        assert_eq!(quantile_ms(0.99, &[]), 0.0);
    }

    #[test]
    fn deltas_handle_counter_resets() {
        let c = |requests, errors, log_lines| Counters {
            requests,
            errors,
            buckets: vec![(f64::INFINITY, requests)],
            log_lines,
        };
        let (before, after) = (c(100.0, 10.0, 5.0), c(150.0, 11.0, 9.0));
        let d = delta(&before, &after);
        assert_eq!(
            (d.requests, d.errors, d.buckets[0].1, d.log_lines),
            (50.0, 1.0, 50.0, 4.0)
        );
        let restarted = c(7.0, 1.0, 1.0);
        assert_eq!(delta(&after, &restarted), restarted);
    }

    #[test]
    fn a_user_build_is_read_by_the_conventional_http_names() {
        let text = "# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\",path=\"/\"} 80\nhttp_requests_total{status=\"503\",path=\"/\"} 20\n# TYPE http_request_duration_seconds histogram\nhttp_request_duration_seconds_bucket{path=\"/\",le=\"0.05\"} 60\nhttp_request_duration_seconds_bucket{path=\"/\",le=\"+Inf\"} 70\nhttp_request_duration_seconds_sum{path=\"/\"} 1\nhttp_request_duration_seconds_count{path=\"/\"} 70\nhttp_request_duration_seconds_bucket{path=\"/a\",le=\"0.05\"} 20\nhttp_request_duration_seconds_bucket{path=\"/a\",le=\"+Inf\"} 30\nhttp_request_duration_seconds_sum{path=\"/a\"} 1\nhttp_request_duration_seconds_count{path=\"/a\"} 30\n";
        let c = parse(text).unwrap();
        assert_eq!((c.requests, c.errors), (100.0, 20.0));
        assert_eq!(c.buckets, vec![(0.05, 80.0), (f64::INFINITY, 100.0)], "the paths' histograms add up");
    }

    #[test]
    fn sums_add_instances_bucket_by_bucket() {
        let a = Counters {
            requests: 10.0,
            errors: 1.0,
            buckets: vec![(0.01, 10.0), (f64::INFINITY, 10.0)],
            log_lines: 1.0,
        };
        let b = Counters {
            buckets: vec![(0.01, 4.0), (f64::INFINITY, 10.0)],
            ..a.clone()
        };
        let s = sum([&a, &b]);
        assert_eq!((s.requests, s.errors, s.log_lines), (20.0, 2.0, 2.0));
        assert_eq!(s.buckets, vec![(0.01, 14.0), (f64::INFINITY, 20.0)]);
    }
}
