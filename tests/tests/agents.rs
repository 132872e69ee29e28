//! Real software on real hosts: agent hosts (network namespaces, each with its own address)
//! running `signalbox-agent` against a real etcd, pulling builds from a real caching proxy per
//! region (nginx) in front of the origin store. A Python service pushed with `signalbox artifact
//! push` rolls out through the deploy API; a bad build is caught in its first batch and every
//! host answers with the good build again.

use std::collections::BTreeMap;

use signalbox_domain::{Artifact, Phase};
use signalbox_localstack::DEPLOY_DEADLINE;
use signalbox_localstack::agents::AgentFleet;
use signalbox_substrate::Substrate;
use signalbox_tests::{AGENT_REGIONS, GrpcApi, agent_stack, pack_hello, push_bundle, run, signalbox};

const SERVICE: &str = "hello-py";

/// `signalbox deploy start` of `digest` to the agent target `target`, watched; its exit code,
/// output and the deploy id it printed.
async fn deploy(api: &GrpcApi, target: &str, digest: &str, extra: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    deploy_url(&api.url, target, digest, extra).await
}

/// Batches of the four-host target of the fault test: the third has two hosts.
const FAULT_BATCHES: [&str; 2] = ["--batch-counts", "1,2,4"];

#[test]
fn a_python_service_rolls_out_to_twenty_agent_hosts_in_three_regions_and_a_bad_build_rolls_back() {
    run(async {
        let (s, world) = agent_stack().await;
        let api = GrpcApi::start(s).await?;
        let dir = tempfile::tempdir()?;
        let (v1, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "1.0.0", 0.0)?, "1.0.0").await?;
        let (v2, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "2.0.0", 0.0)?, "2.0.0").await?;
        let (v3, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "3.0.0", 0.5)?, "3.0.0").await?;
        let world = world.lock().await;
        let initial = Artifact { digest: v1.parse()?, git_sha: "0a1b2c3d".into(), version: "1.0.0".into() };
        let fleet = AgentFleet::start(&world, &s.options.dir.join("web"), "web", 20, &initial, 400).await?;
        assert_eq!(fleet.answers().await, vec![Some("1.0.0".to_owned()); 20]);

        let (code, out, _) = deploy(&api, "web", &v2, &[]).await?;
        assert_eq!(code, Some(0), "a good build succeeds: {out}");
        assert_eq!(fleet.answers().await, vec![Some("2.0.0".to_owned()); 20], "every host answers with the new version");
        // Each region's cache fetched the build from the origin once, for its 6 or 7 hosts.
        let fetched = world.origin_fetches(&v2.parse()?)?;
        let once: BTreeMap<String, usize> = AGENT_REGIONS.iter().map(|r| ((*r).to_owned(), 1)).collect();
        assert_eq!(fetched, once, "origin fetches of the build by region");

        let (code, out, id) = deploy(&api, "web", &v3, &[]).await?;
        assert_eq!(code, Some(1), "a bad build does not succeed: {out}");
        let status = s.deploys().await?.result(&id).await?;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        assert!(status.reason.as_deref().unwrap_or_default().starts_with("batch 1"), "caught in the first batch: {:?}", status.reason);
        assert_eq!(fleet.answers().await, vec![Some("2.0.0".to_owned()); 20], "every host answers with the good build again");
        let audit = fleet.substrate.audit_events(&id).await?;
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["apply", "rollback"], "{audit:#?}");
        assert_eq!(audit[0].instances.len(), 1, "only the first batch's host ran the bad build");
        api.stop().await
    });
}

#[test]
fn agent_hosts_ride_out_an_agent_killed_mid_switch_a_lost_origin_an_etcd_restart_and_a_host_cut_off() {
    use std::time::Duration;

    use signalbox_agent::protocol::State;
    use signalbox_devstack::wait_for;

    run(async {
        let (s, world) = agent_stack().await;
        let api = GrpcApi::start(s).await?;
        let dir = tempfile::tempdir()?;
        let mut builds = Vec::new();
        for (version, error_rate) in [("1.0.0", 0.0), ("2.0.0", 0.0), ("4.0.0", 0.0), ("5.0.0", 0.0), ("6.0.0", 0.0)] {
            builds.push(push_bundle(&api, SERVICE, &pack_hello(dir.path(), version, error_rate)?, version).await?.0);
        }
        let mut world = world.lock().await;
        let initial = Artifact { digest: builds[0].parse()?, git_sha: "0a1b2c3d".into(), version: "1.0.0".into() };
        let mut fleet = AgentFleet::start(&world, &s.options.dir.join("faults"), "faults", 4, &initial, 200).await?;
        let answer = |v: &str| Some(v.to_owned());

        // An agent killed in the middle of a change: the one it comes back as finishes the
        // change, and starts the build exactly once.
        let v2 = Artifact { digest: builds[1].parse()?, git_sha: "0a1b2c3d".into(), version: "2.0.0".into() };
        let substrate = fleet.substrate.clone();
        let change = tokio::spawn({
            let v2 = v2.clone();
            async move { substrate.apply("fault-kill", &["h-000".to_owned()], &v2, &|_| {}).await }
        });
        let substrate = fleet.substrate.clone();
        wait_for("h-000 to start its change", Duration::from_secs(30), || {
            let substrate = substrate.clone();
            async move { Ok(substrate.observed().await?.get("h-000").filter(|o| o.state == State::Converging && o.generation > 1).map(|_| ())) }
        })
        .await?;
        fleet.kill_agent(0)?;
        fleet.start_agent(0)?;
        change.await??;
        assert_eq!(fleet.answers().await[0], answer("2.0.0"));
        assert_eq!(fleet.agent_log_lines(0, &["started", "version=2.0.0"])?, 1, "the build was started once");
        // Killed again once it runs the build: the next agent leaves the process alone.
        fleet.kill_agent(0)?;
        fleet.start_agent(0)?;
        wait_for("h-000's third agent to converge", Duration::from_secs(30), || {
            let n = fleet.agent_log_lines(0, &["converged after registering"]);
            async move { Ok((n? >= 3).then_some(())) }
        })
        .await?;
        assert_eq!(fleet.agent_log_lines(0, &["started", "version=2.0.0"])?, 1, "a running build is never restarted");

        // The origin unreachable while the caches are warm: the rollout completes from them.
        let http = reqwest::Client::new();
        for cache in world.caches.values() {
            http.get(format!("http://127.0.0.1:{}/sha256/{}", cache.port(), builds[2].trim_start_matches("sha256:"))).send().await?.error_for_status()?;
        }
        world.origin.stop()?;
        let (code, out, _) = deploy(&api, "faults", &builds[2], &FAULT_BATCHES).await?;
        assert_eq!(code, Some(0), "the caches serve the build: {out}");
        assert_eq!(fleet.answers().await, vec![answer("4.0.0"); 4]);
        world.origin.resume().await?;

        // etcd restarted in the middle of a deploy: agents and worker reconnect, the deploy resumes.
        let deploying = tokio::spawn({
            let url = api.url.clone();
            let digest = builds[3].clone();
            async move { deploy_url(&url, "faults", &digest, &FAULT_BATCHES).await }
        });
        let substrate = fleet.substrate.clone();
        let v5: signalbox_domain::Digest = builds[3].parse()?;
        wait_for("the first batch on 5.0.0", Duration::from_secs(60), || {
            let (substrate, v5) = (substrate.clone(), v5.clone());
            async move { Ok(substrate.observed().await?.get("h-000").filter(|o| o.digest.as_ref() == Some(&v5) && o.state == State::Ready).map(|_| ())) }
        })
        .await?;
        world.etcd.restart().await?;
        let (code, out, _) = deploying.await??;
        assert_eq!(code, Some(0), "the deploy resumed after etcd came back: {out}");
        assert_eq!(fleet.answers().await, vec![answer("5.0.0"); 4]);

        // A host cut off in the middle of the deploy: its batch fails, the rest roll back.
        let deploying = tokio::spawn({
            let url = api.url.clone();
            let digest = builds[4].clone();
            async move { deploy_url(&url, "faults", &digest, &FAULT_BATCHES).await }
        });
        let v6: signalbox_domain::Digest = builds[4].parse()?;
        wait_for("the second batch on 6.0.0", Duration::from_secs(60), || {
            let (substrate, v6) = (substrate.clone(), v6.clone());
            async move { Ok(substrate.observed().await?.get("h-001").filter(|o| o.digest.as_ref() == Some(&v6) && o.state == State::Ready).map(|_| ())) }
        })
        .await?;
        fleet.hosts[3].net.cut()?;
        let (code, out, id) = deploying.await??;
        assert_eq!(code, Some(1), "{out}");
        let status = s.deploys().await?.result(&id).await?;
        assert_eq!(status.phase, Phase::RolledBack, "{status:#?}");
        let reason = status.reason.clone().unwrap_or_default();
        assert!(reason.contains("h-003") && (reason.contains("lost its lease") || reason.contains("no live registration")), "the cut host's batch failed: {reason}");
        let answers = fleet.answers().await;
        assert_eq!(answers[..3], vec![answer("5.0.0"); 3], "the rest rolled back");
        assert_eq!(answers[3], None, "the cut host answers nobody");
        fleet.hosts[3].net.reconnect()?;
        wait_for("the cut host back on 5.0.0", Duration::from_secs(60), || {
            let answers = fleet.answers();
            async move { Ok((answers.await[3] == answer("5.0.0")).then_some(())) }
        })
        .await?;
        api.stop().await
    });
}

/// [`deploy`] against the API at `url` (for a deploy run in its own task).
async fn deploy_url(url: &str, target: &str, digest: &str, extra: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let args = [
        "deploy", "start", "--api", url, "--service", SERVICE, "--target-kind", "agent", "--target", target, "--artifact-digest", digest, "--health-window-ms", "1000",
        "--health-samples", "3", "--health-min-requests", "8", "--bake-ms", "500", "--rollback-window-ms", "0", "--deployer", "ci@example", "--watch",
    ];
    let mut args = args.to_vec();
    args.extend(extra);
    let (code, out, err) = tokio::time::timeout(DEPLOY_DEADLINE, signalbox(&args)).await??;
    Ok((code, format!("{out}{err}"), out.lines().next().unwrap_or_default().to_owned()))
}

#[test]
fn a_target_file_is_applied_with_the_cli_and_a_bad_one_is_refused_naming_the_field() {
    run(async {
        let (s, world) = agent_stack().await;
        let world = world.lock().await;
        let api = GrpcApi::start_with_etcd(s, &world.etcd.url()).await?;
        let dir = tempfile::tempdir()?;
        let caches = world.spec(30_000).regions;
        let mut text = String::from("name = \"payments\"\nkind = \"agent\"\nreport_timeout_ms = 30000\n");
        for (region, spec) in &caches {
            text.push_str(&format!("\n[regions.{region}]\ncache = \"{}\"\n", spec.cache));
        }
        text.push_str("\n[[hosts]]\nname = \"pay-1\"\nregion = \"us-east\"\n\n[[hosts]]\nname = \"pay-2\"\nregion = \"eu-west\"\n");
        let good = dir.path().join("payments.toml");
        std::fs::write(&good, &text)?;
        let (code, out, err) = signalbox(&["target", "apply", "--api", &api.url, good.to_str().unwrap()]).await?;
        assert_eq!(code, Some(0), "{err}");
        let applied: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(applied["caches"]["ap-south"], caches["ap-south"].cache.as_str());
        let hosts: Vec<(&str, bool)> = applied["hosts"].as_array().unwrap().iter().map(|h| (h["name"].as_str().unwrap(), h["registered"].as_bool().unwrap())).collect();
        assert_eq!(hosts, [("pay-1", false), ("pay-2", false)], "declared, no agent registered yet");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text.replace("region = \"eu-west\"", "region = \"eu-wset\"").replace("report_timeout_ms = 30000", "report_timeout_ms = 45000"))?;
        let (code, _, err) = signalbox(&["target", "apply", "--api", &api.url, bad.to_str().unwrap()]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("hosts[1].region: \"eu-wset\" is not one of the target's regions"), "{err}");
        let (code, out, _) = signalbox(&["target", "show", "--api", &api.url, "payments"]).await?;
        assert_eq!(code, Some(0));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out)?["report_timeout_ms"], 30_000, "the refused file changed nothing");
        let (_, out, _) = signalbox(&["target", "list", "--api", &api.url]).await?;
        assert!(out.lines().any(|l| l.starts_with("payments ") && l.contains("0/2")), "{out}");
        let (code, _, err) = signalbox(&["target", "show", "--api", &api.url, "nowhere"]).await?;
        assert_eq!(code, Some(2));
        assert!(err.contains("name: no target \"nowhere\" was declared"), "{err}");
        api.stop().await
    });
}

#[test]
fn a_halted_target_takes_no_step_until_the_halt_is_lifted_but_an_undo_goes_through() {
    use std::time::Duration;

    use signalbox_agent::protocol::{Desired, Keys, State};
    use signalbox_devstack::wait_for;

    run(async {
        let (s, world) = agent_stack().await;
        let api = GrpcApi::start(s).await?;
        let dir = tempfile::tempdir()?;
        let (v1, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "1.0.0", 0.0)?, "1.0.0").await?;
        let (v2, _) = push_bundle(&api, SERVICE, &pack_hello(dir.path(), "2.0.0", 0.0)?, "2.0.0").await?;
        let world = world.lock().await;
        let initial = Artifact { digest: v1.parse()?, git_sha: "0a1b2c3d".into(), version: "1.0.0".into() };
        let fleet = AgentFleet::start(&world, &s.options.dir.join("frozen"), "frozen", 1, &initial, 0).await?;
        fleet.substrate.halt("deploy-a", "halted by alice: checking a page").await?;
        let v2 = Artifact { digest: v2.parse()?, git_sha: "0a1b2c3d".into(), version: "2.0.0".into() };
        let refused = fleet.substrate.apply("deploy-b", &["h-000".to_owned()], &v2, &|_| {}).await.unwrap_err();
        assert!(refused.to_string().contains("is halted"), "{refused}");

        // A desired state written past the halt (a write racing it): the agent takes no step.
        let keys = Keys::new("frozen");
        let mut etcd = etcd_client::Client::connect([world.etcd.url()], None).await?;
        let cache = world.spec(60_000).regions[&fleet.hosts[0].region].cache.clone();
        let desired = Desired { generation: 99, digest: v2.digest.clone(), version: "2.0.0".into(), deploy_id: "deploy-b".into(), source: cache, rollback: false };
        etcd.put(keys.desired("h-000"), serde_json::to_vec(&desired)?, None).await?;
        let substrate = fleet.substrate.clone();
        let halted = wait_for("h-000 to report the halt", Duration::from_secs(30), || {
            let substrate = substrate.clone();
            async move { Ok(substrate.observed().await?.remove("h-000").filter(|o| o.generation == 99 && o.state == State::Halted)) }
        })
        .await?;
        assert!(halted.message.contains("halted by alice"), "{}", halted.message);
        assert_eq!(fleet.answers().await, [Some("1.0.0".to_owned())], "nothing changed while halted");

        // An undo is always allowed, halted or not.
        let undo = Desired { generation: 100, rollback: true, ..desired.clone() };
        etcd.put(keys.desired("h-000"), serde_json::to_vec(&undo)?, None).await?;
        wait_for("the undo to go through the halt", Duration::from_secs(30), || {
            let substrate = substrate.clone();
            async move { Ok(substrate.observed().await?.remove("h-000").filter(|o| o.generation == 100 && o.state == State::Ready)) }
        })
        .await?;
        assert_eq!(fleet.answers().await, [Some("2.0.0".to_owned())]);
        // Only the deploy that froze the target lifts its halt.
        fleet.substrate.release("deploy-b").await?;
        assert!(fleet.substrate.apply("deploy-b", &["h-000".to_owned()], &initial, &|_| {}).await.is_err(), "still halted by deploy-a");
        fleet.substrate.release("deploy-a").await?;
        fleet.substrate.apply("deploy-b", &["h-000".to_owned()], &initial, &|_| {}).await?;
        assert_eq!(fleet.answers().await, [Some("1.0.0".to_owned())], "free again once its halt was lifted");
        api.stop().await
    });
}
