//! Operator control over real gRPC: an in-process deploy API on a loopback port, a tonic client
//! and the real `signalbox` CLI, against the shared dev server, the worker process and small
//! real fleets under load. What the rules decide is proven in `control.rs`; here, that every
//! operation crosses the wire with its status codes, messages and state.

use std::future::Future;
use std::time::Duration;

use signalbox_domain::approval::GateOutcome;
use signalbox_domain::control::Action;
use signalbox_domain::{ApprovalPolicy, Artifact, BatchPlan, BatchStep, DeployRequest, DeployStatus, OnExpiry, Phase};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, demo_build, publish, request};
use signalbox_proto::pb;
use signalbox_tests::{GrpcApi, run, stack};
use tonic::Code;

const FLEET_SIZE: usize = 4;
const RPS: u32 = 200;
/// How long a held deploy is watched for a change that must not come: longer than a batch step
/// (a bake plus a health evaluation) takes here.
const HOLD_WINDOW: Duration = Duration::from_secs(7);

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

    /// GetDeploy, read back as a domain status.
    async fn status(&self, id: &str) -> anyhow::Result<DeployStatus> {
        let wire = self.0.client.clone().get_deploy(pb::GetDeployRequest { deploy_id: id.to_owned() }).await?.into_inner();
        Ok(DeployStatus::try_from(wire)?)
    }

    /// Waits until GetDeploy answers a status that satisfies `ready`.
    async fn until(&self, id: &str, what: &str, deadline: Duration, ready: impl Fn(&DeployStatus) -> bool) -> anyhow::Result<DeployStatus> {
        signalbox_devstack::wait_for(what, deadline, || async {
            let st = self.status(id).await?;
            Ok(ready(&st).then_some(st))
        })
        .await
    }

    async fn start_deploy(&self, req: DeployRequest) -> anyhow::Result<String> {
        Ok(self.0.client.clone().start_deploy(pb::StartDeployRequest::from(req)).await?.into_inner().deploy_id)
    }

    /// Shuts the server down and checks that it stopped cleanly.
    async fn stop(self) -> anyhow::Result<()> {
        self.0.stop().await
    }
}

fn control(id: &str, by: &str, reason: &str) -> pb::ControlDeployRequest {
    pb::ControlDeployRequest { deploy_id: id.to_owned(), by: by.to_owned(), reason: reason.to_owned() }
}

fn approve(id: &str, approver: &str, reason: &str) -> pb::ApproveDeployRequest {
    pb::ApproveDeployRequest { deploy_id: id.to_owned(), approver: approver.to_owned(), reason: reason.to_owned() }
}

/// A refusal's code and message; panics on success.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("the operation must be refused");
    (status.code(), status.message().to_owned())
}

/// One test's fleet on 1.0.0 (service and fleet share the name) and the 1.1.0 build.
async fn fleet_of(s: &Stack, service: &str) -> anyhow::Result<(LoadedFleet, Artifact)> {
    let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
    let next = publish(&s.home, demo_build(service, "1.1.0", 0.002, 5)).await?;
    let fleet = LoadedFleet::start(&s.home, service, FLEET_SIZE, base, RPS, &s.options.dir).await?;
    Ok((fleet, next))
}

/// A deploy of `next` in batches of 1, 2 and 4 instances (cumulative), baking `bake_ms`.
fn three_batches(service: &str, next: &Artifact, bake_ms: u64) -> DeployRequest {
    let mut req = request(service, service, next.clone());
    req.batch_plan = BatchPlan { steps: [1, 2, 4].into_iter().map(BatchStep::Count).collect() };
    req.bake_ms = bake_ms;
    req
}

/// Instances restarted onto `next` by deploy `id`.
fn onto(fleet: &LoadedFleet, id: &str, next: &Artifact) -> anyhow::Result<usize> {
    Ok(fleet.fleet.oplog()?.into_iter().filter(|e| e.deploy_id == id && e.op == "restart" && e.digest == next.digest).count())
}

async fn assert_all_serve(fleet: &LoadedFleet, version: &str) {
    let served = fleet.served_versions().await;
    assert!(served.iter().all(|v| v.as_deref() == Some(version)), "instances answer {served:?}, not all {version}");
}

/// Watches for [`HOLD_WINDOW`] that `check` finds nothing wrong (it returns what broke, if anything).
async fn stays<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    // `Some` ends the wait: something broke, or the check itself failed.
    let broke = signalbox_devstack::wait_for(what, HOLD_WINDOW, || {
        let check = check();
        async move { Ok(check.await.transpose()) }
    })
    .await;
    match broke {
        // The deadline passed without a break: it held throughout.
        Err(_) => Ok(()),
        Ok(Ok(broken)) => anyhow::bail!("{what}: {broken}"),
        Ok(Err(e)) => Err(e),
    }
}

/// Runs the real `signalbox` CLI as `$SIGNALBOX_DEPLOYER`; returns its exit code, stdout, stderr.
async fn signalbox(deployer: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = tokio::process::Command::new(signalbox_devstack::workspace_binary("signalbox")?)
        .args(args)
        .env("SIGNALBOX_DEPLOYER", deployer)
        .env_remove("SIGNALBOX_API")
        .output()
        .await?;
    Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn approval_gates_wait_for_a_named_approver_through_the_api_and_the_cli() {
    run(async {
        let s = stack().await;
        let api = Api::start(s).await?;
        let service = "api-gated";
        let (fleet, next) = fleet_of(s, service).await?;
        let mut req = three_batches(service, &next, 500);
        req.approval = Some(ApprovalPolicy {
            before_batches: vec![2, 3],
            approvers: vec!["alice".into(), "bob".into()],
            quorum: 1,
            allow_self_approval: false,
            expiry_ms: 10 * 60 * 1000,
            on_expiry: OnExpiry::Abort,
        });
        let id = api.start_deploy(req).await?;

        let waiting = api.until(&id, "the gate before batch 2", Duration::from_secs(90), |s| s.phase == Phase::AwaitingApproval).await?;
        assert_eq!((waiting.current_batch, waiting.gates.len(), waiting.gates[0].before_batch), (1, 1, 2), "{waiting:#?}");
        let wire = api.client.clone().get_deploy(pb::GetDeployRequest { deploy_id: id.clone() }).await?.into_inner();
        assert_eq!(wire.phase(), pb::Phase::AwaitingApproval);
        assert_eq!(wire.gates[0].outcome, None, "an open gate has no outcome on the wire");

        let (code, message) = refused(api.client.clone().approve_deploy(approve(&id, "mallory", "me")).await);
        assert_eq!(code, Code::FailedPrecondition, "{message}");
        assert_eq!(message, "mallory is not an approver of this deploy (approvers: alice, bob)");
        assert_eq!(api.status(&id).await?.phase, Phase::AwaitingApproval, "a refused approval changes nothing");
        assert_eq!(onto(&fleet, &id, &next)?, 1, "nothing past batch 1 before approval");

        let answered = api.client.clone().approve_deploy(approve(&id, "alice", "canary is clean")).await?.into_inner();
        let answered = DeployStatus::try_from(answered)?;
        let approvals: Vec<(&str, &str)> = answered.gates[0].approvals.iter().map(|a| (a.by.as_str(), a.reason.as_str())).collect();
        assert_eq!(approvals, [("alice", "canary is clean")]);

        // The gate before batch 3 through the real CLI: a stranger is refused with exit 2 and
        // the deploy's reason; bob (as $SIGNALBOX_DEPLOYER, without --approver) opens it.
        let second = api.until(&id, "the gate before batch 3", Duration::from_secs(90), |s| s.open_gate().is_some_and(|g| g.before_batch == 3)).await?;
        assert_eq!(second.gates[0].outcome, Some(GateOutcome::Approved));
        let (code, out, err) = signalbox("mallory", &["deploy", "approve", &id, "--api", &api.url]).await?;
        assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
        assert!(err.contains("mallory is not an approver"), "{err}");
        let (code, out, err) = signalbox("bob", &["deploy", "approve", &id, "--api", &api.url, "--reason", "batch 2 holds up"]).await?;
        assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
        assert!(out.contains("approve by bob: batch 2 holds up"), "{out}");

        let done = api.until(&id, "the deploy to end", DEPLOY_DEADLINE, |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        let gates: Vec<(u32, Option<GateOutcome>, Vec<&str>)> =
            done.gates.iter().map(|g| (g.before_batch, g.outcome, g.approvals.iter().map(|a| a.by.as_str()).collect())).collect();
        assert_eq!(gates, [(2, Some(GateOutcome::Approved), vec!["alice"]), (3, Some(GateOutcome::Approved), vec!["bob"])]);
        let audit: Vec<(Action, &str)> = done.audit.iter().map(|e| (e.action, e.by.as_str())).collect();
        assert_eq!(audit, [(Action::Approve, "alice"), (Action::Approve, "bob")]);
        assert_all_serve(&fleet, "1.1.0").await;
        api.stop().await
    });
}

#[test]
fn a_paused_deploy_holds_until_resumed_through_the_api() {
    run(async {
        let s = stack().await;
        let api = Api::start(s).await?;
        let service = "api-paused";
        let (fleet, next) = fleet_of(s, service).await?;
        let id = api.start_deploy(three_batches(service, &next, 1_000)).await?;
        api.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        api.client.clone().pause_deploy(control(&id, "ops", "hold for a look")).await?;
        let held = api.until(&id, "batch 1 to be judged while paused", Duration::from_secs(60), |s| s.paused && s.last_analysis.is_some()).await?;
        assert_eq!(held.current_batch, 1, "{held:#?}");
        let restarted = onto(&fleet, &id, &next)?;
        assert_eq!(restarted, 1, "batch 1 is one instance");
        // Held: for longer than a batch step takes, the batch and the fleet stay as they are.
        stays("the paused deploy holds after batch 1", || async {
            let st = api.status(&id).await?;
            let now = onto(&fleet, &id, &next)?;
            Ok((st.current_batch != 1 || !st.paused || now != restarted).then(|| format!("batch {}, paused {}, {now} restarts", st.current_batch, st.paused)))
        })
        .await?;

        api.client.clone().resume_deploy(control(&id, "ops", "looked fine")).await?;
        let done = api.until(&id, "the deploy to end", DEPLOY_DEADLINE, |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(!done.paused);
        let audit: Vec<(Action, &str, &str)> = done.audit.iter().map(|e| (e.action, e.by.as_str(), e.reason.as_str())).collect();
        assert_eq!(audit, [(Action::Pause, "ops", "hold for a look"), (Action::Resume, "ops", "looked fine")]);
        assert_all_serve(&fleet, "1.1.0").await;
        // A run with the bounded audit trail (`signalbox-bounded-audit`).
        signalbox_tests::record_history(&s.deploys().await?, &id, "api_paused_bounded_audit").await?;
        api.stop().await
    });
}

#[test]
fn an_abort_needs_a_reason_and_then_rolls_back_through_the_api() {
    run(async {
        let s = stack().await;
        let api = Api::start(s).await?;
        let mut client = api.client.clone();
        let (code, message) = refused(client.abort_deploy(control(" ", "oncall", "why")).await);
        assert_eq!((code, message.as_str()), (Code::InvalidArgument, "deploy_id: is required"));
        let (code, message) = refused(client.abort_deploy(control("deploy/nobody/0", "oncall", "why")).await);
        assert_eq!(code, Code::NotFound, "{message}");

        let service = "api-aborted";
        let (fleet, next) = fleet_of(s, service).await?;
        // Bakes of two minutes: the deploy is still in batch 1 when it is steered.
        let id = api.start_deploy(three_batches(service, &next, 120_000)).await?;
        api.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        let halted = DeployStatus::try_from(client.halt_deploy(control(&id, "oncall", "freeze for a look")).await?.into_inner())?;
        assert!(halted.halted, "{halted:#?}");
        let (code, message) = refused(client.abort_deploy(control(&id, "oncall", "")).await);
        assert!(matches!(code, Code::InvalidArgument | Code::FailedPrecondition), "{code:?}: {message}");
        assert!(message.starts_with("reason:"), "the refusal names the field: {message}");
        let (code, message) = refused(client.bypass_deploy(control(&id, "oncall", "  ")).await);
        assert_eq!((code, message.as_str()), (Code::FailedPrecondition, "reason: an emergency bypass needs a reason"));

        let aborting = DeployStatus::try_from(client.abort_deploy(control(&id, "oncall", "wrong build")).await?.into_inner())?;
        assert_eq!(aborting.reason.as_deref(), Some("aborted by oncall: wrong build"));
        let done = api.until(&id, "the rollback to end", DEPLOY_DEADLINE, |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("aborted by oncall: wrong build"));
        let audit: Vec<(Action, &str)> = done.audit.iter().map(|e| (e.action, e.by.as_str())).collect();
        assert_eq!(audit, [(Action::Halt, "oncall"), (Action::Abort, "oncall")]);
        assert_eq!(onto(&fleet, &id, &next)?, 1, "only batch 1 ever ran the new build");
        assert_all_serve(&fleet, "1.0.0").await;

        let (code, message) = refused(client.rollback_deploy(control(&id, "oncall", "again")).await);
        assert_eq!(code, Code::FailedPrecondition, "{message}");
        assert!(message.contains("already rolled back"), "{message}");
        drop(client);
        api.stop().await
    });
}

/// A thousand pause/resume cycles, sent straight to Temporal as fast as it takes them, leave
/// the status bounded (the first entries and the latest kept, the rest counted) and `GetDeploy`
/// and `abort` answering as before.
#[test]
fn a_thousand_pause_resume_cycles_keep_the_status_bounded_and_abort_working() {
    use prost::Message;
    use signalbox_domain::Command;
    use signalbox_domain::status::{AUDIT_HEAD, AUDIT_KEPT};
    const CYCLES: usize = 1_000;
    run(async {
        let s = stack().await;
        let api = Api::start(s).await?;
        let service = "api-steered-often";
        let (fleet, next) = fleet_of(s, service).await?;
        // Bakes of two minutes: the deploy is still in batch 1 through every cycle.
        let id = api.start_deploy(three_batches(service, &next, 120_000)).await?;
        api.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        let deploys = s.deploys().await?;
        for i in 0..CYCLES {
            deploys.pause(&id, Command::new("ops", format!("look {i}"))).await?;
            deploys.resume(&id, Command::new("ops", format!("go on {i}"))).await?;
        }
        let last = format!("go on {}", CYCLES - 1);
        let st = api.until(&id, "every cycle to be recorded", Duration::from_secs(120), |s| s.audit.last().is_some_and(|e| e.reason == last)).await?;
        assert_eq!(st.audit.len(), AUDIT_KEPT, "the status keeps {AUDIT_KEPT} entries");
        assert_eq!(st.audit_total(), 2 * CYCLES as u64, "every pause and resume is counted: {} kept, {} elided", st.audit.len(), st.audit_elided);
        // The head stays as it began: pause 0, resume 0, pause 1, ...
        for (i, e) in st.audit.iter().take(AUDIT_HEAD).enumerate() {
            let (action, reason) = if i % 2 == 0 { (Action::Pause, format!("look {}", i / 2)) } else { (Action::Resume, format!("go on {}", i / 2)) };
            assert_eq!((e.action, e.reason.as_str()), (action, reason.as_str()), "audit[{i}]");
        }
        // ... and the tail is the latest, in order, right after the gap.
        let after_gap = &st.audit[AUDIT_HEAD];
        let first_kept = (AUDIT_HEAD as u64 + st.audit_elided) as usize;
        assert_eq!(after_gap.reason, if first_kept % 2 == 0 { format!("look {}", first_kept / 2) } else { format!("go on {}", first_kept / 2) });
        let wire = api.client.clone().get_deploy(pb::GetDeployRequest { deploy_id: id.clone() }).await?.into_inner();
        let size = wire.encoded_len();
        eprintln!("GetDeploy after {CYCLES} pause/resume cycles: {size} bytes, {} audit entries, {} elided", wire.audit.len(), wire.audit_elided);
        assert!(size < 32 * 1024, "GetDeploy stays small: {size} bytes");

        let aborting = DeployStatus::try_from(api.client.clone().abort_deploy(control(&id, "oncall", "enough")).await?.into_inner())?;
        assert_eq!(aborting.reason.as_deref(), Some("aborted by oncall: enough"));
        let done = api.until(&id, "the rollback to end", DEPLOY_DEADLINE, |s| s.phase.is_final()).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.audit.last().map(|e| (e.action, e.reason.as_str())), Some((Action::Abort, "enough")));
        assert_all_serve(&fleet, "1.0.0").await;
        api.stop().await
    });
}
