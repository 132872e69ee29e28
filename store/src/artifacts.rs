//! The content-addressed artifact store and the regional caches it feeds.
//!
//! Objects live at `sha256/<hex>`; nothing is ever readable under a digest that does not match
//! its bytes. A build's record (what it is: service, version, git SHA) lives at
//! `records/sha256/<hex>.json`, written with the build.

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

    /// A store over any object store (a bucket, in production).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
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
}

impl Record {
    /// The deployable artifact this record describes.
    pub fn artifact(&self, digest: &Digest) -> Artifact {
        Artifact { digest: digest.clone(), git_sha: self.git_sha.clone(), version: self.version.clone() }
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
        let record = Record { service: "checkout".into(), version: "1.0.0".into(), git_sha: "abc1234".into() };
        let d = store.put_build(b"build".to_vec(), record.clone()).await.unwrap();
        let again = Record { version: "9.9.9".into(), ..record.clone() };
        assert_eq!(store.put_build(b"build".to_vec(), again).await.unwrap(), d);
        assert_eq!(store.record(&d).await.unwrap(), Some(record));
        assert_eq!(store.record(&digest_of(b"other")).await.unwrap(), None);
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
