//! The fleet inventory file the load generator follows:
//! `{"instances":[{"id":"i-000","port":41000,...},...]}`. Whoever runs the fleet owns
//! the file and may add fields; only `id`, `port` and an optional `host` are read.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Inventory {
    /// Instances to send load to.
    pub instances: Vec<Instance>,
}

/// One instance of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// HTTP port.
    pub port: u16,
    /// Host to connect to [default: 127.0.0.1].
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

impl Inventory {
    /// Reads and parses the inventory at `path`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| Error::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_slice(&bytes, path)
    }

    /// Parses an inventory; `path` only names the document in errors.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self> {
        crate::parse_json(bytes, || format!("fleet file {}", path.display()))
    }
}

impl Instance {
    /// The URL of the instance's work endpoint.
    pub fn work_url(&self) -> String {
        format!("http://{}:{}/", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_ignored_and_host_defaults_to_loopback() {
        let doc = br#"{"generation":3,"instances":[
            {"id":"i-000","port":41000,"pid":123,"digest":"sha256:ab"},
            {"id":"i-001","port":41001,"host":"10.0.0.2"}]}"#;
        let inventory = Inventory::from_slice(doc, Path::new("fleet.json")).unwrap();
        let urls: Vec<String> = inventory.instances.iter().map(Instance::work_url).collect();
        assert_eq!(urls, ["http://127.0.0.1:41000/", "http://10.0.0.2:41001/"]);
    }

    #[test]
    fn a_bad_port_names_its_place() {
        let doc = br#"{"instances":[{"id":"i-000","port":41000},{"id":"i-001","port":70000}]}"#;
        let message = Inventory::from_slice(doc, Path::new("fleet.json"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("fleet.json") && message.contains("instances[1].port"),
            "{message}"
        );
    }
}
