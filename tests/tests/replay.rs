//! Recorded histories of real deploys replayed against the current workflow code: a change that
//! would make an in-flight deploy non-deterministic fails here, before it can stall a rollback.

use signalbox_tests::histories_dir;
use signalbox_workflows::{BlueGreenWorkflow, CanaryWorkflow, DeployWorkflow, NoopChainWorkflow};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn replayer() -> WorkflowReplayer {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<DeployWorkflow>()
        .expect("deploy workflow registers")
        .register_workflow::<NoopChainWorkflow>()
        .expect("noop chain registers")
        .register_workflow::<CanaryWorkflow>()
        .expect("canary workflow registers")
        .register_workflow::<BlueGreenWorkflow>()
        .expect("blue/green workflow registers")
        .build();
    WorkflowReplayer::new(options).expect("replayer builds")
}

fn golden() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(histories_dir())
        .expect("tests/histories exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// Operator control (tests/tests/control.rs): signals, updates, approval gates, halts and the
/// rollback window.
const CONTROL_HISTORIES: [&str; 6] = [
    "control_pause.json",
    "control_halt_abort.json",
    "control_rollback_window.json",
    "control_approval.json",
    "control_expiry_abort.json",
    "control_bypass.json",
];

#[tokio::test]
async fn every_recorded_history_replays_on_the_current_code() {
    let histories = golden();
    let names: Vec<&str> = histories.iter().map(|(n, _)| n.as_str()).collect();
    for required in ["rolling_good.json", "rolling_bad.json", "rolling_abort.json", "worker_crash.json", "server_restart.json", "canary_good.json", "canary_bad.json", "bluegreen_flip.json", "bluegreen_flip_back.json", "analysis_engine_good.json", "analysis_engine_bad.json", "analysis_engine_exported.json"] {
        assert!(names.contains(&required), "golden history {required} is missing; have {names:?}");
    }
    for required in CONTROL_HISTORIES {
        assert!(names.contains(&required), "golden history {required} is missing; have {names:?}");
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
    let (_, json) = golden().into_iter().find(|(n, _)| n == "rolling_good.json").expect("rolling_good.json");
    let tampered = json.replacen("fleet.advance_batch", "fleet.advance_batch_v0", 1);
    assert_ne!(tampered, json, "the history schedules fleet.advance_batch");
    let history = WorkflowHistory::from_json(tampered.as_bytes()).expect("still valid JSON");
    assert!(replayer().replay_workflow(history).await.is_err(), "a non-deterministic history must fail replay");
}
