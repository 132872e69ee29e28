//! The dev server against the real `temporal` CLI: start, answer, stop, restart on the same data.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use signalbox_devstack::{
    DevServerOptions, TemporalDevServer, free_port, temporal_binary, wait_http_ok,
};

/// Runs `temporal <args> --address <address>` and returns its stdout, failing on a non-zero exit.
async fn temporal(address: &str, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(temporal_binary()?)
        .args(args)
        .args(["--address", address, "--command-timeout", "10s"])
        .args(["--disable-config-env", "--disable-config-file"])
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "temporal {args:?} {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn restarts_on_the_same_database_and_port() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let namespace = "signalbox-devstack";
    let mut options = DevServerOptions::in_dir(dir.path());
    options.namespace = namespace.to_owned();
    options.search_attributes = vec![("SignalboxService".to_owned(), "Keyword".to_owned())];

    let began = Instant::now();
    let mut server = TemporalDevServer::start(options).await?;
    eprintln!("dev server start took {:?}", began.elapsed());
    let address = server.address();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(server.ui_url(), None, "no UI port means headless");
    temporal(&address, &["workflow", "list", "--namespace", namespace]).await?;
    let attributes = temporal(
        &address,
        &[
            "operator",
            "search-attribute",
            "list",
            "--namespace",
            namespace,
        ],
    )
    .await?;
    assert!(attributes.contains("SignalboxService"), "{attributes}");
    // Nobody polls the queue: the workflow stays open, and must still be there after a restart.
    temporal(
        &address,
        &[
            "workflow",
            "start",
            "--namespace",
            namespace,
            "--type",
            "Persisted",
            "--task-queue",
            "nobody-polls",
            "--workflow-id",
            "survives-restart",
        ],
    )
    .await?;

    let began = Instant::now();
    server.stop().await?;
    eprintln!("dev server stop took {:?}", began.elapsed());
    assert!(
        temporal(&address, &["operator", "cluster", "health"])
            .await
            .is_err(),
        "still answering after stop"
    );

    let began = Instant::now();
    server.restart().await?;
    eprintln!("dev server restart took {:?}", began.elapsed());
    assert_eq!(server.address(), address, "a restart keeps the port");
    temporal(&address, &["workflow", "list", "--namespace", namespace]).await?;
    let described = temporal(
        &address,
        &[
            "workflow",
            "describe",
            "--namespace",
            namespace,
            "--workflow-id",
            "survives-restart",
        ],
    )
    .await?;
    assert!(described.contains("Persisted"), "{described}");

    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn serves_the_ui_and_applies_dynamic_config() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ui_port = free_port()?;
    let mut options = DevServerOptions::in_dir(dir.path());
    options.ui_port = Some(ui_port);
    options.dynamic_config = vec![("limit.maxIDLength".to_owned(), "40".to_owned())];
    let mut server = TemporalDevServer::start(options).await?;

    let ui = server.ui_url().expect("a UI port was given");
    assert_eq!(ui, format!("http://127.0.0.1:{ui_port}"));
    wait_http_ok(&ui, Duration::from_secs(30)).await?;

    let address = server.address();
    let start = |id: String| {
        let address = address.clone();
        async move {
            temporal(
                &address,
                &[
                    "workflow",
                    "start",
                    "--type",
                    "T",
                    "--task-queue",
                    "q",
                    "--workflow-id",
                    &id,
                ],
            )
            .await
        }
    };
    start("x".repeat(40)).await?;
    let too_long = start("x".repeat(41)).await;
    assert!(
        too_long.is_err(),
        "limit.maxIDLength=40 should refuse a 41-byte id"
    );

    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_start_quotes_the_server_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut options = DevServerOptions::in_dir(dir.path());
    options.search_attributes = vec![("Broken".to_owned(), "NoSuchType".to_owned())];
    let error = TemporalDevServer::start(options)
        .await
        .expect_err("an unknown search attribute type must fail the start");
    let message = format!("{error:#}");
    assert!(message.contains("exited while starting"), "{message}");
    assert!(
        message.contains("NoSuchType"),
        "the log tail is quoted: {message}"
    );
    Ok(())
}
