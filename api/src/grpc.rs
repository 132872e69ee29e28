//! The `signalbox.v1.DeployService` gRPC server: thin handlers that convert the request, call
//! [`Deploys`] and map its errors to a [`Status`]. Whether a control operation is allowed is the
//! deploy's decision (its update validators); a refusal comes back as `FAILED_PRECONDITION`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use signalbox_client::{Deploys, Error, Releases, listing};
use signalbox_domain::{Approve, Command, DeployStatus};
use signalbox_proto::{StartDeploy, pb, wire_field};
use signalbox_proto::pb::artifact_service_server::ArtifactServiceServer;
use signalbox_proto::pb::deploy_service_server::{DeployService, DeployServiceServer};
use signalbox_proto::pb::release_service_server::ReleaseServiceServer;
use signalbox_proto::pb::target_service_server::TargetServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::artifacts::Artifacts;
use crate::auth::{Authority, Role, Scope, Security};
use crate::releases::ReleaseApi;
use crate::targets::Targets;


/// How often a watch asks the deploy for its status. Statuses change per batch step (seconds),
/// so this is quick enough to see every step and cheap enough for a Temporal query.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The gRPC status of a deploy client error. `Invalid` keeps the `<field>: <rule>` message so a
/// caller can fix its input without reading server logs; `Busy` names the deploy holding the
/// target; `Refused` carries the deploy's reason as it is (e.g. `reason: an abort needs a reason`).
pub fn status_of(e: Error) -> Status {
    match e {
        Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
        Error::Busy(why) => Status::failed_precondition(why),
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::Refused(why) => Status::failed_precondition(why),
        Error::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

/// A request's deploy id; an empty one is refused before Temporal is asked.
fn deploy_id(id: String) -> Result<String, Status> {
    if id.trim().is_empty() {
        return Err(status_of(Error::Invalid { field: "deploy_id".into(), rule: "is required".into() }));
    }
    Ok(id)
}

/// What a deploy id says the deploy acts on (`deploy/<service>/<target>/<suffix>`, the target
/// `<kind>:<name>` for kinds other than local): the scope the policy judges a call on it by.
pub(crate) fn deploy_scope(id: &str) -> Scope<'_> {
    let mut parts = id.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("deploy"), Some(service), Some(target)) => Scope { service: Some(service), target: Some(target.rsplit(':').next().unwrap_or(target)), channel: None },
        // Not an id signalbox makes: the policy must grant the role for everything.
        _ => Scope { service: Some(id), target: Some(id), channel: None },
    }
}

/// The deploy a control request goes to, and its command by the caller, who must hold `role`
/// for the deploy's service and target.
fn control(auth: &Authority, request: Request<pb::ControlDeployRequest>, role: Role) -> Result<(String, Command), Status> {
    let caller = auth.caller(&request)?;
    let mut req = request.into_inner();
    let id = deploy_id(std::mem::take(&mut req.deploy_id))?;
    req.by = auth.permit(caller.as_ref(), role, &[deploy_scope(&id)], "by", &req.by)?;
    Ok((id, req.into()))
}

/// The answer of a control update: the deploy's status once the operation was accepted.
fn answer(outcome: signalbox_client::Result<DeployStatus>) -> Result<Response<pb::DeployStatus>, Status> {
    outcome.map(|status| Response::new(status.into())).map_err(status_of)
}

/// The handlers of `signalbox.v1.DeployService`.
#[derive(Clone)]
pub struct Api {
    deploys: Deploys,
    auth: Authority,
    /// Turns true when the server shuts down, so open watches end instead of holding it up.
    stopping: watch::Receiver<bool>,
}

impl Api {
    /// Handlers over `deploys`, calls authorised by `auth`; `stopping` turning true ends
    /// every open watch.
    pub fn new(deploys: Deploys, auth: Authority, stopping: watch::Receiver<bool>) -> Self {
        Self { deploys, auth, stopping }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::DeployStatus, Status>> + Send>>;

#[tonic::async_trait]
impl DeployService for Api {
    #[instrument(skip_all, fields(service = %request.get_ref().service))]
    async fn start_deploy(&self, request: Request<pb::StartDeployRequest>) -> Result<Response<pb::StartDeployResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        let StartDeploy { mut request, request_id } = StartDeploy::try_from(request.into_inner()).map_err(|e| status_of(e.into()))?;
        let scope = Scope { service: Some(&request.service), target: Some(&request.target.name), channel: None };
        request.deployer = self.auth.permit(caller.as_ref(), Role::Start, &[scope], "deployer", &request.deployer)?;
        // The domain names a field by its path in the domain's request; the caller sent the wire's.
        let wire = |e| match e {
            Error::Invalid { field, rule } => Error::Invalid { field: wire_field(&field, &request), rule },
            other => other,
        };
        let started = self.deploys.start(request.clone(), request_id).await.map_err(|e| status_of(wire(e)))?;
        info!(deploy_id = %started.id, queued_behind = ?started.queued_behind, "deploy started");
        Ok(Response::new(pb::StartDeployResponse { deploy_id: started.id, queued_behind: started.queued_behind }))
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id))]
    async fn get_deploy(&self, request: Request<pb::GetDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        self.auth.read(&request)?;
        let id = deploy_id(request.into_inner().deploy_id)?;
        answer(self.deploys.status(&id).await)
    }

    type WatchDeployStream = StatusStream;

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id))]
    async fn watch_deploy(&self, request: Request<pb::WatchDeployRequest>) -> Result<Response<StatusStream>, Status> {
        self.auth.read(&request)?;
        let id = deploy_id(request.into_inner().deploy_id)?;
        // Asked before the stream opens, so an unknown id is an error of the call itself.
        let first = self.deploys.status(&id).await.map_err(status_of)?;
        let deploys = self.deploys.clone();
        let fetch: Fetch<DeployStatus> = Box::new(move || {
            let (deploys, id) = (deploys.clone(), id.clone());
            Box::pin(async move { deploys.status(&id).await })
        });
        Ok(Response::new(Box::pin(watch_changes(fetch, |s: &DeployStatus| s.phase.is_final(), first, self.stopping.clone()))))
    }

    #[instrument(skip_all, fields(service = %request.get_ref().service))]
    async fn list_deploys(&self, request: Request<pb::ListDeploysRequest>) -> Result<Response<pb::ListDeploysResponse>, Status> {
        self.auth.read(&request)?;
        let req = request.into_inner();
        let filter = listing_filter(&req).map_err(status_of)?;
        let page = self.deploys.list(&filter, req.page_size, &req.page_token).await.map_err(status_of)?;
        Ok(Response::new(pb::ListDeploysResponse { deploys: page.deploys.into_iter().map(summary).collect(), next_page_token: page.next.unwrap_or_default() }))
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn pause_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<()>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Steer)?;
        self.deploys.pause(&id, cmd).await.map_err(status_of)?;
        info!("pause signalled");
        Ok(Response::new(()))
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn resume_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<()>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Steer)?;
        self.deploys.resume(&id, cmd).await.map_err(status_of)?;
        info!("resume signalled");
        Ok(Response::new(()))
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn halt_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Steer)?;
        answer(self.deploys.halt(&id, cmd).await)
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn abort_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Steer)?;
        answer(self.deploys.abort(&id, cmd).await)
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn rollback_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Steer)?;
        answer(self.deploys.rollback(&id, cmd).await)
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, by = %request.get_ref().by))]
    async fn bypass_deploy(&self, request: Request<pb::ControlDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        let (id, cmd) = control(&self.auth, request, Role::Bypass)?;
        answer(self.deploys.bypass(&id, cmd).await)
    }

    #[instrument(skip_all, fields(deploy_id = %request.get_ref().deploy_id, approver = %request.get_ref().approver))]
    async fn approve_deploy(&self, request: Request<pb::ApproveDeployRequest>) -> Result<Response<pb::DeployStatus>, Status> {
        let caller = self.auth.caller(&request)?;
        let mut req = request.into_inner();
        let id = deploy_id(std::mem::take(&mut req.deploy_id))?;
        req.approver = self.auth.permit(caller.as_ref(), Role::Approve, &[deploy_scope(&id)], "approver", &req.approver)?;
        answer(self.deploys.approve(&id, Approve::from(req)).await)
    }
}

/// The filter a `ListDeploys` asks for; errors name the wire field.
fn listing_filter(req: &pb::ListDeploysRequest) -> Result<listing::Filter, Error> {
    if req.service.is_empty() {
        return Err(Error::Invalid { field: "service".into(), rule: "is required".into() });
    }
    let since = signalbox_proto::instant("since", req.since).map_err(|e| Error::from(e))?;
    let phase = match req.phase() {
        pb::Phase::Unspecified => None,
        phase => Some(signalbox_domain::Phase::try_from(phase).map_err(Error::from)?),
    };
    Ok(listing::Filter { service: req.service.clone(), since, phase, target: (!req.target.is_empty()).then(|| req.target.clone()) })
}

fn summary(d: listing::Summary) -> pb::DeploySummary {
    pb::DeploySummary {
        deploy_id: d.deploy_id,
        service: d.service,
        target: d.target,
        phase: d.phase.map_or(pb::Phase::Unspecified, pb::Phase::from).into(),
        deployer: d.deployer,
        artifact_digest: d.artifact_digest,
        git_sha: d.git_sha,
        strategy: d.strategy,
        started_at: d.started_at.map(signalbox_proto::timestamp),
        closed_at: d.closed_at.map(signalbox_proto::timestamp),
        config_sha256: d.config_sha256,
        config: d.config.map(|c| pb::DeployConfig { build: c.build, batches: c.batches, bake: c.bake, health: c.health, started_by: c.started_by }),
    }
}

/// Reads a watched workflow's status once more.
pub(crate) type Fetch<S> = Box<dyn Fn() -> futures::future::BoxFuture<'static, signalbox_client::Result<S>> + Send + Sync>;

/// Where a watch stands between two polls.
struct Watch<S> {
    fetch: Fetch<S>,
    is_final: fn(&S) -> bool,
    /// A status not yet sent.
    pending: Option<S>,
    last_sent: Option<S>,
    stopping: watch::Receiver<bool>,
    ended: bool,
}

/// `first`, then every status `fetch` reads that differs from the one sent before, until a
/// final one (`is_final`) has been sent, a read fails, or the server shuts down.
pub(crate) fn watch_changes<S, P>(fetch: Fetch<S>, is_final: fn(&S) -> bool, first: S, stopping: watch::Receiver<bool>) -> impl Stream<Item = Result<P, Status>>
where
    S: Clone + PartialEq + Send + 'static,
    P: From<S>,
{
    let start = Watch { fetch, is_final, pending: Some(first), last_sent: None, stopping, ended: false };
    futures::stream::unfold(start, |mut w| async move {
        if w.ended {
            return None;
        }
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            if let Some(status) = w.pending.take()
                && w.last_sent.as_ref() != Some(&status)
            {
                w.ended = (w.is_final)(&status);
                w.last_sent = Some(status.clone());
                return Some((Ok(P::from(status)), w));
            }
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = w.stopping.wait_for(|stop| *stop) => true,
            };
            if stopping {
                w.ended = true;
                return Some((Err(Status::unavailable("the API server is shutting down; watch again")), w));
            }
            match (w.fetch)().await {
                Ok(status) => w.pending = Some(status),
                Err(e) => {
                    w.ended = true;
                    return Some((Err(status_of(e)), w));
                }
            }
        }
    })
}

/// Largest message of an artifact push: a chunk of up to 4 MiB and its framing.
const MAX_CHUNK_MESSAGE: usize = 4 * 1024 * 1024 + 1024;

/// Largest request of the deploy, release and target APIs: a request within every field's
/// bounds fits with room to spare; a larger one is refused before it is read.
pub const MAX_REQUEST: usize = 1024 * 1024;

/// Serves the deploy, release, artifact and target APIs on `listener` until `shutdown` completes; then stops accepting calls,
/// ends open watches with `UNAVAILABLE`, and returns once the calls in flight are answered.
/// `security` authenticates and authorises every call and says whether the transport is TLS.
pub async fn serve(listener: TcpListener, deploys: Deploys, releases: Releases, artifacts: Artifacts, targets: Targets, security: Security, shutdown: impl Future<Output = ()>) -> Result<(), tonic::transport::Error> {
    let (stop, stopping) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let Security { authority: auth, tls, control_key } = security;
    let (deploys, releases) = (deploys.signing_with(control_key.clone()), releases.signing_with(control_key));
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .add_service(ReleaseServiceServer::new(ReleaseApi::new(releases, auth.clone(), stopping.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(DeployServiceServer::new(Api::new(deploys, auth.clone(), stopping)).max_decoding_message_size(MAX_REQUEST))
        .add_service(ArtifactServiceServer::new(artifacts.authorised_by(auth.clone())).max_decoding_message_size(MAX_CHUNK_MESSAGE))
        .add_service(TargetServiceServer::new(targets.authorised_by(auth)).max_decoding_message_size(MAX_REQUEST))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_refusal_is_a_failed_precondition_with_the_deploys_reason() {
        let status = status_of(Error::Refused("reason: an abort needs a reason".into()));
        assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "reason: an abort needs a reason"));
        let status = status_of(Error::Invalid { field: "approval.quorum".into(), rule: "must be 1 to 2".into() });
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "approval.quorum: must be 1 to 2"));
    }

    #[test]
    fn a_deploy_id_names_the_service_and_target_the_policy_judges() {
        assert_eq!(deploy_scope("deploy/checkout/eu-1/a1b2"), Scope { service: Some("checkout"), target: Some("eu-1"), channel: None });
        assert_eq!(deploy_scope("deploy/checkout/agent:eu-1/a1b2"), Scope { service: Some("checkout"), target: Some("eu-1"), channel: None });
        assert_eq!(deploy_scope("mine").service, Some("mine"), "an id signalbox did not make is judged as a service of its own name");
    }

    #[test]
    fn an_empty_deploy_id_is_an_invalid_argument() {
        let status = deploy_id(" ".into()).unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "deploy_id: is required"));
        let req = Request::new(pb::ControlDeployRequest { deploy_id: "deploy/x/1".into(), by: "alice".into(), reason: "why".into() });
        assert_eq!(control(&Authority::open(), req, Role::Steer).unwrap(), ("deploy/x/1".to_owned(), Command::new("alice", "why")));
    }
}
