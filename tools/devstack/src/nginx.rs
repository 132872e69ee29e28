//! Regional artifact caches as real caching HTTP proxies: Debian's nginx with `proxy_cache` in
//! front of an origin nginx serving the artifact store's directory (`sha256/<hex>`). Hosts pull
//! from their region's cache, so a rollout fetches each build from the origin about once per
//! region; the origin's access log says who asked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{ManagedProcess, free_port, wait_for};

/// Where nginx is.
pub fn nginx_binary() -> PathBuf {
    std::env::var_os("SIGNALBOX_NGINX_BIN").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
}

/// One nginx we own.
#[derive(Debug)]
pub struct Nginx {
    process: Option<ManagedProcess>,
    dir: PathBuf,
    port: u16,
}

/// The config every instance shares: its own prefix, pid, logs and temp dirs under `dir`.
fn common(dir: &Path, body: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n  \
         log_format signalbox '$remote_addr $http_x_signalbox_region \"$request\" $status $body_bytes_sent $upstream_cache_status';\n  \
         access_log {d}/access.log signalbox;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  sendfile on;\n{body}}}\n"
    )
}

impl Nginx {
    async fn start(dir: &Path, config: impl Fn(u16) -> String) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let port = free_port()?;
        std::fs::write(dir.join("nginx.conf"), config(port))?;
        let mut server = Self { process: None, dir: dir.to_owned(), port };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(nginx_binary());
        cmd.arg("-p").arg(&self.dir).arg("-c").arg(self.dir.join("nginx.conf")).arg("-e").arg(self.dir.join("error.log"));
        self.process = Some(ManagedProcess::spawn("nginx", cmd, &self.dir.join("nginx.out")).context("starting nginx")?);
        let port = self.port;
        wait_for(&format!("nginx on port {port}"), Duration::from_secs(10), || async move {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
        })
        .await
    }

    /// An nginx serving `server(port)` on a free port: what a `conf.d` file holds (`server`
    /// blocks and other `http`-level directives).
    pub async fn serving(dir: &Path, server: impl Fn(u16) -> String) -> Result<Self> {
        Self::start(dir, |port| common(dir, &server(port))).await
    }

    /// An origin serving `store` (the artifact store's directory) read-only.
    pub async fn origin(dir: &Path, store: &Path) -> Result<Self> {
        let store = store.display().to_string();
        Self::serving(dir, |port| format!("  server {{\n    listen 127.0.0.1:{port};\n    location /sha256/ {{ root {store}; }}\n  }}\n")).await
    }

    /// The cache of `region` in front of `origin`, listening on every interface.
    pub async fn cache(dir: &Path, region: &str, origin: &Nginx) -> Result<Self> {
        let d = dir.display().to_string();
        let upstream = origin.port;
        Self::serving(dir, |port| {
            format!(
                "  proxy_cache_path {d}/cache levels=1:2 keys_zone=builds:10m max_size=10g inactive=30d use_temp_path=off;\n  server {{\n    listen 0.0.0.0:{port};\n    \
                 location /sha256/ {{\n      proxy_pass http://127.0.0.1:{upstream};\n      proxy_set_header X-Signalbox-Region {region};\n      proxy_cache builds;\n      \
                 proxy_cache_valid 200 30d;\n      proxy_cache_lock on;\n      proxy_cache_lock_timeout 60s;\n      proxy_cache_use_stale error timeout updating;\n      \
                 add_header X-Cache-Status $upstream_cache_status;\n    }}\n  }}\n"
            )
        })
        .await
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every line of its access log so far.
    pub fn access_log(&self) -> Result<Vec<String>> {
        let path = self.dir.join("access.log");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Stops it (the origin going away); [`Self::resume`] brings it back.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.sigkill()?;
        }
        Ok(())
    }

    /// Starts it again on the same port and config.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn().await
    }
}
