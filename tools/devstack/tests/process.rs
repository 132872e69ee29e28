//! Managed processes, the exit hook and deadline waits, with real processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use signalbox_devstack::{ManagedProcess, free_port, wait_for, wait_http_ok, workspace_binary};

/// Set when this test binary runs itself as the helper of `exit_hook_kills_managed_children`.
const HELPER_ENV: &str = "SIGNALBOX_DEVSTACK_EXIT_HELPER";

fn sleep_forever() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000");
    cmd
}

/// Whether `pid` is a live process; a zombie is dead, only waiting for a parent to reap it.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    })
}

/// The session id of `pid`, field 6 of `/proc/PID/stat`.
fn session_of(pid: u32) -> Result<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').context("malformed stat")?;
    Ok(rest
        .split_whitespace()
        .nth(3)
        .context("no session field")?
        .parse()?)
}

async fn wait_dead(pid: u32) -> Result<()> {
    wait_for(
        &format!("pid {pid} to die"),
        Duration::from_secs(5),
        || async move { Ok((!is_alive(pid)).then_some(())) },
    )
    .await
}

async fn wait_log_line(log: &Path, prefix: &str) -> Result<String> {
    wait_for(
        &format!("{prefix:?} in {}", log.display()),
        Duration::from_secs(5),
        || async {
            let text = std::fs::read_to_string(log)?;
            Ok(text
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_owned))
        },
    )
    .await
}

#[tokio::test]
async fn sigkill_kills_the_whole_group() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("group.log");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 1000 & echo grandchild=$!; wait"]);
    let mut process = ManagedProcess::spawn("group", cmd, &log)?;
    let grandchild: u32 = wait_log_line(&log, "grandchild=").await?.parse()?;
    assert!(process.is_running());
    assert!(is_alive(grandchild));

    process.sigkill()?;
    assert!(!process.is_running());
    assert!(!is_alive(process.pid()), "the leader is reaped");
    wait_dead(grandchild).await
}

#[tokio::test]
async fn sigkill_stops_a_sleep() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut process = ManagedProcess::spawn("sleep", sleep_forever(), &dir.path().join("s.log"))?;
    assert!(process.is_running());
    process.sigkill()?;
    assert!(!process.is_running());
    assert!(!Path::new(&format!("/proc/{}", process.pid())).exists());
    Ok(())
}

#[tokio::test]
async fn terminate_asks_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut process = ManagedProcess::spawn("sleep", sleep_forever(), &dir.path().join("t.log"))?;
    let began = Instant::now();
    process.terminate(Duration::from_secs(30)).await?;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "sleep dies on SIGTERM, no need to wait"
    );
    assert!(!process.is_running());
    Ok(())
}

#[tokio::test]
async fn terminate_kills_what_ignores_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("stubborn.log");
    let mut cmd = Command::new("sh");
    // An ignored signal stays ignored across exec, so the sleep ignores SIGTERM too.
    cmd.args(["-c", "trap '' TERM; echo ready=1; exec sleep 1000"]);
    let mut process = ManagedProcess::spawn("stubborn", cmd, &log)?;
    wait_log_line(&log, "ready=").await?;
    let grace = Duration::from_millis(300);
    let began = Instant::now();
    process.terminate(grace).await?;
    assert!(began.elapsed() >= grace, "it got its grace period");
    assert!(!process.is_running());
    Ok(())
}

#[tokio::test]
async fn drop_kills() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let process = ManagedProcess::spawn("sleep", sleep_forever(), &dir.path().join("d.log"))?;
    let pid = process.pid();
    drop(process);
    wait_dead(pid).await
}

#[tokio::test]
async fn log_tail_returns_the_last_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2",
    ]);
    let mut process = ManagedProcess::spawn("counter", cmd, &dir.path().join("c.log"))?;
    wait_for("counter to finish", Duration::from_secs(5), || {
        let running = process.is_running();
        async move { Ok((!running).then_some(())) }
    })
    .await?;
    assert_eq!(process.log_tail(3), "line4\nline5\noops");
    Ok(())
}

/// Not a check by itself: the child half of `exit_hook_kills_managed_children`, which runs this
/// test binary again with [`HELPER_ENV`] set. Without it, this does nothing.
#[test]
fn exit_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV).map(PathBuf::from) else {
        return;
    };
    let managed = ManagedProcess::spawn("sleep", sleep_forever(), &dir.join("managed.log"))
        .expect("spawn managed");
    let detached = ManagedProcess::spawn_detached(sleep_forever(), &dir.join("detached.log"))
        .expect("spawn detached");
    println!("managed={} detached={detached}", managed.pid());
    // Neither Drop nor anything else may clean up: only the exit hook.
    std::mem::forget(managed);
}

#[tokio::test]
async fn exit_hook_kills_managed_children_but_not_detached_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(std::env::current_exe()?)
        .args(["exit_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, dir.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helper failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // libtest prints the test's output on the line of its name: look at words, not lines.
    let pid = |key: &str| -> Result<u32> {
        let value = stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} in helper output: {stdout}"))?;
        Ok(value.parse()?)
    };
    let detached = KillOnDrop(pid("detached=")?);
    let managed = pid("managed=")?;

    wait_dead(managed).await?;
    assert!(
        is_alive(detached.0),
        "a detached process outlives its spawner"
    );
    assert_eq!(
        session_of(detached.0)?,
        detached.0,
        "a detached process leads its own session"
    );
    Ok(())
}

/// Kills a detached test process however the test ends: nothing else would.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn wait_for_returns_the_value_or_names_what_it_waited_for() -> Result<()> {
    let mut calls = 0;
    let value = wait_for("the third call", Duration::from_secs(5), || {
        calls += 1;
        let ready = calls >= 3;
        async move { Ok(ready.then_some(calls)) }
    })
    .await?;
    assert_eq!(value, 3);

    let error = wait_for(
        "the moon to turn blue",
        Duration::from_millis(200),
        || async { Err::<Option<()>, _>(anyhow!("still grey")) },
    )
    .await
    .expect_err("never ready");
    let message = format!("{error:#}");
    assert!(message.contains("the moon to turn blue"), "{message}");
    assert!(message.contains("still grey"), "{message}");
    Ok(())
}

#[tokio::test]
async fn wait_http_ok_times_out_naming_the_url() -> Result<()> {
    // Nothing listens on a port that was just free.
    let url = format!("http://127.0.0.1:{}/", free_port()?);
    let error = wait_http_ok(&url, Duration::from_millis(300))
        .await
        .expect_err("nothing listens");
    assert!(format!("{error:#}").contains(&url), "{error:#}");
    Ok(())
}

#[test]
fn a_missing_workspace_binary_says_how_to_build_it() {
    let error = workspace_binary("signalbox-no-such-binary").expect_err("does not exist");
    assert!(
        error.to_string().contains("cargo build --workspace --bins"),
        "{error}"
    );
}
