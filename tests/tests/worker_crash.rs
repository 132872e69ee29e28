//! The worker is SIGKILLed in the middle of a rollout and a new one is started: the deploy
//! completes, and no instance was restarted twice for one target.

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_devstack::wait_for;
use signalbox_domain::Phase;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, StackOptions, demo_artifact, demo_build, publish, request};
use signalbox_tests::{record_history, run, scratch};

#[test]
fn a_killed_worker_is_replaced_and_the_deploy_completes_without_double_restarts() {
    run(async {
        let mut options = StackOptions::in_dir(scratch("worker-crash"));
        // One instance at a time, so that a batch takes long enough to be killed in the middle.
        options.worker_env.push(("SIGNALBOX_FLEET_PARALLELISM".into(), "1".into()));
        let mut s = Stack::start(options).await?;
        let base = publish(&s.home, demo_build("search", "3.0.0", 0.002, 5)).await?;
        // A build that takes a while to start, as real ones do, so a batch is slow enough to be
        // killed in the middle.
        let mut slow = demo_artifact("search", "3.1.0", 0.002, 5);
        slow.startup_delay_ms = 400;
        let next = publish(&s.home, serde_json::to_vec(&slow)?).await?;
        let fleet = LoadedFleet::start(&s.home, "crash", 20, base, 400, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let id = deploys.start(request("search", "crash", next.clone()), None).await?.id;

        // Kill while the 50% batch (8 instances, one by one) is being rolled out.
        wait_for("the third batch to start rolling", Duration::from_secs(120), || async {
            let st = deploys.status(&id).await?;
            Ok((st.phase == Phase::Rolling && st.current_batch == 3).then_some(()))
        })
        .await?;
        let restarts_before_kill = fleet.fleet.oplog()?.iter().filter(|e| e.deploy_id == id && e.op == "restart").count();
        s.worker.sigkill()?;
        let _replacement = s.spawn_worker("worker-2.log")?;

        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, BTreeMap::from([("3.1.0".to_owned(), 20)]));
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("3.1.0")), "instances answer {served:?}");

        let mut restarts: BTreeMap<(String, String), u32> = BTreeMap::new();
        for e in fleet.fleet.oplog()?.into_iter().filter(|e| e.deploy_id == id && e.op == "restart") {
            *restarts.entry((e.instance, e.digest.to_string())).or_default() += 1;
        }
        let twice: Vec<_> = restarts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "restarted more than once for one target: {twice:?}");
        assert_eq!(restarts.len(), 20, "every instance restarted exactly once onto {}", next.version);
        // Batches 1 and 2 restarted 2 instances; the third (8 more) was under way.
        assert!((2..10).contains(&restarts_before_kill), "the kill came inside the third batch ({restarts_before_kill} restarts before it)");
        record_history(&deploys, &id, "worker_crash").await
    });
}
