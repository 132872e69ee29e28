//! Deploy statuses across the wire: what a server sends and what a client reads back.

use signalbox_domain::analysis::{AnalysisReport, Decision, Rule};
use signalbox_domain::health::SampleJudgement;
use signalbox_domain::{DeployStatus, Error, GroupFigures, HealthReport, Phase, Result, Sampling, TrafficState};

use crate::control::{instant, timestamp, within};
use crate::pb;

impl From<Phase> for pb::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Preflight => Self::Preflight,
            Phase::Queued => Self::Queued,
            Phase::Pushing => Self::Pushing,
            Phase::AwaitingApproval => Self::AwaitingApproval,
            Phase::Rolling => Self::Rolling,
            Phase::Shifting => Self::Shifting,
            Phase::Baking => Self::Baking,
            Phase::Evaluating => Self::Evaluating,
            Phase::RollingBack => Self::RollingBack,
            Phase::Succeeded => Self::Succeeded,
            Phase::RolledBack => Self::RolledBack,
            Phase::Failed => Self::Failed,
        }
    }
}

impl TryFrom<pb::Phase> for Phase {
    type Error = Error;

    fn try_from(p: pb::Phase) -> Result<Self> {
        Ok(match p {
            pb::Phase::Unspecified => return Err(Error::invalid("phase", "must be set")),
            pb::Phase::Preflight => Self::Preflight,
            pb::Phase::Queued => Self::Queued,
            pb::Phase::Pushing => Self::Pushing,
            pb::Phase::AwaitingApproval => Self::AwaitingApproval,
            pb::Phase::Rolling => Self::Rolling,
            pb::Phase::Shifting => Self::Shifting,
            pb::Phase::Baking => Self::Baking,
            pb::Phase::Evaluating => Self::Evaluating,
            pb::Phase::RollingBack => Self::RollingBack,
            pb::Phase::Succeeded => Self::Succeeded,
            pb::Phase::RolledBack => Self::RolledBack,
            pb::Phase::Failed => Self::Failed,
        })
    }
}

/// A decision on the wire; `Continue` (undecided, never a recorded verdict) is inconclusive, as
/// the deploy treats it.
fn verdict(d: Decision) -> pb::Verdict {
    match d {
        Decision::Pass => pb::Verdict::Pass,
        Decision::Fail => pb::Verdict::Fail,
        Decision::Inconclusive | Decision::Continue => pb::Verdict::Inconclusive,
    }
}

/// A decision read back from `field`; an unset or unknown one is an error naming it.
fn decision(field: &str, v: i32) -> Result<Decision> {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Pass) => Ok(Decision::Pass),
        Ok(pb::Verdict::Fail) => Ok(Decision::Fail),
        Ok(pb::Verdict::Inconclusive) => Ok(Decision::Inconclusive),
        Ok(pb::Verdict::Unspecified) => Err(Error::invalid(field, "must be set")),
        Err(e) => Err(Error::invalid(field, e.to_string())),
    }
}

impl From<GroupFigures> for pb::GroupFigures {
    fn from(g: GroupFigures) -> Self {
        Self { requests: g.requests, errors: g.errors, p99_ms: g.p99_ms, log_lines: g.log_lines }
    }
}

impl From<pb::GroupFigures> for GroupFigures {
    fn from(g: pb::GroupFigures) -> Self {
        Self { requests: g.requests, errors: g.errors, p99_ms: g.p99_ms, log_lines: g.log_lines }
    }
}

impl From<SampleJudgement> for pb::SampleJudgement {
    fn from(s: SampleJudgement) -> Self {
        Self { canary: Some(s.canary.into()), control: s.control.map(Into::into), bad: s.bad, reasons: s.reasons }
    }
}

/// An absent canary reads as a window without traffic.
impl From<pb::SampleJudgement> for SampleJudgement {
    fn from(s: pb::SampleJudgement) -> Self {
        Self { canary: s.canary.map(Into::into).unwrap_or_default(), control: s.control.map(Into::into), bad: s.bad, reasons: s.reasons }
    }
}

impl From<HealthReport> for pb::HealthReport {
    fn from(r: HealthReport) -> Self {
        Self {
            verdict: verdict(r.verdict).into(),
            summary: r.summary,
            baseline: Some(r.baseline.into()),
            samples: r.samples.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::HealthReport> for HealthReport {
    type Error = Error;

    fn try_from(r: pb::HealthReport) -> Result<Self> {
        Ok(Self {
            verdict: decision("last_verdict.verdict", r.verdict)?,
            summary: r.summary,
            baseline: r.baseline.map(Into::into).unwrap_or_default(),
            samples: r.samples.into_iter().map(Into::into).collect(),
        })
    }
}

/// An undecided report (`Continue`, which `health.analyze` never returns) is inconclusive on
/// the wire, as the deploy treats it.
impl From<AnalysisReport> for pb::AnalysisReport {
    fn from(r: AnalysisReport) -> Self {
        let decision = verdict(r.decision);
        let rule = r.rule.map(|rule| serde_json::to_value(rule).ok().and_then(|v| v.as_str().map(str::to_owned)).expect("a rule is a JSON string"));
        Self { decision: decision.into(), rule: rule.unwrap_or_default(), summary: r.summary, metrics: r.metrics }
    }
}

/// A decision or rule this client does not know is an error, like an unknown phase.
impl TryFrom<pb::AnalysisReport> for AnalysisReport {
    type Error = Error;

    fn try_from(r: pb::AnalysisReport) -> Result<Self> {
        let decision = decision("last_analysis.decision", r.decision)?;
        let rule = match r.rule.as_str() {
            "" => None,
            name => Some(
                serde_json::from_value::<Rule>(serde_json::Value::String(name.to_owned()))
                    .map_err(|_| Error::invalid("last_analysis.rule", format!("`{name}` is not a rule this client knows")))?,
            ),
        };
        Ok(Self { decision, rule, summary: r.summary, metrics: r.metrics })
    }
}

impl From<Sampling> for pb::Sampling {
    fn from(s: Sampling) -> Self {
        Self {
            samples_left: s.samples_left(),
            step: s.step,
            aa_period: s.aa_period,
            samples: s.samples,
            max_samples: s.max_samples,
            passes_needed: s.passes_needed,
            window_ms: s.window_ms,
            started_at: Some(timestamp(s.started_at)),
        }
    }
}

impl TryFrom<pb::Sampling> for Sampling {
    type Error = Error;

    fn try_from(s: pb::Sampling) -> Result<Self> {
        Ok(Self {
            step: s.step,
            aa_period: s.aa_period,
            max_samples: s.max_samples,
            window_ms: s.window_ms,
            started_at: instant("sampling.started_at", s.started_at)?,
            samples: s.samples,
            passes_needed: s.passes_needed,
        })
    }
}

impl From<DeployStatus> for pb::DeployStatus {
    fn from(s: DeployStatus) -> Self {
        Self {
            phase: pb::Phase::from(s.phase).into(),
            current_batch: s.current_batch,
            total_batches: s.total_batches,
            fleet_size: s.fleet_size,
            instances_per_version: s.instances_per_version,
            last_verdict: s.last_verdict.map(Into::into),
            reason: s.reason,
            paused: s.paused,
            halted: s.halted,
            bypass: s.bypass.map(Into::into),
            gates: s.gates.into_iter().map(Into::into).collect(),
            rollback_window_until: s.rollback_window_until.map(timestamp),
            audit: s.audit.into_iter().map(Into::into).collect(),
            audit_elided: s.audit_elided,
            last_analysis: s.last_analysis.map(Into::into),
            strategy: s.strategy,
            traffic: s.traffic.map(|t| pb::TrafficState { new_share_percent: t.new_share_percent, weights: t.weights, new_set: t.new_set, old_set: t.old_set }),
            held_by: s.held_by,
            refused: s.refused,
            sampling: s.sampling.map(Into::into),
        }
    }
}

/// How a client reads a status back; a phase or verdict it does not know is an error, so a
/// newer server can never be mistaken for a finished deploy.
impl TryFrom<pb::DeployStatus> for DeployStatus {
    type Error = Error;

    fn try_from(s: pb::DeployStatus) -> Result<Self> {
        let phase = pb::Phase::try_from(s.phase).map_err(|e| Error::invalid("phase", e.to_string()))?;
        Ok(Self {
            phase: phase.try_into()?,
            current_batch: s.current_batch,
            total_batches: s.total_batches,
            fleet_size: s.fleet_size,
            instances_per_version: s.instances_per_version,
            last_verdict: s.last_verdict.map(TryInto::try_into).transpose()?,
            reason: s.reason,
            paused: s.paused,
            halted: s.halted,
            bypass: s.bypass.map(|b| b.try_into().map_err(within("bypass"))).transpose()?,
            gates: s.gates.into_iter().enumerate().map(|(i, g)| g.try_into().map_err(within(format_args!("gates[{i}]")))).collect::<Result<_>>()?,
            rollback_window_until: s.rollback_window_until.map(|t| instant("rollback_window_until", Some(t))).transpose()?,
            audit: s.audit.into_iter().enumerate().map(|(i, e)| e.try_into().map_err(within(format_args!("audit[{i}]")))).collect::<Result<_>>()?,
            audit_elided: s.audit_elided,
            last_analysis: s.last_analysis.map(TryInto::try_into).transpose()?,
            strategy: if s.strategy.is_empty() { "rolling".into() } else { s.strategy },
            traffic: s.traffic.map(|t| TrafficState { new_share_percent: t.new_share_percent, weights: t.weights, new_set: t.new_set, old_set: t.old_set }),
            held_by: s.held_by,
            // The worker's refusal of a field is already in `reason`; the wire carries no more.
            invalid: None,
            refused: s.refused,
            sampling: s.sampling.map(TryInto::try_into).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use signalbox_domain::approval::{Gate, GateOutcome};
    use signalbox_domain::control::{Action, AuditEntry};

    use super::*;

    fn entry(action: Action, by: &str, secs: i64) -> AuditEntry {
        AuditEntry { action, by: by.into(), at: DateTime::from_timestamp(secs, 0).unwrap(), reason: format!("{by} says so") }
    }

    /// A deploy that waited at a gate, was paused, bypassed, and succeeded with its window open.
    fn steered() -> DeployStatus {
        let approval = entry(Action::Approve, "bob", 1_700_000_030);
        let bypass = entry(Action::Bypass, "sre", 1_700_000_090);
        DeployStatus {
            phase: Phase::Succeeded,
            current_batch: 3,
            total_batches: 3,
            fleet_size: 4,
            instances_per_version: BTreeMap::from([("1.1.0".to_owned(), 4)]),
            paused: true,
            halted: true,
            bypass: Some(bypass.clone()),
            gates: vec![
                Gate {
                    before_batch: 2,
                    opened_at: DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
                    expires_at: DateTime::from_timestamp(1_700_086_400, 5).unwrap(),
                    approvals: vec![approval.clone()],
                    outcome: Some(GateOutcome::Approved),
                },
                Gate {
                    before_batch: 3,
                    opened_at: DateTime::from_timestamp(1_700_000_060, 0).unwrap(),
                    expires_at: DateTime::from_timestamp(1_700_086_460, 0).unwrap(),
                    approvals: vec![],
                    outcome: Some(GateOutcome::Bypassed),
                },
            ],
            rollback_window_until: Some(DateTime::from_timestamp(1_700_003_600, 0).unwrap()),
            audit: vec![entry(Action::Pause, "alice", 1_700_000_010), entry(Action::Resume, "alice", 1_700_000_020), approval, bypass],
            audit_elided: 7,
            ..DeployStatus::starting()
        }
    }

    fn status() -> DeployStatus {
        let figures = |requests, errors| GroupFigures { requests, errors, p99_ms: 12.5, log_lines: requests };
        DeployStatus {
            phase: Phase::RolledBack,
            current_batch: 1,
            total_batches: 4,
            fleet_size: 20,
            instances_per_version: BTreeMap::from([("1.0.0".to_owned(), 19), ("1.1.0".to_owned(), 1)]),
            last_verdict: Some(HealthReport {
                verdict: Decision::Fail,
                summary: "3 consecutive bad samples".into(),
                baseline: figures(400, 1),
                samples: vec![
                    SampleJudgement { canary: figures(20, 6), control: Some(figures(380, 1)), bad: Some(true), reasons: vec!["error rate".into()] },
                    SampleJudgement { canary: figures(2, 0), control: None, bad: None, reasons: vec![] },
                ],
            }),
            reason: Some("batch 1: unhealthy".into()),
            ..DeployStatus::starting()
        }
    }

    fn analysed() -> DeployStatus {
        DeployStatus {
            last_analysis: Some(AnalysisReport {
                decision: Decision::Fail,
                rule: Some(Rule::ConsecutiveFailures),
                summary: "Fail (ConsecutiveFailures): 3 samples, 0 pass, 3 fail, 0 inconclusive, 0 error".into(),
                metrics: vec!["error_rate: High value 0.25 fired [Threshold]".into(), "p99_ms: Pass value 9.9".into()],
            }),
            last_verdict: None,
            ..status()
        }
    }

    #[test]
    fn the_engines_verdict_survives_the_wire() {
        let wire = pb::DeployStatus::from(analysed());
        let report = wire.last_analysis.clone().unwrap();
        assert_eq!((report.decision(), report.rule.as_str()), (pb::Verdict::Fail, "consecutive_failures"));
        assert_eq!(DeployStatus::try_from(wire).unwrap(), analysed());
        let mut dry = analysed();
        dry.last_analysis.as_mut().unwrap().rule = None;
        assert_eq!(DeployStatus::try_from(pb::DeployStatus::from(dry.clone())).unwrap(), dry);
        // Undecided reads as inconclusive, as the deploy treats it.
        let mut undecided = analysed();
        undecided.last_analysis.as_mut().unwrap().decision = Decision::Continue;
        assert_eq!(pb::DeployStatus::from(undecided).last_analysis.unwrap().decision(), pb::Verdict::Inconclusive);
    }

    #[test]
    fn an_unknown_decision_or_rule_is_an_error_naming_it() {
        let field = |wire: pb::DeployStatus| DeployStatus::try_from(wire).unwrap_err().to_string();
        let mut wire = pb::DeployStatus::from(analysed());
        wire.last_analysis.as_mut().unwrap().decision = 0;
        assert_eq!(field(wire), "last_analysis.decision: must be set");
        let mut wire = pb::DeployStatus::from(analysed());
        wire.last_analysis.as_mut().unwrap().decision = 42;
        assert!(field(wire).starts_with("last_analysis.decision: "));
        let mut wire = pb::DeployStatus::from(analysed());
        wire.last_analysis.as_mut().unwrap().rule = "gut_feeling".into();
        assert_eq!(field(wire), "last_analysis.rule: `gut_feeling` is not a rule this client knows");
    }

    #[test]
    fn a_status_survives_the_wire() {
        let wire = pb::DeployStatus::from(status());
        assert_eq!(wire.phase(), pb::Phase::RolledBack);
        assert_eq!(wire.last_verdict.as_ref().unwrap().verdict(), pb::Verdict::Fail);
        assert_eq!(DeployStatus::try_from(wire).unwrap(), status());
        let starting = DeployStatus::starting();
        assert_eq!(DeployStatus::try_from(pb::DeployStatus::from(starting.clone())).unwrap(), starting);
    }

    #[test]
    fn operator_control_survives_the_wire() {
        let wire = pb::DeployStatus::from(steered());
        assert!(wire.paused && wire.halted);
        assert_eq!(wire.gates[0].outcome(), pb::GateOutcome::Approved);
        assert_eq!(wire.audit[0].action(), pb::AuditAction::Pause);
        assert_eq!(wire.rollback_window_until, Some(prost_types::Timestamp { seconds: 1_700_003_600, nanos: 0 }));
        assert_eq!(DeployStatus::try_from(wire).unwrap(), steered());
        let mut waiting = steered();
        waiting.phase = Phase::AwaitingApproval;
        waiting.gates[1].outcome = None;
        let wire = pb::DeployStatus::from(waiting.clone());
        assert_eq!((wire.phase(), wire.gates[1].outcome), (pb::Phase::AwaitingApproval, None));
        assert_eq!(DeployStatus::try_from(wire).unwrap(), waiting);
    }

    #[test]
    fn broken_control_fields_are_named_by_their_path() {
        let field = |wire: pb::DeployStatus| DeployStatus::try_from(wire).unwrap_err().field().to_owned();
        let mut wire = pb::DeployStatus::from(steered());
        wire.audit[3].action = 0;
        assert_eq!(field(wire), "audit[3].action");
        let mut wire = pb::DeployStatus::from(steered());
        wire.gates[1].expires_at = None;
        assert_eq!(field(wire), "gates[1].expires_at");
        let mut wire = pb::DeployStatus::from(steered());
        wire.gates[0].approvals[0].at = None;
        assert_eq!(field(wire), "gates[0].approvals[0].at");
        let mut wire = pb::DeployStatus::from(steered());
        wire.bypass.as_mut().unwrap().at = None;
        assert_eq!(field(wire), "bypass.at");
        let mut wire = pb::DeployStatus::from(steered());
        wire.rollback_window_until = Some(prost_types::Timestamp { seconds: 0, nanos: 1_000_000_000 });
        assert_eq!(field(wire), "rollback_window_until");
    }

    #[test]
    fn a_traffic_strategy_and_a_queued_deploy_survive_the_wire() {
        let canary = DeployStatus {
            phase: Phase::Shifting,
            strategy: "canary".into(),
            traffic: Some(TrafficState {
                new_share_percent: 5.0,
                weights: BTreeMap::from([("i-0".to_owned(), 4), ("i-1".to_owned(), 19)]),
                new_set: vec!["i-0".into()],
                old_set: vec!["i-1".into()],
            }),
            ..DeployStatus::starting()
        };
        assert_eq!(DeployStatus::try_from(pb::DeployStatus::from(canary.clone())).unwrap(), canary);
        let queued = DeployStatus { phase: Phase::Queued, held_by: Some("deploy/s/t/a1".into()), ..DeployStatus::starting() };
        assert_eq!(DeployStatus::try_from(pb::DeployStatus::from(queued.clone())).unwrap(), queued);
    }

    #[test]
    fn sampling_in_progress_survives_the_wire_with_the_samples_left() {
        let mut sampling = Sampling::started("batch 2", false, 12, 1_000, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        sampling.progressed(signalbox_domain::SamplingProgress { samples: 5, passes_needed: Some(4) });
        let evaluating = DeployStatus { phase: Phase::Evaluating, sampling: Some(sampling), ..DeployStatus::starting() };
        let wire = pb::DeployStatus::from(evaluating.clone());
        let on_wire = wire.sampling.clone().unwrap();
        assert_eq!((on_wire.samples, on_wire.max_samples, on_wire.samples_left, on_wire.passes_needed), (5, 12, 7, Some(4)));
        assert_eq!(DeployStatus::try_from(wire).unwrap(), evaluating);
        let mut broken = pb::DeployStatus::from(evaluating);
        broken.sampling.as_mut().unwrap().started_at = None;
        assert_eq!(DeployStatus::try_from(broken).unwrap_err().field(), "sampling.started_at");
    }

    #[test]
    fn every_phase_maps_to_its_own_wire_value() {
        use Phase::*;
        let phases = [Preflight, Queued, Pushing, AwaitingApproval, Rolling, Shifting, Baking, Evaluating, RollingBack, Succeeded, RolledBack, Failed];
        let wire: std::collections::BTreeSet<i32> = phases.iter().map(|&p| pb::Phase::from(p) as i32).collect();
        assert_eq!(wire.len(), phases.len());
        assert!(!wire.contains(&(pb::Phase::Unspecified as i32)));
        for p in phases {
            assert_eq!(Phase::try_from(pb::Phase::from(p)).unwrap(), p);
        }
    }

    #[test]
    fn unknown_or_unset_phases_are_errors() {
        let unset = pb::DeployStatus::default();
        assert_eq!(DeployStatus::try_from(unset).unwrap_err().field(), "phase");
        let unknown = pb::DeployStatus { phase: 99, ..Default::default() };
        assert_eq!(DeployStatus::try_from(unknown).unwrap_err().field(), "phase");
        let mut no_verdict = pb::DeployStatus::from(status());
        no_verdict.last_verdict.as_mut().unwrap().verdict = 0;
        assert_eq!(DeployStatus::try_from(no_verdict).unwrap_err().field(), "last_verdict.verdict");
    }
}
