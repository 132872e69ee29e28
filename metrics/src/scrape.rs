//! The embedded default source: scrape the instances' own `/metrics` and measure what
//! happened between two scrapes. Nothing to run besides the instances, but it can only read
//! the present: windows are the time between reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::{StreamExt, stream};
use signalbox_analysis::Observation;

use crate::exposition::{self, Counters, delta, quantile_ms};
use crate::source::{Cohort, ERROR_RATE, LATENCY_P99_MS, LOG_LINES, LOG_LINES_COUNT, P99_MS, REQUESTS, Source};
use crate::{Error, Result};

/// Reads instances' Prometheus-format `/metrics`, many at once.
#[derive(Debug, Clone)]
pub struct Scraper {
    http: reqwest::Client,
}

impl Default for Scraper {
    /// A scraper giving each instance 2 seconds to answer.
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl Scraper {
    /// A scraper giving each instance `timeout` to answer.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build();
        Self {
            http: http.expect("a plain HTTP client builds"),
        }
    }

    /// Reads the counters at `url`. A source that does not answer is an error, never a pass.
    pub async fn counters(&self, url: &str) -> Result<Counters> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::http(url, &e))?;
        if !resp.status().is_success() {
            return Err(Error::answer(url, format!("HTTP {}", resp.status())));
        }
        let text = resp.text().await.map_err(|e| Error::http(url, &e))?;
        exposition::parse(&text).map_err(|e| Error::answer(url, e.to_string()))
    }

    /// Reads every url in `urls`, concurrently; each entry is that url's result, in order.
    pub async fn counters_all(&self, urls: &[String]) -> Vec<Result<Counters>> {
        // Owned futures: a stream of futures borrowing `urls` is not `Send` enough for an
        // `async_trait` caller.
        let reads = urls.iter().cloned().map(|url| {
            let scraper = self.clone();
            async move { scraper.counters(&url).await }
        });
        stream::iter(reads).buffered(64).collect().await
    }
}

/// What [`Scrape`] computes from a group's counters over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// 5xx responses per request; missing without requests.
    ErrorRate,
    /// A latency quantile (0-1) in milliseconds; missing without requests.
    LatencyMs(f64),
    /// Requests served in the window.
    Requests,
    /// Log lines written per second.
    LogLinesPerSecond,
    /// Log lines written in the window: a count, what a `count` kind judges.
    LogLines,
}

impl Measure {
    fn of(self, c: &Counters, window: Duration) -> Observation {
        let has_requests = c.requests > 0.0;
        match self {
            Measure::ErrorRate if has_requests => Observation::Value(c.errors / c.requests),
            Measure::LatencyMs(q) if has_requests => Observation::Value(quantile_ms(q, &c.buckets)),
            Measure::ErrorRate | Measure::LatencyMs(_) => Observation::Missing,
            Measure::Requests => Observation::Value(c.requests),
            Measure::LogLinesPerSecond if window > Duration::ZERO => {
                Observation::Value(c.log_lines / window.as_secs_f64())
            }
            Measure::LogLinesPerSecond => Observation::Missing,
            Measure::LogLines => Observation::Value(c.log_lines),
        }
    }
}

/// Direct scrape as a [`Source`]: each read scrapes the group's instances and measures the
/// window since the previous read of each of them.
///
/// It reads the present only: a read whose `at` lies more than `max_lag` away from now is an
/// error, not a reading of the wrong time. The first read of an instance opens its window, so
/// its metrics are missing; [`Scrape::prime`] opens windows ahead of the first sample. Any
/// instance that cannot be read makes the whole group's reading an error: a group partly
/// read could hide exactly the failing instances.
#[derive(Debug)]
pub struct Scrape {
    scraper: Scraper,
    measures: Vec<(String, Measure)>,
    max_lag: Duration,
    /// Each instance's last counters and when they were read, by address.
    last: Mutex<HashMap<String, (Counters, SystemTime)>>,
}

impl Default for Scrape {
    /// [`Scrape::default_measures`] with a 2-second scrape timeout.
    fn default() -> Self {
        Self::new(Scraper::default(), Self::default_measures())
    }
}

impl Scrape {
    /// The demo service's metrics: [`ERROR_RATE`], [`P99_MS`] (also as [`LATENCY_P99_MS`]),
    /// [`LOG_LINES`] and [`REQUESTS`].
    pub fn default_measures() -> Vec<(String, Measure)> {
        [
            (ERROR_RATE, Measure::ErrorRate),
            (P99_MS, Measure::LatencyMs(0.99)),
            (LATENCY_P99_MS, Measure::LatencyMs(0.99)),
            (LOG_LINES, Measure::LogLinesPerSecond),
            (LOG_LINES_COUNT, Measure::LogLines),
            (REQUESTS, Measure::Requests),
        ]
        .map(|(name, m)| (name.to_owned(), m))
        .to_vec()
    }

    /// A source reading `measures`, by metric name, through `scraper`.
    pub fn new(scraper: Scraper, measures: Vec<(String, Measure)>) -> Self {
        Self {
            scraper,
            measures,
            max_lag: Duration::from_secs(10),
            last: Mutex::default(),
        }
    }

    /// Opens the windows of `group`'s instances now; an instance that cannot be read is left
    /// for the first read to open.
    pub async fn prime(&self, group: &Cohort) {
        let urls = urls(group);
        let read = self.scraper.counters_all(&urls).await;
        let now = SystemTime::now();
        let mut last = self.last.lock().expect("no panics while holding the lock");
        for (url, counters) in urls.into_iter().zip(read) {
            if let Ok(c) = counters {
                last.insert(url, (c, now));
            }
        }
    }

    /// The group's counters over the window ending now, and that window's length; `None`
    /// when some instance's window only opens with this read.
    async fn window(&self, group: &Cohort) -> Result<Option<(Counters, Duration)>> {
        let urls = urls(group);
        let read = self.scraper.counters_all(&urls).await;
        let now = SystemTime::now();
        let mut last = self.last.lock().expect("no panics while holding the lock");
        let mut first_error = None;
        let mut deltas = Vec::with_capacity(urls.len());
        let mut opened = now;
        for (url, counters) in urls.into_iter().zip(read) {
            match counters {
                Ok(after) => {
                    if let Some((before, at)) = last.get(&url) {
                        deltas.push(delta(before, &after));
                        opened = opened.min(*at);
                    }
                    last.insert(url, (after, now));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if deltas.len() < group.instances.len() || group.instances.is_empty() {
            return Ok(None);
        }
        let span = now.duration_since(opened).unwrap_or_default();
        Ok(Some((exposition::sum(&deltas), span)))
    }
}

fn urls(group: &Cohort) -> Vec<String> {
    group
        .instances
        .iter()
        .map(|i| format!("http://{}/metrics", i.address))
        .collect()
}

#[async_trait]
impl Source for Scrape {
    async fn read(&self, metrics: &[&str], group: &Cohort, at: SystemTime) -> Vec<Observation> {
        let lag = match SystemTime::now().duration_since(at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        let window = if lag > self.max_lag {
            Err(format!(
                "a direct scrape reads only the present; asked for {lag:?} away from now"
            ))
        } else {
            self.window(group).await.map_err(|e| e.to_string())
        };
        metrics
            .iter()
            .map(|name| {
                let Some((_, measure)) = self.measures.iter().find(|(n, _)| n == name) else {
                    return Observation::Error {
                        error: Error::UnknownMetric((*name).to_owned()).to_string(),
                    };
                };
                match &window {
                    Ok(Some((counters, span))) => measure.of(counters, *span),
                    Ok(None) => Observation::Missing,
                    Err(error) => Observation::Error {
                        error: error.clone(),
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_without_requests_are_missing_not_zero() {
        let idle = Counters {
            buckets: vec![(f64::INFINITY, 0.0)],
            ..Counters::default()
        };
        let w = Duration::from_secs(1);
        assert_eq!(Measure::ErrorRate.of(&idle, w), Observation::Missing);
        assert_eq!(Measure::LatencyMs(0.99).of(&idle, w), Observation::Missing);
        assert_eq!(Measure::Requests.of(&idle, w), Observation::Value(0.0));
        let busy = Counters {
            requests: 40.0,
            errors: 10.0,
            log_lines: 80.0,
            ..idle
        };
        assert_eq!(Measure::ErrorRate.of(&busy, w), Observation::Value(0.25));
        assert_eq!(
            Measure::LogLinesPerSecond.of(&busy, Duration::from_secs(2)),
            Observation::Value(40.0)
        );
        // The count a `count` kind judges: the window's lines, whatever its length.
        assert_eq!(Measure::LogLines.of(&busy, Duration::from_secs(2)), Observation::Value(80.0));
    }
}
