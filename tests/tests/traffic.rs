//! Canary and blue/green on a real load balancer: a real dev server, the worker as a process,
//! real instances behind a real HAProxy, and every request of the load sent through HAProxy's
//! frontend. What the strategies did is read back from HAProxy itself (`show stat`).

use std::collections::{BTreeMap, BTreeSet};

use signalbox_devstack::wait_for;
use signalbox_domain::traffic::{AdminState, TrafficPhase, plan_canary, share_percent, split_weights};
use signalbox_domain::Verdict;
use signalbox_localstack::traffic::{BalancedFleet, BalancedOptions, bluegreen_request, canary_request, observe_canary, strategies};
use signalbox_localstack::{DEPLOY_DEADLINE, demo_build, publish};
use signalbox_tests::{record_history, run, stack};

fn only(version: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(version.to_owned(), n)])
}

#[test]
fn a_canary_takes_each_configured_share_of_requests_through_haproxy() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("search", "3.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("search", "3.1.0", 0.002, 5)).await?;
        let options = BalancedOptions { rps: 400, ..BalancedOptions::new("search", "canary-good", 10) };
        let fleet = BalancedFleet::start(&s.home, options, base, &s.options.dir).await?;
        let ids = fleet.ids();
        let (canary, baseline) = (ids[..2].to_vec(), ids[2..].to_vec());
        let traffic = strategies(s).await?;

        let original = fleet.stats().await?.weights();
        let req = canary_request("search", &fleet, next, canary.clone());
        // The same pure decision the workflow makes from the same weights.
        let plan = plan_canary(&original, &canary, &req.steps)?;
        let id = traffic.start_canary(req).await?;
        let (seen, status) = observe_canary(&traffic, &id, &fleet, &plan, DEPLOY_DEADLINE).await?;

        assert_eq!(status.phase, TrafficPhase::Succeeded, "{status:#?}");
        assert_eq!(status.last_verdict.as_ref().map(|v| v.verdict), Some(Verdict::Pass));
        // HAProxy went through exactly these weights: canaries out of rotation, each step, promoted.
        let mut expected = vec![original.clone(), plan.off.clone()];
        expected.extend(plan.steps.iter().map(|(_, w)| w.clone()));
        expected.push(original.clone());
        assert_eq!(seen.sequence, expected, "weights HAProxy reported, in order");
        let steps: Vec<u32> = seen.steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5], "{:#?}", seen.steps);
        for (observed, configured) in seen.steps.iter().zip([1.0, 5.0, 25.0, 50.0, 100.0]) {
            assert_eq!(observed.configured_percent, configured);
            // The plan's weights give the canaries the step's share ...
            assert_eq!(observed.weights, split_weights(&canary, &baseline, configured), "step {}", observed.step);
            assert!((share_percent(&observed.weights, &canary) - configured).abs() < 0.01);
            // ... and HAProxy's per-server session counters show that share of the requests.
            let measured = observed.measured_percent();
            assert!(observed.requests >= 300, "step {}: only {} requests observed", observed.step, observed.requests);
            assert!((measured - configured).abs() <= 0.5 + 0.1 * configured, "step {}: configured {configured}%, measured {measured:.2}% of {} requests", observed.step, observed.requests);
        }
        // Promoted: every server serves the new build with its original weight.
        assert_eq!(fleet.stats().await?.weights(), original);
        assert_eq!(fleet.served_through(40).await?, only("3.1.0", 40));
        record_history(&s.deploys().await?, &id, "canary_good").await
    });
}

#[test]
fn a_bad_canary_is_rolled_back_weights_and_instances() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ledger", "4.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("ledger", "4.1.0", 0.30, 5)).await?;
        let options = BalancedOptions { rps: 400, ..BalancedOptions::new("ledger", "canary-bad", 10) };
        let fleet = BalancedFleet::start(&s.home, options, base, &s.options.dir).await?;
        let original = fleet.stats().await?.weights();
        let canary = fleet.ids()[..2].to_vec();
        let traffic = strategies(s).await?;

        let id = traffic.start_canary(canary_request("ledger", &fleet, bad.clone(), canary.clone())).await?;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, traffic.canary_result(&id)).await??;

        assert_eq!(status.phase, TrafficPhase::RolledBack, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("step 1 (1%): unhealthy") || reason.starts_with("step 2 (5%): unhealthy"), "reason: {reason}");
        // Weights restored in HAProxy itself, instances back on the old build.
        assert_eq!(fleet.stats().await?.weights(), original);
        assert_eq!(status.weights, original);
        for spec in fleet.fleet.instances() {
            assert_eq!(fleet.fleet.probe(&spec.id).await.map(|r| r.version).as_deref(), Some("4.0.0"), "{}", spec.id);
        }
        assert_eq!(fleet.served_through(40).await?, only("4.0.0", 40));
        let ran_bad: BTreeSet<String> =
            fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest == bad.digest).map(|e| e.instance).collect();
        assert_eq!(ran_bad, canary.into_iter().collect(), "only the canaries ever ran the bad build");
        record_history(&s.deploys().await?, &id, "canary_bad").await
    });
}

#[test]
fn blue_green_flips_all_requests_to_green_and_keeps_blue_idle() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("profile", "6.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("profile", "6.1.0", 0.002, 5)).await?;
        let options = BalancedOptions { rps: 150, idle: 3, ..BalancedOptions::new("profile", "bg-flip", 6) };
        let fleet = BalancedFleet::start(&s.home, options, base, &s.options.dir).await?;
        assert_eq!(fleet.served_through(20).await?, only("6.0.0", 20));
        let traffic = strategies(s).await?;

        let id = traffic.start_bluegreen(bluegreen_request("profile", &fleet, next, 2_000)).await?;
        let flipped = wait_for("the flip", DEPLOY_DEADLINE, || async {
            let st = traffic.bluegreen_status(&id).await?;
            Ok((st.phase == TrafficPhase::Flipped || st.phase.is_final()).then_some(st))
        })
        .await?;
        assert_eq!(flipped.phase, TrafficPhase::Flipped, "{flipped:#?}");
        assert_eq!(fleet.served_through(40).await?, only("6.1.0", 40));

        let status = tokio::time::timeout(DEPLOY_DEADLINE, traffic.bluegreen_result(&id)).await??;
        assert_eq!(status.phase, TrafficPhase::Succeeded, "{status:#?}");
        assert_eq!(status.last_verdict.as_ref().map(|v| v.verdict), Some(Verdict::Pass));
        let stats = fleet.stats().await?;
        for server in &stats.servers {
            let green = status.new_set.contains(&server.name);
            assert_eq!(server.weight, u32::from(green), "{}", server.name);
        }
        assert_eq!(fleet.served_through(40).await?, only("6.1.0", 40));
        // Blue idles on the old build: the green set of the next deploy.
        for id in &status.old_set {
            assert_eq!(fleet.fleet.probe(id).await.map(|r| r.version).as_deref(), Some("6.0.0"), "{id}");
        }
        record_history(&s.deploys().await?, &id, "bluegreen_flip").await
    });
}

#[test]
fn blue_green_flips_back_to_blue_on_request() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("billing", "7.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("billing", "7.1.0", 0.002, 5)).await?;
        let options = BalancedOptions { rps: 150, idle: 3, ..BalancedOptions::new("billing", "bg-back", 6) };
        let fleet = BalancedFleet::start(&s.home, options, base, &s.options.dir).await?;
        let original = fleet.stats().await?.weights();
        let traffic = strategies(s).await?;

        let id = traffic.start_bluegreen(bluegreen_request("billing", &fleet, next, 600_000)).await?;
        wait_for("the flip", DEPLOY_DEADLINE, || async {
            let st = traffic.bluegreen_status(&id).await?;
            anyhow::ensure!(!st.phase.is_final(), "ended before the flip: {st:#?}");
            Ok((st.phase == TrafficPhase::Flipped).then_some(()))
        })
        .await?;
        assert_eq!(fleet.served_through(40).await?, only("7.1.0", 40));

        let after = traffic.flip_back(&id, "error budget burning").await?;
        // The update returns once blue takes every request.
        assert_eq!(fleet.served_through(40).await?, only("7.0.0", 40));
        assert_eq!(fleet.stats().await?.weights(), original);
        assert_eq!(after.weights, original);
        assert!(traffic.flip_back(&id, "again").await.is_err(), "a second flip back is refused");

        let status = tokio::time::timeout(DEPLOY_DEADLINE, traffic.bluegreen_result(&id)).await??;
        assert_eq!(status.phase, TrafficPhase::RolledBack, "{status:#?}");
        assert_eq!(status.reason.as_deref(), Some("flipped back: error budget burning"));
        for spec in fleet.fleet.instances() {
            assert_eq!(fleet.fleet.probe(&spec.id).await.map(|r| r.version).as_deref(), Some("7.0.0"), "{}", spec.id);
        }
        record_history(&s.deploys().await?, &id, "bluegreen_flip_back").await
    });
}

#[test]
fn a_drained_server_takes_no_new_requests_until_ready() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("drain", "8.0.0", 0.0, 1)).await?;
        let fleet = BalancedFleet::start(&s.home, BalancedOptions::new("drain", "drain", 3), base, &s.options.dir).await?;
        let api = fleet.runtime();
        let drained = vec![fleet.ids()[0].clone()];
        let sessions = |stats: signalbox_domain::traffic::LbStats| stats.sessions()[&drained[0]];

        let previous = api.set_state("drain", &drained, AdminState::Drain).await?;
        assert_eq!(previous[&drained[0]], AdminState::Ready);
        let before = sessions(fleet.stats().await?);
        fleet.served_through(30).await?;
        assert_eq!(sessions(fleet.stats().await?), before, "a drained server got new requests");

        // Idempotent: setting ready twice is the same as once.
        api.set_state("drain", &drained, AdminState::Ready).await?;
        api.set_state("drain", &drained, AdminState::Ready).await?;
        fleet.served_through(30).await?;
        // Back in rotation (HAProxy lets a returning server catch up, so not exactly a third).
        let after = sessions(fleet.stats().await?);
        assert!(after >= before + 10, "back in the round robin over 3 servers: {before} -> {after}");
        Ok(())
    });
}
