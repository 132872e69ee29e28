//! The release workflow's state, what its steering rules read of it, and why a stage stops.

use std::collections::BTreeSet;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use signalbox_domain::approval::ApprovalPolicy;
use signalbox_domain::grant::Control;
use signalbox_domain::{Command, DeployState, DeployStatus, ReleasePhase, ReleaseStatus};
use temporalio_common::error::ChildWorkflowExecutionError;
use temporalio_macros::workflow;
use temporalio_sdk::{CancellableFuture, WaitConditionOptions, WorkflowCancellationToken};

use crate::shared::grant::Taken;


/// A release: its status is the whole tree, kept as the run goes. Its methods (the run and
/// the handlers) are in `super`.
#[workflow]
pub struct ReleaseWorkflow {
    pub(crate) status: ReleaseStatus,
    /// Who started it (the approvers' rules need it).
    pub(crate) deployer: String,
    /// Each stage's approval rules, in pipeline order.
    pub(crate) approvals: Vec<Option<ApprovalPolicy>>,
    /// The abort, once accepted.
    pub(crate) abort: Option<Command>,
    /// The deploys the bypass of their stage's verdicts was sent to.
    pub(crate) bypassed_deploys: BTreeSet<String>,
    /// The deploys that said they succeeded and hold their rollback window open.
    pub(crate) succeeded: BTreeSet<String>,
    /// The last workflow time the run saw: validators have no clock.
    pub(crate) clock: DateTime<Utc>,
    /// Who may steer: anyone, or the API's signed operations only; set when the run starts.
    pub(crate) control: Control,
    /// The API's grants this release took, so none is taken twice.
    pub(crate) taken: Taken,
}

impl Default for ReleaseWorkflow {
    fn default() -> Self {
        Self {
            status: ReleaseStatus { phase: ReleasePhase::Deploying, reason: None, ..ReleaseStatus::refused("", String::new()) },
            deployer: String::new(),
            approvals: Vec::new(),
            abort: None,
            bypassed_deploys: BTreeSet::new(),
            succeeded: BTreeSet::new(),
            clock: DateTime::UNIX_EPOCH,
            control: Control::Open,
            taken: Taken::default(),
        }
    }
}

pub(crate) type Validation = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A child deploy's result.
pub(crate) type Outcome = Pin<Box<dyn CancellableFuture<Output = Result<DeployStatus, ChildWorkflowExecutionError>>>>;

/// A deploy of the release in flight: its place in the stage's list, and its result.
pub(crate) type InFlight = (usize, Outcome);

/// A deploy that succeeded and holds its rollback window open: its stage, its place in the
/// stage's list, and its result (which comes when the window closes).
pub(crate) type Held = (usize, usize, Outcome);

/// How long a release holds its deploys' rollback windows open when its pipeline rolls back
/// on failure: the longest window a deploy may have; the release closes them when it ends.
pub(crate) const HOLD_MS: u64 = signalbox_domain::bounds::MAX_ROLLBACK_WINDOW_MS;

impl ReleaseWorkflow {
    /// Whether stage `si` is bypassed.
    pub(crate) fn bypassed(&self, si: usize) -> bool {
        self.status.stages[si].bypass.is_some()
    }

    /// The deploys of stage `si` running under a bypass of its verdicts that was not sent to
    /// them yet.
    pub(crate) fn unbypassed(&self, si: usize) -> Vec<String> {
        let stage = &self.status.stages[si];
        if !stage.bypass.as_ref().is_some_and(|b| b.override_failed_verdict) {
            return Vec::new();
        }
        stage.deploys.iter().filter(|d| d.state == DeployState::Running && !self.bypassed_deploys.contains(&d.deploy_id)).map(|d| d.deploy_id.clone()).collect()
    }

    /// The stop an accepted abort makes.
    pub(crate) fn aborted(&self) -> Option<Stop> {
        self.abort.as_ref().map(|cmd| Stop { reason: signalbox_domain::control::aborted(cmd), failed_verdict: None, aborted: true })
    }
}

/// Why a stage stopped: the reason, the service whose deploy failed its verdict (its build
/// is bad, not the world around it) if one did, and whether an operator aborted.
pub(crate) struct Stop {
    pub(crate) reason: String,
    pub(crate) failed_verdict: Option<String>,
    pub(crate) aborted: bool,
}

impl Stop {
    pub(crate) fn failed(reason: String, failed_verdict: Option<String>) -> Self {
        Self { reason, failed_verdict, aborted: false }
    }
}

/// Waits that only operators' requests end: a cancelled release stops through its timers and
/// deploys, not by waking these over and over.
pub(crate) fn requests_only() -> WaitConditionOptions {
    WaitConditionOptions::builder().cancellation_token(WorkflowCancellationToken::new()).build()
}

