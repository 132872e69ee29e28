//! Starting and inspecting deploys through the Temporal client. The gRPC handlers, the CLI,
//! the tests and the benchmarks all go through here.

use signalbox_activities::{Home, deploy::preflight};
use signalbox_domain::contract::PreflightInput;
use signalbox_domain::{DeployRequest, DeployStatus, search};
use temporalio_common::MemoValues;
use signalbox_workflows::DeployWorkflow;
use temporalio_client::{
    Client, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowStartOptions, errors::WorkflowStartError,
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
            temporalio_client::errors::WorkflowQueryError::NotFound(_) => Error::NotFound(id.to_owned()),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// Waits for the deploy to end and returns its final status.
    pub async fn result(&self, id: &str) -> Result<DeployStatus> {
        let handle = self.client.get_workflow_handle::<DeployWorkflow>(id);
        handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| Error::Unavailable(e.to_string()))
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
