//! The worker is SIGKILLed in the middle of a rollout and a new one is started: the deploy
//! completes, and no instance was restarted twice for one target. The same for a release
//! killed during a wave: it completes with no child deploy started twice.

use std::collections::BTreeMap;
use std::time::Duration;

use signalbox_devstack::wait_for;
use signalbox_domain::{
    BatchPlan, BatchStep, DeploySettings, DeployState, HealthPolicy, OnFailure, Phase, Pipeline, ReleasePhase, ReleaseRequest, ServiceBuild, Stage, StageTarget,
    Target,
};
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

#[test]
fn a_release_whose_worker_is_killed_in_a_wave_completes_with_each_deploy_started_once() {
    run(async {
        let mut options = StackOptions::in_dir(scratch("release-crash"));
        options.worker_env.push(("SIGNALBOX_FLEET_PARALLELISM".into(), "1".into()));
        let mut s = Stack::start(options).await?;
        let base = publish(&s.home, demo_build("payments", "2.0.0", 0.002, 5)).await?;
        let mut slow = demo_artifact("payments", "2.1.0", 0.002, 5);
        slow.startup_delay_ms = 400;
        let next = publish(&s.home, serde_json::to_vec(&slow)?).await?;
        let names = ["wave-a", "wave-b", "wave-c", "wave-d"];
        let mut fleets = Vec::new();
        for name in names {
            fleets.push(LoadedFleet::start(&s.home, name, 4, base.clone(), 200, &s.options.dir).await?);
        }
        let settings = DeploySettings {
            batch_plan: BatchPlan { steps: vec![BatchStep::Percent(50.0), BatchStep::Percent(100.0)] },
            bake_ms: 500,
            health: HealthPolicy { samples: 3, sample_interval_ms: 1_000, min_requests_per_sample: 10, ..HealthPolicy::default() },
            ..DeploySettings::default()
        };
        let on = |name: &str| StageTarget { target: Target::local(name), instances: 4, deploy: settings.clone(), services: vec![] };
        let pipeline = Pipeline {
            name: "payments".into(),
            stages: vec![
                Stage { name: "first".into(), targets: vec![on("wave-a"), on("wave-b")], max_parallel: 2, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
                Stage { name: "second".into(), targets: vec![on("wave-c"), on("wave-d")], max_parallel: 2, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::Keep,
        };
        let req = ReleaseRequest { pipeline, services: vec![ServiceBuild { service: "payments".into(), artifact: next.clone(), depends_on: vec![] }], deployer: "ci".into(), dry_run: false, control: Default::default() };
        let releases = s.releases().await?;
        let id = releases.start(req, None).await?;

        // Kill while the first wave's two deploys are rolling instances.
        wait_for("the first wave to roll", Duration::from_secs(120), || async {
            let restarted = fleets[..2].iter().map(|f| f.fleet.oplog().map(|log| log.iter().filter(|e| e.op == "restart" && e.digest == next.digest).count())).collect::<Result<Vec<_>, _>>()?;
            Ok(restarted.iter().all(|&n| n >= 1).then_some(()))
        })
        .await?;
        s.worker.sigkill()?;
        let _replacement = s.spawn_worker("worker-2.log")?;

        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&id)).await??;
        assert_eq!(status.phase, ReleasePhase::Succeeded, "{status:#?}");
        assert!(status.stages.iter().flat_map(|st| &st.deploys).all(|d| d.state == DeployState::Succeeded));
        // Each child deploy ran once: one execution per deploy id, every one completed.
        let deploys = s.deploys().await?;
        let mut runs: BTreeMap<String, u32> = BTreeMap::new();
        let mut listed = deploys.client().list_workflows(format!("SignalboxRelease = '{id}'"), Default::default());
        while let Some(execution) = futures::StreamExt::next(&mut listed).await {
            *runs.entry(execution?.id().to_owned()).or_default() += 1;
        }
        let children: Vec<&String> = status.stages.iter().flat_map(|st| &st.deploys).map(|d| &d.deploy_id).collect();
        for child in &children {
            assert_eq!(runs.get(*child), Some(&1), "{child} ran {:?} times; runs: {runs:?}", runs.get(*child));
        }
        // And no instance was restarted twice onto the new build.
        for (name, fleet) in names.iter().zip(&fleets) {
            let mut restarts: BTreeMap<String, u32> = BTreeMap::new();
            for e in fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest == next.digest) {
                *restarts.entry(e.instance).or_default() += 1;
            }
            assert_eq!((restarts.len(), restarts.values().max().copied()), (4, Some(1)), "{name}: {restarts:?}");
        }
        record_history(&deploys, &id, "release_worker_crash").await
    });
}
