//! Verifying idle instances before traffic moves to them: the load balancer sends them nothing,
//! so a verification load is driven straight at them, and at the serving reference group at the
//! same rate per instance, and the two are judged window by window with the same gate as a
//! rolling deploy's batches.

use std::time::Duration;

use signalbox_domain::health::{Gate, SampleJudgement, judge_sample};
use signalbox_domain::traffic::VerifyInput;
use signalbox_domain::{GroupFigures, HealthReport, Verdict};
use temporalio_sdk::activities::ActivityContext;
use tokio::task::{JoinHandle, JoinSet};
use tracing::info;

use crate::fleet::LocalFleet;
use crate::health::{Scraper, window};
use crate::home::Home;
use crate::substrate::Substrate;
use crate::{Error, Result};

/// A paced stream of `GET /` requests over some instances; stopped when dropped.
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

/// Drives the verification load and judges `input.instances` against `input.reference`.
pub(crate) async fn verify(home: &Home, scraper: &Scraper, http: &reqwest::Client, ctx: &ActivityContext, input: VerifyInput) -> Result<HealthReport> {
    let fleet = LocalFleet::open(home, &input.fleet.name)?;
    let tested = fleet.health_endpoints(&input.instances).await?;
    let reference = fleet.health_endpoints(&input.reference).await?;
    let urls: Vec<String> = fleet
        .instances()
        .iter()
        .filter(|s| input.instances.contains(&s.id) || input.reference.contains(&s.id))
        .map(|s| format!("http://127.0.0.1:{}/", s.port))
        .collect();
    let _load = Load::start(http.clone(), urls.clone(), input.rps_per_instance * urls.len() as u32);

    let policy = &input.policy;
    let mut tick = tokio::time::interval(Duration::from_millis(policy.sample_interval_ms));
    tick.tick().await;
    let mut before = (scraper.scrape_all(&tested).await, scraper.scrape_all(&reference).await);
    let mut gate = Gate::default();
    let mut samples: Vec<SampleJudgement> = Vec::new();
    let verdict = loop {
        tick.tick().await;
        let after = (scraper.scrape_all(&tested).await, scraper.scrape_all(&reference).await);
        let next = (reread(&after.0), reread(&after.1));
        let tested_window = window(std::mem::take(&mut before.0), after.0);
        let reference_window = (!reference.is_empty()).then(|| window(std::mem::take(&mut before.1), after.1));
        before = next;
        let sample = judge(policy, tested_window, reference_window);
        let decided = gate.push(policy, &sample);
        samples.push(sample);
        let _ = ctx.record_heartbeat(samples.len() as u64).await;
        if let Some(v) = decided {
            break v;
        }
    };
    let summary = match verdict {
        Verdict::Fail => format!("verification failed: {}", samples.last().map(|s| s.reasons.join("; ")).unwrap_or_default()),
        Verdict::Pass => format!("verified over {} windows against {} serving instances", samples.len(), reference.len()),
        Verdict::Inconclusive => format!("inconclusive: fewer than {} windows with enough verification traffic", policy.consecutive_bad_samples),
    };
    info!(?verdict, %summary, "instances verified");
    let baseline = samples.iter().rev().find_map(|s| s.control).unwrap_or_default();
    Ok(HealthReport { verdict, summary, baseline, samples })
}

/// One window: unreadable instances under test count as bad, an unreadable reference as no data.
fn judge(policy: &signalbox_domain::HealthPolicy, tested: Result<GroupFigures>, reference: Option<Result<GroupFigures>>) -> SampleJudgement {
    let tested = match tested {
        Ok(t) => t,
        Err(e) => return SampleJudgement { canary: GroupFigures::default(), control: None, bad: Some(true), reasons: vec![format!("unreadable: {e}")] },
    };
    match reference.transpose() {
        Ok(reference) => judge_sample(policy, tested, reference, reference.unwrap_or_default()),
        Err(e) => SampleJudgement { canary: tested, control: None, bad: None, reasons: vec![format!("reference unreadable: {e}")] },
    }
}

/// The end of one window is the start of the next; errors are carried as errors.
fn reread(rs: &[Result<crate::health::Counters>]) -> Vec<Result<crate::health::Counters>> {
    rs.iter()
        .map(|r| match r {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(Error::Metrics { instance: String::new(), message: e.to_string() }),
        })
        .collect()
}
