//! The content-addressed artifact store and the regional caches it feeds.
//!
//! Both are [`ObjectStore`]s, a local directory by default, so an S3 or GCS bucket can back
//! them without touching the deploy logic. Objects live at `sha256/<hex>`; nothing is ever
//! readable under a digest that does not match its bytes.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest as _, Sha256};
use signalbox_domain::Digest;

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
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(Error::Store)?;
        Ok(Self { inner: Arc::new(fs) })
    }

    /// A store over any object store (a bucket, in production).
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    fn key(digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}", digest.hex()))
    }

    /// Stores `bytes` and returns their digest; storing the same bytes twice is a no-op.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<Digest> {
        let digest = digest_of(&bytes);
        if !self.contains(&digest).await? {
            self.inner.put(&Self::key(&digest), PutPayload::from(bytes)).await.map_err(Error::Store)?;
        }
        Ok(digest)
    }

    /// Whether the store holds `digest`.
    pub async fn contains(&self, digest: &Digest) -> Result<bool> {
        match self.inner.head(&Self::key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Store(e)),
        }
    }

    /// The bytes under `digest`, verified against it.
    pub async fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes = match self.inner.get(&Self::key(digest)).await {
            Ok(r) => r.bytes().await.map_err(Error::Store)?.to_vec(),
            Err(object_store::Error::NotFound { .. }) => return Err(Error::UnknownArtifact(digest.clone())),
            Err(e) => return Err(Error::Store(e)),
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
        self.inner.put(&Self::key(digest), PutPayload::from(bytes)).await.map_err(Error::Store)?;
        Ok(true)
    }

    /// Removes `digest`; removing a missing object is a no-op.
    pub async fn remove(&self, digest: &Digest) -> Result<()> {
        match self.inner.delete(&Self::key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Store(e)),
        }
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
    async fn a_tampered_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::local(dir.path()).unwrap();
        let d = store.put(b"good".to_vec()).await.unwrap();
        std::fs::write(dir.path().join("sha256").join(d.hex()), b"evil").unwrap();
        assert!(matches!(store.get(&d).await, Err(Error::Corrupt { .. })));
    }
}
