//! Append-only JSON-lines logs: the fleet's operation log and the audit log.
//!
//! One `write` of one line on an `O_APPEND` file: lines from concurrent writers (a worker and
//! its replacement after a crash) never interleave.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use signalbox_substrate::{Error, Result};

/// Appends `entry` as one JSON line to `path`.
pub fn append<T: Serialize>(path: &Path, entry: &T) -> Result<()> {
    let mut line = serde_json::to_vec(entry).expect("journal entries serialize");
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(&line).map_err(|e| Error::io(path, e))
}

/// Reads every entry of `path`; a missing file is an empty log.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::io(path, std::io::Error::other(e))))
        .collect()
}
