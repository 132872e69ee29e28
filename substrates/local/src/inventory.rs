//! A local fleet's inventory: which instances exist, on which port and in which region.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use signalbox_substrate::{Error, Result};

/// One instance of a local fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance id, e.g. `i-007`.
    pub id: String,
    /// Loopback port it serves on.
    pub port: u16,
    /// Region it lives in.
    pub region: String,
}

/// The fleet's inventory file (also read by the load generator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Fleet name.
    pub fleet: String,
    /// The program every instance runs; the artifact it is given decides its behaviour.
    pub service_binary: PathBuf,
    /// Instances in rollout order.
    pub instances: Vec<InstanceSpec>,
}

impl Inventory {
    /// Reads the inventory at `path`; a missing file means the fleet does not exist.
    pub fn load(path: &Path, fleet: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Target(format!("no fleet named {fleet:?} (no {})", path.display())),
            _ => Error::io(path, e),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Target(format!("{}: {e}", path.display())))
    }

    /// Writes the inventory atomically (write a temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("inventory serializes")).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// The spec of instance `id`.
    pub fn instance(&self, id: &str) -> Result<&InstanceSpec> {
        self.instances
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| Error::Target(format!("fleet {:?} has no instance {id:?}", self.fleet)))
    }
}
