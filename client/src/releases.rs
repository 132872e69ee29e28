//! Starting and reading releases: typed calls of the release workflow's contract.

use signalbox_contract::release::{AbortRelease, ApproveStage, BypassRelease, ReleaseRun, ReleaseStatusQuery, release_id};
use signalbox_contract::search;
use signalbox_domain::control::Refusal;
use signalbox_domain::release_control::{self, BypassStage};
use signalbox_domain::grant::{Control, ControlKey};
use signalbox_domain::{Approve, Command, ReleasePhase, ReleaseRequest, ReleaseStatus};
use temporalio_client::errors::{WorkflowQueryError, WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions,
};

use crate::deploys::{ADMISSION_POLL, ADMISSION_WAIT, grant, id_suffix};
use crate::{Error, Result};

/// Starts and reads releases on one task queue (the deploys' queue: a release's deploys run
/// where every deploy runs).
#[derive(Clone)]
pub struct Releases {
    client: Client,
    task_queue: String,
    /// The key that signs every operation, when this client is the API's.
    key: Option<ControlKey>,
}

impl Releases {
    /// Releases through `client` on `task_queue`.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self { client, task_queue: task_queue.into(), key: None }
    }

    /// This client, signing with `key` if there is one: the releases it starts, and their
    /// deploys, take control only through operations it signs.
    pub fn signing_with(self, key: Option<ControlKey>) -> Self {
        Self { key, ..self }
    }

    /// The grant of `operation` on `id` by `by` for `reason`, or none when this client does
    /// not sign.
    fn grant(&self, id: &str, operation: &str, by: &str, reason: &str) -> String {
        grant(self.key.as_ref(), id, operation, by, reason)
    }

    /// Checks `req` (the pipeline, the services and their `depends_on`, the blast-radius
    /// budget), starts its workflow and waits for the worker's check of the world (every
    /// target exists, every build is pushed and not quarantined); returns the release's id. A
    /// refused request starts nothing and names the field. With `request_id`, the id ends with
    /// it, and a second start with it is refused naming the release that has it.
    pub async fn start(&self, mut req: ReleaseRequest, request_id: Option<String>) -> Result<String> {
        if self.key.is_some() {
            req.control = Control::Signed;
        }
        req.validate()?;
        let suffix = id_suffix(request_id.as_deref())?;
        let id = release_id(&req.pipeline.name, &suffix);
        let services: Vec<&str> = req.services.iter().map(|s| s.service.as_str()).collect();
        let summary = format!("{} through {} by {}", services.join(", "), req.pipeline.name, req.deployer);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .static_summary(summary)
            .search_attributes(search::release(&id, &req))
            .build();
        match self.client.start_workflow(ReleaseRun, req, options).await {
            Ok(_) => self.admission(id).await,
            Err(WorkflowStartError::AlreadyStarted { .. }) => {
                Err(Error::Invalid { field: "request_id".into(), rule: format!("already used by release {id}") })
            }
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// Waits until the release passed or failed its check of the world; a field it refused is
    /// the start's error. A release no worker has picked up yet is started all the same.
    async fn admission(&self, id: String) -> Result<String> {
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        let mut ticks = tokio::time::interval(ADMISSION_POLL);
        loop {
            ticks.tick().await;
            match self.status(&id).await {
                Ok(status) if status.phase == ReleasePhase::Checking && tokio::time::Instant::now() < deadline => {}
                Ok(ReleaseStatus { phase: ReleasePhase::Failed, invalid: Some(invalid), .. }) => {
                    return Err(Error::Invalid { field: invalid.field, rule: invalid.rule });
                }
                Ok(_) => return Ok(id),
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Err(Error::Unavailable(_)) => return Ok(id),
                Err(e) => return Err(e),
            }
        }
    }

    /// The release's status, from its `status` query.
    pub async fn status(&self, id: &str) -> Result<ReleaseStatus> {
        let handle = self.client.get_workflow_handle::<ReleaseRun>(id);
        handle.query(ReleaseStatusQuery, (), WorkflowQueryOptions::default()).await.map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => Error::NotFound(id.to_owned()),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// Update `approve`: one approval of the open stage gate.
    pub async fn approve(&self, id: &str, mut approve: Approve) -> Result<ReleaseStatus> {
        approve.grant = self.grant(id, ApproveStage::NAME, &approve.approver, &approve.reason);
        self.update(id, ApproveStage, approve, |_| Err(Refusal("nothing awaits approval".into()))).await
    }

    /// Update `bypass`: the emergency bypass of a stage (`reason` and `expiry_ms` are
    /// mandatory); its verdicts too only with `override_failed_verdict`.
    pub async fn bypass(&self, id: &str, mut bypass: BypassStage) -> Result<ReleaseStatus> {
        bypass.grant = self.grant(id, BypassRelease::NAME, &bypass.by, &bypass.reason);
        self.update(id, BypassRelease, bypass, |s| Err(Refusal(format!("cannot bypass a stage: the release already ended {:?}", s.phase)))).await
    }

    /// Update `abort`: stops promotion; the deploys in flight roll back.
    pub async fn abort(&self, id: &str, mut cmd: Command) -> Result<ReleaseStatus> {
        cmd.grant = self.grant(id, AbortRelease::NAME, &cmd.by, &cmd.reason);
        self.update(id, AbortRelease, cmd.clone(), |s| release_control::check_abort(s, &cmd)).await
    }

    /// Runs an update; a release that already closed cannot run its validator, so `rule`
    /// explains the refusal from its final status.
    async fn update<U>(&self, id: &str, update: U, input: U::Input, rule: impl FnOnce(&ReleaseStatus) -> Result<(), Refusal>) -> Result<ReleaseStatus>
    where
        U: temporalio_common::UpdateDefinition<Workflow = ReleaseRun, Output = ReleaseStatus>,
        U::Input: Send,
    {
        let handle = self.client.get_workflow_handle::<ReleaseRun>(id);
        match handle.execute_update(update, input, WorkflowExecuteUpdateOptions::default()).await {
            Ok(status) => Ok(status),
            Err(WorkflowUpdateError::Failed(failure)) => Err(Error::Refused(failure.message.clone())),
            Err(WorkflowUpdateError::NotFound(_)) => match self.status(id).await {
                Ok(status) => Err(Error::Refused(rule(&status).err().map_or_else(|| format!("the release already ended {:?}", status.phase), |r| r.0))),
                Err(e) => Err(e),
            },
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// Waits for the release to end and returns its final status.
    pub async fn result(&self, id: &str) -> Result<ReleaseStatus> {
        let handle = self.client.get_workflow_handle::<ReleaseRun>(id);
        handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| Error::Unavailable(e.to_string()))
    }
}
