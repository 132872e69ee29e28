//! The signalbox home: where the local store, regional caches, fleets and logs live.
//!
//! ```text
//! $SIGNALBOX_HOME/
//!   store/sha256/<hex>                  artifacts, by content
//!   store/records/sha256/<hex>.json     what each artifact is: service, version, git SHA
//!   regions/<region>/cache/sha256/<hex> what each region has pulled
//!   fleets/<fleet>/inventory.json       instances: id, port, region
//!   fleets/<fleet>/oplog.jsonl          every restart and skip, per instance and target
//!   fleets/<fleet>/instances/<id>/      releases/<hex>/artifact.json, current, previous
//!   audit.jsonl                         every change to the world, by deploy
//! ```
//!
//! The origin store may live elsewhere: `$SIGNALBOX_STORE` (an `s3://bucket/prefix` or a
//! directory) replaces `store/`.

use std::path::{Path, PathBuf};

use crate::{ArtifactStore, Result};

/// Paths under one signalbox home.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    origin: Option<String>,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), origin: None }
    }

    /// The home named by `$SIGNALBOX_HOME`, else `.signalbox` in the working directory, with the
    /// origin store `$SIGNALBOX_STORE` names if set.
    pub fn from_env() -> Self {
        let home = Self::new(std::env::var_os("SIGNALBOX_HOME").map_or_else(|| PathBuf::from(".signalbox"), PathBuf::from));
        match std::env::var("SIGNALBOX_STORE") {
            Ok(origin) if !origin.is_empty() => home.with_origin(origin),
            _ => home,
        }
    }

    /// This home with its origin store at `location` (see [`ArtifactStore::open`]).
    pub fn with_origin(mut self, location: impl Into<String>) -> Self {
        self.origin = Some(location.into());
        self
    }

    /// Root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The origin artifact store: the configured one, else `store/` under the home.
    pub fn store(&self) -> Result<ArtifactStore> {
        match &self.origin {
            Some(location) => ArtifactStore::open(location, std::iter::empty::<(&str, String)>()),
            None => ArtifactStore::local(&self.root.join("store")),
        }
    }

    /// The cache of one region.
    pub fn region_cache(&self, region: &str) -> Result<ArtifactStore> {
        ArtifactStore::local(&self.root.join("regions").join(region).join("cache"))
    }

    /// Directory of one fleet.
    pub fn fleet_dir(&self, fleet: &str) -> PathBuf {
        self.root.join("fleets").join(fleet)
    }

    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }
}
