//! The real `signalbox-loadgen` binary against real service instances.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    Instance, artifact_json, client, eventually, exit_status, instance_dir, requests_served,
};

const LOADGEN: &str = env!("CARGO_BIN_EXE_signalbox-loadgen");

/// Writes the inventory atomically (temporary file, rename), as a fleet manager should.
fn write_fleet(path: &Path, ports: &[u16]) {
    let instances: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| serde_json::json!({"id": format!("i-{i:03}"), "port": port, "pid": 1, "state": "serving"}))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({"generation": 1, "instances": instances}).to_string(),
    )
    .unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn start_loadgen(fleet: &Path, extra: &[&str]) -> Child {
    Command::new(LOADGEN)
        .arg("--fleet-file")
        .arg(fleet)
        .args(["--rps", "100"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The value of `key=` in the summary line.
fn summary_field(stderr: &str, key: &str) -> u64 {
    let summary = stderr
        .lines()
        .find(|l| l.contains("done after"))
        .unwrap_or_else(|| panic!("{stderr}"));
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn sends_about_rps_times_duration_requests_then_exits() {
    let root = tempfile::tempdir().unwrap();
    let dir = instance_dir(
        root.path(),
        "i-000",
        "1.0.0",
        &artifact_json("1.0.0", 0.0, 1, 1, 0),
    );
    let client = client();
    let mut instance = Instance::start(&dir);
    instance.ready(&client).await;
    let fleet = root.path().join("fleet.json");
    write_fleet(&fleet, &[instance.port]);

    let mut loadgen = start_loadgen(&fleet, &["--duration-secs", "2"]);
    let status = exit_status(&mut loadgen, Duration::from_secs(10)).await;
    let stderr = stderr_of(&mut loadgen);
    assert_eq!(status.code(), Some(0), "{stderr}");

    let served = requests_served(&client, instance.port).await;
    assert!(
        (140..=220).contains(&served),
        "100 rps for 2 s, served {served}\n{stderr}"
    );
    assert_eq!(summary_field(&stderr, "sent"), served, "{stderr}");
    assert_eq!(summary_field(&stderr, "ok"), served, "{stderr}");
}

#[tokio::test]
async fn follows_the_fleet_file_and_counts_dead_instances_as_conn_errors() {
    let root = tempfile::tempdir().unwrap();
    let client = client();
    let artifact = artifact_json("1.0.0", 0.0, 0, 0, 0);
    let mut a = Instance::start(&instance_dir(root.path(), "i-000", "1.0.0", &artifact));
    let mut b = Instance::start(&instance_dir(root.path(), "i-001", "1.0.0", &artifact));
    a.ready(&client).await;
    b.ready(&client).await;
    let fleet = root.path().join("fleet.json");
    write_fleet(&fleet, &[a.port, common::free_port()]);

    let mut loadgen = start_loadgen(&fleet, &[]);
    let wait_for = |port, at_least| {
        let client = client.clone();
        eventually("requests to arrive", Duration::from_secs(10), move || {
            let client = client.clone();
            async move { (requests_served(&client, port).await >= at_least).then_some(()) }
        })
    };
    wait_for(a.port, 10).await;
    write_fleet(&fleet, &[a.port, b.port]);
    wait_for(b.port, 10).await;

    common::terminate(&loadgen);
    let status = exit_status(&mut loadgen, Duration::from_secs(5)).await;
    let stderr = stderr_of(&mut loadgen);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(summary_field(&stderr, "conn_err") >= 5, "{stderr}");
    assert!(stderr.contains("fleet now has 2 instance(s)"), "{stderr}");
}
