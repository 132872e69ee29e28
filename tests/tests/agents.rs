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
async fn deploy(api: &GrpcApi, target: &str, digest: &str) -> anyhow::Result<(Option<i32>, String, String)> {
    let args = [
        "deploy", "start", "--api", &api.url, "--service", SERVICE, "--target-kind", "agent", "--target", target, "--artifact-digest", digest, "--health-window-ms", "1000",
        "--health-samples", "3", "--health-min-requests", "8", "--bake-ms", "500", "--rollback-window-ms", "0", "--deployer", "ci@example", "--watch",
    ];
    let (code, out, err) = tokio::time::timeout(DEPLOY_DEADLINE, signalbox(&args)).await??;
    Ok((code, format!("{out}{err}"), out.lines().next().unwrap_or_default().to_owned()))
}

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

        let (code, out, _) = deploy(&api, "web", &v2).await?;
        assert_eq!(code, Some(0), "a good build succeeds: {out}");
        assert_eq!(fleet.answers().await, vec![Some("2.0.0".to_owned()); 20], "every host answers with the new version");
        // Each region's cache fetched the build from the origin once, for its 6 or 7 hosts.
        let fetched = world.origin_fetches(&v2.parse()?)?;
        let once: BTreeMap<String, usize> = AGENT_REGIONS.iter().map(|r| ((*r).to_owned(), 1)).collect();
        assert_eq!(fetched, once, "origin fetches of the build by region");

        let (code, out, id) = deploy(&api, "web", &v3).await?;
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
