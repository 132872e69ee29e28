//! Headless Chromium (Debian's `chromium`) for end-to-end checks of web pages on localhost:
//! the DOM after scripts ran, and screenshots a person can look at.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// How long the page may run its scripts (virtual time) before the DOM is read.
const SCRIPT_BUDGET_MS: u32 = 15_000;

fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("SIGNALBOX_CHROMIUM").unwrap_or_else(|| "chromium".into()));
    // The machine has no network beyond loopback: everything that phones home is switched off.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ])
    .arg(format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"))
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn run(mut cmd: Command, url: &str) -> anyhow::Result<Vec<u8>> {
    let out = cmd.arg(url).output().context("starting chromium (Debian package `chromium`)")?;
    if !out.status.success() {
        bail!("chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// The page's DOM after its scripts ran.
pub fn dump_dom(url: &str) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let mut cmd = chromium(profile.path());
    cmd.arg("--dump-dom");
    Ok(String::from_utf8_lossy(&run(cmd, url)?).into_owned())
}

/// A PNG screenshot of the page after its scripts ran.
pub fn screenshot(url: &str, png: &Path) -> anyhow::Result<()> {
    let profile = tempfile::tempdir()?;
    let mut cmd = chromium(profile.path());
    cmd.arg(format!("--screenshot={}", png.display()));
    run(cmd, url)?;
    if !png.is_file() {
        bail!("chromium wrote no screenshot of {url} to {}", png.display());
    }
    Ok(())
}
