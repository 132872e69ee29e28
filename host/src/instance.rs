//! One instance on disk and as a process.
//!
//! Releases are unpacked side by side under `releases/<hex>`; `current` and `previous` are
//! symlinks switched by an atomic rename, so an instance is never between two versions on disk
//! and the version it ran before is always one switch away.
//!
//! A release is either a bundle (a user's program, run as its `signalbox.json` says, in its
//! release directory) or a build of the demo service (`artifact.json`, read by the fleet's
//! service binary).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use signalbox_bundle::{Manifest, Vars};
use signalbox_domain::Digest;

use crate::{Error, Result};

/// Written into a release directory once it is complete: what the release is.
const RELEASE_FILE: &str = ".signalbox-release.json";

#[derive(Serialize, Deserialize)]
struct ReleaseFile {
    version: String,
    /// A bundle (run by its manifest) rather than a demo build.
    #[serde(default)]
    bundle: bool,
}

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
        let dir = self.release(digest);
        dir.join(RELEASE_FILE).is_file() || dir.join("artifact.json").is_file()
    }

    /// The directory the release of `digest` is unpacked in.
    pub fn release_dir(&self, digest: &Digest) -> PathBuf {
        self.release(digest)
    }

    /// Unpacks `bytes` (already verified against `digest`) as the release of `version`, into a
    /// cold directory first and renamed into place, so a half-written release is never visible.
    /// A bundle is unpacked as its tarball says; any other build is the demo service's.
    pub fn install_release(&self, digest: &Digest, bytes: &[u8], version: &str) -> Result<()> {
        if self.has_release(digest) {
            return Ok(());
        }
        let cold = self.dir.join("releases").join(format!(".cold-{}-{}", digest.short(), std::process::id()));
        let _ = std::fs::remove_dir_all(&cold);
        std::fs::create_dir_all(&cold).map_err(|e| Error::io(&cold, e))?;
        let bundle = signalbox_bundle::is_bundle(bytes);
        if bundle {
            signalbox_bundle::Bundle::unpack(bytes, &cold).map_err(Error::Bundle)?;
        } else {
            let file = cold.join("artifact.json");
            std::fs::write(&file, bytes).map_err(|e| Error::io(&file, e))?;
        }
        // A demo build names its own version; the demo service reports that one.
        #[derive(Deserialize)]
        struct Demo {
            version: String,
        }
        let version = match serde_json::from_slice::<Demo>(bytes) {
            Ok(demo) if !bundle => demo.version,
            _ => version.to_owned(),
        };
        // Written last: a release directory without it is not installed.
        let file = cold.join(RELEASE_FILE);
        let release = ReleaseFile { version, bundle };
        std::fs::write(&file, serde_json::to_vec(&release).expect("a release file serializes")).map_err(|e| Error::io(&file, e))?;
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

    fn release_file(&self, digest: &Digest) -> Result<Option<ReleaseFile>> {
        let path = self.release(digest).join(RELEASE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::io(&path, std::io::Error::other(e))),
            // Demo releases unpacked before release files were written.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// The manifest of the release of `digest` if it is a bundle; `None` for a demo build.
    pub fn manifest(&self, digest: &Digest) -> Result<Option<Manifest>> {
        if !self.release_file(digest)?.is_some_and(|r| r.bundle) {
            return Ok(None);
        }
        signalbox_bundle::Bundle::manifest_in(&self.release(digest)).map(Some).map_err(Error::Bundle)
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

    /// The version name of the release of `digest`.
    pub fn version_of(&self, digest: &Digest) -> Result<String> {
        if let Some(release) = self.release_file(digest)? {
            return Ok(release.version);
        }
        #[derive(Deserialize)]
        struct Demo {
            version: String,
        }
        let path = self.release(digest).join("artifact.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Demo = serde_json::from_str(&text).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
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
    /// trusted: pids are reused, so the process must be this instance's: its command line names
    /// this directory (the demo service), or it runs in one of its releases (a bundle).
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        is_alive_with(pid, &self.dir).then_some(pid)
    }

    /// The release a running bundle process was started from (its working directory); `None`
    /// when nothing runs or the process is the demo service.
    pub fn running_release(&self) -> Option<Digest> {
        let pid = self.running_pid()?;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        let releases = std::fs::canonicalize(self.dir.join("releases")).ok()?;
        let hex = cwd.strip_prefix(&releases).ok()?.to_str()?;
        format!("sha256:{hex}").parse().ok()
    }

    /// Drains and stops the service process: `signal`, then SIGKILL after `grace`.
    pub async fn stop(&self, signal: Signal, grace: Duration) -> Result<()> {
        let Some(pid) = self.running_pid() else { return Ok(()) };
        let target = Pid::from_raw(pid as i32);
        let _ = kill(target, signal);
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

    /// How the running process drains: its bundle's manifest, or the demo service's SIGTERM
    /// and five seconds.
    pub fn drain(&self) -> (Signal, Duration) {
        let manifest = self.running_release().and_then(|d| self.manifest(&d).ok().flatten());
        match manifest {
            Some(m) => (signal_named(&m.drain.signal), m.grace()),
            None => (Signal::SIGTERM, Duration::from_secs(5)),
        }
    }

    /// What the placeholders of a bundle's manifest stand for on this instance.
    pub fn vars(&self, digest: &Digest, id: &str, address: &str, port: u16) -> Result<Vars> {
        let release = std::fs::canonicalize(self.release(digest)).map_err(|e| Error::io(&self.release(digest), e))?;
        let instance_dir = std::fs::canonicalize(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        Ok(Vars { port, address: address.to_owned(), instance_id: id.to_owned(), instance_dir: instance_dir.display().to_string(), release_dir: release.display().to_string() })
    }

    /// Whether the bundle release `digest`, serving on `address:port`, passes its manifest's
    /// readiness check: its HTTP path answers 2xx, or its command exits 0 within two seconds.
    pub async fn is_ready(&self, digest: &Digest, manifest: &Manifest, id: &str, address: &str, port: u16, http: &reqwest::Client) -> bool {
        if let Some(path) = manifest.ready_path() {
            return http.get(format!("http://{address}:{port}{path}")).send().await.is_ok_and(|r| r.status().is_success());
        }
        let Ok(vars) = self.vars(digest, id, address, port) else { return false };
        let Some(command) = manifest.ready_command(&vars) else { return false };
        let release = PathBuf::from(&vars.release_dir);
        let program = match command[0].strip_prefix("./") {
            Some(file) => release.join(file),
            None => PathBuf::from(&command[0]),
        };
        let run = tokio::process::Command::new(program)
            .args(&command[1..])
            .envs(vars.env())
            .current_dir(&release)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        matches!(tokio::time::timeout(Duration::from_secs(2), run).await, Ok(Ok(status)) if status.success())
    }

    /// Starts the bundle release `digest` as its manifest says, on `address:port`, in its release
    /// directory and its own process group (it outlives the worker that started it).
    pub fn start_bundle(&self, digest: &Digest, manifest: &Manifest, id: &str, address: &str, port: u16) -> Result<u32> {
        let vars = self.vars(digest, id, address, port)?;
        let release = PathBuf::from(&vars.release_dir);
        let (program, args, env) = manifest.command_line(&vars);
        let program = match program.strip_prefix("./") {
            Some(file) => release.join(file),
            None => PathBuf::from(program),
        };
        let mut command = tokio::process::Command::new(&program);
        command.args(args).envs(env).current_dir(&release);
        self.spawn(command, &program)
    }

    /// Starts the demo service process on `port` in its own process group, so that it outlives
    /// the worker that started it and a signal to the worker's group never reaches it.
    pub fn start(&self, binary: &Path, id: &str, port: u16) -> Result<u32> {
        let mut command = tokio::process::Command::new(binary);
        command.arg("--instance-dir").arg(&self.dir).arg("--port").arg(port.to_string()).arg("--instance-id").arg(id);
        self.spawn(command, binary)
    }

    fn spawn(&self, mut command: tokio::process::Command, program: &Path) -> Result<u32> {
        let log_path = self.dir.join("service.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Start { program: program.to_owned(), source })?;
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

/// The signal a manifest's drain names (checked when the bundle was pushed).
pub fn signal_named(name: &str) -> Signal {
    match name {
        "INT" => Signal::SIGINT,
        "QUIT" => Signal::SIGQUIT,
        "HUP" => Signal::SIGHUP,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => Signal::SIGTERM,
    }
}

fn is_alive_with(pid: u32, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else { return false };
    let zombie = std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
    if zombie {
        return false;
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    let names_dir = cmdline.split(|&b| b == 0).any(|arg| arg == needle);
    names_dir
        || std::fs::read_link(proc.join("cwd"))
            .ok()
            .zip(std::fs::canonicalize(dir.join("releases")).ok())
            .is_some_and(|(cwd, releases)| cwd.starts_with(releases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_keeps_the_previous_release_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = InstanceDir::new(tmp.path().to_owned());
        let (a, b) = (br#"{"version":"1"}"#.as_slice(), br#"{"version":"2"}"#.as_slice());
        let digest_of = |b: &[u8]| {
            use sha2::Digest as _;
            Digest::from_sha256_bytes(&sha2::Sha256::digest(b).into())
        };
        let (da, db) = (digest_of(a), digest_of(b));
        inst.install_release(&da, a, "1").unwrap();
        inst.install_release(&db, b, "2").unwrap();
        inst.install_release(&db, b, "2").unwrap();
        inst.switch_to(&da).unwrap();
        assert_eq!((inst.current(), inst.previous()), (Some(da.clone()), None));
        inst.switch_to(&db).unwrap();
        inst.switch_to(&db).unwrap();
        assert_eq!((inst.current(), inst.previous()), (Some(db.clone()), Some(da.clone())));
        assert_eq!(inst.version_of(&db).unwrap(), "2");
    }
}
