//! Recorded histories of real deploys replayed against the current workflow code: a change that
//! would make an in-flight deploy non-deterministic fails here, before it can stall a rollback.
//!
//! `tests/histories/v1/` holds histories recorded by the first versions (before lanes, before
//! canary and blue/green were strategies of the deploy workflow, before the engine judged every
//! step); `tests/histories/v2/` those recorded once they were, before the checkpoints, the
//! promotion's undo and the resolved git SHA (`signalbox-holds`, `signalbox-promotion-undo`,
//! `signalbox-resolved-git-sha`); `tests/histories/` those of the current code. All must replay.

use std::path::{Path, PathBuf};

use signalbox_tests::histories_dir;
use signalbox_workflows::{BlueGreenWorkflow, CanaryWorkflow, DeployWorkflow, LaneWorkflow, NoopChainWorkflow, ReleaseWorkflow};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn replayer() -> WorkflowReplayer {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<DeployWorkflow>()
        .expect("deploy workflow registers")
        .register_workflow::<LaneWorkflow>()
        .expect("lane workflow registers")
        .register_workflow::<NoopChainWorkflow>()
        .expect("noop chain registers")
        .register_workflow::<CanaryWorkflow>()
        .expect("canary workflow registers")
        .register_workflow::<BlueGreenWorkflow>()
        .expect("blue/green workflow registers")
        .register_workflow::<ReleaseWorkflow>()
        .expect("release workflow registers")
        .build();
    WorkflowReplayer::new(options).expect("replayer builds")
}

/// The golden files in `dir` and its subdirectories, by their path under `histories/`.
fn golden_in(dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("the histories directory exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            golden_in(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") {
            let name = path.strip_prefix(histories_dir()).expect("under histories").to_string_lossy().into_owned();
            out.push((name, path));
        }
    }
}

fn golden() -> Vec<(String, String)> {
    let mut files = Vec::new();
    golden_in(&histories_dir(), &mut files);
    files.sort();
    files.into_iter().map(|(name, path)| (name, std::fs::read_to_string(&path).unwrap())).collect()
}

/// Recorded by the first versions: rolling deploys judged by the gate or (opted in) the engine,
/// operator control, the legacy traffic workflows, a worker crash and a server restart.
const V1: [&str; 18] = [
    "rolling_good", "rolling_bad", "rolling_abort", "worker_crash", "server_restart", "canary_good", "canary_bad", "bluegreen_flip",
    "bluegreen_flip_back", "analysis_engine_good", "analysis_engine_bad", "analysis_engine_exported", "control_pause", "control_halt_abort",
    "control_rollback_window", "control_approval", "control_expiry_abort", "control_bypass",
];

/// Recorded once canary and blue/green were strategies of the deploy workflow, with lanes.
const V2: [&str; 22] = [
    "rolling_good", "rolling_bad", "rolling_abort", "worker_crash", "server_restart", "canary_good", "canary_bad", "bluegreen_flip",
    "bluegreen_flip_back", "analysis_engine_good", "analysis_engine_bad", "analysis_engine_exported", "control_pause", "control_halt_abort",
    "control_rollback_window", "control_approval", "control_expiry_abort", "control_bypass", "lane_redeploy", "lane_queued",
    "lane_rollback_refused", "rolling_slow_windows",
];

/// Recorded by the current code: the same deploys (a queued one halted), a promoted canary
/// held by a late halt and rolled back in its window, policies with metric kinds (an A/A
/// period before the first batch only, then before every step of each strategy), and releases
/// (a build stopped in a channel, region waves), and deploys to Kubernetes targets.
const CURRENT: [&str; 46] = [
    "auth_signed_control", "auth_signed_release", "api_paused_bounded_audit",
    "kube_rolling_twenty", "kube_never_ready_rolled_back", "kube_halt_abort", "kube_release_with_agents",
    "rolling_good", "rolling_bad", "rolling_abort", "worker_crash", "server_restart", "canary_good", "canary_bad", "bluegreen_flip",
    "bluegreen_flip_back", "analysis_engine_good", "analysis_engine_bad", "analysis_engine_exported", "control_pause", "control_halt_abort",
    "control_rollback_window", "control_approval", "control_expiry_abort", "control_bypass", "lane_redeploy", "lane_queued",
    "lane_rollback_refused", "rolling_slow_windows", "canary_promoted_rollback", "analysis_engine_kinds", "analysis_engine_kinds_every_batch",
    "canary_kinds", "bluegreen_kinds", "release_bad_in_test", "release_bad_in_test_before_quarantine", "release_regions",
    "release_gated_bypassed", "release_aborted", "release_verdict_overridden", "release_worker_crash",
    "release_dag_rolled_back", "release_dag_child_deploy",
    "release_soak_regressed", "release_stage_analysis_failed",
    "release_six_regions",
];

#[tokio::test]
async fn every_recorded_history_replays_on_the_current_code() {
    let histories = golden();
    let names: Vec<&str> = histories.iter().map(|(n, _)| n.as_str()).collect();
    let v1 = V1.iter().map(|n| format!("v1/{n}.json"));
    let v2 = V2.iter().map(|n| format!("v2/{n}.json"));
    for required in v1.chain(v2).chain(CURRENT.iter().map(|n| format!("{n}.json"))) {
        assert!(names.contains(&required.as_str()), "golden history {required} is missing; have {names:?}");
    }
    let replayer = replayer();
    for (name, json) in &histories {
        let history = WorkflowHistory::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        replayer.replay_workflow(history).await.unwrap_or_else(|e| panic!("{name} no longer replays: {e}"));
    }
}

/// The replay check must be able to fail: a history whose recorded commands differ from what
/// the code does now (an activity renamed in history) is refused.
#[tokio::test]
async fn a_history_that_disagrees_with_the_code_is_refused() {
    for name in ["v1/rolling_good.json", "v2/rolling_good.json", "rolling_good.json"] {
        let (_, json) = golden().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}"));
        let tampered = json.replacen("fleet.advance_batch", "fleet.advance_batch_v0", 1);
        assert_ne!(tampered, json, "{name} schedules fleet.advance_batch");
        let history = WorkflowHistory::from_json(tampered.as_bytes()).expect("still valid JSON");
        assert!(replayer().replay_workflow(history).await.is_err(), "{name}: a non-deterministic history must fail replay");
    }
}
