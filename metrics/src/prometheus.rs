//! The Prometheus HTTP API as a source: instant queries (`/api/v1/query`) for samples, range
//! queries (`/api/v1/query_range`) for baselines and history, each metric a PromQL
//! [`Template`] filled from the group being read.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;
use serde::Deserialize;
use signalbox_analysis::{Observation, Point};

use crate::exposition::{BUILD_INFO, LOG_LINES_TOTAL, REQUEST_DURATION, REQUESTS_TOTAL};
use crate::source::{ERROR_RATE, Cohort, LATENCY_P99_MS, LOG_LINES, LOG_LINES_COUNT, P99_MS, REQUESTS, Source};
use crate::template::{self, Template};
use crate::{Error, Result};

/// A Prometheus server and the queries that read each metric from it.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    queries: BTreeMap<String, Template>,
}

/// The demo service's metrics ([`ERROR_RATE`], [`LATENCY_P99_MS`], [`LOG_LINES`],
/// [`LOG_LINES_COUNT`], [`REQUESTS`]) as PromQL over `window` (at least two scrape intervals).
///
/// Series are selected by version through a join with `signalbox_demo_build_info` on the
/// target's `instance` label, not by a `version` target label: an instance's version changes
/// during a deploy while its target stays, and the build info it exposes is the one truth
/// about what it runs at every scrape.
pub fn demo_queries(window: Duration) -> Vec<(String, String)> {
    let w = if window.subsec_millis() == 0 {
        format!("{}s", window.as_secs())
    } else {
        format!("{}ms", window.as_millis())
    };
    let by_version = format!(
        r#"* on(instance) group_left(version) {BUILD_INFO}{{service="{{{{service}}}}",version="{{{{version}}}}"}}"#
    );
    [
        (
            ERROR_RATE,
            format!(
                r#"sum(rate({REQUESTS_TOTAL}{{code=~"5.."}}[{w}]) {by_version}) / sum(rate({REQUESTS_TOTAL}[{w}]) {by_version})"#
            ),
        ),
        (
            LATENCY_P99_MS,
            format!(
                "1000 * histogram_quantile(0.99, sum by (le) (rate({REQUEST_DURATION}_bucket[{w}]) {by_version}))"
            ),
        ),
        // The gate preset's name for the same figure.
        (
            P99_MS,
            format!(
                "1000 * histogram_quantile(0.99, sum by (le) (rate({REQUEST_DURATION}_bucket[{w}]) {by_version}))"
            ),
        ),
        (LOG_LINES, format!("sum(rate({LOG_LINES_TOTAL}[{w}]) {by_version})")),
        (LOG_LINES_COUNT, format!("sum(increase({LOG_LINES_TOTAL}[{w}]) {by_version})")),
        (REQUESTS, format!("sum(increase({REQUESTS_TOTAL}[{w}]) {by_version})")),
    ]
    .map(|(name, query)| (name.to_owned(), query))
    .to_vec()
}

impl Prometheus {
    /// A source on the Prometheus at `url` (e.g. `http://127.0.0.1:9090`) with no queries yet;
    /// every request gives up after `timeout`, and so does Prometheus' evaluation.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).build();
        Self {
            http: http.expect("a plain HTTP client builds"),
            url: url.into().trim_end_matches('/').to_owned(),
            timeout,
            queries: BTreeMap::new(),
        }
    }

    /// A source on `url` reading the demo service's metrics over `window`
    /// ([`demo_queries`]), with a 5-second timeout.
    pub fn demo(url: impl Into<String>, window: Duration) -> Self {
        let mut source = Self::new(url, Duration::from_secs(5));
        for (name, query) in demo_queries(window) {
            source = source
                .with_query(&name, &query)
                .expect("the demo queries are valid templates");
        }
        source
    }

    /// Reads metric `name` with the PromQL `template`; replaces any earlier query for it.
    pub fn with_query(mut self, name: &str, template: &str) -> Result<Self> {
        self.queries
            .insert(name.to_owned(), Template::parse(template)?);
        Ok(self)
    }

    /// The PromQL that reads `metric` for `group`.
    pub fn render(&self, metric: &str, group: &Cohort) -> Result<String> {
        let template = self
            .queries
            .get(metric)
            .ok_or_else(|| Error::UnknownMetric(metric.to_owned()))?;
        template.render(&template::values(group))
    }

    /// Evaluates `promql` at `at`: `None` when the result is empty. A result of more than one
    /// series is an error, since a metric reading is one number.
    pub async fn instant(&self, promql: &str, at: SystemTime) -> Result<Option<f64>> {
        let params = [
            ("query", promql.to_owned()),
            ("time", timestamp(at)),
            ("timeout", self.eval_timeout()),
        ];
        match self.get("/api/v1/query", promql, &params).await? {
            Data::Scalar(v) => parse_value(&v.1, promql).map(Some),
            Data::Vector(samples) => match samples.as_slice() {
                [] => Ok(None),
                [one] => parse_value(&one.value.1, promql).map(Some),
                many => Err(self.ambiguous(promql, many.len())),
            },
            Data::Matrix(_) | Data::String(_) => Err(Error::answer(
                &self.url,
                format!("query {promql:?} is not a number; it must return a vector or a scalar"),
            )),
        }
    }

    /// Evaluates `promql` every `step` from `start` to `end`; steps without a value (an
    /// empty or non-finite result) are left out.
    pub async fn range(
        &self,
        promql: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<Point>> {
        let params = [
            ("query", promql.to_owned()),
            ("start", timestamp(start)),
            ("end", timestamp(end)),
            ("step", format!("{:.3}", step.as_secs_f64())),
            ("timeout", self.eval_timeout()),
        ];
        match self.get("/api/v1/query_range", promql, &params).await? {
            Data::Matrix(series) => match series.as_slice() {
                [] => Ok(Vec::new()),
                [one] => {
                    let mut points = Vec::with_capacity(one.values.len());
                    for (at, value) in &one.values {
                        let value = parse_value(value, promql)?;
                        if value.is_finite() {
                            points.push(Point {
                                at: at.floor() as i64,
                                value,
                            });
                        }
                    }
                    Ok(points)
                }
                many => Err(self.ambiguous(promql, many.len())),
            },
            _ => Err(Error::answer(
                &self.url,
                format!("range query {promql:?} did not return a matrix"),
            )),
        }
    }

    /// `metric` for `group` every `step` from `start` to `end`, e.g. the stable version's
    /// readings before a canary starts, for [`Baseline`](signalbox_analysis::Baseline).
    pub async fn history(
        &self,
        metric: &str,
        group: &Cohort,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<Point>> {
        self.range(&self.render(metric, group)?, start, end, step)
            .await
    }

    /// One metric's observation: a value, missing for an empty or non-finite result (no data,
    /// or 0/0 without traffic), or the error.
    async fn observe(&self, metric: &str, group: &Cohort, at: SystemTime) -> Observation {
        let value = match self.render(metric, group) {
            Ok(promql) => self.instant(&promql, at).await,
            Err(e) => Err(e),
        };
        match value {
            Ok(v) => Observation::from(v.filter(|v| v.is_finite())),
            Err(e) => Observation::Error {
                error: e.to_string(),
            },
        }
    }

    async fn get(&self, path: &str, promql: &str, params: &[(&str, String)]) -> Result<Data> {
        let url = format!("{}{path}", self.url);
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| Error::http(&url, &e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::http(&url, &e))?;
        // Prometheus answers refused and failed queries with an error status *and* a JSON
        // body saying why; the body is the better message.
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Error::answer(
                &url,
                format!("HTTP {status}, not a Prometheus API answer ({e}): {text}"),
            )
        })?;
        match answer {
            Answer {
                status,
                data: Some(data),
                ..
            } if status == "success" => Ok(data),
            Answer {
                error_type, error, ..
            } => Err(Error::Query {
                kind: error_type.unwrap_or_else(|| format!("HTTP {status}")),
                message: error.unwrap_or_default(),
                query: promql.to_owned(),
            }),
        }
    }

    fn eval_timeout(&self) -> String {
        format!("{}ms", self.timeout.as_millis().max(1))
    }

    fn ambiguous(&self, promql: &str, n: usize) -> Error {
        Error::answer(
            &self.url,
            format!("query {promql:?} returned {n} series; aggregate it to one (e.g. with sum)"),
        )
    }
}

#[async_trait]
impl Source for Prometheus {
    async fn read(&self, metrics: &[&str], group: &Cohort, at: SystemTime) -> Vec<Observation> {
        join_all(metrics.iter().map(|m| self.observe(m, group, at))).await
    }
}

/// Unix seconds with milliseconds, as the API takes them.
fn timestamp(at: SystemTime) -> String {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    format!("{secs:.3}")
}

/// Prometheus writes sample values as strings: `"0.25"`, `"NaN"`, `"+Inf"`.
fn parse_value(text: &str, promql: &str) -> Result<f64> {
    text.parse().map_err(|_| Error::Query {
        kind: "bad_response".into(),
        message: format!("sample value {text:?} is not a number"),
        query: promql.to_owned(),
    })
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Matrix(Vec<Series>),
    Scalar((f64, String)),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    value: (f64, String),
}

#[derive(Debug, Deserialize)]
struct Series {
    values: Vec<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_api_shapes() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"version":"1"},"value":[1772460000.5,"0.25"]}]}}"#;
        let answer: Answer = serde_json::from_str(vector).unwrap();
        assert!(matches!(answer.data, Some(Data::Vector(v)) if v[0].value.1 == "0.25"));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"NaN"]]}]}}"#;
        assert!(
            matches!(serde_json::from_str::<Answer>(matrix).unwrap().data, Some(Data::Matrix(m)) if m[0].values.len() == 2)
        );
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let answer: Answer = serde_json::from_str(error).unwrap();
        assert_eq!(
            (answer.error_type.as_deref(), answer.data.is_none()),
            (Some("bad_data"), true)
        );
    }

    #[test]
    fn reads_prometheus_special_values() {
        assert!(parse_value("NaN", "q").unwrap().is_nan());
        assert_eq!(parse_value("+Inf", "q").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf", "q").unwrap(), f64::NEG_INFINITY);
        assert!(parse_value("many", "q").is_err());
    }

    #[test]
    fn demo_queries_are_valid_templates_over_the_window() {
        let source = Prometheus::demo("http://prometheus:9090/", Duration::from_secs(30));
        let group = Cohort {
            service: "checkout".into(),
            version: "1.1.0".into(),
            ..Cohort::default()
        };
        let q = source.render(ERROR_RATE, &group).unwrap();
        assert_eq!(
            q,
            r#"sum(rate(signalbox_demo_requests_total{code=~"5.."}[30s]) * on(instance) group_left(version) signalbox_demo_build_info{service="checkout",version="1.1.0"}) / sum(rate(signalbox_demo_requests_total[30s]) * on(instance) group_left(version) signalbox_demo_build_info{service="checkout",version="1.1.0"})"#
        );
        assert_eq!(
            source.render("cpu", &group).unwrap_err(),
            Error::UnknownMetric("cpu".into())
        );
        assert!(source.render("log_lines_total", &group).unwrap().starts_with("sum(increase(signalbox_demo_log_lines_total[30s])"));
        assert!(
            demo_queries(Duration::from_millis(2500))[0]
                .1
                .contains("[2500ms]")
        );
    }
}
