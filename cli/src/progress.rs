//! Following a deploy: one line per change of its status, read from `WatchDeploy`.

use anyhow::{Context, bail};
use signalbox_domain::{DeployStatus, HealthReport, Phase};
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use tonic::transport::Channel;

/// Turns successive statuses into the lines that say what changed.
#[derive(Debug, Default)]
pub struct Progress {
    line: Option<String>,
    verdict: Option<HealthReport>,
}

impl Progress {
    /// The lines `status` adds to what was printed before: the verdict when a batch was just
    /// judged, then the batch line when it changed, or the final line.
    pub fn lines(&mut self, status: &DeployStatus) -> Vec<String> {
        let mut out = Vec::new();
        if status.last_verdict.is_some() && status.last_verdict != self.verdict {
            self.verdict = status.last_verdict.clone();
            if let Some(v) = &status.last_verdict {
                out.push(format!("  verdict {:?}: {}", v.verdict, v.summary));
            }
        }
        let versions = versions(status);
        let line = if status.phase.is_final() {
            let reason = status.reason.as_deref().map(|r| format!("  reason: {r}")).unwrap_or_default();
            format!("{:?}  {versions}{reason}", status.phase)
        } else if status.current_batch == 0 {
            format!("{:?}  {versions}", status.phase).trim_end().to_owned()
        } else {
            format!("batch {}/{} {:?}  {versions}", status.current_batch, status.total_batches, status.phase)
        };
        if self.line.as_ref() != Some(&line) {
            out.push(line.clone());
            self.line = Some(line);
        }
        out
    }
}

/// `1.0.0=19 1.1.0=1`.
pub fn versions(status: &DeployStatus) -> String {
    status.instances_per_version.iter().map(|(v, n)| format!("{v}={n}")).collect::<Vec<_>>().join(" ")
}

/// Prints the deploy's progress until it ends; returns its final status.
pub async fn follow(client: &mut DeployServiceClient<Channel>, deploy_id: &str) -> anyhow::Result<DeployStatus> {
    let mut stream = client.watch_deploy(pb::WatchDeployRequest { deploy_id: deploy_id.to_owned() }).await?.into_inner();
    let mut progress = Progress::default();
    let mut last = None;
    while let Some(snapshot) = stream.message().await? {
        let status = DeployStatus::try_from(snapshot).context("reading a status from the API")?;
        for line in progress.lines(&status) {
            println!("{line}");
        }
        last = Some(status);
    }
    match last {
        Some(status) if status.phase.is_final() => Ok(status),
        _ => bail!("the watch of {deploy_id} ended before the deploy did"),
    }
}

/// Whether the deploy reached every instance.
pub fn succeeded(status: &DeployStatus) -> bool {
    status.phase == Phase::Succeeded
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use signalbox_domain::{GroupFigures, Verdict};

    use super::*;

    fn at(phase: Phase, batch: u32, old: u32, new: u32) -> DeployStatus {
        let mut s = DeployStatus::starting();
        s.phase = phase;
        s.current_batch = batch;
        s.total_batches = 4;
        s.fleet_size = 20;
        s.instances_per_version = [("1.0.0", old), ("1.1.0", new)].into_iter().filter(|(_, n)| *n > 0).map(|(v, n)| (v.to_owned(), n)).collect();
        s
    }

    fn report(verdict: Verdict, summary: &str) -> HealthReport {
        HealthReport { verdict, summary: summary.into(), baseline: GroupFigures::default(), samples: vec![] }
    }

    #[test]
    fn one_line_per_change_and_the_verdict_before_the_next_batch() {
        let mut p = Progress::default();
        assert_eq!(p.lines(&DeployStatus::starting()), ["Preflight"]);
        assert_eq!(p.lines(&at(Phase::Rolling, 1, 20, 0)), ["batch 1/4 Rolling  1.0.0=20"]);
        assert!(p.lines(&at(Phase::Rolling, 1, 20, 0)).is_empty());
        assert_eq!(p.lines(&at(Phase::Evaluating, 1, 19, 1)), ["batch 1/4 Evaluating  1.0.0=19 1.1.0=1"]);
        let mut next = at(Phase::Rolling, 2, 19, 1);
        next.last_verdict = Some(report(Verdict::Pass, "healthy over 4 samples"));
        assert_eq!(p.lines(&next), ["  verdict Pass: healthy over 4 samples", "batch 2/4 Rolling  1.0.0=19 1.1.0=1"]);
        let mut done = at(Phase::Succeeded, 4, 0, 20);
        done.last_verdict = Some(report(Verdict::Pass, "healthy over 4 samples"));
        done.last_verdict.as_mut().unwrap().baseline.requests = 1;
        assert_eq!(p.lines(&done), ["  verdict Pass: healthy over 4 samples", "Succeeded  1.1.0=20"]);
    }

    #[test]
    fn a_rollback_ends_with_its_reason() {
        let mut p = Progress::default();
        let mut s = at(Phase::RolledBack, 1, 20, 0);
        s.reason = Some("batch 1: unhealthy".into());
        s.instances_per_version = BTreeMap::from([("1.0.0".to_owned(), 20)]);
        assert_eq!(p.lines(&s), ["RolledBack  1.0.0=20  reason: batch 1: unhealthy"]);
        assert!(!succeeded(&s));
    }
}
