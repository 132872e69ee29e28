//! The deploy API over real gRPC: an in-process server on a loopback port, a tonic client, the
//! shared dev server and worker process, and small real fleets under load.

use signalbox_activities::fleet::Inventory;
use signalbox_activities::store::digest_of;
use signalbox_domain::{Artifact, BatchPlan, BatchStep, DeployRequest, DeployStatus, Digest, Phase, deploy_workflow_id};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish, request};
use signalbox_proto::pb;
use signalbox_tests::{GrpcApi, run, stack};
use signalbox_proto::pb::deploy_service_client::DeployServiceClient;
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

/// Runs the real `signalbox` CLI; returns its exit code, stdout and stderr.
async fn signalbox(args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::process::Command::new(signalbox_devstack::workspace_binary("signalbox")?).args(args).env_remove("SIGNALBOX_API").output().await?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

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

async fn assert_untouched(fleet: &LoadedFleet) -> anyhow::Result<()> {
    let served = fleet.served_versions().await;
    assert!(served.iter().all(|v| v.as_deref() == Some("1.0.0")), "instances answer {served:?}");
    let ops: Vec<String> = fleet.fleet.oplog()?.into_iter().map(|e| e.deploy_id).filter(|d| d != "provision").collect();
    assert!(ops.is_empty(), "the fleet was operated on by {ops:?}");
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
        let cases: Vec<(&str, pb::StartDeployRequest, &Digest, &str)> = vec![
            ("unknown artifact", request(service, service, unknown.clone()).into(), &unknown.digest, "artifact.digest"),
            ("empty fleet", request(service, empty, next.clone()).into(), &next.digest, "fleet.name"),
            ("plan short of 100%", DeployRequest { batch_plan: short_plan, ..good() }.into(), &next.digest, "batch_plan.steps[1].percent"),
            ("no artifact", pb::StartDeployRequest { artifact: None, ..good().into() }, &next.digest, "artifact"),
            (
                "analysis policy breaking a rule",
                pb::StartDeployRequest { analysis_policy_json: WEIGHTLESS_POLICY.into(), ..good().into() },
                &next.digest,
                "analysis_policy_json.metrics[1].weight",
            ),
            (
                "analysis policy that is not JSON",
                pb::StartDeployRequest { analysis_policy_json: "{metrics: error_rate}".into(), ..good().into() },
                &next.digest,
                "analysis_policy_json",
            ),
        ];
        for (case, req, digest, field) in cases {
            let refusal = api.client.start_deploy(req).await.expect_err(case);
            assert_eq!(refusal.code(), Code::InvalidArgument, "{case}: {refusal:?}");
            assert!(refusal.message().starts_with(&format!("{field}: ")), "{case}: the message names another field: {}", refusal.message());
            let id = deploy_workflow_id(service, digest);
            let lookup = api.status(&id).await.expect_err("no deploy may exist after a refusal");
            assert_eq!(lookup.code(), Code::NotFound, "{case}: {lookup:?}");
            assert_untouched(&fleet).await?;
        }

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
        let lookup = api.status(&deploy_workflow_id(service, &next.digest)).await.expect_err("no deploy may exist after a refusal");
        assert_eq!(lookup.code(), Code::NotFound, "{lookup:?}");
        assert_untouched(&fleet).await?;
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
fn a_duplicate_start_is_refused_and_the_first_deploy_goes_on() {
    run(async {
        let s = stack().await;
        let mut api = Api::start(s).await?;
        let service = "duplicate";
        let (fleet, next) = fleet_of(s, service).await?;
        let req = pb::StartDeployRequest::from(request(service, service, next.clone()));

        let id = api.client.start_deploy(req.clone()).await?.into_inner().deploy_id;
        let again = api.client.start_deploy(req).await.expect_err("an artifact is deployed to a service once");
        assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
        assert!(again.message().contains(&id), "{}", again.message());

        let status = signalbox_devstack::wait_for("the first deploy to end", DEPLOY_DEADLINE, || {
            let (mut client, id) = (api.client.clone(), id.clone());
            async move { Ok(get(&mut client, &id).await.map(|s| s.phase.is_final().then_some(s))?) }
        })
        .await?;
        assert_eq!(status.phase, Phase::Succeeded, "{status:#?}");
        assert_eq!(status.instances_per_version, [("1.1.0".to_owned(), FLEET_SIZE as u32)].into());
        let served = fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some("1.1.0")), "instances answer {served:?}");
        let deployers: std::collections::BTreeSet<String> = fleet.fleet.oplog()?.into_iter().map(|e| e.deploy_id).collect();
        assert_eq!(deployers, ["provision".to_owned(), id].into(), "only the first deploy acted on the fleet");
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
        assert_eq!(id, deploy_workflow_id(service, &next.digest));
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
