//! The names of the metrics signalbox reads from the instances it deploys, defined once: the
//! analysis policies, the metric sources and the gate preset all use these.

/// Errors per request (5xx responses, 0-1).
pub const ERROR_RATE: &str = "error_rate";
/// 99th-percentile latency in milliseconds.
pub const P99_MS: &str = "p99_ms";
/// [`P99_MS`] under the name Prometheus-style queries give it; both names read the same metric.
pub const LATENCY_P99_MS: &str = "latency_p99_ms";
/// Log lines written per second.
pub const LOG_LINES: &str = "log_lines";
/// Log lines written in the window, a count: the metric a `count` kind judges per request.
pub const LOG_LINES_COUNT: &str = "log_lines_total";
/// Requests served in the window: a sample's traffic.
pub const REQUESTS: &str = "requests";
