//! An S3-compatible server for tests: gofakes3 over memory (`tools/s3`), the binary the set-up
//! builds (`$SIGNALBOX_FAKES3_BIN`, else `~/.cache/signalbox/bin/fakes3-1.2.0`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{ManagedProcess, free_port, wait_for};

/// Where the server binary is.
pub fn fakes3_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SIGNALBOX_FAKES3_BIN") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("$HOME is unset")?;
    let path = Path::new(&home).join(".cache/signalbox/bin/fakes3-1.2.0");
    if !path.is_file() {
        bail!("no S3 test server at {} and $SIGNALBOX_FAKES3_BIN unset (scripts/test builds it)", path.display());
    }
    Ok(path)
}

/// An S3 endpoint we own, with one bucket.
#[derive(Debug)]
pub struct S3Server {
    _process: ManagedProcess,
    port: u16,
    /// The bucket it serves.
    pub bucket: String,
}

impl S3Server {
    /// Starts it with `bucket`, logging into `dir`.
    pub async fn start(dir: &Path, bucket: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cmd = Command::new(fakes3_binary()?);
        cmd.arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--bucket").arg(bucket);
        let process = ManagedProcess::spawn("fakes3", cmd, &dir.join("fakes3.log"))?;
        wait_for(&format!("the S3 server on port {port}"), Duration::from_secs(10), || async move {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
        })
        .await?;
        Ok(Self { _process: process, port, bucket: bucket.to_owned() })
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object store options that reach it (endpoint, static keys, plain HTTP).
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", "signalbox".into()),
            ("aws_secret_access_key", "signalbox".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
            ("aws_virtual_hosted_style_request", "false".into()),
        ]
    }
}
