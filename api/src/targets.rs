//! The `signalbox.v1.TargetService` gRPC server: target files applied to etcd, where the agent
//! substrate and the agents read them; host states read back from the agents' reports.

use etcd_client::{Client, GetOptions};
use signalbox_agent::protocol::{Hosts, Keys, ROOT, State, TargetFile, TargetSpec};
use signalbox_proto::pb;
use signalbox_proto::pb::target_service_server::TargetService;
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::auth::{Authority, Role, Scope};

/// The handlers of `signalbox.v1.TargetService`.
#[derive(Clone)]
pub struct Targets {
    endpoints: Vec<String>,
    client: std::sync::Arc<OnceCell<Client>>,
    auth: Authority,
}

impl Targets {
    /// Handlers over the etcd at `endpoints` (connected on first use); calls are not
    /// authenticated until [`Self::authorised_by`] says by whom.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, client: std::sync::Arc::new(OnceCell::new()), auth: Authority::open() }
    }

    /// These handlers, their calls authorised by `auth`.
    pub fn authorised_by(self, auth: Authority) -> Self {
        Self { auth, ..self }
    }

    async fn client(&self) -> Result<Client, Status> {
        let client = self
            .client
            .get_or_try_init(|| signalbox_agent::connect_etcd(&self.endpoints))
            .await
            .map_err(unavailable)?;
        Ok(client.clone())
    }

    async fn status(&self, name: &str) -> Result<Option<pb::TargetStatus>, Status> {
        let keys = Keys::new(name);
        let mut client = self.client().await?;
        let Some(spec) = client.get(keys.spec(), None).await.map_err(unavailable)?.kvs().first().map(|kv| kv.value().to_vec()) else {
            return Ok(None);
        };
        let spec: TargetSpec = serde_json::from_slice(&spec).map_err(|e| Status::internal(format!("{}: unreadable: {e}", keys.spec())))?;
        let resp = client.get(keys.hosts(), Some(GetOptions::new().with_prefix())).await.map_err(unavailable)?;
        let hosts = Hosts::read(&keys, resp.kvs().iter().map(|kv| (kv.key(), kv.value(), kv.mod_revision()))).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(target_status(name, &spec, &hosts)))
    }
}

fn unavailable(e: etcd_client::Error) -> Status {
    Status::unavailable(format!("etcd: {e}"))
}

/// A target and its hosts on the wire: declared ones first in the file's order, then hosts that
/// registered without being declared.
fn target_status(name: &str, spec: &TargetSpec, hosts: &Hosts) -> pb::TargetStatus {
    let mut names: Vec<(String, String, bool)> = spec.hosts.iter().map(|h| (h.name.clone(), h.region.clone(), true)).collect();
    for (host, r) in &hosts.registration {
        if !spec.hosts.iter().any(|h| &h.name == host) {
            names.push((host.clone(), r.region.clone(), false));
        }
    }
    let hosts = names
        .into_iter()
        .map(|(host, region, declared)| {
            let r = hosts.registration.get(&host);
            let o = hosts.observed.get(&host);
            let state = o.map(|o| match o.state {
                State::Ready => "ready",
                State::Converging => "converging",
                State::Failed => "failed",
                State::Halted => "halted",
            });
            pb::HostStatus {
                region: r.map_or(region, |r| r.region.clone()),
                declared,
                registered: r.is_some(),
                address: r.map(|r| r.address.clone()).unwrap_or_default(),
                port: r.map_or(0, |r| u32::from(r.port)),
                version: o.and_then(|o| o.version.clone()).unwrap_or_default(),
                digest: o.and_then(|o| o.digest.as_ref().map(ToString::to_string)).unwrap_or_default(),
                state: state.unwrap_or_default().to_owned(),
                changed_by: o.and_then(|o| o.owner.clone()).unwrap_or_default(),
                message: o.map(|o| o.message.clone()).unwrap_or_default(),
                name: host,
            }
        })
        .collect();
    pb::TargetStatus {
        name: name.to_owned(),
        kind: "agent".into(),
        caches: spec.regions.iter().map(|(r, s)| (r.clone(), s.cache.clone())).collect(),
        report_timeout_ms: spec.report_timeout_ms,
        hosts,
    }
}

#[tonic::async_trait]
impl TargetService for Targets {
    #[instrument(skip_all)]
    async fn apply_target(&self, request: Request<pb::ApplyTargetRequest>) -> Result<Response<pb::TargetStatus>, Status> {
        let caller = self.auth.caller(&request)?;
        let file = TargetFile::read(&request.into_inner().file).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.auth.permit(caller.as_ref(), Role::Targets, &[Scope { target: Some(&file.name), ..Scope::default() }], "", "")?;
        let keys = Keys::new(&file.name);
        let json = serde_json::to_vec(&file.spec()).expect("a spec serializes");
        self.client().await?.put(keys.spec(), json, None).await.map_err(unavailable)?;
        info!(target = %file.name, regions = file.regions.len(), hosts = file.hosts.len(), "target applied");
        let status = self.status(&file.name).await?.ok_or_else(|| Status::internal("the spec just written is gone"))?;
        Ok(Response::new(status))
    }

    #[instrument(skip_all, fields(target = %request.get_ref().name))]
    async fn get_target(&self, request: Request<pb::GetTargetRequest>) -> Result<Response<pb::TargetStatus>, Status> {
        self.auth.read(&request)?;
        let name = request.into_inner().name;
        if name.trim().is_empty() {
            return Err(Status::invalid_argument("name: is required"));
        }
        self.status(&name).await?.map(Response::new).ok_or_else(|| Status::not_found(format!("name: no target {name:?} was declared (signalbox target apply FILE)")))
    }

    #[instrument(skip_all)]
    async fn list_targets(&self, request: Request<pb::ListTargetsRequest>) -> Result<Response<pb::ListTargetsResponse>, Status> {
        self.auth.read(&request)?;
        let resp = self.client().await?.get(ROOT, Some(GetOptions::new().with_prefix().with_keys_only())).await.map_err(unavailable)?;
        let names: Vec<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| std::str::from_utf8(kv.key()).ok()?.strip_prefix(ROOT)?.strip_suffix("/spec").filter(|n| !n.contains('/')).map(str::to_owned))
            .collect();
        let mut targets = Vec::with_capacity(names.len());
        for name in names {
            if let Some(status) = self.status(&name).await? {
                targets.push(status);
            }
        }
        Ok(Response::new(pb::ListTargetsResponse { targets }))
    }
}
