//! Input sent straight to Temporal with the real `temporal` CLI, as a person types it: every
//! workflow type starts from the fields a person would type (every other field takes its
//! default), and input that cannot be read fails the workflow itself, naming the field, instead
//! of retrying its first task forever.

use signalbox_client::Deploys;
use signalbox_contract::deploy::DeployRun;
use signalbox_devstack::wait_for;
use signalbox_domain::{Artifact, Phase};
use signalbox_localstack::traffic::{BalancedFleet, BalancedOptions};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish};
use signalbox_tests::{run, stack, temporal};
use temporalio_client::{UntypedWorkflow, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions};

/// `temporal workflow start` of `kind` with `input` under `id`; panics unless the CLI accepted it.
async fn start(s: &Stack, kind: &str, id: &str, input: &str) -> anyhow::Result<()> {
    let (code, out, err) =
        temporal(s, &["workflow", "start", "--type", kind, "--task-queue", &s.options.task_queue, "--workflow-id", id, "--input", input]).await?;
    anyhow::ensure!(code == Some(0), "temporal workflow start --type {kind}: {out}{err}");
    Ok(())
}

/// How workflow `id` closed, and the failure's message when it failed.
async fn closed(deploys: &Deploys, id: &str) -> anyhow::Result<(WorkflowExecutionStatus, String)> {
    let handle = deploys.client().get_workflow_handle::<UntypedWorkflow>(id);
    let outcome = tokio::time::timeout(DEPLOY_DEADLINE, handle.get_result(WorkflowGetResultOptions::default())).await?;
    let message = outcome.err().map(|e| format!("{e:#}")).unwrap_or_default();
    let status = handle.describe(WorkflowDescribeOptions::default()).await?.status();
    Ok((status, message))
}

/// The JSON a person types for an artifact: its digest alone.
fn digest(a: &Artifact) -> String {
    format!(r#"{{"digest": "{}"}}"#, a.digest)
}

#[test]
fn every_workflow_type_starts_from_the_fields_a_person_types() {
    run(async {
        let s = stack().await;
        let deploys = s.deploys().await?;
        // Rolling: service, artifact (its digest), fleet, deployer. Nothing else.
        let base = publish(&s.home, demo_build("typed", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("typed", "1.1.0", 0.002, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "typed", 4, base, 200, &s.options.dir).await?;
        let minimal = format!(r#"{{"service": "typed", "artifact": {}, "fleet": {{"name": "typed"}}, "deployer": "alice"}}"#, digest(&next));
        start(s, "signalbox.deploy", "typed-rolling", &minimal).await?;
        // The rollback window defaults to an hour: the rollout is done when the status says so.
        let done = wait_for("the typed deploy to succeed", DEPLOY_DEADLINE, || async {
            let st = deploys.status("typed-rolling").await?;
            anyhow::ensure!(!matches!(st.phase, Phase::RolledBack | Phase::Failed), "it ended {:?}: {:?}", st.phase, st.reason);
            Ok((st.phase == Phase::Succeeded).then_some(st))
        })
        .await?;
        assert_eq!(done.total_batches, 3, "the default plan on 4 instances");
        assert_eq!(done.instances_per_version, [("1.1.0".to_owned(), 4)].into(), "the version came from the store's record");
        assert!(done.rollback_window_until.is_some(), "the default rollback window is open");
        assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.1.0")));
        deploys.rollback("typed-rolling", signalbox_domain::Command::new("alice", "done with the test")).await?;
        assert_eq!(deploys.result("typed-rolling").await?.phase, Phase::RolledBack);

        // Canary and blue/green: the same shape, a `strategy` naming the balancer.
        for (kind, name, idle, strategy) in [("canary", "typed-canary", 0, "canary"), ("blue_green", "typed-bg", 2, "blue_green")] {
            let base = publish(&s.home, demo_build(name, "2.0.0", 0.002, 5)).await?;
            let next = publish(&s.home, demo_build(name, "2.1.0", 0.002, 5)).await?;
            let options = BalancedOptions { rps: 200, idle, ..BalancedOptions::new(name, name, 4) };
            let balanced = BalancedFleet::start(&s.home, options, base, &s.options.dir).await?;
            let lb = balanced.lb();
            let input = format!(
                r#"{{"service": "{name}", "artifact": {}, "target": {{"name": "{name}"}}, "deployer": "alice", "rollback_window_ms": 0,
                    "health": {{"sample_interval_ms": 1000, "samples": 4, "min_requests_per_sample": 2}},
                    "strategy": {{"kind": "{strategy}", "lb": {{"stats_socket": "{}", "backend": "{}"}}}}}}"#,
                digest(&next),
                lb.stats_socket,
                lb.backend
            );
            start(s, "signalbox.deploy", name, &input).await?;
            let done = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(name)).await??;
            assert_eq!((done.phase, done.strategy.as_str()), (Phase::Succeeded, strategy), "{kind}: {done:#?}");
            assert!(balanced.served_through(20).await?.keys().all(|v| v == "2.1.0"), "{kind}: the new build serves");
        }

        // The legacy traffic workflows and the benchmark's yardstick start the same way.
        let base = publish(&s.home, demo_build("typed-legacy", "3.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("typed-legacy", "3.1.0", 0.002, 5)).await?;
        let balanced = BalancedFleet::start(&s.home, BalancedOptions { rps: 200, ..BalancedOptions::new("typed-legacy", "typed-legacy", 4) }, base, &s.options.dir).await?;
        let lb = balanced.lb();
        let input = format!(
            r#"{{"service": "typed-legacy", "artifact": {{"digest": "{}", "git_sha": "{}", "version": "3.1.0"}}, "fleet": {{"name": "typed-legacy"}},
                "lb": {{"stats_socket": "{}", "backend": "{}"}}, "canary": ["i-0000"], "deployer": "alice",
                "health": {{"sample_interval_ms": 1000, "samples": 4, "min_requests_per_sample": 2}}}}"#,
            next.digest, next.git_sha, lb.stats_socket, lb.backend
        );
        start(s, "signalbox.canary", "typed-legacy-canary", &input).await?;
        let (status, message) = closed(&deploys, "typed-legacy-canary").await?;
        assert_eq!(status, WorkflowExecutionStatus::Completed, "{message}");
        // A release as its pipeline file reads, with every deploy setting but the health
        // sampling at its default.
        let release_build = publish(&s.home, demo_build("typed-release", "4.1.0", 0.002, 5)).await?;
        let release_base = publish(&s.home, demo_build("typed-release", "4.0.0", 0.002, 5)).await?;
        let _release_fleet = LoadedFleet::start(&s.home, "typed-release", 2, release_base, 200, &s.options.dir).await?;
        let input = format!(
            r#"{{"pipeline": {{"name": "typed", "stages": [{{"name": "only", "targets": [{{"target": {{"name": "typed-release"}}, "instances": 2,
                "deploy": {{"health": {{"sample_interval_ms": 1000, "samples": 4, "min_requests_per_sample": 2}}}}}}]}}]}},
                "services": [{{"service": "typed-release", "artifact": {}}}], "deployer": "alice"}}"#,
            digest(&release_build)
        );
        start(s, "signalbox.release", "typed-release", &input).await?;
        let (status, message) = closed(&deploys, "typed-release").await?;
        assert_eq!(status, WorkflowExecutionStatus::Completed, "{message}");
        let release = s.releases().await?.status("typed-release").await?;
        assert_eq!(release.phase, signalbox_domain::ReleasePhase::Succeeded, "{release:#?}");
        start(s, "signalbox.bench.noop_chain", "typed-noop", "3").await?;
        let ran: u32 = deploys.client().get_workflow_handle::<signalbox_contract::bench::NoopChainRun>("typed-noop").get_result(Default::default()).await?;
        assert_eq!(ran, 3);
        Ok(())
    });
}

#[test]
fn input_that_cannot_be_read_fails_the_workflow_naming_the_field() {
    run(async {
        let s = stack().await;
        let deploys = s.deploys().await?;
        let d = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            ("signalbox.deploy", "unread-no-artifact", r#"{"service": "x", "fleet": {"name": "x"}, "deployer": "a"}"#.to_owned(), "artifact: is required"),
            ("signalbox.deploy", "unread-digest", r#"{"service": "x", "artifact": {"digest": "sha256:nope"}, "fleet": {"name": "x"}, "deployer": "a"}"#.to_owned(), "artifact.digest: "),
            ("signalbox.deploy", "unread-typo", format!(r#"{{"service": "x", "artifact": {{"digest": "{d}"}}, "fleet": {{"name": "x"}}, "deployer": "a", "bake": 5}}"#), "bake: unknown field"),
            (
                "signalbox.deploy",
                "unread-samples",
                format!(r#"{{"service": "x", "artifact": {{"digest": "{d}"}}, "fleet": {{"name": "x"}}, "deployer": "a", "health": {{"samples": 4294967295}}}}"#),
                "health.samples: must be at most 1000",
            ),
            ("signalbox.deploy", "unread-array", r#"{"service": "x", "artifact": [], "fleet": {"name": "x"}, "deployer": "a"}"#.to_owned(), "artifact: invalid length"),
            ("signalbox.canary", "unread-legacy-canary", r#"{"service": "x"}"#.to_owned(), "artifact: is required"),
            ("signalbox.bluegreen", "unread-legacy-bluegreen", r#"{"service": 7}"#.to_owned(), "service: invalid type"),
            ("signalbox.lane", "unread-lane", "{}".to_owned(), "service: is required"),
            ("signalbox.bench.noop_chain", "unread-noop", r#""three""#.to_owned(), "input: invalid type"),
            ("signalbox.release", "unread-release-typo", r#"{"pipeline": {"name": "p", "stages": []}, "services": [], "deployer": "a", "stage": 1}"#.to_owned(), "stage: unknown field"),
            (
                "signalbox.release",
                "unread-release-empty-stage",
                format!(r#"{{"pipeline": {{"name": "p", "stages": [{{"name": "s", "targets": []}}]}}, "services": [{{"service": "x", "artifact": {{"digest": "{d}"}}}}], "deployer": "a"}}"#),
                "pipeline.stages[0].targets: must not be empty",
            ),
            (
                "signalbox.release",
                "unread-release-cycle",
                format!(
                    r#"{{"pipeline": {{"name": "p", "stages": [{{"name": "s", "targets": [{{"target": {{"name": "t"}}, "instances": 1}}]}}]}},
                        "services": [{{"service": "a", "artifact": {{"digest": "{d}"}}, "depends_on": ["b"]}}, {{"service": "b", "artifact": {{"digest": "{d}"}}, "depends_on": ["a"]}}],
                        "deployer": "a"}}"#
                ),
                "services: depends_on has a cycle: a -> b -> a",
            ),
        ];
        for (kind, id, input, named) in cases {
            start(s, kind, id, &input).await?;
            let (status, message) = closed(&deploys, id).await?;
            assert_eq!(status, WorkflowExecutionStatus::Failed, "{kind} {id}: {message}");
            assert!(message.contains(named), "{kind} {id}: the failure names the field ({named}): {message}");
        }
        // The deploy's status says it too.
        let status = deploys.status("unread-samples").await?;
        assert_eq!((status.phase, status.invalid.map(|f| f.field)), (Phase::Failed, Some("health.samples".to_owned())));
        Ok(())
    });
}

#[test]
fn a_signal_that_cannot_be_read_is_ignored_and_the_deploy_goes_on() {
    run(async {
        let s = stack().await;
        let deploys = s.deploys().await?;
        let base = publish(&s.home, demo_build("garbled", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("garbled", "1.1.0", 0.002, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "garbled", 4, base, 200, &s.options.dir).await?;
        let mut req = signalbox_localstack::request("garbled", "garbled", next);
        req.bake_ms = 2_000;
        let id = deploys.start(req, None).await?.id;
        for input in [r#""pause!""#, r#"{"by": 7}"#] {
            let (code, out, err) = temporal(s, &["workflow", "signal", "--workflow-id", &id, "--name", "pause", "--input", input]).await?;
            assert_eq!(code, Some(0), "{out}{err}");
        }
        let done = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(!done.paused && done.audit.is_empty(), "nothing was recorded of the garbled signals: {:?}", done.audit);
        let handle = deploys.client().get_workflow_handle::<DeployRun>(id.clone());
        let history = handle.fetch_history(Default::default()).into_events().await?;
        let task_failures = history.iter().filter(|e| e.event_type().as_str_name().contains("WORKFLOW_TASK_FAILED")).count();
        assert_eq!(task_failures, 0, "no workflow task failed");
        Ok(())
    });
}
