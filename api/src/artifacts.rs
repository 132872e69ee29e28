//! The `signalbox.v1.ArtifactService` gRPC server: a pushed build goes to the origin store (an
//! object store shared with the workers, not a worker's disk), checked on the way in.

use futures::StreamExt;
use signalbox_domain::Digest;
use signalbox_proto::pb;
use signalbox_proto::pb::artifact_service_server::ArtifactService;
use signalbox_store::{ArtifactStore, QuarantineAction, QuarantineEvent, QuarantineRecord, Record, digest_of};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument};

use crate::auth::{Authority, Role, Scope};

/// Largest build a push may carry unless configured otherwise: 1 GiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// The handlers of `signalbox.v1.ArtifactService`.
#[derive(Clone)]
pub struct Artifacts {
    store: ArtifactStore,
    max_bytes: u64,
    auth: Authority,
}

impl Artifacts {
    /// The build `d`, refused as NOT_FOUND when the store does not hold it.
    async fn held(&self, d: &Digest) -> Result<Record, Status> {
        match self.store.record(d).await.map_err(status_of)? {
            Some(r) if self.store.contains(d).await.map_err(status_of)? => Ok(r),
            _ => Err(Status::not_found(format!("digest: the store holds no build {d}"))),
        }
    }

    async fn quarantined(&self, d: &Digest) -> Result<bool, Status> {
        Ok(self.store.quarantine_of(d).await.map_err(status_of)?.active.is_some())
    }

    /// Handlers over the origin `store`, refusing builds above `max_bytes`; calls are not
    /// authenticated until [`Self::authorised_by`] says by whom.
    pub fn new(store: ArtifactStore, max_bytes: u64) -> Self {
        Self { store, max_bytes, auth: Authority::open() }
    }

    /// These handlers, their calls authorised by `auth`.
    pub fn authorised_by(self, auth: Authority) -> Self {
        Self { auth, ..self }
    }
}

fn invalid(field: &str, rule: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {rule}"))
}

fn status_of(e: signalbox_store::Error) -> Status {
    use signalbox_store::Error;
    match e {
        Error::Invalid(_) | Error::Bundle(signalbox_bundle::Error::Invalid { .. }) => Status::invalid_argument(e.to_string()),
        Error::UnknownArtifact(_) => Status::not_found(e.to_string()),
        Error::NotQuarantined(_) => Status::failed_precondition(e.to_string()),
        other if other.is_retryable() => Status::unavailable(other.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn digest(field: &str, text: &str) -> Result<Digest, Status> {
    text.parse().map_err(|_| invalid(field, "must be sha256:<64 lowercase hex digits>"))
}

/// A quarantine record on the wire.
fn quarantine(digest: &Digest, q: QuarantineRecord) -> pb::Quarantine {
    let event = |e: QuarantineEvent| pb::QuarantineEvent {
        action: match e.action {
            QuarantineAction::Quarantined => "quarantined",
            QuarantineAction::Lifted => "lifted",
        }
        .to_owned(),
        by: e.by,
        reason: e.reason,
        at: Some(signalbox_proto::timestamp(e.at)),
    };
    pb::Quarantine { digest: digest.to_string(), active: q.active.map(event), history: q.history.into_iter().map(event).collect() }
}

/// A branch's record on the wire, its newest `limit` pushes (all when 0).
fn merged(m: signalbox_store::MergedBranch, limit: u32) -> pb::MergedBranch {
    let skip = if limit == 0 { 0 } else { m.pushes.len().saturating_sub(limit as usize) };
    let push = |p: signalbox_store::Push| pb::MergedPush {
        provider: p.provider,
        delivery: p.delivery,
        sha: p.sha,
        before: p.before,
        pushed_by: p.pushed_by,
        message: p.message,
        commits: p.commits,
        committed_at: p.committed_at.map(signalbox_proto::timestamp),
        received_at: Some(signalbox_proto::timestamp(p.received_at)),
    };
    pb::MergedBranch { repo: m.repo, branch: m.branch, pushes: m.pushes.into_iter().skip(skip).map(push).collect() }
}

/// A store record on the wire.
fn record(digest: &Digest, r: Record, quarantined: bool) -> pb::ArtifactRecord {
    let at = |t: Option<String>| t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| signalbox_proto::timestamp(t.to_utc()));
    pb::ArtifactRecord {
        digest: digest.to_string(),
        service: r.service,
        version: r.version,
        git_sha: r.git_sha,
        size: r.size,
        built_at: at(r.built_at),
        pushed_at: at(r.pushed_at),
        pushed_by: r.pushed_by.unwrap_or_default(),
        labels: r.labels,
        format: match r.format {
            signalbox_store::Format::Bundle => "bundle",
            signalbox_store::Format::Demo => "demo",
            signalbox_store::Format::Image => "image",
        }
        .to_owned(),
        quarantined,
    }
}

/// The record a push's metadata describes; the store checks it further.
fn pushed(meta: pb::ArtifactMetadata) -> Result<Record, Status> {
    let mut r = Record::new(meta.service, meta.version, meta.git_sha);
    if meta.pushed_by.trim().is_empty() {
        return Err(invalid("pushed_by", "is required: who pushes the build"));
    }
    r.pushed_by = Some(meta.pushed_by);
    r.built_at = meta
        .built_at
        .map(|t| signalbox_proto::instant("built_at", Some(t)).map_err(|e| Status::invalid_argument(e.to_string())))
        .transpose()?
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    r.pushed_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    r.labels = meta.labels;
    Ok(r)
}

#[tonic::async_trait]
impl ArtifactService for Artifacts {
    #[instrument(skip_all)]
    async fn push_artifact(&self, request: Request<Streaming<pb::PushArtifactRequest>>) -> Result<Response<pb::PushArtifactResponse>, Status> {
        use pb::push_artifact_request::Part;
        let caller = self.auth.caller(&request)?;
        let mut parts = request.into_inner();
        let mut meta = match parts.next().await.transpose()?.and_then(|m| m.part) {
            Some(Part::Metadata(meta)) => meta,
            _ => return Err(invalid("metadata", "the first message of a push must carry the metadata")),
        };
        meta.pushed_by = self.auth.permit(caller.as_ref(), Role::Start, &[Scope::service(&meta.service)], "pushed_by", &meta.pushed_by)?;
        let expected = if meta.digest.is_empty() { None } else { Some(digest("digest", &meta.digest)?) };
        let announced = meta.size;
        if announced > self.max_bytes {
            return Err(Status::resource_exhausted(format!("size: {announced} bytes is above the limit of {} bytes", self.max_bytes)));
        }
        let record_in = pushed(meta)?;
        record_in.check().map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The store has these bytes already: answer without reading them again.
        if let Some(d) = &expected
            && self.store.contains(d).await.map_err(status_of)?
            && let Some(first) = self.store.record(d).await.map_err(status_of)?
        {
            info!(digest = %d, "push of a build the store holds: nothing sent twice");
            let quarantined = self.quarantined(d).await?;
            return Ok(Response::new(pb::PushArtifactResponse { artifact: Some(record(d, first, quarantined)), stored: false }));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(part) = parts.next().await.transpose()? {
            match part.part {
                Some(Part::Chunk(chunk)) => {
                    if (bytes.len() + chunk.len()) as u64 > self.max_bytes {
                        return Err(Status::resource_exhausted(format!("size: the build is above the limit of {} bytes", self.max_bytes)));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Some(Part::Metadata(_)) => return Err(invalid("metadata", "only the first message of a push carries metadata")),
                None => {}
            }
        }
        if announced != 0 && bytes.len() as u64 != announced {
            return Err(invalid("size", format!("is {announced}, but {} bytes came", bytes.len())));
        }
        let actual = digest_of(&bytes);
        if let Some(d) = &expected
            && d != &actual
        {
            return Err(invalid("digest", format!("is {d}, but the bytes hash to {actual}")));
        }
        let size = bytes.len();
        let (d, stored_record, stored) = self.store.push(bytes, record_in).await.map_err(status_of)?;
        info!(digest = %d, size, stored, service = %stored_record.service, version = %stored_record.version, "artifact pushed");
        let quarantined = self.quarantined(&d).await?;
        Ok(Response::new(pb::PushArtifactResponse { artifact: Some(record(&d, stored_record, quarantined)), stored }))
    }

    #[instrument(skip_all, fields(digest = %request.get_ref().digest))]
    async fn get_artifact(&self, request: Request<pb::GetArtifactRequest>) -> Result<Response<pb::ArtifactRecord>, Status> {
        self.auth.read(&request)?;
        let d = digest("digest", &request.into_inner().digest)?;
        let r = self.held(&d).await?;
        let quarantined = self.quarantined(&d).await?;
        Ok(Response::new(record(&d, r, quarantined)))
    }

    #[instrument(skip_all, fields(service = %request.get_ref().service))]
    async fn list_artifacts(&self, request: Request<pb::ListArtifactsRequest>) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        self.auth.read(&request)?;
        let service = request.into_inner().service;
        let service = (!service.is_empty()).then_some(service.as_str());
        let builds = self.store.list(service).await.map_err(status_of)?;
        let mut artifacts = Vec::with_capacity(builds.len());
        for (d, r) in builds {
            let quarantined = self.quarantined(&d).await?;
            artifacts.push(record(&d, r, quarantined));
        }
        Ok(Response::new(pb::ListArtifactsResponse { artifacts }))
    }

    #[instrument(skip_all, fields(repo = %request.get_ref().repo, branch = %request.get_ref().branch))]
    async fn get_merged(&self, request: Request<pb::GetMergedRequest>) -> Result<Response<pb::MergedBranch>, Status> {
        self.auth.read(&request)?;
        let r = request.into_inner();
        let branch = self.store.merged(r.repo.trim(), r.branch.trim()).await.map_err(status_of)?;
        Ok(Response::new(merged(branch, r.limit)))
    }

    #[instrument(skip_all, fields(digest = %request.get_ref().digest))]
    async fn get_quarantine(&self, request: Request<pb::GetQuarantineRequest>) -> Result<Response<pb::Quarantine>, Status> {
        self.auth.read(&request)?;
        let d = digest("digest", &request.into_inner().digest)?;
        self.held(&d).await?;
        Ok(Response::new(quarantine(&d, self.store.quarantine_of(&d).await.map_err(status_of)?)))
    }

    #[instrument(skip_all, fields(digest = %request.get_ref().digest, by = %request.get_ref().by))]
    async fn quarantine_artifact(&self, request: Request<pb::QuarantineArtifactRequest>) -> Result<Response<pb::Quarantine>, Status> {
        let caller = self.auth.caller(&request)?;
        let mut req = request.into_inner();
        let d = digest("digest", &req.digest)?;
        let held = self.held(&d).await?;
        req.by = self.auth.permit(caller.as_ref(), Role::Quarantine, &[Scope::service(&held.service)], "by", &req.by)?;
        let took = self.store.quarantine(&d, &req.by, &req.reason, chrono::Utc::now()).await.map_err(status_of)?;
        info!(took, reason = %req.reason, "build quarantined by hand");
        Ok(Response::new(quarantine(&d, self.store.quarantine_of(&d).await.map_err(status_of)?)))
    }

    #[instrument(skip_all, fields(digest = %request.get_ref().digest, by = %request.get_ref().by))]
    async fn lift_quarantine(&self, request: Request<pb::LiftQuarantineRequest>) -> Result<Response<pb::Quarantine>, Status> {
        let caller = self.auth.caller(&request)?;
        let mut req = request.into_inner();
        let d = digest("digest", &req.digest)?;
        let held = self.held(&d).await?;
        req.by = self.auth.permit(caller.as_ref(), Role::Quarantine, &[Scope::service(&held.service)], "by", &req.by)?;
        let record = self.store.lift_quarantine(&d, &req.by, &req.reason, chrono::Utc::now()).await.map_err(status_of)?;
        info!(reason = %req.reason, "quarantine lifted");
        Ok(Response::new(quarantine(&d, record)))
    }
}
