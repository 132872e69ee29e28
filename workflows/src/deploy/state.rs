//! The deploy workflow's state: what the `status` query answers, what the handlers record of
//! the operators' requests, and the views the steering rules of `signalbox_domain::control`
//! take of it.

use signalbox_domain::approval::{self, ApprovalPolicy, GateOutcome};
use signalbox_domain::control::{Action, AuditEntry, Boundary, Command, Step, Steering, holds, interrupts, must_freeze, unholds};
use signalbox_domain::DeployStatus;
use signalbox_domain::grant::Control;
use temporalio_macros::workflow;

use crate::shared::grant::Taken;

/// The deploy workflow. Its methods (the run and the handlers) are in `super`.
#[workflow]
pub struct DeployWorkflow {
    /// What the `status` query answers.
    pub(crate) status: DeployStatus,
    /// Who started the deploy (the self-approval rule); set when the run starts.
    pub(crate) deployer: String,
    /// The approval policy (the `approve` validator); set when the run starts.
    pub(crate) approval: Option<ApprovalPolicy>,
    /// An accepted abort or rollback, as the reason the deploy will end with.
    pub(crate) stop: Option<String>,
    /// This deploy set its target's halt mark and has not lifted it yet.
    pub(crate) frozen: bool,
    /// This deploy takes its lane (one deploy per service and target); false for dry runs and
    /// for runs recorded before lanes.
    pub(crate) lanes: bool,
    /// The one rollback asked for in the rollback window, from the request to its answer read.
    pub(crate) rollback: Option<RollbackCheck>,
    /// Who may steer: anyone, or the API's signed operations only; set when the run starts.
    pub(crate) control: Control,
    /// The API's grants this deploy took, so none is taken twice.
    pub(crate) taken: Taken,
    /// The audit trail in the status is bounded ([`signalbox_domain::status::AUDIT_KEPT`]);
    /// false for runs recorded before it was, and until the run starts.
    pub(crate) bounded_audit: bool,
}

/// A rollback asked for in the rollback window, while the run checks that what it would undo is
/// still this deploy's. One at a time: the validator refuses another until the answer was read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RollbackCheck {
    /// Asked; the run has not looked yet.
    Asked(Command),
    /// The run is checking it.
    Checking,
    /// The run's answer: accepted, or refused with the reason.
    Answered(Result<(), String>),
}

impl Default for DeployWorkflow {
    fn default() -> Self {
        Self {
            status: DeployStatus::starting(),
            deployer: String::new(),
            approval: None,
            stop: None,
            frozen: false,
            lanes: false,
            rollback: None,
            control: Control::Open,
            taken: Taken::default(),
            bounded_audit: false,
        }
    }
}

impl DeployWorkflow {
    /// What the steering rules see.
    pub(crate) fn steering(&self) -> Steering {
        Steering {
            paused: self.status.paused,
            halted: self.status.halted,
            stopping: self.stop.is_some(),
            frozen: self.frozen,
            bypassed: self.status.bypass.is_some(),
        }
    }

    /// Whether the target must be frozen now.
    pub(crate) fn must_freeze(&self, step: Option<Step>) -> bool {
        must_freeze(self.steering(), step)
    }

    /// Whether the step in progress must be interrupted.
    pub(crate) fn interrupts(&self, step: Step) -> bool {
        interrupts(self.steering(), step)
    }

    /// Whether the run holds at `at`.
    pub(crate) fn holds(&self, at: Boundary) -> bool {
        holds(self.steering(), at)
    }

    /// Whether a holding run must look again.
    pub(crate) fn unholds(&self, at: Boundary) -> bool {
        unholds(self.steering(), at)
    }

    /// How the open approval gate closes now, if it does.
    pub(crate) fn gate_outcome(&self, policy: &ApprovalPolicy, expired: bool) -> Option<GateOutcome> {
        let gate = self.status.open_gate()?;
        approval::settle(policy, gate, self.status.bypass.is_some(), self.stop.is_some(), expired)
    }

    /// Whether an approval gate is decided, or the target must be frozen while it waits.
    pub(crate) fn gate_moves(&self, policy: &ApprovalPolicy) -> bool {
        self.must_freeze(None) || self.gate_outcome(policy, false).is_some()
    }

    /// Appends `action` by `cmd` at `at` to the audit trail; returns the entry.
    pub(crate) fn record(&mut self, action: Action, cmd: &Command, at: chrono::DateTime<chrono::Utc>) -> AuditEntry {
        let entry = AuditEntry::of(action, cmd, at);
        self.audit(entry.clone());
        entry
    }

    /// Appends `entry` to the audit trail, within its bound once the run set it.
    pub(crate) fn audit(&mut self, entry: AuditEntry) {
        self.status.audit(entry, self.bounded_audit);
    }

    /// Accepts an abort or a rollback: the run stops at its next point of attention and rolls
    /// back, with `reason`.
    pub(crate) fn accept_stop(&mut self, action: Action, reason: String, cmd: &Command, at: chrono::DateTime<chrono::Utc>) -> DeployStatus {
        self.record(action, cmd, at);
        self.stop = Some(reason.clone());
        self.status.reason = Some(reason);
        self.status.clone()
    }
}
