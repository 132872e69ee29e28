//! Child processes that cannot outlive the process that owns them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::{sys, wait_for};

/// Process groups that must die with us. A fixed array of atomics rather than a `Mutex<Vec>`
/// because the `atexit` hook reads it while other threads may still be running, and a hook that
/// blocks on a lock would hang the exit.
static LIVE_GROUPS: [AtomicU32; 1024] = [const { AtomicU32::new(0) }; 1024];

/// Kills every registered group. Runs from `atexit`: no locks, no allocation, no panics.
extern "C" fn kill_live_groups() {
    for slot in &LIVE_GROUPS {
        let pgid = slot.swap(0, Ordering::SeqCst);
        if pgid != 0 {
            let _ = sys::signal_group(pgid, libc::SIGKILL);
        }
    }
}

fn install_exit_hook() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| sys::at_exit(kill_live_groups).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| anyhow!("installing the exit hook that kills child processes: {e}"))
}

fn register(pgid: u32) -> Result<usize> {
    LIVE_GROUPS
        .iter()
        .position(|slot| {
            slot.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .ok_or_else(|| anyhow!("more than {} managed processes at once", LIVE_GROUPS.len()))
}

/// A child process we own.
///
/// It runs in its own process group (so signals reach whatever it forks too), writes stdout and
/// stderr to a log file, and is SIGKILLed with its whole group when dropped or, failing that,
/// when the owning process exits normally. The exit hook is `atexit`, not `PR_SET_PDEATHSIG`:
/// the latter fires when the spawning *thread* ends, which in a tokio runtime or a test harness
/// is long before the owner is done with the child.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log_file: PathBuf,
    /// Index in [`LIVE_GROUPS`] while registered.
    slot: Option<usize>,
    reaped: bool,
}

impl ManagedProcess {
    /// Spawns `cmd` as `name` (used in logs and errors), appending its output to `log_file`
    /// (created with its parent directories).
    pub fn spawn(name: &str, mut cmd: Command, log_file: &Path) -> Result<Self> {
        install_exit_hook()?;
        let (stdout, stderr) = open_log(log_file, name, &cmd)?;
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let mut process = Self {
            name: name.to_owned(),
            child,
            log_file: log_file.to_owned(),
            slot: None,
            reaped: false,
        };
        // On error `process` is dropped, which kills it: better no child than an unguarded one.
        process.slot = Some(register(process.pid())?);
        tracing::debug!(name, pid = process.pid(), log = %log_file.display(), "spawned");
        Ok(process)
    }

    /// Spawns a process that must *outlive* the spawner (fleet instances survive a restart of
    /// whatever launched them) and returns its pid.
    ///
    /// It leads a new session (`setsid`), so its process-group id equals its pid; it is neither
    /// registered for the exit hook nor tied to any handle. While we run, a thread reaps it when
    /// it exits; after we exit, init adopts it.
    pub fn spawn_detached(mut cmd: Command, log_file: &Path) -> Result<u32> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let (stdout, stderr) = open_log(log_file, &name, &cmd)?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        sys::new_session(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning detached {cmd:?}"))?;
        let pid = child.id();
        let reaper = std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || child.wait());
        if let Err(error) = reaper {
            // Only costs a zombie once it exits; the process itself runs fine.
            tracing::warn!(pid, %error, "no thread to reap a detached process");
        }
        tracing::debug!(name, pid, log = %log_file.display(), "spawned detached");
        Ok(pid)
    }

    /// The pid, which is also the process-group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the whole process group and reaps the leader. A no-op once it has exited.
    pub fn sigkill(&mut self) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        sys::signal_group(self.pid(), libc::SIGKILL)
            .with_context(|| format!("killing {} (pid {})", self.name, self.pid()))?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {} (pid {})", self.name, self.pid()))?;
        tracing::debug!(name = self.name, pid = self.pid(), %status, "killed");
        self.mark_reaped();
        Ok(())
    }

    /// Asks the process group to stop (SIGTERM), waits up to `grace` for the leader to exit,
    /// then SIGKILLs whatever is left of the group.
    pub async fn terminate(&mut self, grace: Duration) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = self.pid();
        sys::signal_group(pid, libc::SIGTERM)
            .with_context(|| format!("stopping {} (pid {pid})", self.name))?;
        let what = format!("{} (pid {pid}) to exit after SIGTERM", self.name);
        let exited = wait_for(&what, grace, || async move {
            Ok(sys::has_exited(pid).then_some(()))
        })
        .await;
        if let Err(error) = exited {
            tracing::warn!(%error, "escalating to SIGKILL");
        }
        // The leader, if it exited, is still an unreaped zombie, so the group id is still ours
        // and this also clears out anything it left behind.
        self.sigkill()
    }

    /// Whether the process is still running. Once its leader has exited, the rest of its group
    /// is killed and the leader reaped, so `false` means the whole group is gone.
    pub fn is_running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        if !sys::has_exited(self.pid()) {
            return true;
        }
        if let Err(error) = self.sigkill() {
            tracing::warn!(name = self.name, %error, "cleaning up after exit");
            self.mark_reaped();
        }
        false
    }

    /// Whether the leader has exited, without reaping it; for checks that only hold `&self`.
    pub(crate) fn has_exited(&self) -> bool {
        self.reaped || sys::has_exited(self.pid())
    }

    /// The last `lines` lines of the log file, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        read_tail(&self.log_file, lines)
    }

    fn mark_reaped(&mut self) {
        self.reaped = true;
        if let Some(slot) = self.slot.take() {
            LIVE_GROUPS[slot].store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Err(error) = self.sigkill() {
            tracing::warn!(name = self.name, %error, "killing on drop");
        }
        self.mark_reaped();
    }
}

/// Opens `path` for appending and returns it twice, for stdout and stderr. Appends so that the
/// output of earlier runs (before a restart) stays readable; a header marks each run.
fn open_log(path: &Path, name: &str, cmd: &Command) -> Result<(Stdio, Stdio)> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))?;
    writeln!(file, "=== signalbox-devstack: starting {name}: {cmd:?}")
        .with_context(|| format!("writing {}", path.display()))?;
    let stderr = file
        .try_clone()
        .with_context(|| format!("duplicating {}", path.display()))?;
    Ok((file.into(), stderr.into()))
}

fn read_tail(path: &Path, lines: usize) -> String {
    // Enough bytes for `lines` long log lines without reading a whole large log.
    const BYTES_PER_LINE: u64 = 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub((lines as u64 + 1) * BYTES_PER_LINE);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        // A window that starts mid-file starts mid-line: drop that fragment.
        let all: Vec<&str> = text.lines().skip(usize::from(start > 0)).collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read log {}: {e})", path.display()))
}
