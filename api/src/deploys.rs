//! Starting and inspecting deploys through the Temporal client. The gRPC handlers, the CLI,
//! the tests and the benchmarks all go through here.

use signalbox_activities::{Home, deploy::preflight};
use signalbox_domain::contract::PreflightInput;
use signalbox_domain::{Approve, Command, DeployRequest, DeployStatus, Phase, control, search};
use temporalio_common::MemoValues;
use signalbox_workflows::DeployWorkflow;
use temporalio_client::errors::{WorkflowInteractionError, WorkflowQueryError, WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};

/// Why a deploy could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule; nothing was started.
    #[error("{field}: {rule}")]
    Invalid {
        /// The offending field.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A deploy of this artifact to this service already exists.
    #[error("deploy {0} already exists: an artifact is deployed to a service once")]
    Duplicate(String),
    /// No such deploy.
    #[error("no deploy {0}")]
    NotFound(String),
    /// The deploy refused a control operation (its validator's reason, e.g. `nothing awaits
    /// approval`); nothing was recorded. gRPC: `FAILED_PRECONDITION`.
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

fn from_preflight(e: signalbox_activities::Error) -> Error {
    use signalbox_activities::Error as A;
    match e {
        A::Invalid(d) => d.into(),
        A::UnknownArtifact(d) => Error::Invalid { field: "artifact.digest".into(), rule: format!("{d} is not in the artifact store") },
        A::Fleet(m) => Error::Invalid { field: "fleet.name".into(), rule: m },
        other => Error::Unavailable(other.to_string()),
    }
}

/// Starts and reads deploys on one task queue.
#[derive(Clone)]
pub struct Deploys {
    client: Client,
    task_queue: String,
    home: Home,
}

impl Deploys {
    /// Deploys through `client` on `task_queue`, checked against the world under `home`.
    pub fn new(client: Client, task_queue: impl Into<String>, home: Home) -> Self {
        Self { client, task_queue: task_queue.into(), home }
    }

    /// The Temporal client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Validates `req`, checks it against the world, and starts its workflow. Returns the deploy
    /// id. Any refusal happens before anything is started, so a refused request changes nothing.
    pub async fn start(&self, req: DeployRequest) -> Result<String> {
        req.validate()?;
        let check = PreflightInput {
            service: req.service.clone(),
            artifact: req.artifact.clone(),
            fleet: req.fleet.clone(),
            batch_plan: req.batch_plan.clone(),
        };
        preflight(&self.home, check).await.map_err(from_preflight)?;
        let id = req.workflow_id();
        let summary = format!("{} {} ({}) by {}", req.service, req.artifact.version, req.artifact.digest.short(), req.deployer);
        let mut memo = MemoValues::new();
        memo.insert("config", search::ConfigSummary::of(&req));
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .static_summary(summary)
            .search_attributes(search::initial(&req, "rolling"))
            .memo(memo)
            .build();
        match self.client.start_workflow(DeployWorkflow::run, req, options).await {
            Ok(_) => Ok(id),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Err(Error::Duplicate(id)),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// The deploy's status, from its `status` query.
    pub async fn status(&self, id: &str) -> Result<DeployStatus> {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
        handle.query(DeployWorkflow::status, (), WorkflowQueryOptions::default()).await.map_err(|e| match e {
            WorkflowQueryError::NotFound(_) => Error::NotFound(id.to_owned()),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// Waits for the deploy's workflow to close and returns its final status.
    ///
    /// A succeeded deploy closes when its rollback window does (`DeployRequest::rollback_window_ms`,
    /// an hour unless the request says otherwise): until then its status is already
    /// `Succeeded`, with `rollback_window_until` set. To learn that a rollout is done without
    /// waiting for the window, watch [`Deploys::status`] for a final phase instead.
    pub async fn result(&self, id: &str) -> Result<DeployStatus> {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
        handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// Signal `pause`: the deploy holds before its next batch (`paused: true`).
    pub async fn pause(&self, id: &str, cmd: Command) -> Result<()> {
        self.signal(id, DeployWorkflow::pause, cmd).await
    }

    /// Signal `resume`: lifts a pause or a halt.
    pub async fn resume(&self, id: &str, cmd: Command) -> Result<()> {
        self.signal(id, DeployWorkflow::resume, cmd).await
    }

    /// Update `halt`: freezes the deploy and its fleet where they stand; answers once frozen.
    pub async fn halt(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        self.update(id, DeployWorkflow::halt, cmd.clone(), |s| control::check_halt(s, &cmd)).await
    }

    /// Update `abort`: rolls the deploy back now.
    pub async fn abort(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        self.update(id, DeployWorkflow::abort, cmd.clone(), |s| control::check_abort(s, &cmd)).await
    }

    /// Update `rollback`: an abort while the deploy runs; after success, a rollback of every
    /// batch while the rollback window is open.
    pub async fn rollback(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        self.update(id, DeployWorkflow::rollback, cmd.clone(), |s| control::check_rollback(s, &cmd)).await
    }

    /// Update `bypass`: skips the remaining gates and bake timers; `cmd.reason` is mandatory.
    pub async fn bypass(&self, id: &str, cmd: Command) -> Result<DeployStatus> {
        self.update(id, DeployWorkflow::bypass, cmd.clone(), |s| control::check_bypass(s, &cmd)).await
    }

    /// Update `approve`: one approval of the open approval gate.
    pub async fn approve(&self, id: &str, approve: Approve) -> Result<DeployStatus> {
        self.update(id, DeployWorkflow::approve, approve, |_| Err(control::Refusal("nothing awaits approval".into()))).await
    }

    async fn signal<S>(&self, id: &str, signal: S, cmd: Command) -> Result<()>
    where
        S: temporalio_common::SignalDefinition<Workflow = <DeployWorkflow as temporalio_common::HasWorkflowDefinition>::Run, Input = Command>,
    {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
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
        U: temporalio_common::UpdateDefinition<Workflow = <DeployWorkflow as temporalio_common::HasWorkflowDefinition>::Run, Output = DeployStatus>,
        U::Input: Send,
    {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
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
                Error::Refused(why.unwrap_or_else(|| format!("the deploy already ended {}", phase_name(status.phase))))
            }
            Err(e) => e,
        }
    }

    /// The deploy's full history as Temporal's JSON (the golden-file format of the replay tests).
    pub async fn history_json(&self, id: &str) -> Result<String> {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
        let json = handle
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        // Pretty-printed, so a golden file's diff in review shows which events changed.
        let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(serde_json::to_string_pretty(&value).expect("a JSON value prints"))
    }
}

fn phase_name(phase: Phase) -> String {
    format!("{phase:?}")
}
