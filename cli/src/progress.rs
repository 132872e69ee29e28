//! Following a deploy: one line per change of its status, read from `WatchDeploy`.

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use signalbox_domain::analysis::AnalysisReport;
use signalbox_domain::control::{Action, AuditEntry};
use signalbox_domain::{DeployStatus, HealthReport, Phase};
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;

/// Turns successive statuses into the lines that say what changed.
#[derive(Debug, Default)]
pub struct Progress {
    line: Option<String>,
    verdict: Option<HealthReport>,
    analysis: Option<AnalysisReport>,
    /// Audit entries printed so far (the trail only grows).
    audited: u64,
}

impl Progress {
    /// The lines `status` adds to what was printed before: the verdict when a batch was just
    /// judged (the analysis engine's with one line per metric), the operator actions since the last status, then the state line when it changed.
    /// The state line says where the deploy stands and what holds it: a pause, a halt, the
    /// approval gate it awaits, a granted bypass, an open rollback window.
    pub fn lines(&mut self, status: &DeployStatus) -> Vec<String> {
        let mut out = Vec::new();
        if status.last_verdict.is_some() && status.last_verdict != self.verdict {
            self.verdict = status.last_verdict.clone();
            if let Some(v) = &status.last_verdict {
                out.push(format!("  verdict {:?}: {}", v.verdict, v.summary));
            }
        }
        if status.last_analysis.is_some() && status.last_analysis != self.analysis {
            self.analysis = status.last_analysis.clone();
            if let Some(a) = &status.last_analysis {
                out.push(format!("  analysis {}", a.summary));
                out.extend(a.metrics.iter().map(|m| format!("    {m}")));
            }
        }
        out.extend(status.audit_since(self.audited).map(|(_, e)| audit_line(e)));
        self.audited = self.audited.max(status.audit_total());
        let line = state_line(status);
        if self.line.as_ref() != Some(&line) {
            out.push(line.clone());
            self.line = Some(line);
        }
        out
    }
}

fn state_line(status: &DeployStatus) -> String {
    let versions = versions(status);
    let mut line = if status.phase.is_final() {
        let reason = status.reason.as_deref().map(|r| format!("  reason: {r}")).unwrap_or_default();
        format!("{:?}  {versions}{reason}", status.phase)
    } else if status.current_batch == 0 {
        format!("{:?}  {versions}", status.phase).trim_end().to_owned()
    } else {
        let step = if status.strategy == "rolling" { "batch" } else { "step" };
        format!("{step} {}/{} {:?}  {versions}", status.current_batch, status.total_batches, status.phase)
    };
    let mut holds = Vec::new();
    if let Some(t) = &status.traffic
        && !status.phase.is_final()
    {
        holds.push(format!("{}% of requests on the new build", t.new_share_percent));
    }
    if let (Phase::Queued, Some(holder)) = (status.phase, &status.held_by) {
        holds.push(format!("queued behind {holder}"));
    }
    if status.paused {
        holds.push("paused".to_owned());
    }
    if status.halted {
        holds.push("halted".to_owned());
    }
    if let Some(gate) = status.open_gate() {
        let approved: Vec<&str> = gate.approvals.iter().map(|a| a.by.as_str()).collect();
        let approved = if approved.is_empty() { "no approvals yet".to_owned() } else { format!("approved by {}", approved.join(", ")) };
        holds.push(format!("awaiting approval before batch {} ({approved}; expires {})", gate.before_batch, time(gate.expires_at)));
    }
    if let Some(s) = &status.sampling {
        let what = if s.aa_period { format!("A/A period before {}", s.step) } else { format!("sampling {}", s.step) };
        let needed = s.passes_needed.map(|n| format!(", {n} passes needed to promote")).unwrap_or_default();
        holds.push(format!("{what}: {} of {} samples, {} left at most{needed}", s.samples, s.max_samples, s.samples_left()));
    }
    if let Some(b) = &status.bypass {
        holds.push(format!("gates bypassed by {}", b.by));
    }
    if let Some(until) = status.rollback_window_until {
        holds.push(format!("rollback window open until {}", time(until)));
    }
    for hold in holds {
        line.push_str("  [");
        line.push_str(&hold);
        line.push(']');
    }
    line
}

/// `  abort by oncall: the build is bad (2025-06-01T12:00:00Z)`.
fn audit_line(e: &AuditEntry) -> String {
    let action = match e.action {
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Halt => "halt",
        Action::Abort => "abort",
        Action::Rollback => "rollback",
        Action::Bypass => "bypass",
        Action::Approve => "approve",
        Action::ApprovalExpired => "approval expired",
        Action::Refused => "refused",
    };
    let reason = if e.reason.is_empty() { String::new() } else { format!(": {}", e.reason) };
    format!("  {action} by {}{reason} ({})", e.by, time(e.at))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `1.0.0=19 1.1.0=1`.
pub fn versions(status: &DeployStatus) -> String {
    status.instances_per_version.iter().map(|(v, n)| format!("{v}={n}")).collect::<Vec<_>>().join(" ")
}

/// Prints the deploy's progress until it ends; returns its final status.
pub async fn follow(client: &mut DeployServiceClient<crate::deploy::Conn>, deploy_id: &str) -> anyhow::Result<DeployStatus> {
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

    use signalbox_domain::approval::Gate;
    use signalbox_domain::GroupFigures;
    use signalbox_domain::analysis::Decision as Verdict;

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
    fn the_engines_verdict_is_shown_with_its_metrics() {
        use signalbox_domain::analysis::{Decision, Rule};
        let mut p = Progress::default();
        let mut s = at(Phase::RollingBack, 1, 19, 1);
        s.last_analysis = Some(AnalysisReport {
            decision: Decision::Fail,
            rule: Some(Rule::ConsecutiveFailures),
            summary: "Fail (ConsecutiveFailures): 3 samples, 0 pass, 3 fail".into(),
            metrics: vec!["error_rate: High value 0.3".into(), "p99_ms: Pass value 9.9".into()],
        });
        assert_eq!(
            p.lines(&s),
            [
                "  analysis Fail (ConsecutiveFailures): 3 samples, 0 pass, 3 fail",
                "    error_rate: High value 0.3",
                "    p99_ms: Pass value 9.9",
                "batch 1/4 RollingBack  1.0.0=19 1.1.0=1",
            ]
        );
        s.phase = Phase::RolledBack;
        assert_eq!(p.lines(&s), ["RolledBack  1.0.0=19 1.1.0=1"], "the same verdict is not repeated");
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

    #[test]
    fn sampling_in_progress_says_how_many_samples_are_left() {
        use signalbox_domain::{Sampling, SamplingProgress};
        let mut p = Progress::default();
        let mut s = at(Phase::Evaluating, 2, 20, 0);
        let started_at = DateTime::from_timestamp(0, 0).unwrap();
        let mut aa = Sampling::started("batch 2", true, 6, 1_000, started_at);
        aa.progressed(SamplingProgress { samples: 2, passes_needed: None });
        s.sampling = Some(aa);
        assert_eq!(p.lines(&s), ["batch 2/4 Evaluating  1.0.0=20  [A/A period before batch 2: 2 of 6 samples, 4 left at most]"]);
        s.instances_per_version = BTreeMap::from([("1.0.0".to_owned(), 15), ("1.1.0".to_owned(), 5)]);
        let mut judging = Sampling::started("batch 2", false, 12, 1_000, started_at);
        judging.progressed(SamplingProgress { samples: 3, passes_needed: Some(7) });
        s.sampling = Some(judging);
        assert_eq!(
            p.lines(&s),
            ["batch 2/4 Evaluating  1.0.0=15 1.1.0=5  [sampling batch 2: 3 of 12 samples, 9 left at most, 7 passes needed to promote]"]
        );
    }

    fn entry(action: Action, by: &str, reason: &str, secs: i64) -> AuditEntry {
        AuditEntry { action, by: by.into(), at: DateTime::from_timestamp(secs, 0).unwrap(), reason: reason.into() }
    }

    #[test]
    fn holds_gates_and_operator_actions_are_shown_as_they_come() {
        let mut p = Progress::default();
        let mut s = at(Phase::AwaitingApproval, 1, 19, 1);
        let gate = Gate {
            before_batch: 2,
            opened_at: DateTime::from_timestamp(0, 0).unwrap(),
            expires_at: DateTime::from_timestamp(3_600, 0).unwrap(),
            approvals: vec![],
            outcome: None,
        };
        s.gates.push(gate);
        assert_eq!(
            p.lines(&s),
            ["batch 1/4 AwaitingApproval  1.0.0=19 1.1.0=1  [awaiting approval before batch 2 (no approvals yet; expires 1970-01-01T01:00:00Z)]"]
        );
        let approval = entry(Action::Approve, "alice", "canary is clean", 60);
        s.gates[0].approvals.push(approval.clone());
        s.audit.push(approval);
        assert_eq!(
            p.lines(&s),
            [
                "  approve by alice: canary is clean (1970-01-01T00:01:00Z)",
                "batch 1/4 AwaitingApproval  1.0.0=19 1.1.0=1  [awaiting approval before batch 2 (approved by alice; expires 1970-01-01T01:00:00Z)]",
            ]
        );
        let mut s = at(Phase::Evaluating, 2, 17, 3);
        s.audit = vec![entry(Action::Approve, "alice", "canary is clean", 60), entry(Action::Pause, "ops", "", 120)];
        s.paused = true;
        s.halted = true;
        assert_eq!(p.lines(&s), ["  pause by ops (1970-01-01T00:02:00Z)", "batch 2/4 Evaluating  1.0.0=17 1.1.0=3  [paused]  [halted]"]);
        let mut done = at(Phase::Succeeded, 4, 0, 20);
        done.audit = s.audit.clone();
        done.audit.push(entry(Action::Bypass, "sre", "sev1", 180));
        done.bypass = done.audit.last().cloned();
        done.rollback_window_until = DateTime::from_timestamp(7_200, 0);
        assert_eq!(
            p.lines(&done),
            [
                "  bypass by sre: sev1 (1970-01-01T00:03:00Z)",
                "Succeeded  1.1.0=20  [gates bypassed by sre]  [rollback window open until 1970-01-01T02:00:00Z]",
            ]
        );
        assert!(p.lines(&done).is_empty(), "nothing new");
    }
}
