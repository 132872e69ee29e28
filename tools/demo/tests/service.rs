//! The real `signalbox-demo-service` binary: serving, metrics, readiness, drain, and
//! start-up failures.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Instance, artifact_json, client, eventually, exit_status, instance_dir, sample, scrape,
};
use prometheus_parse::Value;
use sha2::{Digest as _, Sha256};

#[tokio::test]
async fn serves_its_artifact_counts_every_request_and_exits_0_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let artifact = artifact_json("1.4.0", 0.5, 1, 1, 2);
    let dir = instance_dir(root.path(), "i-000", "1.4.0", &artifact);
    let client = client();
    let mut instance = Instance::start(&dir);

    let ready = instance.ready(&client).await;
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(artifact.as_bytes()))
    );
    assert_eq!(
        ready,
        serde_json::json!({"instance": "i-000", "service": "checkout", "version": "1.4.0",
                           "digest": digest, "pid": instance.child.id()})
    );

    let sent = 200;
    let (mut ok, mut failed) = (0u64, 0u64);
    for _ in 0..sent {
        let response = client.get(instance.url("/")).send().await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            500 => failed += 1,
            other => panic!("unexpected status {other}"),
        }
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"version": "1.4.0", "instance": "i-000"})
        );
    }
    let share = failed as f64 / sent as f64;
    assert!(
        (0.3..=0.7).contains(&share),
        "500 share {share} for error_rate 0.5"
    );

    let scrape = scrape(&client, instance.port).await;
    let requests = |code| {
        sample(
            &scrape,
            "signalbox_demo_requests_total",
            Some(("code", code)),
        )
    };
    assert_eq!(
        (requests("200"), requests("500")),
        (ok as f64, failed as f64)
    );
    assert_eq!(
        sample(
            &scrape,
            "signalbox_demo_request_duration_seconds_count",
            None
        ),
        sent as f64
    );
    let Some(Value::Histogram(buckets)) = scrape
        .samples
        .iter()
        .find(|s| s.metric == "signalbox_demo_request_duration_seconds")
        .map(|s| s.value.clone())
    else {
        panic!("no duration histogram");
    };
    assert_eq!(buckets.len(), 13);
    assert_eq!(buckets.last().unwrap().count, sent as f64);
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{buckets:?}"
    );
    assert_eq!(
        sample(&scrape, "signalbox_demo_log_lines_total", None),
        2.0 * sent as f64
    );
    assert_eq!(
        sample(&scrape, "signalbox_demo_requests_in_flight", None),
        0.0
    );
    assert_eq!(
        sample(
            &scrape,
            "signalbox_demo_build_info",
            Some(("digest", digest.as_str()))
        ),
        1.0
    );

    instance.terminate();
    let status = exit_status(&mut instance.child, Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    let log = std::fs::read_to_string(&instance.stdout).unwrap();
    assert_eq!(log.lines().count(), 2 * sent);
    assert!(
        log.lines()
            .all(|l| l.contains("instance=i-000") && l.contains("version=1.4.0"))
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_stops_accepting() {
    let root = tempfile::tempdir().unwrap();
    let dir = instance_dir(
        root.path(),
        "i-001",
        "2.0.0",
        &artifact_json("2.0.0", 0.0, 800, 0, 0),
    );
    let client = client();
    let mut instance = Instance::start(&dir);
    instance.ready(&client).await;

    let slow = tokio::spawn(client.get(instance.url("/")).send());
    let port = instance.port;
    eventually(
        "the slow request to be in flight",
        Duration::from_secs(5),
        || {
            let client = client.clone();
            async move {
                let scrape = scrape(&client, port).await;
                (sample(&scrape, "signalbox_demo_requests_in_flight", None) == 1.0).then_some(())
            }
        },
    )
    .await;
    instance.terminate();

    eventually(
        "new connections to be refused",
        Duration::from_secs(2),
        || {
            let refused = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
            async move { refused.then_some(()) }
        },
    )
    .await;
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let status = exit_status(&mut instance.child, Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn a_new_current_release_is_not_picked_up_by_a_running_process() {
    let root = tempfile::tempdir().unwrap();
    let dir = instance_dir(
        root.path(),
        "i-002",
        "1.0.0",
        &artifact_json("1.0.0", 0.0, 0, 0, 0),
    );
    let client = client();
    let mut instance = Instance::start(&dir);
    instance.ready(&client).await;

    // Switch `current` the way the deployer does: new symlink, atomic rename.
    let release = dir.join("releases/1.1.0");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(
        release.join("artifact.json"),
        artifact_json("1.1.0", 0.0, 0, 0, 0),
    )
    .unwrap();
    std::os::unix::fs::symlink("releases/1.1.0", dir.join("current.new")).unwrap();
    std::fs::rename(dir.join("current.new"), dir.join("current")).unwrap();

    let body: serde_json::Value = client
        .get(instance.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["version"], "1.0.0");
}

/// Runs the service to completion with `args`, returning exit code and stderr.
fn run_to_exit(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let output = Command::new(common::SERVICE)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_taken_port_exits_1_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let dir = instance_dir(
        root.path(),
        "i-003",
        "1.0.0",
        &artifact_json("1.0.0", 0.0, 0, 0, 0),
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run_to_exit(&[
        "--instance-dir".as_ref(),
        dir.as_os_str(),
        "--port".as_ref(),
        port.as_ref(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("binding 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn an_invalid_artifact_exits_1_naming_the_field() {
    let root = tempfile::tempdir().unwrap();
    let dir = instance_dir(
        root.path(),
        "i-004",
        "1.0.0",
        &artifact_json("1.0.0", 1.5, 0, 0, 0),
    );
    let port = common::free_port().to_string();
    let (code, stderr) = run_to_exit(&[
        "--instance-dir".as_ref(),
        dir.as_os_str(),
        "--port".as_ref(),
        port.as_ref(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("`error_rate`"), "{stderr}");
}
