//! One instance on disk and as a process.
//!
//! Releases are unpacked side by side under `releases/<hex>`; `current` and `previous` are
//! symlinks switched by an atomic rename, so an instance is never between two versions on disk
//! and the version it ran before is always one switch away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use signalbox_domain::Digest;

use signalbox_substrate::{Error, Result};

/// What a serving instance says about itself on `/ready`.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    /// Digest of the artifact it serves.
    pub digest: Digest,
    /// Version it serves.
    pub version: String,
    /// Its process id.
    pub pid: u32,
}

/// The directory of one instance.
#[derive(Debug, Clone)]
pub struct InstanceDir {
    dir: PathBuf,
}

impl InstanceDir {
    /// The instance directory at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn release(&self, digest: &Digest) -> PathBuf {
        self.dir.join("releases").join(digest.hex())
    }

    /// Whether the release of `digest` is unpacked here.
    pub fn has_release(&self, digest: &Digest) -> bool {
        self.release(digest).join("artifact.json").is_file()
    }

    /// Unpacks `bytes` (already verified against `digest`) as a release, into a cold directory
    /// first and renamed into place, so a half-written release is never visible.
    pub fn install_release(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has_release(digest) {
            return Ok(());
        }
        let cold = self.dir.join("releases").join(format!(".cold-{}-{}", digest.short(), std::process::id()));
        std::fs::create_dir_all(&cold).map_err(|e| Error::io(&cold, e))?;
        let file = cold.join("artifact.json");
        std::fs::write(&file, bytes).map_err(|e| Error::io(&file, e))?;
        let hot = self.release(digest);
        match std::fs::rename(&cold, &hot) {
            Ok(()) => Ok(()),
            // Another attempt finished first; its copy is as good as ours.
            Err(_) if self.has_release(digest) => {
                let _ = std::fs::remove_dir_all(&cold);
                Ok(())
            }
            Err(e) => Err(Error::io(&hot, e)),
        }
    }

    fn link_target(&self, name: &str) -> Option<Digest> {
        let target = std::fs::read_link(self.dir.join(name)).ok()?;
        target.file_name()?.to_str()?.parse::<String>().ok().and_then(|hex| format!("sha256:{hex}").parse().ok())
    }

    /// The release `current` points at.
    pub fn current(&self) -> Option<Digest> {
        self.link_target("current")
    }

    /// The release `previous` points at.
    pub fn previous(&self) -> Option<Digest> {
        self.link_target("previous")
    }

    fn relink(&self, name: &str, digest: &Digest) -> Result<()> {
        let link = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(digest.hex()), &tmp).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e))
    }

    /// Makes `digest` current and what was current previous. Switching to the current release
    /// changes nothing, so a retried switch cannot lose the previous version.
    pub fn switch_to(&self, digest: &Digest) -> Result<()> {
        match self.current() {
            Some(cur) if &cur == digest => return Ok(()),
            Some(cur) => self.relink("previous", &cur)?,
            None => {}
        }
        self.relink("current", digest)
    }

    /// The version name inside the release of `digest`.
    pub fn version_of(&self, digest: &Digest) -> Result<String> {
        #[derive(Deserialize)]
        struct Manifest {
            version: String,
        }
        let path = self.release(digest).join("artifact.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        Ok(m.version)
    }

    fn owner_file(&self) -> PathBuf {
        self.dir.join("owner")
    }

    /// Records `deploy_id` as the deploy that last changed this instance (atomically: a
    /// temporary file renamed into place).
    pub fn set_owner(&self, deploy_id: &str) -> Result<()> {
        let tmp = self.dir.join(".owner.tmp");
        std::fs::write(&tmp, deploy_id).map_err(|e| Error::io(&tmp, e))?;
        let file = self.owner_file();
        std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))
    }

    /// The deploy that last changed this instance, if one was recorded.
    pub fn owner(&self) -> Option<String> {
        std::fs::read_to_string(self.owner_file()).ok().filter(|o| !o.is_empty())
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// The pid of this instance's service process, if one is alive. The pid file alone is not
    /// trusted: pids are reused, so the process's command line must name this directory.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        is_alive_with(pid, &self.dir).then_some(pid)
    }

    /// Drains and stops the service process: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) -> Result<()> {
        let Some(pid) = self.running_pid() else { return Ok(()) };
        let target = Pid::from_raw(pid as i32);
        let _ = kill(target, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while is_alive_with(pid, &self.dir) {
            if tokio::time::Instant::now() >= deadline {
                let _ = kill(target, Signal::SIGKILL);
            }
            tick.tick().await;
        }
        Ok(())
    }

    /// Starts the service process on `port` in its own process group, so that it outlives the
    /// worker that started it and a signal to the worker's group never reaches it.
    pub fn start(&self, binary: &Path, id: &str, port: u16) -> Result<u32> {
        let log_path = self.dir.join("service.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut child = tokio::process::Command::new(binary)
            .arg("--instance-dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("--instance-id")
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(binary, e))?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let pid_file = self.pid_file();
        std::fs::write(&pid_file, pid.to_string()).map_err(|e| Error::io(&pid_file, e))?;
        // Reap it when it exits, so stopped instances do not linger as zombies.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(pid)
    }
}

fn is_alive_with(pid: u32, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else { return false };
    let zombie = std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
    let needle = dir.as_os_str().as_encoded_bytes();
    !zombie && cmdline.split(|&b| b == 0).any(|arg| arg == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_store::digest_of;

    #[test]
    fn switching_keeps_the_previous_release_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = InstanceDir::new(tmp.path().to_owned());
        let (a, b) = (br#"{"version":"1"}"#.as_slice(), br#"{"version":"2"}"#.as_slice());
        let (da, db) = (digest_of(a), digest_of(b));
        inst.install_release(&da, a).unwrap();
        inst.install_release(&db, b).unwrap();
        inst.install_release(&db, b).unwrap();
        inst.switch_to(&da).unwrap();
        assert_eq!((inst.current(), inst.previous()), (Some(da.clone()), None));
        inst.switch_to(&db).unwrap();
        inst.switch_to(&db).unwrap();
        assert_eq!((inst.current(), inst.previous()), (Some(db.clone()), Some(da.clone())));
        assert_eq!(inst.version_of(&db).unwrap(), "2");
    }
}
