//! One deploy at a time per service and target (its lane), any build deployable again, and a
//! rollback that only undoes what is still its own: against the real dev server, the worker as a
//! process, real fleets under load, through the real gRPC API and the deploy client.

use std::time::Duration;

use signalbox_client::Error;
use signalbox_devstack::wait_for;
use signalbox_domain::{Artifact, BatchPlan, BatchStep, Command, DeployRequest, DeployStatus, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish, request};
use signalbox_proto::pb;
use signalbox_tests::{GrpcApi, record_history, run, stack};
use tonic::Code;

const FLEET_SIZE: usize = 4;
const RPS: u32 = 200;

/// A fleet named after `service` on its 1.0.0, and builds 1.1.0 and 1.2.0.
async fn fleet_of(s: &Stack, service: &str) -> anyhow::Result<(LoadedFleet, Artifact, Artifact, Artifact)> {
    let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
    let one = publish(&s.home, demo_build(service, "1.1.0", 0.002, 5)).await?;
    let two = publish(&s.home, demo_build(service, "1.2.0", 0.002, 5)).await?;
    let fleet = LoadedFleet::start(&s.home, service, FLEET_SIZE, base.clone(), RPS, &s.options.dir).await?;
    Ok((fleet, base, one, two))
}

/// A deploy of `artifact` in two batches, baking `bake_ms` each.
fn deploy(service: &str, artifact: &Artifact, bake_ms: u64) -> DeployRequest {
    let mut req = request(service, service, artifact.clone());
    req.batch_plan = BatchPlan { steps: vec![BatchStep::Count(2), BatchStep::Count(FLEET_SIZE as u32)] };
    req.bake_ms = bake_ms;
    req
}

async fn all_serve(fleet: &LoadedFleet, version: &str) -> bool {
    fleet.served_versions().await.iter().all(|v| v.as_deref() == Some(version))
}

async fn until(s: &Stack, id: &str, what: &str, ready: impl Fn(&DeployStatus) -> bool) -> anyhow::Result<DeployStatus> {
    let deploys = s.deploys().await?;
    wait_for(what, DEPLOY_DEADLINE, || async {
        let st = deploys.status(id).await?;
        Ok(ready(&st).then_some(st))
    })
    .await
}

#[test]
fn a_build_deploys_again_once_its_earlier_deploy_ended() {
    run(async {
        let s = stack().await;
        let (fleet, base, one, _) = fleet_of(s, "again").await?;
        let deploys = s.deploys().await?;
        // 1.1.0, back to 1.0.0 by deploying it, and 1.1.0 once more: three deploys, three ids.
        let mut ids = Vec::new();
        for (artifact, version) in [(&one, "1.1.0"), (&base, "1.0.0"), (&one, "1.1.0")] {
            let id = deploys.start(deploy("again", artifact, 0), None).await?.id;
            let done = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
            assert_eq!(done.phase, Phase::Succeeded, "{id}: {done:#?}");
            assert!(all_serve(&fleet, version).await, "{id}: every instance serves {version}");
            ids.push(id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 3, "each deploy has its own id: {ids:?}");

        // A request id names one request: the same call again answers with its deploy, another
        // request under it is refused naming the field.
        let once = deploys.start(deploy("again", &base, 0), Some("again-1".into())).await?.id;
        assert_eq!(tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&once)).await??.phase, Phase::Succeeded);
        assert_eq!(deploys.start(deploy("again", &base, 0), Some("again-1".into())).await?.id, once, "a retried call is harmless");
        let other = deploys.start(deploy("again", &one, 0), Some("again-1".into())).await;
        let Err(Error::Invalid { field, rule }) = other else { panic!("another request under the same id must be refused: {other:?}") };
        assert_eq!(field, "request_id");
        assert!(rule.contains(&once), "{rule}");
        assert!(all_serve(&fleet, "1.0.0").await, "the refused request changed nothing");
        record_history(&deploys, &ids[2], "lane_redeploy").await
    });
}

#[test]
fn a_second_deploy_to_a_held_target_is_refused_naming_the_first_and_a_queued_one_waits_for_it() {
    run(async {
        let s = stack().await;
        let mut api = GrpcApi::start(s).await?;
        let (fleet, _, one, two) = fleet_of(s, "busy").await?;
        let deploys = s.deploys().await?;
        let first = deploys.start(deploy("busy", &one, 4_000), None).await?.id;
        until(s, &first, "the first deploy to bake", |st| st.phase == Phase::Baking).await?;

        // Through the API: refused before anything starts, naming the deploy in progress.
        let refused = api.client.start_deploy(pb::StartDeployRequest::from(deploy("busy", &two, 0))).await.expect_err("the target is held");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains(&first) && refused.message().contains("local/busy"), "{}", refused.message());

        // Straight to Temporal, past the API's check: the workflow itself refuses, naming it.
        let options = temporalio_client::WorkflowStartOptions::new(s.options.task_queue.clone(), "deploy/busy/busy/direct".to_owned()).build();
        let direct = deploys.client().start_workflow(signalbox_contract::deploy::DeployRun, deploy("busy", &two, 0), options).await?;
        let failed = direct.get_result(Default::default()).await.expect_err("the second deploy fails");
        assert!(failed.to_string().contains(&first), "the failure names the holder: {failed}");
        let status = deploys.status("deploy/busy/busy/direct").await?;
        assert_eq!((status.phase, status.held_by.as_deref()), (Phase::Failed, Some(first.as_str())), "{status:#?}");
        let foreign: Vec<String> = fleet.fleet.oplog()?.into_iter().map(|e| e.deploy_id).filter(|d| d != "provision" && *d != first).collect();
        assert!(foreign.is_empty(), "no other deploy touched the fleet: {foreign:?}");

        // With `queue`, the next deploy waits behind the first and runs once it ended.
        let mut queued = deploy("busy", &two, 0);
        queued.queue = true;
        let started = api.client.start_deploy(pb::StartDeployRequest::from(queued)).await?.into_inner();
        assert_eq!(started.queued_behind.as_deref(), Some(first.as_str()));
        let waiting = deploys.status(&started.deploy_id).await?;
        assert_eq!((waiting.phase, waiting.held_by.as_deref()), (Phase::Queued, Some(first.as_str())), "{waiting:#?}");
        // A halt of the queued deploy answers at once (nothing of it runs yet) ...
        let halted = tokio::time::timeout(Duration::from_secs(20), deploys.halt(&started.deploy_id, Command::new("sre", "hold the queue"))).await??;
        assert_eq!((halted.phase, halted.halted), (Phase::Queued, true), "{halted:#?}");
        assert_eq!(tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&first)).await??.phase, Phase::Succeeded);
        // ... and once it has the lane it holds there, the target frozen, before it reads anything.
        let holding = until(s, &started.deploy_id, "the queued deploy to take the lane", |st| st.phase == Phase::Preflight).await?;
        assert!(holding.halted && holding.held_by.is_none(), "{holding:#?}");
        let until_at = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until_at {
            assert_eq!(deploys.status(&started.deploy_id).await?.phase, Phase::Preflight, "held before preflight");
            assert!(fleet.fleet.oplog()?.iter().all(|e| e.deploy_id != started.deploy_id), "a held deploy changes nothing");
        }
        assert_eq!(fleet.fleet.halted_by()?.map(|m| m.deploy_id), Some(started.deploy_id.clone()), "the target is frozen");
        deploys.resume(&started.deploy_id, Command::new("sre", "go on")).await?;
        let second = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&started.deploy_id)).await??;
        assert_eq!(second.phase, Phase::Succeeded, "{second:#?}");
        assert!(all_serve(&fleet, "1.2.0").await, "the queued deploy ran after the first");
        let order: Vec<String> = fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart").map(|e| e.deploy_id).collect();
        let last_first = order.iter().rposition(|d| *d == first).expect("the first deploy restarted instances");
        let first_second = order.iter().position(|d| *d == started.deploy_id).expect("the second deploy restarted instances");
        assert!(last_first < first_second, "the deploys never overlapped on the fleet: {order:?}");
        record_history(&deploys, &started.deploy_id, "lane_queued").await?;
        api.stop().await
    });
}

#[test]
fn a_dry_run_holds_no_lane_and_does_not_block_the_real_deploy() {
    run(async {
        let s = stack().await;
        let (fleet, _, one, _) = fleet_of(s, "rehearsed").await?;
        let deploys = s.deploys().await?;
        let mut rehearsal = deploy("rehearsed", &one, 5_000);
        rehearsal.dry_run = true;
        let dry = deploys.start(rehearsal, None).await?.id;
        until(s, &dry, "the rehearsal to bake", |st| st.phase == Phase::Baking).await?;

        let real = deploys.start(deploy("rehearsed", &one, 0), None).await?.id;
        let done = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&real)).await??;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(all_serve(&fleet, "1.1.0").await);
        let rehearsed = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&dry)).await??;
        assert_eq!(rehearsed.phase, Phase::Succeeded, "{rehearsed:#?}");
        let dry_ops = fleet.fleet.oplog()?.into_iter().filter(|e| e.deploy_id == dry).count();
        assert_eq!(dry_ops, 0, "the rehearsal changed nothing");
        Ok(())
    });
}

#[test]
fn a_rollback_of_an_older_deploy_is_refused_once_a_newer_one_holds_or_changed_its_instances() {
    run(async {
        let s = stack().await;
        let (fleet, _, one, two) = fleet_of(s, "owned").await?;
        let deploys = s.deploys().await?;
        let mut older = deploy("owned", &one, 0);
        older.rollback_window_ms = 10 * 60 * 1000;
        let old = deploys.start(older, None).await?.id;
        until(s, &old, "the older deploy to succeed", |st| st.phase == Phase::Succeeded).await?;

        // While a newer deploy runs, it holds the target.
        let new = deploys.start(deploy("owned", &two, 4_000), None).await?.id;
        until(s, &new, "the newer deploy to bake", |st| st.phase == Phase::Baking).await?;
        let held = deploys.rollback(&old, Command::new("sre", "undo 1.1.0")).await;
        let Err(Error::Refused(why)) = held else { panic!("the rollback must be refused: {held:?}") };
        assert!(why.contains(&format!("deploy {new} is in progress")), "{why}");

        // Once it changed every instance, the older deploy's rollback is no longer its own.
        assert_eq!(tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&new)).await??.phase, Phase::Succeeded);
        let ops_before = fleet.fleet.oplog()?.len();
        let changed = deploys.rollback(&old, Command::new("sre", "undo 1.1.0")).await;
        let Err(Error::Refused(why)) = changed else { panic!("the rollback must be refused: {changed:?}") };
        assert!(why.contains(&format!("deploy {new} changed")), "{why}");
        // Nothing changed: the fleet serves the newer build, the older deploy still waits in its window.
        assert!(all_serve(&fleet, "1.2.0").await);
        assert_eq!(fleet.fleet.oplog()?.len(), ops_before, "no instance was touched");
        let still = deploys.status(&old).await?;
        assert_eq!((still.phase, still.reason.clone()), (Phase::Succeeded, None), "{still:#?}");
        assert!(still.rollback_window_until.is_some());
        assert!(still.audit.is_empty(), "a refused rollback records nothing: {:?}", still.audit);

        // The newer deploy's own rollback is still its own.
        let mut newest = deploy("owned", &one, 0);
        newest.rollback_window_ms = 10 * 60 * 1000;
        let last = deploys.start(newest, None).await?.id;
        until(s, &last, "the newest deploy to succeed", |st| st.phase == Phase::Succeeded).await?;
        let back = deploys.rollback(&last, Command::new("sre", "undo the newest")).await?;
        assert_eq!(back.reason.as_deref(), Some("rolled back by sre: undo the newest"));
        assert_eq!(tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&last)).await??.phase, Phase::RolledBack);
        assert!(all_serve(&fleet, "1.2.0").await, "back to what the newer deploy put there");
        // The older deploy's window stays open until an operator closes it; nothing depends on it.
        let handle = deploys.client().get_workflow_handle::<signalbox_contract::deploy::DeployRun>(old.clone());
        handle.cancel(temporalio_client::WorkflowCancelOptions::builder().reason("test done").build()).await?;
        let closed = tokio::time::timeout(Duration::from_secs(60), deploys.result(&old)).await??;
        assert_eq!(closed.phase, Phase::Succeeded, "closing the window early keeps the deploy succeeded");
        record_history(&deploys, &old, "lane_rollback_refused").await
    });
}
