//! What a metric source is: for a group of instances and a time, one [`Observation`] per
//! metric, ready for the analysis engine.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use signalbox_analysis::{Observation, Policy, Sample};

pub use signalbox_domain::metric::{ERROR_RATE, LATENCY_P99_MS, LOG_LINES, LOG_LINES_COUNT, P99_MS, REQUESTS};

/// One instance whose metrics are read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// Instance id, e.g. `i-0003`: the `instance_id` label in Prometheus.
    pub id: String,
    /// `host:port` serving its `/metrics`.
    pub address: String,
}

/// The instances read together as one reading: one version of one service, e.g. the canary
/// or the stable version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cohort {
    /// Service name (`{{service}}` in query templates).
    pub service: String,
    /// Version the group runs (`{{version}}`).
    pub version: String,
    /// Its instances (`{{instances}}`: a regular expression matching any of their ids).
    pub instances: Vec<Instance>,
    /// Further placeholder values, e.g. `region` for `{{region}}`.
    pub labels: BTreeMap<String, String>,
}

/// Where observations come from: the instances' own `/metrics`
/// ([`Scrape`](crate::Scrape)), Prometheus ([`Prometheus`](crate::Prometheus)), or anything
/// else that can answer for a group and a time.
///
/// A failed or timed-out read is [`Observation::Error`], and a metric with no data (no
/// series, no requests) is [`Observation::Missing`]; neither is ever a made-up zero, so
/// neither can pass a deploy.
#[async_trait]
pub trait Source: Send + Sync {
    /// Reads each of `metrics` for `group` over the window ending at `at`: one observation
    /// per name, in order. A name the source has no query for is an error observation.
    async fn read(&self, metrics: &[&str], group: &Cohort, at: SystemTime) -> Vec<Observation>;
}

/// Reads one analysis sample at `at`: the policy's metrics for the canary and, when given,
/// the stable group (both at once), in the policy's order, with each group's [`REQUESTS`]
/// reading as its traffic (none when the source cannot read it). A stable group that served fewer
/// requests than the policy's low-traffic floor is left out of the sample: a reference that
/// thin (one error in three requests) would excuse a real regression.
pub async fn sample(
    source: &dyn Source,
    policy: &Policy,
    canary: &Cohort,
    stable: Option<&Cohort>,
    at: SystemTime,
) -> Sample {
    let mut names: Vec<&str> = policy.metrics.iter().map(|m| m.name.as_str()).collect();
    let traffic_at = names
        .iter()
        .position(|n| *n == REQUESTS)
        .unwrap_or_else(|| {
            names.push(REQUESTS);
            names.len() - 1
        });
    // Both groups are read together, so their windows close in the same moment.
    let stable_read = async {
        match stable {
            Some(group) => source.read(&names, group, at).await,
            None => Vec::new(),
        }
    };
    let (mut canary, mut stable) = futures::join!(source.read(&names, canary, at), stable_read);
    let traffic = canary[traffic_at].value().map(|v| v.round() as u64);
    canary.truncate(policy.metrics.len());
    if too_thin(&stable, traffic_at, policy.low_traffic.min_requests) {
        stable.clear();
    }
    let stable_traffic = stable.get(traffic_at).and_then(Observation::value).map(|v| v.round() as u64);
    stable.truncate(policy.metrics.len());
    Sample {
        at: unix_seconds(at),
        traffic,
        stable_traffic,
        canary,
        stable,
    }
}

/// Whether stable readings whose [`REQUESTS`] reading is at `traffic_at` served too few
/// requests to be a reference. An unread count is not thin: the readings stand as they are.
fn too_thin(stable: &[Observation], traffic_at: usize, min_requests: u64) -> bool {
    stable.get(traffic_at).and_then(Observation::value).is_some_and(|served| served < min_requests as f64)
}

/// Whole seconds since the Unix epoch (negative before it).
pub fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stable_group_below_the_traffic_floor_is_no_reference() {
        let readings = |requests: Observation| vec![Observation::Value(0.33), requests];
        assert!(too_thin(&readings(Observation::Value(3.0)), 1, 100), "one error in three requests");
        assert!(!too_thin(&readings(Observation::Value(100.0)), 1, 100));
        assert!(!too_thin(&readings(Observation::Missing), 1, 100), "an unread count leaves the readings be");
        assert!(!too_thin(&[], 1, 100), "no stable group");
    }
}
