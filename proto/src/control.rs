//! Operator control across the wire: the commands an operator sends, and the audit trail and
//! approval gates a status carries back.

use chrono::{DateTime, Utc};
use signalbox_domain::approval::{Gate, GateOutcome};
use signalbox_domain::control::{Action, AuditEntry};
use signalbox_domain::{Approve, Command, Error, OnExpiry, Result};

use crate::pb;

/// The command of a pause, resume, halt, abort, rollback or bypass; `deploy_id` says which
/// deploy it goes to. Whether `by` and `reason` may be empty is the deploy's rule to apply.
impl From<pb::ControlDeployRequest> for Command {
    fn from(req: pb::ControlDeployRequest) -> Self {
        Self { by: req.by, reason: req.reason, grant: String::new() }
    }
}

/// The approval of an `ApproveDeploy`; `deploy_id` says which deploy it goes to.
impl From<pb::ApproveDeployRequest> for Approve {
    fn from(req: pb::ApproveDeployRequest) -> Self {
        Self { approver: req.approver, reason: req.reason, grant: String::new() }
    }
}

/// Prefixes the field of `e` with `prefix`: an entry's `at` becomes `audit[2].at`.
pub(crate) fn within(prefix: impl std::fmt::Display) -> impl Fn(Error) -> Error {
    move |e| {
        let Error::Invalid { field, rule } = e;
        Error::invalid(format!("{prefix}.{field}"), rule)
    }
}

/// `t` on the wire. Leap seconds (chrono's nanoseconds past a billion) read as the second's end.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    let nanos = t.timestamp_subsec_nanos().min(999_999_999);
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(nanos).expect("below a billion") }
}

/// The instant in `field`, which must be set and in range.
pub fn instant(field: &str, t: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    u32::try_from(t.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| Error::invalid(field, "must be a timestamp with nanos in [0, 1e9) that chrono can represent"))
}

impl From<Action> for pb::AuditAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Pause => Self::Pause,
            Action::Resume => Self::Resume,
            Action::Halt => Self::Halt,
            Action::Abort => Self::Abort,
            Action::Rollback => Self::Rollback,
            Action::Bypass => Self::Bypass,
            Action::Approve => Self::Approve,
            Action::ApprovalExpired => Self::ApprovalExpired,
            Action::Refused => Self::Refused,
        }
    }
}

impl TryFrom<pb::AuditAction> for Action {
    type Error = Error;

    fn try_from(a: pb::AuditAction) -> Result<Self> {
        Ok(match a {
            pb::AuditAction::Unspecified => return Err(Error::invalid("action", "must be set")),
            pb::AuditAction::Pause => Self::Pause,
            pb::AuditAction::Resume => Self::Resume,
            pb::AuditAction::Halt => Self::Halt,
            pb::AuditAction::Abort => Self::Abort,
            pb::AuditAction::Rollback => Self::Rollback,
            pb::AuditAction::Refused => Self::Refused,
            pb::AuditAction::Bypass => Self::Bypass,
            pb::AuditAction::Approve => Self::Approve,
            pb::AuditAction::ApprovalExpired => Self::ApprovalExpired,
        })
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        Self { action: pb::AuditAction::from(e.action).into(), by: e.by, at: Some(timestamp(e.at)), reason: e.reason }
    }
}

/// Errors name the entry's own fields (`action`, `at`); callers prefix them with [`within`].
impl TryFrom<pb::AuditEntry> for AuditEntry {
    type Error = Error;

    fn try_from(e: pb::AuditEntry) -> Result<Self> {
        let action = pb::AuditAction::try_from(e.action).map_err(|u| Error::invalid("action", u.to_string()))?;
        Ok(Self { action: action.try_into()?, by: e.by, at: instant("at", e.at)?, reason: e.reason })
    }
}

impl From<OnExpiry> for pb::OnExpiry {
    fn from(o: OnExpiry) -> Self {
        match o {
            OnExpiry::Abort => Self::Abort,
            OnExpiry::Proceed => Self::Proceed,
        }
    }
}

/// Unset is the domain's default (abort).
impl From<pb::OnExpiry> for OnExpiry {
    fn from(o: pb::OnExpiry) -> Self {
        match o {
            pb::OnExpiry::Unspecified => Self::default(),
            pb::OnExpiry::Abort => Self::Abort,
            pb::OnExpiry::Proceed => Self::Proceed,
        }
    }
}

impl From<GateOutcome> for pb::GateOutcome {
    fn from(o: GateOutcome) -> Self {
        match o {
            GateOutcome::Approved => Self::Approved,
            GateOutcome::Bypassed => Self::Bypassed,
            GateOutcome::Aborted => Self::Aborted,
            GateOutcome::Expired(OnExpiry::Abort) => Self::ExpiredAbort,
            GateOutcome::Expired(OnExpiry::Proceed) => Self::ExpiredProceed,
        }
    }
}

impl TryFrom<pb::GateOutcome> for GateOutcome {
    type Error = Error;

    fn try_from(o: pb::GateOutcome) -> Result<Self> {
        Ok(match o {
            pb::GateOutcome::Unspecified => return Err(Error::invalid("outcome", "must be left unset while the gate is open, else set")),
            pb::GateOutcome::Approved => Self::Approved,
            pb::GateOutcome::Bypassed => Self::Bypassed,
            pb::GateOutcome::Aborted => Self::Aborted,
            pb::GateOutcome::ExpiredAbort => Self::Expired(OnExpiry::Abort),
            pb::GateOutcome::ExpiredProceed => Self::Expired(OnExpiry::Proceed),
        })
    }
}

impl From<Gate> for pb::Gate {
    fn from(g: Gate) -> Self {
        Self {
            before_batch: g.before_batch,
            opened_at: Some(timestamp(g.opened_at)),
            expires_at: Some(timestamp(g.expires_at)),
            approvals: g.approvals.into_iter().map(Into::into).collect(),
            outcome: g.outcome.map(|o| pb::GateOutcome::from(o).into()),
        }
    }
}

/// Errors name the gate's own fields (`opened_at`, `approvals[0].at`); callers prefix them.
impl TryFrom<pb::Gate> for Gate {
    type Error = Error;

    fn try_from(g: pb::Gate) -> Result<Self> {
        let approvals = g
            .approvals
            .into_iter()
            .enumerate()
            .map(|(i, a)| AuditEntry::try_from(a).map_err(within(format_args!("approvals[{i}]"))))
            .collect::<Result<_>>()?;
        let outcome = match g.outcome {
            None => None,
            Some(o) => Some(pb::GateOutcome::try_from(o).map_err(|u| Error::invalid("outcome", u.to_string()))?.try_into()?),
        };
        Ok(Self {
            before_batch: g.before_batch,
            opened_at: instant("opened_at", g.opened_at)?,
            expires_at: instant("expires_at", g.expires_at)?,
            approvals,
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 250_000_000).unwrap()
    }

    fn entry(action: Action) -> AuditEntry {
        AuditEntry { action, by: "alice".into(), at: at(1_700_000_000), reason: "why".into() }
    }

    #[test]
    fn commands_keep_who_and_why_and_leave_the_rules_to_the_deploy() {
        let req = pb::ControlDeployRequest { deploy_id: "deploy/x/1".into(), by: "alice".into(), reason: String::new() };
        assert_eq!(Command::from(req), Command::new("alice", ""));
        let req = pb::ApproveDeployRequest { deploy_id: "deploy/x/1".into(), approver: "bob".into(), reason: "lgtm".into() };
        assert_eq!(Approve::from(req), Approve { approver: "bob".into(), reason: "lgtm".into(), grant: String::new() });
    }

    #[test]
    fn every_action_and_outcome_survives_the_wire() {
        use Action::*;
        for a in [Pause, Resume, Halt, Abort, Rollback, Bypass, Approve, ApprovalExpired] {
            assert_eq!(AuditEntry::try_from(pb::AuditEntry::from(entry(a))).unwrap(), entry(a));
        }
        let outcomes = [
            GateOutcome::Approved,
            GateOutcome::Bypassed,
            GateOutcome::Aborted,
            GateOutcome::Expired(OnExpiry::Abort),
            GateOutcome::Expired(OnExpiry::Proceed),
        ];
        let wire: std::collections::BTreeSet<i32> = outcomes.iter().map(|&o| pb::GateOutcome::from(o) as i32).collect();
        assert_eq!(wire.len(), outcomes.len());
        for o in outcomes.into_iter().map(Some).chain([None]) {
            let gate = Gate { before_batch: 2, opened_at: at(10), expires_at: at(70), approvals: vec![entry(Approve)], outcome: o };
            assert_eq!(Gate::try_from(pb::Gate::from(gate.clone())).unwrap(), gate);
        }
    }

    #[test]
    fn broken_entries_and_gates_name_their_field() {
        let field = |e: Error| e.field().to_owned();
        let mut unset = pb::AuditEntry::from(entry(Action::Halt));
        unset.action = 0;
        assert_eq!(field(AuditEntry::try_from(unset).unwrap_err()), "action");
        let mut unknown = pb::AuditEntry::from(entry(Action::Halt));
        unknown.action = 99;
        assert_eq!(field(AuditEntry::try_from(unknown).unwrap_err()), "action");
        let no_time = pb::AuditEntry { at: None, ..entry(Action::Halt).into() };
        assert_eq!(field(AuditEntry::try_from(no_time).unwrap_err()), "at");
        let bad_nanos = pb::AuditEntry { at: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }), ..entry(Action::Halt).into() };
        assert_eq!(field(AuditEntry::try_from(bad_nanos).unwrap_err()), "at");

        let gate = || pb::Gate::from(Gate { before_batch: 2, opened_at: at(1), expires_at: at(2), approvals: vec![entry(Action::Approve)], outcome: None });
        assert_eq!(field(Gate::try_from(pb::Gate { opened_at: None, ..gate() }).unwrap_err()), "opened_at");
        assert_eq!(field(Gate::try_from(pb::Gate { outcome: Some(0), ..gate() }).unwrap_err()), "outcome");
        let mut late = gate();
        late.approvals[0].at = None;
        assert_eq!(field(Gate::try_from(late).unwrap_err()), "approvals[0].at");
    }

    #[test]
    fn a_leap_second_reads_as_the_end_of_its_second() {
        let leap = DateTime::from_timestamp(59, 1_500_000_000).unwrap();
        assert_eq!(timestamp(leap), prost_types::Timestamp { seconds: 59, nanos: 999_999_999 });
    }
}
