//! Starting and steering deploys: typed calls of the deploy workflow's contract.

use std::time::Duration;

use signalbox_contract::activities::{AnalyzeHealth, SampleAaPeriod};
use signalbox_contract::deploy::{Abort, ApproveGate, Bypass, DeployRun, Halt, Pause, PauseUpdate, Resume, ResumeUpdate, Rollback, Status};
use signalbox_contract::lane::{held, lane_id};
use signalbox_contract::search;
use signalbox_domain::grant::{Control, ControlKey, Subject};
use signalbox_domain::{Approve, Command, DeployRequest, DeployStatus, Phase, SamplingProgress, control, deploy_id};
use temporalio_client::errors::{WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowHandle, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::MemoValues;

use crate::lanes;

/// How long [`Deploys::start`] waits for the worker to admit a deploy before answering with
/// its id anyway (no worker may be running yet; the deploy starts when one is).
pub(crate) const ADMISSION_WAIT: Duration = Duration::from_secs(30);
/// The memo key of a deploy's request fingerprint ([`fingerprint`]).
pub(crate) const REQUEST_MEMO: &str = "request";
/// The memo key of a deploy's config summary ([`search::ConfigSummary`]).
pub(crate) const CONFIG_MEMO: &str = "config";

/// What identifies a request under a request id, and the config snapshot a deploy ran with:
/// the SHA-256 of its JSON (the workflow's input payload), in hex.
fn fingerprint(req: &DeployRequest) -> String {
    use sha2::Digest as _;
    let json = serde_json::to_vec(req).expect("a request serializes");
    sha2::Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
}
/// The last heartbeat of the deploy's sampling activity in flight (an A/A period or an
/// analysis), if it sent one.
async fn sampling_progress(handle: &WorkflowHandle<Client, DeployRun>) -> Option<SamplingProgress> {
    let described = handle.describe(WorkflowDescribeOptions::default()).await.ok()?;
    described
        .raw_description
        .pending_activities
        .iter()
        .filter(|a| a.activity_type.as_ref().is_some_and(|t| t.name == SampleAaPeriod::NAME || t.name == AnalyzeHealth::NAME))
        .find_map(|a| serde_json::from_slice(&a.heartbeat_details.as_ref()?.payloads.first()?.data).ok())
}
/// The end of a workflow id: the caller's request id once checked, or a fresh random one.
pub(crate) fn id_suffix(request_id: Option<&str>) -> Result<String> {
    match request_id {
        Some(r) => {
            signalbox_domain::request::check_request_id("request_id", r)?;
            Ok(r.to_owned())
        }
        None => Ok(uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()),
    }
}

/// The grant of `operation` on `workflow_id` by `by` for `reason`, with a fresh nonce; empty
/// without a key (an open workflow takes the operation as it is).
pub(crate) fn grant(key: Option<&ControlKey>, workflow_id: &str, operation: &str, by: &str, reason: &str) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    key.map(|k| k.sign(&Subject { workflow_id, operation, by, reason }, &nonce)).unwrap_or_default()
}

/// How often the admission is looked at.
pub(crate) const ADMISSION_POLL: Duration = Duration::from_millis(100);

/// Why a deploy could not be started, read or steered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule (or the worker's world refused a field of it); nothing changed.
    #[error("{field}: {rule}")]
    Invalid {
        /// The offending field.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// Another deploy of the service holds the target; nothing changed.
    #[error("{0}")]
    Busy(String),
    /// No such deploy.
    #[error("no deploy {0}")]
    NotFound(String),
    /// The deploy refused a control operation (its validator's or its run's reason, e.g.
    /// `nothing awaits approval`); nothing was recorded.
    #[error("refused: {0}")]
    Refused(String),
    /// Temporal or the world answered with an error.
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias of the deploy client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<signalbox_domain::Error> for Error {
    fn from(e: signalbox_domain::Error) -> Self {
        let signalbox_domain::Error::Invalid { field, rule } = e;
        Self::Invalid { field, rule }
    }
}

/// A started deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its id (the workflow id).
    pub id: String,
    /// When it waits in its lane: the deploy it waits for.
    pub queued_behind: Option<String>,
}

/// Starts and steers deploys on one task queue.
#[derive(Clone)]
pub struct Deploys {
    client: Client,
    task_queue: String,
    /// The key that signs every operation, when this client is the API's: deploys it starts
    /// take control only with its grants.
    key: Option<ControlKey>,
}

impl Deploys {
    /// Deploys through `client` on `task_queue`.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self { client, task_queue: task_queue.into(), key: None }
    }

    /// This client, signing with `key` if there is one: the deploys it starts take control
    /// only through operations it signs (`control: signed`), and it steers pause and resume
    /// by update.
    pub fn signing_with(self, key: Option<ControlKey>) -> Self {
        Self { key, ..self }
    }

    /// `cmd` with the grant of `operation` on `id`, when this client signs.
    fn granted(&self, id: &str, operation: &str, mut cmd: Command) -> Command {
        cmd.grant = grant(self.key.as_ref(), id, operation, &cmd.by, &cmd.reason);
        cmd
    }

    /// The Temporal client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace deploys run in.
    pub fn namespace(&self) -> String {
        temporalio_client::NamespacedClient::namespace(&self.client)
    }

    /// Validates `req`, refuses it when another deploy of the service holds the target (unless
    /// `req.queue`), starts its workflow, and waits until the worker admitted it (preflight
    /// passed), queued it or refused it. Returns the deploy's id. A refusal changes nothing on
    /// the target.
    ///
    /// With `request_id`, the deploy's id ends with it, and a start already made with it answers
    /// with that deploy instead of starting another: a retried call is harmless.
    pub async fn start(&self, mut req: DeployRequest, request_id: Option<String>) -> Result<Started> {
        if self.key.is_some() {
            req.control = Control::Signed;
        }
        req.validate()?;
        let suffix = id_suffix(request_id.as_deref())?;
        let id = deploy_id(&req.service, &req.target, &suffix);
        let fingerprint = fingerprint(&req);
        if request_id.is_some() && self.started_as(&id, &fingerprint).await? {
            return self.admission(&id).await;
        }
        if !req.dry_run && !req.queue {
            let lane = lane_id(&req.service, &req.target);
            if let Some(holder) = lanes::holder(&self.client, &lane).await.map_err(|e| Error::Unavailable(e.to_string()))? {
                return Err(Error::Busy(held(&holder, &req.service, &req.target)));
            }
        }
        let version = if req.artifact.version.is_empty() { String::new() } else { format!(" {}", req.artifact.version) };
        let summary = format!("{}{version} ({}) by {}", req.service, req.artifact.digest.short(), req.deployer);
        let mut memo = MemoValues::new();
        memo.insert(CONFIG_MEMO, search::ConfigSummary::of(&req));
        memo.insert(REQUEST_MEMO, fingerprint.clone());
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .static_summary(summary)
            .search_attributes(search::initial(&req))
            .memo(memo)
            .build();
        match self.client.start_workflow(DeployRun, req, options).await {
            Ok(_) => self.admission(&id).await,
            // Started a moment ago by a retry of the same call, or by another request.
            Err(WorkflowStartError::AlreadyStarted { .. }) => {
                self.started_as(&id, &fingerprint).await?;
                self.admission(&id).await
            }
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// Whether deploy `id` was started, by a request whose fingerprint is `fingerprint`; a
    /// deploy started by another request under the same request id is refused, naming it.
    async fn started_as(&self, id: &str, fingerprint: &str) -> Result<bool> {
        let handle = self.client.get_workflow_handle::<DeployRun>(id);
        let described = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(d) => d,
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(Error::Unavailable(e.to_string())),
        };
        // Deploys started before the fingerprint was kept answer as the same request.
        match described.memo().get::<String>(REQUEST_MEMO) {
            Ok(Some(theirs)) if theirs != fingerprint => {
                Err(Error::Invalid { field: "request_id".into(), rule: format!("already used by deploy {id} for a different request") })
            }
            _ => Ok(true),
        }
    }

    /// Waits for the worker's answer to a started deploy: admitted, queued, or refused (a field
    /// of the request, or the lane).
    async fn admission(&self, id: &str) -> Result<Started> {
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        let mut ticks = tokio::time::interval(ADMISSION_POLL);
        loop {
            ticks.tick().await;
            let status = match self.status(id).await {
                Ok(s) => s,
                // The first workflow task may not have run yet.
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                // Started, but no worker answers yet: it runs when one does.
                Err(Error::Unavailable(_)) => return Ok(Started { id: id.to_owned(), queued_behind: None }),
                Err(e) => return Err(e),
            };
            match status.phase {
                // Refused before anything changed: a field the world refused, the lane, or the
                // world failing to answer (runs recorded before the mark: preflight failing).
                Phase::Failed if status.refused || status.invalid.is_some() || status.held_by.is_some() || status.fleet_size == 0 => {
                    let reason = status.reason.clone().unwrap_or_default();
                    return Err(match (status.invalid, status.held_by) {
                        (Some(invalid), _) => Error::Invalid { field: invalid.field, rule: invalid.rule },
                        (None, Some(_)) => Error::Busy(reason),
                        (None, None) => Error::Unavailable(reason),
                    });
                }
                Phase::Queued => return Ok(Started { id: id.to_owned(), queued_behind: status.held_by }),
                Phase::Preflight if tokio::time::Instant::now() < deadline => {}
                _ => return Ok(Started { id: id.to_owned(), queued_behind: None }),
            }
        }
    }

    /// The deploy's status, from its `status` query; while it samples, with how far the
    /// sampling got (its activity's last heartbeat).
    pub async fn status(&self, id: &str) -> Result<DeployStatus> {
        let handle = self.client.get_workflow_handle::<DeployRun>(id);
        let mut status = handle.query(Status, (), WorkflowQueryOptions::default()).await.map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => Error::NotFound(id.to_owned()),
            other => Error::Unavailable(other.to_string()),
        })?;
        if let Some(sampling) = status.sampling.as_mut() {
            // Without a heartbeat yet (or a server that cannot say), no sample is counted.
            if let Some(progress) = sampling_progress(&handle).await {
                sampling.progressed(progress);
            }
        }
        Ok(status)
    }

    /// Waits for the deploy's workflow to close and returns its final status.
    ///
    /// A succeeded deploy closes when its rollback window does (`DeployRequest::rollback_window_ms`,
    /// an hour unless the request says otherwise): until then its status is already
    /// `Succeeded`, with `rollback_window_until` set. To learn that a rollout is done without
    /// waiting for the window, watch [`Deploys::status`] for a final phase instead.
    pub async fn result(&self, id: &str) -> Result<DeployStatus> {
        let handle = self.client.get_workflow_handle::<DeployRun>(id);
        handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// Signal `pause`: the deploy holds before its next step (`paused: true`).
    pub async fn pause(&self, id: &str, cmd: Command) -> Result<()> {
        if self.key.is_some() {
            let cmd = self.granted(id, PauseUpdate::NAME, cmd);
            return self.update(id, PauseUpdate, cmd, |_| Ok(())).await.map(drop);
        }
        self.signal(id, Pause, cmd).await
    }

    /// Signal `resume`: lifts a pause or a halt.
    pub async fn resume(&self, id: &str, cmd: Command) -> Result<()> {
        if self.key.is_some() {
            let cmd = self.granted(id, ResumeUpdate::NAME, cmd);
            return self.update(id, ResumeUpdate, cmd, |_| Ok(())).await.map(drop);
        }
        self.signal(id, Resume, cmd).await
    }

    /// Update `halt`: freezes the deploy and its target where they stand; answers once frozen.
    pub async fn halt(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        let cmd = self.granted(id, Halt::NAME, cmd);
        self.update(id, Halt, cmd.clone(), |s| control::check_halt(s, &cmd)).await
    }

    /// Update `abort`: rolls the deploy back now.
    pub async fn abort(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        let cmd = self.granted(id, Abort::NAME, cmd);
        self.update(id, Abort, cmd.clone(), |s| control::check_abort(s, &cmd)).await
    }

    /// Update `rollback`: an abort while the deploy runs; after success, a rollback of every
    /// step while the rollback window is open and nothing it changed is another deploy's since.
    pub async fn rollback(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        let cmd = self.granted(id, Rollback::NAME, cmd);
        self.update(id, Rollback, cmd.clone(), |s| control::check_rollback(s, &cmd)).await
    }

    /// Update `bypass`: skips the remaining gates and bake timers; `cmd.reason` is mandatory.
    pub async fn bypass(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        let cmd = self.granted(id, Bypass::NAME, cmd);
        self.update(id, Bypass, cmd.clone(), |s| control::check_bypass(s, &cmd)).await
    }

    /// Update `approve`: one approval of the open approval gate.
    pub async fn approve(&self, id: &str, mut approve: Approve) -> Result<DeployStatus> {
        approve.grant = grant(self.key.as_ref(), id, ApproveGate::NAME, &approve.approver, &approve.reason);
        self.update(id, ApproveGate, approve, |_| Err(control::Refusal("nothing awaits approval".into()))).await
    }

    async fn signal<S>(&self, id: &str, signal: S, cmd: Command) -> Result<()>
    where
        S: temporalio_common::SignalDefinition<Workflow = DeployRun, Input = Command>,
    {
        let handle = self.client.get_workflow_handle::<DeployRun>(id);
        match handle.signal(signal, cmd, WorkflowSignalOptions::default()).await {
            Ok(()) => Ok(()),
            Err(WorkflowInteractionError::NotFound(_)) => Err(self.closed(id, |_| Ok(())).await),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// Runs an update; a deploy whose workflow already closed cannot run its validator, so the
    /// same domain rule (`rule`) explains the refusal from its final status.
    async fn update<U>(&self, id: &str, update: U, input: U::Input, rule: impl FnOnce(&DeployStatus) -> control::Ruling) -> Result<DeployStatus>
    where
        U: temporalio_common::UpdateDefinition<Workflow = DeployRun, Output = DeployStatus>,
        U::Input: Send,
    {
        let handle = self.client.get_workflow_handle::<DeployRun>(id);
        match handle.execute_update(update, input, WorkflowExecuteUpdateOptions::default()).await {
            Ok(status) => Ok(status),
            Err(WorkflowUpdateError::Failed(failure)) => Err(Error::Refused(failure.message.clone())),
            Err(WorkflowUpdateError::NotFound(_)) => Err(self.closed(id, rule).await),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// The error for an operation on `id` that Temporal did not find running: `NotFound` when
    /// there is no such deploy, else `Refused` with the rule's reason on its final status.
    async fn closed(&self, id: &str, rule: impl FnOnce(&DeployStatus) -> control::Ruling) -> Error {
        match self.status(id).await {
            Ok(status) => {
                let why = rule(&status).err().map(|r| r.0);
                Error::Refused(why.unwrap_or_else(|| format!("the deploy already ended {:?}", status.phase)))
            }
            Err(e) => e,
        }
    }

    /// The deploy's full history as Temporal's JSON, pretty-printed (the golden-file format of
    /// the replay tests, so a golden file's diff in review shows which events changed).
    pub async fn history_json(&self, id: &str) -> Result<String> {
        let json = history(&self.client, id).await?;
        let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(serde_json::to_string_pretty(&value).expect("a JSON value prints"))
    }
}

/// The full history of workflow `id` (any type) as Temporal's JSON.
pub async fn history(client: &Client, id: &str) -> Result<Vec<u8>> {
    let handle = client.get_workflow_handle::<temporalio_common::UntypedWorkflow>(id);
    handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await.map_err(|e| match e {
        temporalio_client::WorkflowHistoryError::Fetch(WorkflowInteractionError::NotFound(_)) => Error::NotFound(id.to_owned()),
        other => Error::Unavailable(other.to_string()),
    })
}

