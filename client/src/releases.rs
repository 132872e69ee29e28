//! Starting and reading releases: typed calls of the release workflow's contract.

use signalbox_contract::release::{ReleaseRun, ReleaseStatusQuery, release_id};
use signalbox_domain::{ReleaseRequest, ReleaseStatus};
use temporalio_client::errors::{WorkflowQueryError, WorkflowStartError};
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions};

use crate::deploys::id_suffix;
use crate::{Error, Result};

/// Starts and reads releases on one task queue (the deploys' queue: a release's deploys run
/// where every deploy runs).
#[derive(Clone)]
pub struct Releases {
    client: Client,
    task_queue: String,
}

impl Releases {
    /// Releases through `client` on `task_queue`.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self { client, task_queue: task_queue.into() }
    }

    /// Checks `req` (the pipeline, the services and their `depends_on`, the blast-radius
    /// budget) and starts its workflow; returns the release's id. A refused request starts
    /// nothing. With `request_id`, the id ends with it, and a second start with it is refused
    /// naming the release that has it.
    pub async fn start(&self, req: ReleaseRequest, request_id: Option<String>) -> Result<String> {
        req.validate()?;
        let suffix = id_suffix(request_id.as_deref())?;
        let id = release_id(&req.pipeline.name, &suffix);
        let services: Vec<&str> = req.services.iter().map(|s| s.service.as_str()).collect();
        let summary = format!("{} through {} by {}", services.join(", "), req.pipeline.name, req.deployer);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .static_summary(summary)
            .build();
        match self.client.start_workflow(ReleaseRun, req, options).await {
            Ok(_) => Ok(id),
            Err(WorkflowStartError::AlreadyStarted { .. }) => {
                Err(Error::Invalid { field: "request_id".into(), rule: format!("already used by release {id}") })
            }
            Err(e) => Err(Error::Unavailable(e.to_string())),
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

    /// Waits for the release to end and returns its final status.
    pub async fn result(&self, id: &str) -> Result<ReleaseStatus> {
        let handle = self.client.get_workflow_handle::<ReleaseRun>(id);
        handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| Error::Unavailable(e.to_string()))
    }
}
