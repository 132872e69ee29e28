//! The deploy API over real gRPC: an in-process server on a loopback port, a tonic client, the
//! shared dev server and worker process, and small real fleets under load.

use signalbox_domain::{Artifact, BatchPlan, BatchStep, DeployRequest, DeployStatus, HealthPolicy, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish, request};
use signalbox_proto::pb;
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
use signalbox_store::digest_of;
use signalbox_substrate_local::Inventory;
use signalbox_tests::{GrpcApi, deploys_of, run, signalbox, stack};
use tonic::Code;
use tonic::transport::Channel;

/// Instances per fleet: enough for three batches under the default plan (1, 2, 4).
const FLEET_SIZE: usize = 4;
const RPS: u32 = 200;

/// An analysis policy for a one-instance canary serving ~50 requests a one-second window: a
/// static 5% error ceiling fails a broken build from its first window, noise floors keep a
/// few near-identical stable readings from failing on noise (see tests/tests/analysis_engine.rs).
const ANALYSIS_POLICY: &str = r#"{
    "metrics": [
        {"name": "error_rate", "critical": true, "thresholds": {"max": 0.05}, "zscore": {"min_stddev": 0.01}},
        {"name": "p99_ms", "critical": true, "zscore": {"min_stddev": 10.0}, "comparison": {"allowed_increase": 1.5}}
    ],
    "rules": {"required_passes": 3},
    "low_traffic": {"min_requests": 10}
}"#;

/// The policy above with the second metric weighing nothing.
const WEIGHTLESS_POLICY: &str = r#"{"metrics": [{"name": "error_rate"}, {"name": "p99_ms", "weight": 0}]}"#;

/// The test's deploy API; see [`GrpcApi`].
struct Api(GrpcApi);

impl std::ops::Deref for Api {
    type Target = GrpcApi;

    fn deref(&self) -> &GrpcApi {
        &self.0
    }
}

impl std::ops::DerefMut for Api {
    fn deref_mut(&mut self) -> &mut GrpcApi {
        &mut self.0
    }
}

impl Api {
    async fn start(s: &Stack) -> anyhow::Result<Self> {
        Ok(Self(GrpcApi::start(s).await?))
    }

    async fn status(&mut self, id: &str) -> Result<DeployStatus, tonic::Status> {
        get(&mut self.0.client, id).await
    }

    /// Shuts the server down and checks that it stopped cleanly.
    async fn stop(self) -> anyhow::Result<()> {
        self.0.stop().await
    }
}

/// GetDeploy, read back as a domain status.
async fn get(client: &mut DeployServiceClient<Channel>, id: &str) -> Result<DeployStatus, tonic::Status> {
    let wire = client.get_deploy(pb::GetDeployRequest { deploy_id: id.to_owned() }).await?.into_inner();
    DeployStatus::try_from(wire).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// Two builds of `service` in the store, and a fleet named after it running the first.
async fn fleet_of(s: &Stack, service: &str) -> anyhow::Result<(LoadedFleet, Artifact)> {
    let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build(service, "1.1.0", 0.002, 5)).await?;
    let fleet = LoadedFleet::start(&s.home, service, FLEET_SIZE, base, RPS, &s.options.dir).await?;
    Ok((fleet, next))
}

/// Nothing was done to the fleet, and no deploy of `service` runs: a refused request starts
/// nothing, or (refused by the worker's world) ended failed before changing anything.
async fn assert_untouched(s: &Stack, service: &str, fleet: &LoadedFleet) -> anyhow::Result<()> {
    let served = fleet.served_versions().await;
    assert!(served.iter().all(|v| v.as_deref() == Some("1.0.0")), "instances answer {served:?}");
    let ops: Vec<String> = fleet.fleet.oplog()?.into_iter().map(|e| e.deploy_id).filter(|d| d != "provision").collect();
    assert!(ops.is_empty(), "the fleet was operated on by {ops:?}");
    // Visibility lags the workflows; each deploy's own status does not.
    let deploys = s.deploys().await?;
    for (id, _) in deploys_of(&deploys, service).await? {
        let status = deploys.status(&id).await?;
        assert_eq!((status.phase, status.current_batch), (Phase::Failed, 0), "a refused deploy {id} may only have failed before changing anything: {status:#?}");
    }
    Ok(())
}

#[test]
fn bad_requests_are_refused_naming_the_field_and_change_nothing() {
    run(async {
        let s = stack().await;
        let mut api = Api::start(s).await?;
        let service = "refusals";
        let (fleet, next) = fleet_of(s, service).await?;
        // A fleet that exists but has no instances: its inventory lists none.
        let empty = "refusals-empty";
        std::fs::create_dir_all(s.home.fleet_dir(empty))?;
        let binary = signalbox_devstack::workspace_binary("signalbox-demo-service")?;
        Inventory { fleet: empty.into(), service_binary: binary, instances: vec![] }.save(&s.home.fleet_dir(empty).join("inventory.json"))?;

        let good = || request(service, service, next.clone());
        let unknown = Artifact { digest: digest_of(b"a build nobody published"), ..next.clone() };
        let short_plan = BatchPlan { steps: vec![BatchStep::Percent(10.0), BatchStep::Percent(50.0)] };
        let wrong_version = Artifact { version: "9.9.9".into(), ..next.clone() };
        let huge = HealthPolicy { samples: u32::MAX, ..HealthPolicy::default() };
        let cases: Vec<(&str, pb::StartDeployRequest, &str)> = vec![
            // Refused by the worker's world, at preflight: the API waits for its answer.
            ("unknown artifact", request(service, service, unknown).into(), "artifact.digest"),
            ("empty fleet", request(service, empty, next.clone()).into(), "target.name"),
            ("version other than the store's record", request(service, service, wrong_version).into(), "artifact.version"),
            // Refused by the API itself.
            ("plan short of 100%", DeployRequest { batch_plan: short_plan, ..good() }.into(), "batch_plan.steps[1].percent"),
            ("no artifact", pb::StartDeployRequest { artifact: None, ..good().into() }, "artifact"),
            ("no target", pb::StartDeployRequest { target: None, ..good().into() }, "target"),
            ("samples near the u32 maximum", DeployRequest { health: huge, ..good() }.into(), "health.samples"),
            ("a reason-sized deployer", DeployRequest { deployer: "d".repeat(500), ..good() }.into(), "deployer"),
            (
                "analysis policy breaking a rule",
                pb::StartDeployRequest { analysis_policy_json: WEIGHTLESS_POLICY.into(), ..good().into() },
                "analysis_policy_json.metrics[1].weight",
            ),
            (
                "analysis policy that is not JSON",
                pb::StartDeployRequest { analysis_policy_json: "{metrics: error_rate}".into(), ..good().into() },
                "analysis_policy_json",
            ),
        ];
        for (case, req, field) in cases {
            let refusal = api.client.start_deploy(req).await.expect_err(case);
            assert_eq!(refusal.code(), Code::InvalidArgument, "{case}: {refusal:?}");
            assert!(refusal.message().starts_with(&format!("{field}: ")), "{case}: the message names another field: {}", refusal.message());
            assert_untouched(s, service, &fleet).await?;
        }
        // A request larger than the API takes is refused before it is read.
        let oversized = pb::StartDeployRequest { analysis_policy_json: " ".repeat(signalbox_api::grpc::MAX_REQUEST + 1), ..good().into() };
        let refusal = api.client.start_deploy(oversized).await.expect_err("an oversized request");
        assert_eq!(refusal.code(), Code::OutOfRange, "{refusal:?}");
        assert!(refusal.message().contains("too large"), "{}", refusal.message());
        assert_untouched(s, service, &fleet).await?;

        // The CLI sends the policy file as written and prints the server's refusal.
        let policy = s.options.dir.join("weightless-policy.json");
        std::fs::write(&policy, WEIGHTLESS_POLICY)?;
        let digest = next.digest.to_string();
        let start = [
            "deploy", "start", "--api", &api.url, "--service", service, "--fleet", service, "--artifact-digest", &digest, "--git-sha",
            &next.git_sha, "--version", &next.version, "--deployer", "ci",
        ];
        let (code, _, err) = signalbox(&[&start[..], &["--analysis-policy", &policy.to_string_lossy()]].concat()).await?;
        assert_eq!((code, err.as_str()), (Some(2), "error: analysis_policy_json.metrics[1].weight: must be > 0\n"));
        assert_untouched(s, service, &fleet).await?;
        api.stop().await
    });
}

#[test]
fn a_deploy_started_with_an_analysis_policy_is_judged_by_the_engine() {
    run(async {
        let s = stack().await;
        let mut api = Api::start(s).await?;
        let service = "analysed";
        let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build(service, "1.1.0", 0.30, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, service, FLEET_SIZE, base, RPS, &s.options.dir).await?;

        let req = pb::StartDeployRequest { analysis_policy_json: ANALYSIS_POLICY.into(), ..request(service, service, bad).into() };
        let id = api.client.start_deploy(req).await?.into_inner().deploy_id;
        let mut stream = api.client.watch_deploy(pb::WatchDeployRequest { deploy_id: id.clone() }).await?.into_inner();
        let mut last = None;
        tokio::time::timeout(DEPLOY_DEADLINE, async {
            while let Some(snapshot) = stream.message().await? {
                last = Some(snapshot);
            }
            anyhow::Ok(())
        })
        .await??;

        // WatchDeploy's last snapshot carries the engine's verdict on batch 1.
        let last = last.expect("the watch sends at least the current status");
        assert_eq!((last.phase(), last.current_batch), (pb::Phase::RolledBack, 1), "{last:#?}");
        let analysis = last.last_analysis.clone().expect("the engine's verdict is on the wire");
        assert_eq!(analysis.decision(), pb::Verdict::Fail, "{analysis:#?}");
        assert!(!analysis.rule.is_empty() && analysis.summary.starts_with("Fail ("), "decision and rule: {analysis:#?}");
        assert!(analysis.metrics.iter().any(|m| m.starts_with("error_rate: High")), "{analysis:#?}");
        assert!(analysis.metrics.iter().any(|m| m.starts_with("p99_ms: ")), "one line per policy metric: {analysis:#?}");
        assert!(last.last_verdict.is_none(), "the first-version gate did not judge");
        assert!(last.reason().starts_with("batch 1: analysis failed: Fail"), "{last:#?}");

        // GetDeploy and `signalbox deploy get` show the same verdict.
        let status = api.status(&id).await?;
        assert_eq!(status, DeployStatus::try_from(last.clone())?);
        let (code, out, err) = signalbox(&["deploy", "get", "--api", &api.url, &id]).await?;
        assert_eq!(code, Some(0), "{err}");
        let printed: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(printed["last_analysis"]["decision"], "fail", "{out}");
        assert_eq!(printed["last_analysis"]["rule"], analysis.rule.as_str(), "{out}");
        assert_eq!(printed["last_analysis"]["metrics"], serde_json::json!(analysis.metrics), "{out}");

        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("1.0.0")), "instances answer {served:?}");
        api.stop().await
    });
}

#[test]
fn a_watched_deploy_streams_every_batch_and_ends_succeeded() {
    run(async {
        let s = stack().await;
        let mut api = Api::start(s).await?;
        let service = "watched";
        let (fleet, next) = fleet_of(s, service).await?;

        let started = api.client.start_deploy(pb::StartDeployRequest::from(request(service, service, next.clone()))).await?;
        let id = started.into_inner().deploy_id;
        assert!(id.starts_with("deploy/watched/watched/"), "deploy/<service>/<target>/<suffix>: {id}");
        let mut stream = api.client.watch_deploy(pb::WatchDeployRequest { deploy_id: id.clone() }).await?.into_inner();
        let mut snapshots = Vec::new();
        tokio::time::timeout(DEPLOY_DEADLINE, async {
            while let Some(snapshot) = stream.message().await? {
                snapshots.push(snapshot);
            }
            anyhow::Ok(())
        })
        .await??;

        let last = snapshots.last().expect("the watch sends at least the current status").clone();
        assert_eq!(last.phase(), pb::Phase::Succeeded, "{last:#?}");
        let statuses: Vec<DeployStatus> = snapshots.into_iter().map(DeployStatus::try_from).collect::<Result<_, _>>()?;
        assert!(statuses.windows(2).all(|w| w[0] != w[1]), "a snapshot is sent only when the status changed");
        assert_eq!(statuses.iter().filter(|s| s.phase.is_final()).count(), 1, "the stream ends after the final phase");
        let total = statuses.last().map(|s| s.total_batches).unwrap_or_default();
        assert_eq!(total, 3, "the default plan on {FLEET_SIZE} instances");
        for batch in 1..=total {
            assert!(
                statuses.iter().any(|s| s.current_batch == batch && !s.phase.is_final()),
                "no snapshot of batch {batch} in progress: {statuses:#?}"
            );
        }
        assert_eq!(api.status(&id).await?, statuses[statuses.len() - 1], "GetDeploy returns the final status");
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("1.1.0")), "instances answer {served:?}");
        api.stop().await
    });
}
