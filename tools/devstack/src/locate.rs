//! Finding the binaries and ports the stack runs on.

use std::env;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable naming the `temporal` CLI to use.
const TEMPORAL_BIN_ENV: &str = "SIGNALBOX_TEMPORAL_BIN";
/// Environment variable naming a directory of workspace binaries.
const BIN_DIR_ENV: &str = "SIGNALBOX_BIN_DIR";

/// Where the `temporal` CLI is: `$SIGNALBOX_TEMPORAL_BIN`, else `~/.cache/signalbox/bin/temporal`,
/// else `temporal` on `PATH`.
///
/// A `$SIGNALBOX_TEMPORAL_BIN` that names no executable is an error rather than a reason to fall
/// back: silently running another Temporal version than the one asked for costs more than failing.
pub fn temporal_binary() -> Result<PathBuf> {
    if let Some(path) = env::var_os(TEMPORAL_BIN_ENV) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!(
            "${TEMPORAL_BIN_ENV} is {} which is not an executable file",
            path.display()
        );
    }
    let cached =
        env::var_os("HOME").map(|home| Path::new(&home).join(".cache/signalbox/bin/temporal"));
    if let Some(path) = cached.as_ref().filter(|path| is_executable(path)) {
        return Ok(path.clone());
    }
    if let Some(path) = find_on_path("temporal") {
        return Ok(path);
    }
    bail!(
        "no temporal CLI found: ${TEMPORAL_BIN_ENV} is unset, {} does not exist, and no `temporal` \
         on PATH (install: go install github.com/temporalio/cli/cmd/temporal@v1.5.1)",
        cached.map_or_else(
            || "~/.cache/signalbox/bin/temporal ($HOME unset)".to_owned(),
            |p| p.display().to_string()
        )
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
///
/// Someone else may take it before it is used; callers that can, retry on "address in use".
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Path of a binary built in this cargo workspace, such as `signalbox-worker`.
///
/// Looks in `$SIGNALBOX_BIN_DIR`, then next to the current executable and in its parent
/// directory: tests run from `target/<profile>/deps/`, binaries live in `target/<profile>/`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(dir));
    }
    let exe = env::current_exe().context("locating the current executable")?;
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_owned());
        dirs.extend(dir.parent().map(Path::to_owned));
    }
    if let Some(path) = dirs
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
    {
        return Ok(path);
    }
    let searched: Vec<String> = dirs.iter().map(|dir| dir.display().to_string()).collect();
    bail!(
        "binary `{name}` not found in {}; run `cargo build --workspace --bins` first \
         (or point ${BIN_DIR_ENV} at a directory holding it)",
        searched.join(", ")
    )
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
