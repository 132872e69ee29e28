//! The content-addressed artifact store and the regional caches it feeds.
//!
//! Objects live at `sha256/<hex>`; nothing is ever readable under a digest that does not match
//! its bytes. A build's record (what it is: service, version, git SHA) lives at
//! `records/sha256/<hex>.json`, written with the build.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use signalbox_domain::{Artifact, Digest};

use crate::{Error, Result};

/// Digest of a byte string.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::from_sha256_bytes(&Sha256::digest(bytes).into())
}

/// A content-addressed blob store.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
}

impl ArtifactStore {
    /// A store backed by a local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(Error::Backend)?;
        Ok(Self { inner: Arc::new(fs) })
    }

    /// The store at `location`: `s3://bucket[/prefix]` for an S3-compatible bucket (configured
    /// by the `AWS_*` environment, e.g. `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, then by `options`, as
    /// `(aws_endpoint, ...)` pairs), else a local directory (`file://` optional).
    pub fn open<K: AsRef<str>, V: Into<String>>(location: &str, options: impl IntoIterator<Item = (K, V)>) -> Result<Self> {
        let Some(rest) = location.strip_prefix("s3://") else {
            return Self::local(Path::new(location.strip_prefix("file://").unwrap_or(location)));
        };
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(location);
        for (key, value) in options {
            let key = key.as_ref().parse().map_err(Error::Backend)?;
            builder = builder.with_config(key, value);
        }
        let bucket = builder.build().map_err(Error::Backend)?;
        let prefix = rest.split_once('/').map_or("", |(_, p)| p.trim_matches('/'));
        Ok(if prefix.is_empty() { Self::new(Arc::new(bucket)) } else { Self::new(Arc::new(object_store::prefix::PrefixStore::new(bucket, prefix))) })
    }

    /// A store over any object store (a bucket, in production).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    pub(crate) fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn key(digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}", digest.hex()))
    }

    fn fill_key(digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("fills/sha256/{}", digest.hex()))
    }

    fn record_key(digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("records/sha256/{}.json", digest.hex()))
    }

    /// Stores `bytes` with the record of what they are; returns the digest. Storing the same
    /// build again is a no-op; its first record stays.
    pub async fn put_build(&self, bytes: Vec<u8>, record: Record) -> Result<Digest> {
        let digest = self.put(bytes).await?;
        if self.record(&digest).await?.is_none() {
            let json = serde_json::to_vec_pretty(&record).expect("a record serializes");
            self.inner.put(&Self::record_key(&digest), PutPayload::from(json)).await.map_err(Error::Backend)?;
        }
        Ok(digest)
    }

    /// Stores a pushed build: checks what the pusher said and, for a tarball, its manifest;
    /// records its size and format. Pushing bytes the store already holds changes nothing and
    /// answers the first record with `false`, so a retried push is safe.
    pub async fn push(&self, bytes: Vec<u8>, mut record: Record) -> Result<(Digest, Record, bool)> {
        record.check().map_err(Error::Invalid)?;
        let digest = digest_of(&bytes);
        if let Some(first) = self.record(&digest).await?
            && self.contains(&digest).await?
        {
            return Ok((digest, first, false));
        }
        record.format = if record.image().is_some() {
            check_image_manifest(&bytes).map_err(Error::Invalid)?;
            Format::Image
        } else if signalbox_bundle::is_bundle(&bytes) {
            signalbox_bundle::Bundle::read(&bytes).map_err(Error::Bundle)?;
            Format::Bundle
        } else {
            Format::Demo
        };
        record.size = bytes.len() as u64;
        // The bytes before the record: a listed build can always be fetched.
        self.put(bytes).await?;
        let json = serde_json::to_vec_pretty(&record).expect("a record serializes");
        self.inner.put(&Self::record_key(&digest), PutPayload::from(json)).await.map_err(Error::Backend)?;
        Ok((digest, record, true))
    }

    /// Every recorded build, of `service` only if given, newest push first.
    pub async fn list(&self, service: Option<&str>) -> Result<Vec<(Digest, Record)>> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from("records/sha256");
        let metas: Vec<_> = self.inner.list(Some(&prefix)).try_collect().await.map_err(Error::Backend)?;
        let mut builds = Vec::with_capacity(metas.len());
        for meta in metas {
            let Some(hex) = meta.location.filename().and_then(|f| f.strip_suffix(".json")) else { continue };
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else { continue };
            if let Some(record) = self.record(&digest).await?
                && service.is_none_or(|s| s == record.service)
            {
                builds.push((digest, record));
            }
        }
        builds.sort_by(|(da, a), (db, b)| b.pushed_at.cmp(&a.pushed_at).then_with(|| da.hex().cmp(db.hex())));
        Ok(builds)
    }

    /// The record of `digest`, if it was stored with one.
    pub async fn record(&self, digest: &Digest) -> Result<Option<Record>> {
        match self.inner.get(&Self::record_key(digest)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(Error::Backend)?;
                let record = serde_json::from_slice(&bytes).map_err(|e| Error::Record { digest: digest.clone(), message: e.to_string() })?;
                Ok(Some(record))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// Stores `bytes` and returns their digest; storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<Digest> {
        let digest = digest_of(&bytes);
        if !self.contains(&digest).await? {
            self.inner.put(&Self::key(&digest), PutPayload::from(bytes)).await.map_err(Error::Backend)?;
        }
        Ok(digest)
    }

    /// Whether the store holds `digest`.
    pub async fn contains(&self, digest: &Digest) -> Result<bool> {
        match self.inner.head(&Self::key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// The bytes under `digest`, verified against it.
    pub async fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes = match self.inner.get(&Self::key(digest)).await {
            Ok(r) => r.bytes().await.map_err(Error::Backend)?.to_vec(),
            Err(object_store::Error::NotFound { .. }) => return Err(Error::UnknownArtifact(digest.clone())),
            Err(e) => return Err(Error::Backend(e)),
        };
        let actual = digest_of(&bytes);
        if &actual != digest {
            return Err(Error::Corrupt { expected: digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// Copies `digest` from `source` into this store, verifying it; returns whether it was new.
    pub async fn copy_from(&self, source: &ArtifactStore, digest: &Digest) -> Result<bool> {
        if self.contains(digest).await? {
            return Ok(false);
        }
        let bytes = source.get(digest).await?;
        self.inner.put(&Self::key(digest), PutPayload::from(bytes)).await.map_err(Error::Backend)?;
        Ok(true)
    }

    /// Copies `digest` from `source` on behalf of `by` (a deploy); returns whether `by` filled
    /// this store with it, now or on an earlier try of the same push, so a retry after a crash
    /// reports what the first try copied. A store that held it before, or that another deploy
    /// filled, answers `false`. The fill is recorded before the copy.
    pub async fn fill_from(&self, source: &ArtifactStore, digest: &Digest, by: &str) -> Result<bool> {
        if self.contains(digest).await? {
            return Ok(self.filled_by(digest).await?.as_deref() == Some(by));
        }
        self.inner.put(&Self::fill_key(digest), PutPayload::from(by.as_bytes().to_vec())).await.map_err(Error::Backend)?;
        self.copy_from(source, digest).await?;
        Ok(true)
    }

    /// Who filled this store with `digest` by [`ArtifactStore::fill_from`], if anyone did.
    pub async fn filled_by(&self, digest: &Digest) -> Result<Option<String>> {
        match self.inner.get(&Self::fill_key(digest)).await {
            Ok(r) => Ok(Some(String::from_utf8_lossy(&r.bytes().await.map_err(Error::Backend)?).into_owned())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// Removes `digest` if `by` filled this store with it (the undo of its push); returns
    /// whether it did. What another deploy filled, or what was there before, stays.
    pub async fn evict_fill(&self, digest: &Digest, by: &str) -> Result<bool> {
        if self.filled_by(digest).await?.as_deref() != Some(by) {
            return Ok(false);
        }
        self.remove(digest).await?;
        match self.inner.delete(&Self::fill_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// Removes `digest`; removing a missing object is a no-op.
    pub async fn remove(&self, digest: &Digest) -> Result<()> {
        match self.inner.delete(&Self::key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Backend(e)),
        }
    }
}

/// What a build is, recorded with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The service it is a build of.
    pub service: String,
    /// Its version name.
    pub version: String,
    /// The commit it was built from.
    pub git_sha: String,
    /// Its size in bytes (0 in records written before sizes were kept).
    #[serde(default)]
    pub size: u64,
    /// When it was built (RFC 3339), as its pusher said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_at: Option<String>,
    /// When it was pushed (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<String>,
    /// Who pushed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_by: Option<String>,
    /// Free labels (`team=payments`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What kind of build it is: a bundle with a manifest, or a demo service build.
    #[serde(default)]
    pub format: Format,
}

/// The kinds of build a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A tarball with a `signalbox.json` manifest: any program.
    Bundle,
    /// A build of signalbox's own demo service (a JSON file saying how it behaves).
    #[default]
    Demo,
    /// A container image's manifest (OCI or Docker v2), so its digest is the image's: pods run
    /// `<repository>@<digest>`, the repository named by the record's [`IMAGE_LABEL`].
    Image,
}

/// The label naming the image repository of a build for Kubernetes targets
/// (`image=registry.example/web`); such a build's bytes are the image's manifest.
pub const IMAGE_LABEL: &str = "image";

/// Checks that `bytes` are a container image manifest (OCI image or index, Docker v2), so the
/// build's digest is the image digest a registry serves.
fn check_image_manifest(bytes: &[u8]) -> signalbox_domain::Result<()> {
    let refuse = |rule: &str| Err(signalbox_domain::Error::invalid("labels.image", rule));
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return refuse("a build labelled with an image must be that image's manifest (JSON), as `crane manifest` or `docker manifest inspect --verbose` prints it");
    };
    let v2 = manifest.get("schemaVersion").and_then(serde_json::Value::as_u64) == Some(2);
    let shaped = manifest.get("layers").is_some_and(serde_json::Value::is_array) || manifest.get("manifests").is_some_and(serde_json::Value::is_array);
    if !(v2 && shaped) {
        return refuse("the build is not an image manifest: it needs \"schemaVersion\": 2 and \"layers\" or \"manifests\"");
    }
    Ok(())
}

/// Checks an image repository: `host[:port]/path` or `path`, lowercase, no tag or digest (the
/// build's digest pins it).
fn check_image_repository(repo: &str) -> signalbox_domain::Result<()> {
    let (host, path) = match repo.split_once('/') {
        Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (Some(h), p),
        _ => (None, repo),
    };
    let host_ok = host.is_none_or(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b)));
    let path_ok = !path.is_empty()
        && path.split('/').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
    if !(host_ok && path_ok) || repo.contains('@') || path.contains(':') || repo.len() > 255 {
        return Err(signalbox_domain::Error::invalid(
            "labels.image",
            "must be an image repository without tag or digest, e.g. registry.example/shop/web (its pods run <repository>@<digest>)",
        ));
    }
    Ok(())
}

/// Most labels a build may carry.
pub const MAX_LABELS: usize = 32;

impl Record {
    /// A record of `service` at `version` from `git_sha`, everything else unset.
    pub fn new(service: impl Into<String>, version: impl Into<String>, git_sha: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            version: version.into(),
            git_sha: git_sha.into(),
            size: 0,
            built_at: None,
            pushed_at: None,
            pushed_by: None,
            labels: BTreeMap::new(),
            format: Format::Demo,
        }
    }

    /// The image repository of a build for Kubernetes targets, if it is one.
    pub fn image(&self) -> Option<&str> {
        self.labels.get(IMAGE_LABEL).map(String::as_str)
    }

    /// The deployable artifact this record describes.
    pub fn artifact(&self, digest: &Digest) -> Artifact {
        Artifact { digest: digest.clone(), git_sha: self.git_sha.clone(), version: self.version.clone() }
    }

    /// Checks what a pusher said about a build; an error names the field.
    pub fn check(&self) -> signalbox_domain::Result<()> {
        use signalbox_domain::Error as Invalid;
        use signalbox_domain::bounds::{check_count, check_name, check_principal, check_text};
        check_name("service", &self.service)?;
        if self.version.trim().is_empty() {
            return Err(Invalid::invalid("version", "is required"));
        }
        if self.git_sha.is_empty() {
            return Err(Invalid::invalid("git_sha", "is required"));
        }
        let version_ok = self.version.chars().count() <= 64 && !self.version.contains(['\n', '\t']);
        if !version_ok {
            return Err(Invalid::invalid("version", "must be 1 to 64 characters on one line"));
        }
        check_text("version", &self.version, 64)?;
        let sha = &self.git_sha;
        if !(7..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid::invalid("git_sha", "must be 7 to 40 hex digits"));
        }
        if let Some(at) = &self.built_at
            && chrono::DateTime::parse_from_rfc3339(at).is_err()
        {
            return Err(Invalid::invalid("built_at", "must be an RFC 3339 time, e.g. 2026-12-01T09:30:00Z"));
        }
        if let Some(by) = &self.pushed_by {
            check_principal("pushed_by", by)?;
        }
        check_count("labels", self.labels.len(), MAX_LABELS)?;
        for (key, value) in &self.labels {
            let field = format!("labels.{key}");
            let ok = (1..=63).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !ok {
                return Err(Invalid::invalid(field, "a label key is 1 to 63 of A-Z, a-z, 0-9, '-', '_', '.', '/'"));
            }
            check_text(&field, value, 256)?;
            if value.contains(['\n', '\t']) {
                return Err(Invalid::invalid(field, "must be one line"));
            }
        }
        if let Some(repo) = self.image() {
            check_image_repository(repo)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_copy_and_remove_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(&dir.path().join("store")).unwrap();
        let cache = ArtifactStore::local(&dir.path().join("cache")).unwrap();
        let d = store.put(b"build-1".to_vec()).await.unwrap();
        assert_eq!(d, digest_of(b"build-1"));
        assert_eq!(store.put(b"build-1".to_vec()).await.unwrap(), d);
        assert!(cache.copy_from(&store, &d).await.unwrap());
        assert!(!cache.copy_from(&store, &d).await.unwrap(), "second copy is a no-op");
        assert_eq!(cache.get(&d).await.unwrap(), b"build-1");
        cache.remove(&d).await.unwrap();
        cache.remove(&d).await.unwrap();
        assert!(!cache.contains(&d).await.unwrap());
        let unknown = digest_of(b"never stored");
        assert!(matches!(store.get(&unknown).await, Err(Error::UnknownArtifact(_))));
    }

    #[tokio::test]
    async fn a_fill_is_owned_by_its_deploy_across_retries_and_evicted_only_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(&dir.path().join("store")).unwrap();
        let cache = ArtifactStore::local(&dir.path().join("cache")).unwrap();
        let d = store.put(b"build-2".to_vec()).await.unwrap();
        assert!(cache.fill_from(&store, &d, "deploy-a").await.unwrap());
        assert!(cache.fill_from(&store, &d, "deploy-a").await.unwrap(), "a retry of the same push still reports its fill");
        assert!(!cache.fill_from(&store, &d, "deploy-b").await.unwrap(), "another deploy found it there");
        assert!(!cache.evict_fill(&d, "deploy-b").await.unwrap());
        assert!(cache.contains(&d).await.unwrap(), "what another deploy filled stays");
        assert!(cache.evict_fill(&d, "deploy-a").await.unwrap());
        assert!(!cache.contains(&d).await.unwrap());
        assert_eq!(cache.filled_by(&d).await.unwrap(), None);

        let before = store.put(b"build-3".to_vec()).await.unwrap();
        assert!(cache.copy_from(&store, &before).await.unwrap());
        assert!(!cache.fill_from(&store, &before, "deploy-a").await.unwrap(), "held before the deploy: not its fill");
        assert!(!cache.evict_fill(&before, "deploy-a").await.unwrap());
        assert!(cache.contains(&before).await.unwrap());
    }

    #[tokio::test]
    async fn a_build_keeps_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let record = Record::new("checkout", "1.0.0", "abc1234");
        let d = store.put_build(b"build".to_vec(), record.clone()).await.unwrap();
        let again = Record { version: "9.9.9".into(), ..record.clone() };
        assert_eq!(store.put_build(b"build".to_vec(), again).await.unwrap(), d);
        assert_eq!(store.record(&d).await.unwrap(), Some(record));
        assert_eq!(store.record(&digest_of(b"other")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_image_build_is_its_manifest_and_names_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let manifest = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}"#.to_vec();
        let mut record = Record::new("web", "2.0.0", "abc1234");
        record.labels.insert(IMAGE_LABEL.into(), "registry.local:5000/shop/web".into());
        let (d, stored, _) = store.push(manifest.clone(), record.clone()).await.unwrap();
        assert_eq!((d, stored.format, stored.image()), (digest_of(&manifest), Format::Image, Some("registry.local:5000/shop/web")));
        let not_a_manifest = store.push(br#"{"version": "2"}"#.to_vec(), record.clone()).await.unwrap_err();
        assert_eq!(not_a_manifest.field_name(), Some("labels.image"));
        for bad in ["Web", "web:2.0.0", "registry.local/web@sha256:00", "shop//web", ""] {
            let mut r = record.clone();
            r.labels.insert(IMAGE_LABEL.into(), bad.into());
            let e = store.push(manifest.clone(), r).await.unwrap_err();
            assert_eq!(e.field_name(), Some("labels.image"), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn a_push_is_checked_recorded_listed_and_safe_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let mut record = Record::new("checkout", "1.0.0", "abc1234");
        record.pushed_by = Some("dave".into());
        record.pushed_at = Some("2026-12-01T09:00:00Z".into());
        record.labels.insert("team".into(), "payments".into());
        let (d, stored, new) = store.push(br#"{"version":"1.0.0"}"#.to_vec(), record.clone()).await.unwrap();
        assert!(new);
        assert_eq!((stored.size, stored.format), (19, Format::Demo));
        let again = Record { version: "9.9.9".into(), ..record.clone() };
        let (d2, first, new) = store.push(br#"{"version":"1.0.0"}"#.to_vec(), again).await.unwrap();
        assert_eq!((d2, first.version.as_str(), new), (d.clone(), "1.0.0", false), "the same bytes keep their first record");

        let bad = Record { git_sha: "xyz".into(), ..record.clone() };
        assert_eq!(store.push(b"other".to_vec(), bad).await.unwrap_err().to_string(), "git_sha: must be 7 to 40 hex digits");
        let bad = Record { service: "Check Out".into(), ..record.clone() };
        assert_eq!(store.push(b"other".to_vec(), bad).await.unwrap_err().field_name(), Some("service"));
        let mut bad = record.clone();
        bad.labels.insert("bad key".into(), "x".into());
        assert_eq!(store.push(b"other".to_vec(), bad).await.unwrap_err().field_name(), Some("labels.bad key"));
        let bad = Record { built_at: Some("yesterday".into()), ..record.clone() };
        assert_eq!(store.push(b"other".to_vec(), bad).await.unwrap_err().field_name(), Some("built_at"));
        assert!(!store.contains(&digest_of(b"other")).await.unwrap(), "a refused push stores nothing");

        let later = Record { version: "1.1.0".into(), pushed_at: Some("2026-12-01T10:00:00Z".into()), ..record.clone() };
        let (d3, _, _) = store.push(br#"{"version":"1.1.0"}"#.to_vec(), later).await.unwrap();
        let other = Record::new("search", "3.0.0", "def5678");
        store.push(b"search".to_vec(), other).await.unwrap();
        let listed: Vec<Digest> = store.list(Some("checkout")).await.unwrap().into_iter().map(|(d, _)| d).collect();
        assert_eq!(listed, vec![d3, d], "newest push first, only the service asked for");
        assert_eq!(store.list(None).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_tampered_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let d = store.put(b"good".to_vec()).await.unwrap();
        std::fs::write(dir.path().join("sha256").join(d.hex()), b"evil").unwrap();
        assert!(matches!(store.get(&d).await, Err(Error::Corrupt { .. })));
    }
}
