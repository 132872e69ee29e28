//! Releases steered through the gRPC API and the CLI, on a real dev server with the worker as a
//! process and real local fleets: a stage that waits for its approvers, the emergency bypass of
//! a soak, and an abort that rolls back the deploy in flight.

use std::collections::BTreeSet;
use std::time::Duration;

use signalbox_devstack::wait_for;
use signalbox_domain::Artifact;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, demo_build, publish};
use signalbox_proto::pb;
use signalbox_proto::pb::release_service_client::ReleaseServiceClient;
use signalbox_tests::{GrpcApi, record_history, run, signalbox, stack, temporal};
use tonic::Code;
use tonic::transport::Channel;

/// Two batches and one-second windows: quick deploys on small fleets.
const DEPLOY: &str = r#"{"batch_plan": {"steps": [{"percent": 50}, {"percent": 100}]}, "bake_ms": 500,
    "health": {"samples": 4, "sample_interval_ms": 1000, "min_requests_per_sample": 10}}"#;

fn build(service: &str, artifact: &Artifact) -> pb::ReleaseServiceBuild {
    pb::ReleaseServiceBuild { service: service.into(), artifact: Some(pb::Artifact { digest: artifact.digest.to_string(), ..Default::default() }), depends_on: vec![] }
}

async fn get(client: &mut ReleaseServiceClient<Channel>, id: &str) -> anyhow::Result<pb::ReleaseStatus> {
    Ok(client.get_release(pb::GetReleaseRequest { release_id: id.into() }).await?.into_inner())
}

/// Waits until the release's status satisfies `ok`.
async fn until(client: &ReleaseServiceClient<Channel>, id: &str, what: &str, ok: impl Fn(&pb::ReleaseStatus) -> bool) -> anyhow::Result<pb::ReleaseStatus> {
    wait_for(what, DEPLOY_DEADLINE, || {
        let mut client = client.clone();
        let ok = &ok;
        async move {
            let status = get(&mut client, id).await?;
            Ok(ok(&status).then_some(status))
        }
    })
    .await
}

fn approve(id: &str, who: &str) -> pb::ApproveReleaseRequest {
    pb::ApproveReleaseRequest { release_id: id.into(), approver: who.into(), reason: "looks fine".into() }
}

/// The instances of `fleet` ever restarted onto `artifact`.
fn ran(fleet: &LoadedFleet, artifact: &Artifact) -> anyhow::Result<BTreeSet<String>> {
    Ok(fleet.fleet.oplog()?.into_iter().filter(|e| e.op == "restart" && e.digest == artifact.digest).map(|e| e.instance).collect())
}

/// Test waits for two approvers (the deployer may not be one), then soaks for an hour; the
/// emergency bypass ends the soak, production deploys, and every step is in the audit trail.
#[test]
fn a_stage_waits_for_its_quorum_and_a_bypass_ends_its_soak() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("orders", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("orders", "1.1.0", 0.002, 5)).await?;
        let test = LoadedFleet::start(&s.home, "gated-test", 4, base.clone(), 200, &s.options.dir).await?;
        let production = LoadedFleet::start(&s.home, "gated-production", 4, base.clone(), 200, &s.options.dir).await?;
        let api = GrpcApi::start(s).await?;
        let mut client = ReleaseServiceClient::connect(api.url.clone()).await?;
        let pipeline = format!(
            r#"{{"name": "orders", "stages": [
                {{"name": "test", "soak_ms": 3600000, "targets": [{{"target": {{"name": "gated-test"}}, "instances": 4, "deploy": {DEPLOY}}}],
                  "approval": {{"approvers": ["alice", "bob", "ci"], "quorum": 2, "expiry_ms": 600000}}}},
                {{"name": "production", "targets": [{{"target": {{"name": "gated-production"}}, "instances": 4, "deploy": {DEPLOY}}}]}}]}}"#
        );
        let start = pb::StartReleaseRequest { pipeline_json: pipeline.clone(), services: vec![build("orders", &next)], deployer: "ci".into(), ..Default::default() };

        // A pipeline that breaks a rule is refused naming the field inside the file.
        let broken = pipeline.replace(r#""quorum": 2"#, r#""quorum": 3"#);
        let refused = client.start_release(pb::StartReleaseRequest { pipeline_json: broken, ..start.clone() }).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().starts_with("pipeline_json.stages[0].approval.quorum: must be 1 to 2"), "{}", refused.message());
        // So is one whose target the worker does not know, before any deploy starts.
        let lost = pipeline.replace(r#""name": "gated-production""#, r#""name": "no-such-region""#);
        let refused = client.start_release(pb::StartReleaseRequest { pipeline_json: lost, request_id: "lost".into(), ..start.clone() }).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().starts_with("pipeline_json.stages[1].targets[0].target: "), "{}", refused.message());
        assert!(ran(&test, &next)?.is_empty(), "a refused release deployed");

        let id = client.start_release(start).await?.into_inner().release_id;
        let waiting = until(&client, &id, "test's gate to open", |st| st.phase() == pb::ReleasePhase::AwaitingApproval).await?;
        assert_eq!(waiting.stages[0].phase(), pb::StagePhase::AwaitingApproval);
        assert_eq!(waiting.stages[0].deploys[0].state(), pb::ReleaseDeployState::Waiting, "nothing starts before the gate opens");
        let refused = client.approve_release(approve(&id, "ci")).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, "ci started this release and may not approve it"));
        let refused = client.approve_release(approve(&id, "mallory")).await.unwrap_err();
        assert!(refused.message().starts_with("mallory is not an approver of this release (approvers: alice, bob, ci)"), "{}", refused.message());
        assert_eq!(waiting.stages[0].awaits.as_deref(), Some("2 more approvals from alice, bob"), "the deployer is not awaited");
        let one = client.approve_release(approve(&id, "alice")).await?.into_inner();
        assert_eq!(one.phase(), pb::ReleasePhase::AwaitingApproval, "one approval of a quorum of two");
        assert_eq!(one.stages[0].awaits.as_deref(), Some("1 more approval from bob"));
        let refused = client.approve_release(approve(&id, "alice")).await.unwrap_err();
        assert_eq!(refused.message(), "alice already approved the gate of stage test");
        assert!(ran(&test, &next)?.is_empty(), "the build ran before its approval");
        // The second approval with the official temporal CLI, as an operator without ours would.
        let input = r#"{"approver": "bob", "reason": "change ticket 42"}"#;
        let (code, out, err) = temporal(s, &["workflow", "update", "execute", "--workflow-id", &id, "--name", "approve", "--input", input]).await?;
        assert_eq!(code, Some(0), "{out}{err}");
        let (code, out, err) = temporal(s, &["workflow", "query", "--workflow-id", &id, "--type", "status", "--output", "json"]).await?;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("change ticket 42"), "the query shows bob's approval: {out}");

        let soaking = until(&client, &id, "test to soak", |st| st.phase() == pb::ReleasePhase::Soaking).await?;
        let gate = soaking.stages[0].gate.clone().expect("the gate");
        assert_eq!(soaking.stages[0].awaits, None, "a closed gate awaits nobody");
        assert_eq!(gate.outcome, Some(pb::GateOutcome::Approved.into()));
        assert_eq!(gate.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        let soak_until = soaking.stages[0].soak_until.expect("the soak's end is shown");
        let in_an_hour = chrono::Utc::now().timestamp() + 3600;
        assert!((in_an_hour - 120..=in_an_hour).contains(&soak_until.seconds), "soak ends at {soak_until:?}");
        assert_eq!(ran(&test, &next)?.len(), 4);
        assert!(ran(&production, &next)?.is_empty(), "production started during test's soak");

        // The bypass needs a reason and a bounded expiry; then it ends the soak at once.
        let bypass = pb::BypassReleaseRequest { release_id: id.clone(), by: "oncall".into(), reason: String::new(), stage: String::new(), expiry_ms: 60_000, override_failed_verdict: false };
        let refused = client.bypass_release(bypass.clone()).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, "reason: an emergency bypass needs a reason"));
        let refused = client.bypass_release(pb::BypassReleaseRequest { reason: "SEV2 fix".into(), expiry_ms: 0, ..bypass.clone() }).await.unwrap_err();
        assert!(refused.message().starts_with("expiry_ms: "), "{}", refused.message());
        let refused = client.bypass_release(pb::BypassReleaseRequest { reason: "SEV2 fix".into(), stage: "staging".into(), ..bypass.clone() }).await.unwrap_err();
        assert!(refused.message().starts_with("stage: staging is not a stage of this release"), "{}", refused.message());
        let bypassed = client.bypass_release(pb::BypassReleaseRequest { reason: "SEV2 fix".into(), ..bypass }).await?.into_inner();
        let granted = bypassed.stages[0].bypass.clone().expect("granted");
        assert_eq!((granted.by.as_str(), granted.reason.as_str(), granted.override_failed_verdict), ("oncall", "SEV2 fix", false));

        let done = until(&client, &id, "the release to end", |st| st.phase() != pb::ReleasePhase::Soaking && st.phase() != pb::ReleasePhase::Deploying).await?;
        assert_eq!(done.phase(), pb::ReleasePhase::Succeeded, "{done:#?}");
        assert!(production.served_versions().await.iter().all(|v| v.as_deref() == Some("1.1.0")));
        let audit: Vec<(pb::AuditAction, &str)> = done.audit.iter().map(|e| (e.action(), e.by.as_str())).collect();
        assert_eq!(audit, [(pb::AuditAction::Approve, "alice"), (pb::AuditAction::Approve, "bob"), (pb::AuditAction::Bypass, "oncall")]);
        assert!(done.audit[2].reason.contains("SEV2 fix"), "{:?}", done.audit[2]);

        // The CLI prints the same tree.
        let (code, out, err) = signalbox(&["release", "get", &id, "--api", &api.url]).await?;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.starts_with(&format!("{id}  pipeline orders  Succeeded  stage production")), "{out}");
        assert!(out.contains("    bypassed by oncall until ") && out.contains("  audit Approve by alice at "), "{out}");

        // The release and its deploys are found by the release's search attributes.
        let query = format!("SignalboxRelease = '{id}'");
        let found = wait_for("the release tree in visibility", Duration::from_secs(30), || async {
            let (code, out, _) = temporal(s, &["workflow", "list", "--query", &query, "--output", "json"]).await?;
            let ids: BTreeSet<String> = serde_json::from_str::<Vec<serde_json::Value>>(&out)
                .unwrap_or_default()
                .iter()
                .filter_map(|w| w["execution"]["workflowId"].as_str().map(str::to_owned))
                .collect();
            Ok((code == Some(0) && ids.len() == 3).then_some(ids))
        })
        .await?;
        assert!(found.contains(&id) && found.iter().filter(|w| w.starts_with("deploy/orders/gated-")).count() == 2, "{found:?}");
        let (_, staged, _) = temporal(s, &["workflow", "list", "--query", &format!("SignalboxRelease = '{id}' AND SignalboxStage = 'production'"), "--output", "json"]).await?;
        assert!(staged.contains(&id) && staged.contains("deploy/orders/gated-production/"), "{staged}");
        record_history(&s.deploys().await?, &id, "release_gated_bypassed").await?;
        api.stop().await
    });
}

/// An abort from the CLI while the first stage deploys: its deploy rolls back, no later stage
/// starts, the release ends Aborted with who and why.
#[test]
fn an_abort_from_the_cli_rolls_the_deploy_in_flight_back_and_stops_promotion() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("invoices", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("invoices", "1.1.0", 0.002, 5)).await?;
        let first = LoadedFleet::start(&s.home, "abort-first", 4, base.clone(), 200, &s.options.dir).await?;
        let second = LoadedFleet::start(&s.home, "abort-second", 4, base.clone(), 200, &s.options.dir).await?;
        let api = GrpcApi::start(s).await?;
        let client = ReleaseServiceClient::connect(api.url.clone()).await?;
        // A long bake: the first deploy is still under way when the abort comes.
        let slow = DEPLOY.replace(r#""bake_ms": 500"#, r#""bake_ms": 60000"#);
        let pipeline = format!(
            r#"{{"name": "invoices", "stages": [
                {{"name": "first", "targets": [{{"target": {{"name": "abort-first"}}, "instances": 4, "deploy": {slow}}}]}},
                {{"name": "second", "targets": [{{"target": {{"name": "abort-second"}}, "instances": 4, "deploy": {DEPLOY}}}]}}]}}"#
        );
        let file = s.options.dir.join("invoices-pipeline.json");
        std::fs::write(&file, pipeline)?;
        let build = format!("invoices={}", next.digest);
        let (code, out, err) = signalbox(&["release", "start", "--api", &api.url, "--pipeline", &file.to_string_lossy(), "--build", &build, "--deployer", "ci"]).await?;
        assert_eq!(code, Some(0), "{err}");
        let id = out.trim().to_owned();
        assert!(id.starts_with("release/invoices/"), "{out}");
        until(&client, &id, "the first deploy to run", |st| st.stages[0].deploys[0].state() == pb::ReleaseDeployState::Running).await?;
        wait_for("the first batch to roll out", DEPLOY_DEADLINE, || async { Ok((!ran(&first, &next)?.is_empty()).then_some(())) }).await?;

        let (code, _, err) = signalbox(&["release", "abort", &id, "--api", &api.url, "--by", "oncall"]).await?;
        assert_eq!(code, Some(2), "an abort without a reason is refused");
        assert!(err.contains("reason: an abort needs a reason"), "{err}");
        let (code, out, err) = signalbox(&["release", "abort", &id, "--api", &api.url, "--by", "oncall", "--reason", "wrong build"]).await?;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("Stopping") && out.contains("reason: aborted by oncall: wrong build"), "{out}");

        let (code, out, _) = signalbox(&["release", "watch", &id, "--api", &api.url]).await?;
        assert_eq!(code, Some(1), "a watched release that did not succeed exits 1: {out}");
        let done = get(&mut client.clone(), &id).await?;
        assert_eq!(done.phase(), pb::ReleasePhase::Aborted, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("aborted by oncall: wrong build"));
        assert_eq!(done.stages.iter().map(|st| st.phase()).collect::<Vec<_>>(), [pb::StagePhase::Aborted, pb::StagePhase::Waiting]);
        assert_eq!(done.stages[0].deploys[0].state(), pb::ReleaseDeployState::RolledBack);
        assert!(first.served_versions().await.iter().all(|v| v.as_deref() == Some("1.0.0")), "the deploy in flight rolled back");
        assert!(ran(&second, &next)?.is_empty(), "a stage after the abort started");
        let refused = client.clone().abort_release(pb::AbortReleaseRequest { release_id: id.clone(), by: "oncall".into(), reason: "again".into() }).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, "cannot abort: the release already ended Aborted"));
        record_history(&s.deploys().await?, &id, "release_aborted").await?;
        api.stop().await
    });
}

/// A bypass skips soaks and gates, never a verdict; with `override_failed_verdict` it bypasses
/// the stage's deploys too, and a build that would fail its verdict goes through, audited on
/// the deploy itself.
#[test]
fn only_the_separate_flag_lets_a_bypass_override_a_verdict() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("refunds", "1.0.0", 0.002, 5)).await?;
        let bad = publish(&s.home, demo_build("refunds", "1.1.0", 0.30, 5)).await?;
        let fleet = LoadedFleet::start(&s.home, "override-test", 4, base.clone(), 200, &s.options.dir).await?;
        let api = GrpcApi::start(s).await?;
        let mut client = ReleaseServiceClient::connect(api.url.clone()).await?;
        // A long bake, so that the bypass comes before the first verdict.
        let slow = DEPLOY.replace(r#""bake_ms": 500"#, r#""bake_ms": 30000"#);
        let pipeline = format!(r#"{{"name": "refunds", "stages": [{{"name": "test", "targets": [{{"target": {{"name": "override-test"}}, "instances": 4, "deploy": {slow}}}]}}]}}"#);
        let start = pb::StartReleaseRequest { pipeline_json: pipeline, services: vec![build("refunds", &bad)], deployer: "ci".into(), ..Default::default() };
        let id = client.start_release(start).await?.into_inner().release_id;
        let running = until(&client, &id, "the deploy to run", |st| st.stages[0].deploys[0].state() == pb::ReleaseDeployState::Running).await?;
        let deploy_id = running.stages[0].deploys[0].deploy_id.clone();
        let deploys = s.deploys().await?;
        wait_for("the first batch to bake", DEPLOY_DEADLINE, || async { Ok((deploys.status(&deploy_id).await?.phase == signalbox_domain::Phase::Baking).then_some(())) }).await?;

        let bypass = pb::BypassReleaseRequest { release_id: id.clone(), by: "oncall".into(), reason: "SEV1: the fix must ship".into(), stage: "test".into(), expiry_ms: 600_000, override_failed_verdict: false };
        client.bypass_release(bypass.clone()).await?;
        let refused = client.bypass_release(bypass.clone()).await.unwrap_err();
        assert!(refused.message().starts_with("stage test is already bypassed (by oncall"), "{}", refused.message());
        assert!(deploys.status(&deploy_id).await?.bypass.is_none(), "a plain bypass leaves the deploy's verdicts alone");
        client.bypass_release(pb::BypassReleaseRequest { override_failed_verdict: true, ..bypass }).await?;

        let done = until(&client, &id, "the release to end", |st| matches!(st.phase(), pb::ReleasePhase::Succeeded | pb::ReleasePhase::Failed)).await?;
        assert_eq!(done.phase(), pb::ReleasePhase::Succeeded, "{done:#?}");
        assert!(done.quarantined.is_empty(), "no verdict failed, so nothing is quarantined");
        let deployed = deploys.status(&deploy_id).await?;
        let granted = deployed.bypass.expect("the deploy was bypassed");
        assert_eq!((granted.by.as_str(), granted.reason.as_str()), ("oncall", "release bypass of stage test: SEV1: the fix must ship"));
        assert!(fleet.served_versions().await.iter().all(|v| v.as_deref() == Some("1.1.0")), "the overridden build went out");
        let actions: Vec<pb::AuditAction> = done.audit.iter().map(|e| e.action()).collect();
        assert_eq!(actions, [pb::AuditAction::Bypass, pb::AuditAction::Bypass]);
        assert!(done.audit[1].reason.starts_with("bypass of the gate, soak and verdicts of stage test"), "{:?}", done.audit[1]);
        record_history(&deploys, &id, "release_verdict_overridden").await?;
        api.stop().await
    });
}

/// A build quarantined by hand with the CLI is refused by a new deploy through the API, naming
/// who and why; lifting it is audited in the build's record (a second lift is refused), and the
/// build deploys again.
#[test]
fn a_quarantined_build_is_refused_until_a_lift_which_its_record_keeps() {
    run(async {
        let s = stack().await;
        let base = publish(&s.home, demo_build("ledgers", "1.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("ledgers", "1.1.0", 0.002, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "quarantine-api", 2, base, 100, &s.options.dir).await?;
        let mut api = GrpcApi::start(s).await?;
        let digest = next.digest.to_string();
        let (code, _, err) = signalbox(&["artifact", "quarantine", &digest, "--reason", "corrupts the ledger", "--by", "alice", "--api", &api.url]).await?;
        assert_eq!(code, Some(0), "{err}");

        let mut req = signalbox_localstack::request("ledgers", "quarantine-api", next.clone());
        req.dry_run = true;
        let refused = api.client.start_deploy(pb::StartDeployRequest::from(req.clone())).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let reason = refused.message();
        assert!(reason.starts_with(&format!("artifact.digest: build {digest} is quarantined by alice since ")) && reason.contains(": corrupts the ledger; lift it with"), "{reason}");

        let (code, _, err) = signalbox(&["artifact", "lift", &digest, "--reason", "false alarm: the test database was stale", "--by", "bob", "--api", &api.url]).await?;
        assert_eq!(code, Some(0), "{err}");
        let (code, _, err) = signalbox(&["artifact", "lift", &digest, "--reason", "again", "--by", "bob", "--api", &api.url]).await?;
        assert_eq!(code, Some(2), "a build not in quarantine cannot be lifted");
        assert!(err.contains(&format!("digest: build {digest} is not in quarantine")), "{err}");
        let (code, out, err) = signalbox(&["artifact", "show", &digest, "--api", &api.url]).await?;
        assert_eq!(code, Some(0), "{err}");
        let shown: serde_json::Value = serde_json::from_str(&out)?;
        let history: Vec<(String, String)> = shown["quarantine"]["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["by"].as_str().unwrap_or_default().to_owned(), e["reason"].as_str().unwrap_or_default().to_owned()))
            .collect();
        assert_eq!(history, [("alice".to_owned(), "corrupts the ledger".to_owned()), ("bob".to_owned(), "false alarm: the test database was stale".to_owned())]);
        assert!(shown["quarantine"]["active"].is_null(), "{out}");

        let again = api.client.start_deploy(pb::StartDeployRequest { request_id: "after-lift".into(), ..pb::StartDeployRequest::from(req) }).await?.into_inner().deploy_id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, s.deploys().await?.result(&again)).await??;
        assert_eq!(status.phase, signalbox_domain::Phase::Succeeded, "{status:#?}");
        api.stop().await
    });
}
