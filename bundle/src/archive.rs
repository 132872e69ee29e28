//! Reading a bundle's tarball: its manifest, and a safe unpack.

use std::io::Read;
use std::path::{Component, Path};

use crate::{Error, Manifest, Result};

/// The manifest's name at the root of a bundle.
pub const MANIFEST: &str = "signalbox.json";

/// Most entries a bundle may hold.
const MAX_ENTRIES: usize = 100_000;
/// Largest a manifest may be.
const MAX_MANIFEST: u64 = 64 * 1024;

/// Whether `bytes` look like a tarball (gzip-compressed or not) rather than another kind of
/// artifact.
pub fn is_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b]) || bytes.get(257..262) == Some(b"ustar")
}

/// A checked bundle: every entry stays inside the release directory, and the manifest reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// How to run it.
    pub manifest: Manifest,
    /// Regular files it holds.
    pub files: usize,
    /// Their total size in bytes, unpacked.
    pub unpacked_bytes: u64,
}

fn reader(bytes: &[u8]) -> Box<dyn Read + '_> {
    if bytes.starts_with(&[0x1f, 0x8b]) { Box::new(flate2::read::GzDecoder::new(bytes)) } else { Box::new(bytes) }
}

fn bad(rule: impl Into<String>) -> Error {
    Error::invalid("bundle", rule)
}

/// An entry's path inside the bundle, without a leading `./`; refused if it could leave the
/// release directory.
fn inside(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => return Err(bad(format!("entry {} must be a relative path without '..'", path.display()))),
        }
    }
    Ok(parts.join("/"))
}

impl Bundle {
    /// Reads and checks a bundle from its bytes: a manifest at the root, only files,
    /// directories and symlinks that stay inside.
    pub fn read(bytes: &[u8]) -> Result<Self> {
        if !is_bundle(bytes) {
            return Err(bad("is not a tarball (.tar or .tar.gz)"));
        }
        let mut archive = tar::Archive::new(reader(bytes));
        let entries = archive.entries().map_err(|e| bad(format!("cannot be read: {e}")))?;
        let (mut manifest, mut files, mut unpacked_bytes, mut seen) = (None, 0, 0u64, 0);
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("cannot be read: {e}")))?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(bad(format!("must hold at most {MAX_ENTRIES} entries")));
            }
            let path = entry.path().map_err(|e| bad(format!("has an unreadable entry name: {e}")))?.into_owned();
            let name = inside(&path)?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    files += 1;
                    unpacked_bytes += entry.size();
                    if name == MANIFEST {
                        if entry.size() > MAX_MANIFEST {
                            return Err(Error::invalid(MANIFEST, format!("must be at most {MAX_MANIFEST} bytes")));
                        }
                        let mut json = Vec::new();
                        entry.read_to_end(&mut json).map_err(|e| bad(format!("cannot be read: {e}")))?;
                        manifest = Some(Manifest::read(&json)?);
                    }
                }
                tar::EntryType::Directory => {}
                tar::EntryType::Symlink => {
                    let target = entry.link_name().ok().flatten().ok_or_else(|| bad(format!("symlink {name} has no target")))?;
                    // Resolved from the link's own directory, it must not climb above the root.
                    let depth = name.matches('/').count() as i64;
                    let mut level = depth;
                    for c in target.components() {
                        match c {
                            Component::Normal(_) => level += 1,
                            Component::CurDir => {}
                            Component::ParentDir => level -= 1,
                            _ => return Err(bad(format!("symlink {name} must point inside the bundle"))),
                        }
                        if level < 0 {
                            return Err(bad(format!("symlink {name} must point inside the bundle")));
                        }
                    }
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {}
                other => return Err(bad(format!("entry {name} is a {other:?}; only files, directories and symlinks are allowed"))),
            }
        }
        let manifest = manifest.ok_or_else(|| Error::invalid(MANIFEST, format!("is required at the root of the bundle (no {MANIFEST} found)")))?;
        Ok(Self { manifest, files, unpacked_bytes })
    }

    /// Checks `bytes` and unpacks them into `dir` (which must exist), keeping file modes.
    pub fn unpack(bytes: &[u8], dir: &Path) -> Result<Self> {
        let bundle = Self::read(bytes)?;
        let mut archive = tar::Archive::new(reader(bytes));
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io(dir, e))?;
            if !entry.unpack_in(dir).map_err(|e| Error::io(dir, e))? {
                return Err(bad("an entry would land outside the release directory"));
            }
        }
        Ok(bundle)
    }

    /// Reads the manifest of a bundle already unpacked in `dir`.
    pub fn manifest_in(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let json = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Manifest::read(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(entries: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            // Set the raw name so tests can write paths a well-behaved builder refuses.
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    const MANIFEST_JSON: &[u8] = br#"{"start": {"command": "./run.sh"}, "ready": {"http": "/healthz"}}"#;

    #[test]
    fn a_gzipped_bundle_unpacks_with_its_modes_and_manifest() {
        let bytes = tarball(&[("signalbox.json", MANIFEST_JSON), ("./run.sh", b"#!/bin/sh\necho hi\n"), ("static/index.html", b"<p>hi</p>")], true);
        assert!(is_bundle(&bytes));
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle::unpack(&bytes, dir.path()).unwrap();
        assert_eq!(bundle.files, 3);
        assert_eq!(bundle.manifest.ready_path(), Some("/healthz"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(dir.path().join("static/index.html")).unwrap(), b"<p>hi</p>");
        assert_eq!(Bundle::manifest_in(dir.path()).unwrap(), bundle.manifest);
    }

    #[test]
    fn a_bundle_that_would_escape_or_lacks_a_manifest_is_refused() {
        let escape = tarball(&[("signalbox.json", MANIFEST_JSON), ("../evil", b"x")], false);
        assert_eq!(Bundle::read(&escape).unwrap_err().to_string(), "bundle: entry ../evil must be a relative path without '..'");
        let none = tarball(&[("run.sh", b"x")], false);
        assert_eq!(Bundle::read(&none).unwrap_err().to_string(), "signalbox.json: is required at the root of the bundle (no signalbox.json found)");
        let bad_manifest = tarball(&[("signalbox.json", br#"{"start": {"command": ""}}"#)], true);
        assert_eq!(Bundle::read(&bad_manifest).unwrap_err().to_string(), "signalbox.json: start.command: must not be empty");
        assert_eq!(Bundle::read(b"{\"version\": \"1\"}").unwrap_err().to_string(), "bundle: is not a tarball (.tar or .tar.gz)");
    }

    #[test]
    fn a_symlink_out_of_the_bundle_is_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut m = tar::Header::new_gnu();
        m.set_size(MANIFEST_JSON.len() as u64);
        m.set_cksum();
        builder.append_data(&mut m, "signalbox.json", MANIFEST_JSON).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "lib/up", "../../etc").unwrap();
        let bytes = builder.into_inner().unwrap();
        assert_eq!(Bundle::read(&bytes).unwrap_err().to_string(), "bundle: symlink lib/up must point inside the bundle");
    }

    /// What `tar -czf b.tgz -C dir .` writes: a `./` directory entry and `./`-prefixed names.
    #[test]
    fn a_tarball_made_with_tar_c_dot_reads_and_unpacks() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_cksum();
        builder.append_data(&mut dir, "./", std::io::empty()).unwrap();
        let manifest = br#"{"start": {"command": "python3", "args": ["server.py"]}}"#;
        let mut m = tar::Header::new_gnu();
        m.set_size(manifest.len() as u64);
        m.set_mode(0o644);
        m.set_cksum();
        builder.append_data(&mut m, "./signalbox.json", manifest.as_slice()).unwrap();
        let bytes = builder.into_inner().unwrap();
        let out = tempfile::tempdir().unwrap();
        let bundle = Bundle::unpack(&bytes, out.path()).unwrap();
        assert_eq!(bundle.manifest.start.command, "python3");
        assert!(out.path().join("signalbox.json").is_file());
    }
}
