//! The service's metrics: plain atomics, rendered in the Prometheus text exposition
//! format 0.0.4. A handful of metric families does not justify the `prometheus` crate and its
//! registry; the rendering is checked against a real parser in the tests.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `Content-Type` of the rendered exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Metric name, unit suffixed.
    pub name: &'static str,
    /// Prometheus type: `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Help text.
    pub help: &'static str,
}

/// Requests to `/`, labelled `code="200"` or `code="500"`.
pub const REQUESTS_TOTAL: Family = Family {
    name: "signalbox_demo_requests_total",
    kind: "counter",
    help: "Requests to / answered, by HTTP status code.",
};

/// Time spent answering `/`, in seconds.
pub const REQUEST_DURATION_SECONDS: Family = Family {
    name: "signalbox_demo_request_duration_seconds",
    kind: "histogram",
    help: "Time spent answering requests to /, in seconds.",
};

/// Requests to `/` being answered right now.
pub const REQUESTS_IN_FLIGHT: Family = Family {
    name: "signalbox_demo_requests_in_flight",
    kind: "gauge",
    help: "Requests to / being answered right now.",
};

/// Log lines written while answering `/`.
pub const LOG_LINES_TOTAL: Family = Family {
    name: "signalbox_demo_log_lines_total",
    kind: "counter",
    help: "Log lines written while answering requests to /.",
};

/// Constant 1, labelled with what this instance runs.
pub const BUILD_INFO: Family = Family {
    name: "signalbox_demo_build_info",
    kind: "gauge",
    help: "Always 1; labels identify the artifact this instance serves.",
};

/// Upper bounds of the duration histogram's buckets, in seconds (`+Inf` implied).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
];

/// How a request to `/` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 200.
    Ok,
    /// Answered 500, as the artifact's `error_rate` asked.
    Error,
}

/// The labels of [`BUILD_INFO`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Service name from the artifact.
    pub service: String,
    /// Version from the artifact.
    pub version: String,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// Instance id.
    pub instance: String,
}

/// The metrics of one instance; shared by reference, updated lock-free.
#[derive(Debug)]
pub struct Registry {
    build: BuildInfo,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Non-cumulative counts per bucket; the last slot is the `+Inf` overflow.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
    in_flight: AtomicU64,
    log_lines: AtomicU64,
}

/// Marks one request to `/` in flight until dropped (so a cancelled request, e.g. a
/// client that hung up, is not left counted).
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Registry {
    /// An empty registry for the instance described by `build`.
    pub fn new(build: BuildInfo) -> Self {
        Self {
            build,
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: Default::default(),
            duration_sum_nanos: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            log_lines: AtomicU64::new(0),
        }
    }

    /// Counts a request to `/` as in flight for the life of the returned guard.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(&self.in_flight)
    }

    /// Records one answered request to `/`.
    pub fn observe_request(&self, outcome: Outcome, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_nanos.fetch_add(nanos, Relaxed);
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Error => &self.errors,
        }
        .fetch_add(1, Relaxed);
    }

    /// Records `n` log lines written.
    pub fn add_log_lines(&self, n: u64) {
        self.log_lines.fetch_add(n, Relaxed);
    }

    /// Renders every family in the text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let b = &self.build;

        header(&mut out, &REQUESTS_TOTAL);
        for (code, counter) in [("200", &self.ok), ("500", &self.errors)] {
            let _ = writeln!(
                out,
                "{}{{code=\"{code}\"}} {}",
                REQUESTS_TOTAL.name,
                counter.load(Relaxed)
            );
        }

        // `_count` is the cumulative `+Inf` bucket rather than a separate atomic, so a
        // scrape racing a request still sees a self-consistent histogram.
        header(&mut out, &REQUEST_DURATION_SECONDS);
        let name = REQUEST_DURATION_SECONDS.name;
        let mut cumulative = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match DURATION_BUCKETS.get(i) {
                Some(upper) => writeln!(out, "{name}_bucket{{le=\"{upper}\"}} {cumulative}"),
                None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}"),
            }
            .expect("writing to a String");
        }
        let sum = Duration::from_nanos(self.duration_sum_nanos.load(Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");

        header(&mut out, &REQUESTS_IN_FLIGHT);
        let _ = writeln!(
            out,
            "{} {}",
            REQUESTS_IN_FLIGHT.name,
            self.in_flight.load(Relaxed)
        );

        header(&mut out, &LOG_LINES_TOTAL);
        let _ = writeln!(
            out,
            "{} {}",
            LOG_LINES_TOTAL.name,
            self.log_lines.load(Relaxed)
        );

        header(&mut out, &BUILD_INFO);
        let _ = writeln!(
            out,
            "{}{{version=\"{}\",digest=\"{}\",service=\"{}\",instance=\"{}\"}} 1",
            BUILD_INFO.name,
            escape_label(&b.version),
            escape_label(&b.digest),
            escape_label(&b.service),
            escape_label(&b.instance),
        );
        out
    }
}

fn header(out: &mut String, family: &Family) {
    let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    escape(value, true)
}

/// Escapes help text: backslash and line feed.
pub fn escape_help(text: &str) -> String {
    escape(text, false)
}

fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    fn registry() -> Registry {
        Registry::new(BuildInfo {
            service: "checkout".into(),
            version: "1.4.0".into(),
            digest: "sha256:abc".into(),
            instance: "i-007".into(),
        })
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    fn value(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> Value {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
            .value
            .clone()
    }

    #[test]
    fn rendered_exposition_parses_back_to_what_was_observed() {
        let r = registry();
        let ms = Duration::from_millis;
        for (outcome, d) in [
            (Outcome::Ok, ms(1)),
            (Outcome::Ok, ms(5)), // on a bucket boundary: `le` is inclusive
            (Outcome::Ok, ms(30)),
            (Outcome::Error, ms(120)),
            (Outcome::Ok, ms(4000)), // beyond the last bound: only +Inf
        ] {
            r.observe_request(outcome, d);
        }
        r.add_log_lines(7);
        let in_flight = r.start_request();
        let text = r.render();
        let scrape = parse(&text);

        assert_eq!(
            value(&scrape, REQUESTS_TOTAL.name, Some(("code", "200"))),
            Value::Counter(4.0)
        );
        assert_eq!(
            value(&scrape, REQUESTS_TOTAL.name, Some(("code", "500"))),
            Value::Counter(1.0)
        );
        assert_eq!(
            value(&scrape, LOG_LINES_TOTAL.name, None),
            Value::Counter(7.0)
        );
        assert_eq!(
            value(&scrape, BUILD_INFO.name, Some(("instance", "i-007"))),
            Value::Gauge(1.0)
        );
        assert_eq!(
            value(&scrape, REQUESTS_IN_FLIGHT.name, None),
            Value::Gauge(1.0)
        );
        drop(in_flight);
        assert!(
            r.render()
                .contains("\nsignalbox_demo_requests_in_flight 0\n")
        );

        let Value::Histogram(buckets) = value(&scrape, REQUEST_DURATION_SECONDS.name, None) else {
            panic!("histogram expected:\n{text}");
        };
        let got: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        let expected_counts = [
            2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 5.0,
        ];
        let expected: Vec<(f64, f64)> = DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(expected_counts)
            .collect();
        assert_eq!(got, expected);

        let untyped = |name: &str| match value(&scrape, name, None) {
            Value::Untyped(v) => v,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            untyped("signalbox_demo_request_duration_seconds_count"),
            5.0
        );
        assert!((untyped("signalbox_demo_request_duration_seconds_sum") - 4.156).abs() < 1e-9);

        for family in [
            REQUESTS_TOTAL,
            REQUEST_DURATION_SECONDS,
            REQUESTS_IN_FLIGHT,
            LOG_LINES_TOTAL,
            BUILD_INFO,
        ] {
            assert!(text.contains(&format!("# TYPE {} {}\n", family.name, family.kind)));
            assert!(
                scrape.docs.contains_key(family.name),
                "HELP of {}",
                family.name
            );
        }
    }

    #[test]
    fn an_idle_instance_exposes_zeroes_for_both_codes() {
        let scrape = parse(&registry().render());
        for code in ["200", "500"] {
            assert_eq!(
                value(&scrape, REQUESTS_TOTAL.name, Some(("code", code))),
                Value::Counter(0.0)
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#.to_owned().as_str()), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        assert_eq!(escape_help(r#"say "hi"\"#), r#"say "hi"\\"#);

        let r = Registry::new(BuildInfo {
            service: "s".into(),
            version: "1\"\n\\".into(),
            digest: "d".into(),
            instance: "i".into(),
        });
        let line = r
            .render()
            .lines()
            .find(|l| l.starts_with(BUILD_INFO.name))
            .unwrap()
            .to_owned();
        assert_eq!(
            line,
            r#"signalbox_demo_build_info{version="1\"\n\\",digest="d",service="s",instance="i"} 1"#
        );
    }
}
