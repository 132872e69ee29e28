//! The `signalbox.v1.ReleaseService` gRPC server: thin handlers over [`Releases`]. Whether an
//! approval, a bypass or an abort is allowed is the release's decision (its update
//! validators); a refusal comes back as `FAILED_PRECONDITION` with its reason.

use std::pin::Pin;

use futures::Stream;
use signalbox_client::{Error, Releases};
use signalbox_domain::release_control::BypassStage;
use signalbox_domain::{Approve, Command, ReleaseStatus};
use signalbox_proto::pb::release_service_server::ReleaseService;
use signalbox_proto::{StartRelease, pb, release_wire_field};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::auth::{Authority, Principal, Role, Scope};
use crate::grpc::{Fetch, status_of, watch_changes};

/// The handlers of `signalbox.v1.ReleaseService`.
#[derive(Clone)]
pub struct ReleaseApi {
    releases: Releases,
    auth: Authority,
    /// Turns true when the server shuts down, so open watches end.
    stopping: watch::Receiver<bool>,
}

impl ReleaseApi {
    /// Handlers over `releases`, calls authorised by `auth`; `stopping` turning true ends
    /// every open watch.
    pub fn new(releases: Releases, auth: Authority, stopping: watch::Receiver<bool>) -> Self {
        Self { releases, auth, stopping }
    }

    /// Checks that `caller` holds `role` for every deploy of the release `id` in `stage` (an
    /// empty name: the stage under way; `None`: every stage), each judged by its service,
    /// target and the stage as its channel; returns the name to record. An open server asks
    /// nothing of Temporal.
    async fn permit_on(&self, caller: Option<&Principal>, id: &str, stage: Option<&str>, role: Role, field: &str, claimed: &str) -> Result<String, Status> {
        if caller.is_none() {
            return self.auth.permit(None, role, &[], field, claimed);
        }
        let status = self.releases.status(id).await.map_err(status_of)?;
        let stage = match stage {
            Some("") => Some(status.stage.clone().unwrap_or_default()),
            other => other.map(str::to_owned),
        };
        let of = |name: Option<&String>| -> Vec<Scope<'_>> {
            status
                .stages
                .iter()
                .filter(|s| name.is_none_or(|name| &s.name == name))
                .flat_map(|s| s.deploys.iter().map(|d| Scope { service: Some(&d.service), target: Some(&d.target.name), channel: Some(&s.name) }))
                .collect()
        };
        // No stage under way (the release is being checked, or has ended): judge the call on
        // every stage, never on nothing.
        let mut scopes = of(stage.as_ref());
        if scopes.is_empty() {
            scopes = of(None);
        }
        if scopes.is_empty() {
            scopes.push(Scope::default());
        }
        self.auth.permit(caller, role, &scopes, field, claimed)
    }
}

/// A request's release id; an empty one is refused before Temporal is asked.
fn release_id(id: String) -> Result<String, Status> {
    if id.trim().is_empty() {
        return Err(status_of(Error::Invalid { field: "release_id".into(), rule: "is required".into() }));
    }
    Ok(id)
}

fn answer(outcome: signalbox_client::Result<ReleaseStatus>) -> Result<Response<pb::ReleaseStatus>, Status> {
    outcome.map(|status| Response::new(status.into())).map_err(status_of)
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::ReleaseStatus, Status>> + Send>>;

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    #[instrument(skip_all, fields(deployer = %request.get_ref().deployer))]
    async fn start_release(&self, request: Request<pb::StartReleaseRequest>) -> Result<Response<pb::StartReleaseResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        let StartRelease { mut request, request_id } = StartRelease::try_from(request.into_inner()).map_err(|e| status_of(e.into()))?;
        let every: Vec<&str> = request.services.iter().map(|s| s.service.as_str()).collect();
        let scopes: Vec<Scope<'_>> = request
            .pipeline
            .stages
            .iter()
            .flat_map(|stage| {
                let every = &every;
                stage.targets.iter().flat_map(move |t| {
                    let services: Vec<&str> = if t.services.is_empty() { every.clone() } else { t.services.iter().map(String::as_str).collect() };
                    services.into_iter().map(move |service| Scope { service: Some(service), target: Some(&t.target.name), channel: Some(&stage.name) })
                })
            })
            .collect();
        let deployer = self.auth.permit(caller.as_ref(), Role::Start, &scopes, "deployer", &request.deployer)?;
        request.deployer = deployer;
        let id = self.releases.start(request, request_id).await.map_err(|e| {
            status_of(match e {
                Error::Invalid { field, rule } => Error::Invalid { field: release_wire_field(&field), rule },
                other => other,
            })
        })?;
        info!(release_id = %id, "release started");
        Ok(Response::new(pb::StartReleaseResponse { release_id: id }))
    }

    #[instrument(skip_all, fields(release_id = %request.get_ref().release_id))]
    async fn get_release(&self, request: Request<pb::GetReleaseRequest>) -> Result<Response<pb::ReleaseStatus>, Status> {
        self.auth.read(&request)?;
        let id = release_id(request.into_inner().release_id)?;
        answer(self.releases.status(&id).await)
    }

    type WatchReleaseStream = StatusStream;

    #[instrument(skip_all, fields(release_id = %request.get_ref().release_id))]
    async fn watch_release(&self, request: Request<pb::GetReleaseRequest>) -> Result<Response<StatusStream>, Status> {
        self.auth.read(&request)?;
        let id = release_id(request.into_inner().release_id)?;
        let first = self.releases.status(&id).await.map_err(status_of)?;
        let releases = self.releases.clone();
        let fetch: Fetch<ReleaseStatus> = Box::new(move || {
            let (releases, id) = (releases.clone(), id.clone());
            Box::pin(async move { releases.status(&id).await })
        });
        Ok(Response::new(Box::pin(watch_changes(fetch, |s: &ReleaseStatus| s.phase.is_final(), first, self.stopping.clone()))))
    }

    #[instrument(skip_all, fields(release_id = %request.get_ref().release_id, approver = %request.get_ref().approver))]
    async fn approve_release(&self, request: Request<pb::ApproveReleaseRequest>) -> Result<Response<pb::ReleaseStatus>, Status> {
        let caller = self.auth.caller(&request)?;
        let req = request.into_inner();
        let id = release_id(req.release_id)?;
        let approver = self.permit_on(caller.as_ref(), &id, Some(""), Role::Approve, "approver", &req.approver).await?;
        answer(self.releases.approve(&id, Approve { approver, reason: req.reason, grant: String::new() }).await)
    }

    #[instrument(skip_all, fields(release_id = %request.get_ref().release_id, by = %request.get_ref().by))]
    async fn bypass_release(&self, request: Request<pb::BypassReleaseRequest>) -> Result<Response<pb::ReleaseStatus>, Status> {
        let caller = self.auth.caller(&request)?;
        let req = request.into_inner();
        let id = release_id(req.release_id)?;
        let by = self.permit_on(caller.as_ref(), &id, Some(&req.stage), Role::Bypass, "by", &req.by).await?;
        let bypass = BypassStage { by, reason: req.reason, stage: req.stage, expiry_ms: req.expiry_ms, override_failed_verdict: req.override_failed_verdict, grant: String::new() };
        answer(self.releases.bypass(&id, bypass).await)
    }

    #[instrument(skip_all, fields(release_id = %request.get_ref().release_id, by = %request.get_ref().by))]
    async fn abort_release(&self, request: Request<pb::AbortReleaseRequest>) -> Result<Response<pb::ReleaseStatus>, Status> {
        let caller = self.auth.caller(&request)?;
        let req = request.into_inner();
        let id = release_id(req.release_id)?;
        let by = self.permit_on(caller.as_ref(), &id, None, Role::Steer, "by", &req.by).await?;
        answer(self.releases.abort(&id, Command::new(by, req.reason)).await)
    }
}
