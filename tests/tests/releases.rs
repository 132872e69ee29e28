//! Releases end to end: a real dev server, the worker as a process, one local fleet per
//! target under real load, every target's deploy a child workflow of the release.

use std::collections::BTreeSet;

use signalbox_domain::{
    Artifact, BatchPlan, BatchStep, DeploySettings, DeployState, HealthPolicy, OnFailure, Pipeline, ReleasePhase, ReleaseRequest, ServiceBuild, Stage, StagePhase,
    StageTarget, Target,
};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish};
use signalbox_tests::{record_history, run, stack};
use temporalio_client::{WorkflowDescribeOptions, WorkflowExecutionStatus};

/// How a release's deploys run on these small fleets: two batches, one-second windows.
fn settings() -> DeploySettings {
    DeploySettings {
        batch_plan: BatchPlan { steps: vec![BatchStep::Percent(50.0), BatchStep::Percent(100.0)] },
        bake_ms: 500,
        health: HealthPolicy { samples: 4, sample_interval_ms: 1_000, min_requests_per_sample: 10, ..HealthPolicy::default() },
        ..DeploySettings::default()
    }
}

fn on(name: &str, instances: u32, deploy: DeploySettings) -> StageTarget {
    StageTarget { target: Target::local(name), instances, deploy, services: vec![] }
}

fn release(pipeline: Pipeline, service: &str, artifact: Artifact) -> ReleaseRequest {
    ReleaseRequest { pipeline, services: vec![ServiceBuild { service: service.into(), artifact, depends_on: Vec::new() }], deployer: "ci@signalbox".into(), dry_run: false, control: Default::default() }
}

/// The instances of `fleet` that were ever restarted onto `digest`, from its operation log.
fn ran(fleet: &LoadedFleet, artifact: &Artifact) -> anyhow::Result<BTreeSet<String>> {
    Ok(fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest == artifact.digest).map(|e| e.instance).collect())
}

/// The timers of a history (Temporal's JSON): each one's summary and duration.
fn timers(history: &str) -> anyhow::Result<Vec<(String, String)>> {
    use base64::Engine as _;
    let history: serde_json::Value = serde_json::from_str(history)?;
    let mut found = Vec::new();
    for event in history["events"].as_array().into_iter().flatten() {
        let Some(timer) = event["attributes"].get("TimerStartedEventAttributes") else { continue };
        let data = event["user_metadata"]["summary"]["data"].as_str().unwrap_or_default();
        let summary: String = serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(data)?)?;
        found.push((summary, timer["start_to_fire_timeout"].as_str().unwrap_or_default().to_owned()));
    }
    Ok(found)
}

/// Playground -> test -> production, the playground lenient (it tolerates a 50-point error
/// rise) so that the bad build passes it and is caught in test, as a build that only shows its
/// fault under test's traffic would be.
#[test]
fn a_build_bad_in_test_never_reaches_production() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ledger", "1.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("ledger", "1.1.0", 0.30, 5)).await?;
        let playground = LoadedFleet::start(&s.home, "playground", 4, base.clone(), 200, &s.options.dir).await?;
        let test = LoadedFleet::start(&s.home, "test", 4, base.clone(), 200, &s.options.dir).await?;
        let production = LoadedFleet::start(&s.home, "production", 6, base.clone(), 300, &s.options.dir).await?;
        let lenient = DeploySettings { health: HealthPolicy { min_error_rate_delta: 0.5, ..settings().health }, ..settings() };
        let pipeline = Pipeline {
            name: "ledger".into(),
            stages: vec![
                Stage { name: "playground".into(), targets: vec![on("playground", 4, lenient)], max_parallel: 1, soak_ms: 2_000, approval: None, max_soak_restarts: 3, analysis: None },
                Stage { name: "test".into(), targets: vec![on("test", 4, settings())], max_parallel: 1, soak_ms: 2_000, approval: None, max_soak_restarts: 3, analysis: None },
                Stage { name: "production".into(), targets: vec![on("production", 6, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::Keep,
        };
        let releases = s.releases().await?;
        let id = releases.start(release(pipeline, "ledger", bad.clone()), None).await?;
        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&id)).await??;

        assert_eq!(status.phase, ReleasePhase::Failed, "{status:#?}");
        let phases: Vec<StagePhase> = status.stages.iter().map(|s| s.phase).collect();
        assert_eq!(phases, [StagePhase::Passed, StagePhase::Failed, StagePhase::Waiting]);
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("stage test: deploy deploy/ledger/test/") && reason.contains("rolled back"), "{reason}");
        assert_eq!(status.stages[1].deploys[0].state, DeployState::RolledBack);
        assert_eq!(status.stages[2].deploys[0].state, DeployState::Waiting, "production's deploy never started");
        // Production ran the old build throughout: none of its instances was ever restarted.
        assert!(ran(&production, &bad)?.is_empty(), "production ran the bad build");
        let changed: Vec<String> = production.fleet.oplog()?.into_iter().map(|e| e.deploy_id).filter(|d| d.starts_with("deploy/")).collect();
        assert!(changed.is_empty(), "deploys changed production: {changed:?}");
        assert!(production.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")));
        // Test caught it in its first batch and rolled back; the playground keeps it.
        let in_test = ran(&test, &bad)?;
        assert!(!in_test.is_empty() && in_test.len() <= 2, "{} of 4 test instances ran the bad build", in_test.len());
        assert!(test.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")));
        assert!(playground.served_versions().await.iter().all(|v| v.as_deref() == Some("1.1.0")));
        // The production deploy was never started, so Temporal knows no such workflow.
        let never = &status.stages[2].deploys[0].deploy_id;
        let described = s.deploys().await?.client().get_workflow_handle::<signalbox_contract::deploy::DeployRun>(never.clone()).describe(WorkflowDescribeOptions::default()).await;
        assert!(described.is_err(), "{never} exists");
        // The playground soaked (2 s) before test started; test, failed, did not.
        let timers = timers(&s.deploys().await?.history_json(&id).await?)?;
        assert_eq!(timers, [("soak of stage playground".to_owned(), "2.000000000s".to_owned())]);
        record_history(&s.deploys().await?, &id, "release_bad_in_test").await?;

        // The bad build is quarantined: a later release of it is refused at its start, naming
        // the field and the quarantine, and changes nothing.
        assert_eq!(status.quarantined, [bad.digest.clone()]);
        let store = s.home.store()?;
        let q = store.quarantine_of(&bad.digest).await?.active.expect("in quarantine");
        assert!(q.by == id && q.reason.starts_with("stage test: "), "{q:?}");
        let solo = Pipeline { name: "ledger".into(), stages: vec![Stage { name: "test".into(), targets: vec![on("test", 4, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None }], blast_radius_percent: None, on_failure: OnFailure::Keep };
        let refused = releases.start(release(solo.clone(), "ledger", bad.clone()), Some("again".into())).await.unwrap_err();
        let signalbox_client::Error::Invalid { field, rule } = refused else { panic!("not a refusal of a field: {refused:?}") };
        assert_eq!(field, "services[0].artifact.digest");
        assert!(rule.contains("is quarantined by release/ledger/"), "{rule}");
        let again = releases.status("release/ledger/again").await?;
        assert!(again.stages.iter().flat_map(|st| &st.deploys).all(|d| d.state == DeployState::Waiting), "no deploy started: {again:?}");
        assert!(again.quarantined.is_empty(), "a refusal is no verdict: {again:?}");
        assert_eq!(ran(&test, &bad)?, in_test, "the refused release changed nothing");
        // An unknown target is refused the same way, naming it in the pipeline.
        let lost = Pipeline { stages: vec![Stage { targets: vec![on("no-such-fleet", 4, settings())], ..solo.stages[0].clone() }], ..solo.clone() };
        let unknown = releases.start(release(lost, "ledger", base.clone()), None).await.unwrap_err();
        let signalbox_client::Error::Invalid { field, rule } = unknown else { panic!("not a refusal of a field: {unknown:?}") };
        assert_eq!(field, "pipeline.stages[0].targets[0].target", "{rule}");
        // Lifting it is audited, and the build may go again.
        let lifted = store.lift_quarantine(&bad.digest, "alice", "fault found in the test database", chrono::Utc::now()).await?;
        let audit: Vec<(signalbox_store::QuarantineAction, String)> = lifted.history.iter().map(|e| (e.action, e.by.clone())).collect();
        assert_eq!(audit, [(signalbox_store::QuarantineAction::Quarantined, id.clone()), (signalbox_store::QuarantineAction::Lifted, "alice".to_owned())]);
        store.check_not_quarantined(&bad.digest).await?;
        Ok(())
    });
}

/// Region waves over 6 regions: a canary region that bakes, one region per continent at once,
/// then the rest at once. A bad build is caught in the canary region and never reaches a
/// second one; a good one reaches every region, the continents' deploys overlapping in time.
#[test]
fn a_bad_build_stays_in_the_canary_region_and_a_good_one_reaches_all_six() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("atlas", "3.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("atlas", "3.1.0", 0.30, 5)).await?;
        let next = publish(&s.home, demo_build("atlas", "3.2.0", 0.002, 5)).await?;
        let names = ["region-canary", "region-eu", "region-us", "region-ap", "region-sa", "region-af"];
        let mut regions = Vec::new();
        for name in names {
            regions.push(LoadedFleet::start(&s.home, name, 2, base.clone(), 200, &s.options.dir).await?);
        }
        let wave = |name: &str, targets: &[&str], soak_ms: u64| Stage {
            name: name.into(),
            targets: targets.iter().map(|t| on(t, 2, settings())).collect(),
            max_parallel: targets.len() as u32,
            soak_ms,
            approval: None,
            max_soak_restarts: 3,
            analysis: None,
        };
        let pipeline = Pipeline {
            name: "atlas".into(),
            stages: vec![wave("canary", &names[..1], 1_000), wave("continents", &names[1..4], 0), wave("rest", &names[4..], 0)],
            // The canary region's first batch (1 of 12 instances) may run the build unproven.
            blast_radius_percent: Some(10.0),
            on_failure: OnFailure::Keep,
        };
        let releases = s.releases().await?;

        let caught = releases.start(release(pipeline.clone(), "atlas", bad.clone()), None).await?;
        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&caught)).await??;
        assert_eq!(status.phase, ReleasePhase::Failed, "{status:#?}");
        assert_eq!(status.stages.iter().map(|st| st.phase).collect::<Vec<_>>(), [StagePhase::Failed, StagePhase::Waiting, StagePhase::Waiting]);
        assert!(!ran(&regions[0], &bad)?.is_empty(), "the canary region ran it");
        for (name, region) in names.iter().zip(&regions).skip(1) {
            assert!(ran(region, &bad)?.is_empty(), "{name} ran the bad build");
        }
        assert!(regions[0].served_versions().await.iter().all(|v| v.as_deref() == Some("3.0.0")), "the canary region rolled back");

        let id = releases.start(release(pipeline, "atlas", next.clone()), None).await?;
        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&id)).await??;
        assert_eq!(status.phase, ReleasePhase::Succeeded, "{status:#?}");
        assert!(status.stages.iter().all(|s| s.phase == StagePhase::Passed), "{status:#?}");
        for region in &regions {
            assert!(region.served_versions().await.iter().all(|v| v.as_deref() == Some("3.2.0")));
        }
        // The continents' deploys overlapped: each started before every other one ended.
        let client = s.client().await?;
        let mut spans = Vec::new();
        for d in &status.stages[1].deploys {
            assert_eq!(d.state, DeployState::Succeeded);
            let handle = client.get_workflow_handle::<signalbox_contract::deploy::DeployRun>(d.deploy_id.clone());
            let described = handle.describe(WorkflowDescribeOptions::default()).await?;
            assert_eq!(described.status(), WorkflowExecutionStatus::Completed);
            spans.push((described.start_time().expect("started"), described.close_time().expect("closed")));
        }
        for (i, (a_start, a_end)) in spans.iter().enumerate() {
            for (b_start, b_end) in spans.iter().skip(i + 1) {
                assert!(a_start < b_end && b_start < a_end, "the continents' deploys did not overlap: {spans:?}");
            }
        }
        // The canary region's deploy ended before any continent's began (its soak between).
        let canary_id = &status.stages[0].deploys[0].deploy_id;
        let canary_end = client.get_workflow_handle::<signalbox_contract::deploy::DeployRun>(canary_id.clone()).describe(WorkflowDescribeOptions::default()).await?.close_time().expect("closed");
        assert!(spans.iter().all(|(start, _)| canary_end < *start), "a continent started before the canary region ended");
        s.home.store()?.lift_quarantine(&bad.digest, "alice", "test over", chrono::Utc::now()).await?;
        record_history(&s.deploys().await?, &id, "release_six_regions").await
    });
}

#[test]
fn a_release_over_its_budget_or_with_a_cycle_starts_nothing() {
    run(async {
        let s = stack().await;
        let releases = s.releases().await?;
        let artifact = publish(&s.home, demo_build("budget", "1.0.0", 0.002, 5)).await?;
        let whole = DeploySettings { batch_plan: BatchPlan { steps: vec![BatchStep::Percent(100.0)] }, ..settings() };
        let pipeline = Pipeline {
            name: "budget".into(),
            stages: vec![
                Stage { name: "first".into(), targets: vec![on("budget-a", 20, whole)], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
                Stage { name: "rest".into(), targets: vec![on("budget-b", 80, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: Some(10.0),
            on_failure: OnFailure::Keep,
        };
        let refused = releases.start(release(pipeline.clone(), "budget", artifact.clone()), Some("r1".into())).await;
        match refused {
            Err(signalbox_client::Error::Invalid { field, rule }) => {
                assert_eq!(field, "pipeline.blast_radius_percent");
                assert!(rule.contains("stage first") && rule.contains("20 of 100 instances"), "{rule}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let mut cyclic = release(Pipeline { blast_radius_percent: None, ..pipeline }, "budget", artifact.clone());
        cyclic.services = vec![
            ServiceBuild { service: "a".into(), artifact: artifact.clone(), depends_on: vec!["b".into()] },
            ServiceBuild { service: "b".into(), artifact, depends_on: vec!["a".into()] },
        ];
        match releases.start(cyclic, Some("r2".into())).await {
            Err(signalbox_client::Error::Invalid { field, rule }) => assert_eq!((field.as_str(), rule.as_str()), ("services", "depends_on has a cycle: a -> b -> a")),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Nothing started under either request id.
        for suffix in ["r1", "r2"] {
            let id = signalbox_contract::release::release_id("budget", suffix);
            assert!(releases.status(&id).await.is_err(), "{id} started");
        }
        Ok(())
    });
}

/// The instants (RFC 3339) at which `fleet` restarted instances back onto `artifact` for
/// `deploy`: the rollback of that deploy.
fn rolled_back_at(fleet: &LoadedFleet, deploy: &str, artifact: &Artifact) -> anyhow::Result<Vec<chrono::DateTime<chrono::Utc>>> {
    let mut at = Vec::new();
    for e in fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.deploy_id == deploy && e.digest == artifact.digest) {
        at.push(chrono::DateTime::parse_from_rfc3339(&e.at)?.to_utc());
    }
    Ok(at)
}

/// Three services, catalog needs billing needs accounts, each on its own target in two
/// stages. Billing's build passes the first stage (its target there is lenient) and fails the
/// second: the pipeline rolls back on failure, so catalog (the dependent) is rolled back
/// before billing, and billing before accounts; every target ends on what it ran before.
#[test]
fn a_dag_release_rolls_back_dependents_first_then_what_they_depend_on() {
    run(async {
        let s = stack().await;
        let names = ["accounts", "billing", "catalog"];
        let mut base = Vec::new();
        let mut next = Vec::new();
        for name in names {
            base.push(publish(&s.home, demo_build(name, "1.0.0", 0.002, 5)).await?);
            let error_rate = if name == "billing" { 0.30 } else { 0.002 };
            next.push(publish(&s.home, demo_build(name, "1.1.0", error_rate, 5)).await?);
        }
        let mut fleets = Vec::new();
        for stage in ["one", "two"] {
            for (i, name) in names.iter().enumerate() {
                fleets.push(LoadedFleet::start(&s.home, &format!("dag-{stage}-{name}"), 2, base[i].clone(), 200, &s.options.dir).await?);
            }
        }
        let lenient = DeploySettings { health: HealthPolicy { min_error_rate_delta: 0.5, ..settings().health }, ..settings() };
        let target = |stage: &str, name: &str, deploy: DeploySettings| StageTarget { services: vec![name.to_owned()], ..on(&format!("dag-{stage}-{name}"), 2, deploy) };
        let pipeline = Pipeline {
            name: "shop".into(),
            stages: vec![
                Stage {
                    name: "one".into(),
                    targets: vec![target("one", "accounts", settings()), target("one", "billing", lenient), target("one", "catalog", settings())],
                    max_parallel: 3,
                    soak_ms: 0,
                    approval: None,
                    max_soak_restarts: 3,
                    analysis: None,
                },
                Stage { name: "two".into(), targets: names.iter().map(|n| target("two", n, settings())).collect(), max_parallel: 3, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::RollBack,
        };
        let services = names
            .iter()
            .enumerate()
            .map(|(i, n)| ServiceBuild { service: (*n).into(), artifact: next[i].clone(), depends_on: if i == 0 { vec![] } else { vec![names[i - 1].into()] } })
            .collect();
        let releases = s.releases().await?;
        let id = releases.start(ReleaseRequest { pipeline, services, deployer: "ci@signalbox".into(), dry_run: false, control: Default::default() }, None).await?;
        let status = tokio::time::timeout(4 * DEPLOY_DEADLINE, releases.result(&id)).await??;

        assert_eq!(status.phase, ReleasePhase::RolledBack, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("stage two: deploy deploy/billing/dag-two-billing/"), "{reason}");
        let states = |si: usize| status.stages[si].deploys.iter().map(|d| (d.service.clone(), d.state)).collect::<Vec<_>>();
        let owned = |pairs: [(&str, DeployState); 3]| pairs.map(|(s, st)| (s.to_owned(), st)).to_vec();
        assert_eq!(states(0), owned([("accounts", DeployState::RolledBack), ("billing", DeployState::RolledBack), ("catalog", DeployState::RolledBack)]));
        assert_eq!(states(1), owned([("accounts", DeployState::RolledBack), ("billing", DeployState::RolledBack), ("catalog", DeployState::Waiting)]));
        for fleet in &fleets {
            assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")), "a target kept the new set");
        }
        // Dependents first: catalog's rollback ended before billing's began, billing's (in
        // stage one) before accounts' (in either stage).
        let id_of = |si: usize, service: &str| status.stages[si].deploys.iter().find(|d| d.service == service).map(|d| d.deploy_id.clone()).unwrap_or_default();
        let catalog = rolled_back_at(&fleets[2], &id_of(0, "catalog"), &base[2])?;
        let billing = rolled_back_at(&fleets[1], &id_of(0, "billing"), &base[1])?;
        let mut accounts = rolled_back_at(&fleets[0], &id_of(0, "accounts"), &base[0])?;
        accounts.extend(rolled_back_at(&fleets[3], &id_of(1, "accounts"), &base[0])?);
        assert!(!catalog.is_empty() && !billing.is_empty() && accounts.len() == 4, "{catalog:?} {billing:?} {accounts:?}");
        assert!(catalog.iter().max() < billing.iter().min(), "catalog {catalog:?} rolled back after billing {billing:?}");
        assert!(billing.iter().max() < accounts.iter().min(), "billing {billing:?} rolled back after accounts {accounts:?}");
        assert_eq!(status.quarantined, [next[1].digest.clone()], "the build that failed its verdict");
        // A child deploy's history: it told its release it succeeded, then was rolled back in
        // its window.
        record_history(&s.deploys().await?, &id_of(0, "accounts"), "release_dag_child_deploy").await?;
        record_history(&s.deploys().await?, &id, "release_dag_rolled_back").await
    });
}

/// A build that passes its verdict and then degrades (as a leak does): the canary stage's soak
/// sees its error rate regress from what the target did before the deploy, restarts the soak
/// each time, and fails the stage after the restarts it allows; the pipeline rolls back, and
/// the next stage never starts.
#[test]
fn a_regression_during_the_soak_restarts_it_and_then_fails_the_stage() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("journal", "1.0.0", 0.002, 5)).await?;
        let mut leaky = signalbox_localstack::demo_artifact("journal", "1.1.0", 0.002, 5);
        // Healthy for the deploy's two batches (about 10 s), then 40% errors.
        leaky.degrade_after_ms = 14_000;
        leaky.degraded_error_rate = 0.4;
        let next = publish(&s.home, serde_json::to_vec(&leaky)?).await?;
        let canary = LoadedFleet::start(&s.home, "soak-canary", 2, base.clone(), 200, &s.options.dir).await?;
        let rest = LoadedFleet::start(&s.home, "soak-rest", 2, base.clone(), 200, &s.options.dir).await?;
        let pipeline = Pipeline {
            name: "journal".into(),
            stages: vec![
                Stage { name: "canary".into(), targets: vec![on("soak-canary", 2, settings())], max_parallel: 1, soak_ms: 600_000, approval: None, max_soak_restarts: 2, analysis: None },
                Stage { name: "rest".into(), targets: vec![on("soak-rest", 2, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::RollBack,
        };
        let releases = s.releases().await?;
        let id = releases.start(release(pipeline, "journal", next.clone()), None).await?;
        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&id)).await??;

        assert_eq!(status.phase, ReleasePhase::RolledBack, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("stage canary: its health regressed during the soak 3 times; the last: local/soak-canary: error rate "), "{reason}");
        let stage = &status.stages[0];
        assert_eq!((stage.phase, stage.soak_restarts), (StagePhase::Failed, 2));
        assert!(stage.last_regression.as_deref().is_some_and(|r| r.contains("against 0.")), "{:?}", stage.last_regression);
        assert_eq!(stage.deploys[0].state, DeployState::RolledBack, "the canary's deploy had succeeded and was rolled back");
        assert_eq!(status.stages[1].deploys[0].state, DeployState::Waiting);
        assert!(ran(&rest, &next)?.is_empty(), "the next stage started");
        assert!(canary.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")));
        // The soak's timer restarted twice (its end moved each time), from the history.
        let soaks: Vec<String> = timers(&s.deploys().await?.history_json(&id).await?)?.into_iter().map(|(summary, _)| summary).collect();
        assert_eq!(soaks, ["soak of stage canary", "soak of stage canary, restart 1", "soak of stage canary, restart 2"]);
        record_history(&s.deploys().await?, &id, "release_soak_regressed").await
    });
}

/// A stage judged as a whole: each target's deploy is lenient and lets a bad build through,
/// the stage's own analysis over its two targets together does not: the stage fails as on a
/// failed verdict, the build is quarantined, and the next stage never starts.
#[test]
fn a_stages_own_analysis_over_its_targets_together_stops_a_build_its_deploys_passed() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ink", "1.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("ink", "1.1.0", 0.30, 5)).await?;
        let east = LoadedFleet::start(&s.home, "whole-east", 2, base.clone(), 200, &s.options.dir).await?;
        let west = LoadedFleet::start(&s.home, "whole-west", 2, base.clone(), 200, &s.options.dir).await?;
        let rest = LoadedFleet::start(&s.home, "whole-rest", 2, base.clone(), 200, &s.options.dir).await?;
        let lenient = DeploySettings { health: HealthPolicy { min_error_rate_delta: 0.5, ..settings().health }, ..settings() };
        let together = HealthPolicy { samples: 3, sample_interval_ms: 1_000, min_requests_per_sample: 10, ..HealthPolicy::default() };
        let pipeline = Pipeline {
            name: "ink".into(),
            stages: vec![
                Stage {
                    name: "canary".into(),
                    targets: vec![on("whole-east", 2, lenient.clone()), on("whole-west", 2, lenient)],
                    max_parallel: 2,
                    soak_ms: 0,
                    approval: None,
                    max_soak_restarts: 3,
                    analysis: Some(together),
                },
                Stage { name: "rest".into(), targets: vec![on("whole-rest", 2, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::Keep,
        };
        let releases = s.releases().await?;
        let id = releases.start(release(pipeline, "ink", bad.clone()), None).await?;
        let status = tokio::time::timeout(3 * DEPLOY_DEADLINE, releases.result(&id)).await??;

        assert_eq!(status.phase, ReleasePhase::Failed, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("stage canary: its analysis over its 2 targets together failed: error rate "), "{reason}");
        assert!(status.stages[0].deploys.iter().all(|d| d.state == DeployState::Succeeded), "each deploy passed on its own: {status:#?}");
        assert_eq!(status.stages[1].deploys[0].state, DeployState::Waiting);
        assert!(ran(&rest, &bad)?.is_empty(), "the next stage started");
        assert_eq!(status.quarantined, [bad.digest.clone()], "a failed stage verdict quarantines the build");
        assert!(east.served_versions().await.iter().chain(west.served_versions().await.iter()).all(|v| v.as_deref() == Some("1.1.0")), "keep: the stage keeps it");
        s.home.store()?.lift_quarantine(&bad.digest, "alice", "test over", chrono::Utc::now()).await?;
        record_history(&s.deploys().await?, &id, "release_stage_analysis_failed").await
    });
}

/// An abort of a release whose pipeline rolls back on failure: the deploy in flight is rolled
/// back, and so is the earlier stage's deploy that had succeeded; the release ends `RolledBack`
/// with who aborted it and why.
#[test]
fn an_abort_under_roll_back_undoes_the_stages_already_done() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("quill", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("quill", "1.1.0", 0.002, 5)).await?;
        let first = LoadedFleet::start(&s.home, "undo-first", 2, base.clone(), 200, &s.options.dir).await?;
        let second = LoadedFleet::start(&s.home, "undo-second", 2, base.clone(), 200, &s.options.dir).await?;
        // A long bake in the second stage: its deploy is under way when the abort comes.
        let slow = DeploySettings { bake_ms: 60_000, ..settings() };
        let pipeline = Pipeline {
            name: "quill".into(),
            stages: vec![
                Stage { name: "first".into(), targets: vec![on("undo-first", 2, settings())], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
                Stage { name: "second".into(), targets: vec![on("undo-second", 2, slow)], max_parallel: 1, soak_ms: 0, approval: None, max_soak_restarts: 3, analysis: None },
            ],
            blast_radius_percent: None,
            on_failure: OnFailure::RollBack,
        };
        let releases = s.releases().await?;
        let id = releases.start(release(pipeline, "quill", next.clone()), None).await?;
        signalbox_devstack::wait_for("the second stage's deploy to roll", DEPLOY_DEADLINE, || async { Ok((!ran(&second, &next)?.is_empty()).then_some(())) }).await?;
        let stopping = releases.abort(&id, signalbox_domain::Command::new("oncall", "wrong config")).await?;
        assert_eq!(stopping.phase, ReleasePhase::Stopping);
        let status = tokio::time::timeout(DEPLOY_DEADLINE, releases.result(&id)).await??;

        assert_eq!(status.phase, ReleasePhase::RolledBack, "{status:#?}");
        assert_eq!(status.reason.as_deref(), Some("aborted by oncall: wrong config"));
        assert_eq!(status.stages.iter().map(|st| st.phase).collect::<Vec<_>>(), [StagePhase::Passed, StagePhase::Aborted]);
        assert!(status.stages.iter().all(|st| st.deploys[0].state == DeployState::RolledBack), "{status:#?}");
        for fleet in [&first, &second] {
            assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")), "a stage kept the build");
        }
        assert!(status.quarantined.is_empty(), "an abort is no verdict");
        Ok(())
    });
}
