//! Operator control end to end: pause, resume, halt, abort, manual rollback, approval gates and
//! the emergency bypass, against the real dev server, the worker process and real 6-instance
//! fleets under load. Some operations go through the real `temporal` CLI, as an operator
//! without signalbox's own tools would send them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, bail};
use signalbox_substrate::Substrate;
use signalbox_substrate_local::OpLogEntry;
use signalbox_client::Deploys;
use signalbox_client::Error;
use signalbox_devstack::{temporal_binary, wait_for};
use signalbox_domain::approval::GateOutcome;
use signalbox_domain::control::Action;
use signalbox_domain::{
    ApprovalPolicy, Approve, Artifact, BatchPlan, BatchStep, Command, DeployRequest, DeployStatus, OnExpiry, Phase,
};
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, StackOptions, demo_artifact, demo_build, publish, request};
use signalbox_tests::{record_history, run, scratch};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

const FLEET_SIZE: usize = 6;
const RPS: u32 = 150;
/// How long a held deploy is watched for a change that must not come: longer than a batch step
/// (a bake plus a health evaluation) takes here.
const HOLD_WINDOW: Duration = Duration::from_secs(7);

static STACK: OnceCell<Stack> = OnceCell::const_new();
/// At most three deploys at a time, so the load stays near the rolling tests' and health
/// verdicts are not decided by two cores being starved.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(3));

/// This binary's stack. Its worker updates one instance at a time, so an advance in flight lasts
/// long enough to be halted in the middle.
async fn stack() -> &'static Stack {
    STACK
        .get_or_init(|| async {
            let mut options = StackOptions::in_dir(scratch("control"));
            options.worker_env.push(("SIGNALBOX_FLEET_PARALLELISM".into(), "1".into()));
            Stack::start(options).await.expect("the local stack starts")
        })
        .await
}

/// One test's fleet on 1.0.0 (service and fleet share the test's name), the 1.1.0 build to
/// deploy, and the deploy client.
struct Setup {
    name: String,
    fleet: LoadedFleet,
    next: Artifact,
    deploys: Deploys,
    _slot: SemaphorePermit<'static>,
}

async fn setup(service: &str, startup_delay_ms: u64) -> anyhow::Result<Setup> {
    let slot = SLOTS.acquire().await?;
    let s = stack().await;
    let base = publish(&s.home, demo_build(service, "1.0.0", 0.002, 5)).await?;
    let mut next = demo_artifact(service, "1.1.0", 0.002, 5);
    next.startup_delay_ms = startup_delay_ms;
    let next = publish(&s.home, serde_json::to_vec(&next)?).await?;
    let fleet = LoadedFleet::start(&s.home, service, FLEET_SIZE, base, RPS, &s.options.dir).await?;
    Ok(Setup { name: service.to_owned(), fleet, next, deploys: s.deploys().await?, _slot: slot })
}

impl Setup {
    /// A deploy of the new build with `plan` (instance counts) and `bake_ms`, no rollback window.
    fn request(&self, plan: &[u32], bake_ms: u64) -> DeployRequest {
        let mut req = request(&self.name, &self.name, self.next.clone());
        req.batch_plan = BatchPlan { steps: plan.iter().map(|&c| BatchStep::Count(c)).collect() };
        req.bake_ms = bake_ms;
        req
    }

    async fn status(&self, id: &str) -> anyhow::Result<DeployStatus> {
        Ok(self.deploys.status(id).await?)
    }

    /// Waits until the deploy's status satisfies `ready`.
    async fn until(&self, id: &str, what: &str, deadline: Duration, ready: impl Fn(&DeployStatus) -> bool) -> anyhow::Result<DeployStatus> {
        wait_for(what, deadline, || async {
            let st = self.status(id).await?;
            Ok(ready(&st).then_some(st))
        })
        .await
    }

    async fn result(&self, id: &str) -> anyhow::Result<DeployStatus> {
        Ok(tokio::time::timeout(DEPLOY_DEADLINE, self.deploys.result(id)).await.context("the deploy did not end in time")??)
    }

    /// Every operation of deploy `id` in the fleet's log.
    fn ops(&self, id: &str) -> anyhow::Result<Vec<OpLogEntry>> {
        Ok(self.fleet.fleet.oplog()?.into_iter().filter(|e| e.deploy_id == id).collect())
    }

    /// Instances restarted onto the new build by deploy `id`.
    fn onto_next(&self, id: &str) -> anyhow::Result<usize> {
        Ok(self.ops(id)?.iter().filter(|e| e.op == "restart" && e.digest == self.next.digest).count())
    }

    /// The build each instance is switched to, by instance.
    fn current(&self) -> BTreeMap<String, Option<String>> {
        let f = &self.fleet.fleet;
        f.instances().iter().map(|i| (i.id.clone(), f.instance_dir(&i.id).current().map(|d| d.to_string()))).collect()
    }

    /// The substrate's audit actions for deploy `id` (`apply`, `halt`, `rollback`, `release`).
    async fn fleet_audit(&self, id: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.fleet.fleet.audit_events(id).await?.into_iter().map(|e| e.action).collect())
    }

    async fn assert_all_serve(&self, version: &str) {
        let served = self.fleet.served_versions().await;
        assert!(served.iter().all(|v| v.as_deref() == Some(version)), "instances answer {served:?}, not all {version}");
    }
}

/// Watches for `window` that `check` finds nothing wrong (it returns what broke, if anything).
async fn stays<F, Fut>(what: &str, window: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let broke = wait_for(what, window, || {
        let check = check();
        // `Some` ends the wait: something broke, or the check itself failed.
        async move {
            Ok(match check.await {
                Ok(None) => None,
                Ok(Some(broken)) => Some(Ok(broken)),
                Err(e) => Some(Err(e)),
            })
        }
    })
    .await;
    match broke {
        // The deadline passed without a break: it held throughout.
        Err(_) => Ok(()),
        Ok(Ok(broken)) => bail!("{what}: {broken}"),
        Ok(Err(e)) => Err(e),
    }
}

/// Runs the real `temporal` CLI against the stack's server; returns success and its output.
async fn temporal(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let address = stack().await.server.address();
    let out = tokio::process::Command::new(temporal_binary()?)
        .args(args)
        .args(["--address", &address, "--namespace", &stack().await.options.namespace])
        .output()
        .await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn refusal<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn cmd(by: &str, reason: &str) -> Command {
    Command::new(by, reason)
}

fn actions(st: &DeployStatus) -> Vec<(Action, String)> {
    st.audit.iter().map(|e| (e.action, e.by.clone())).collect()
}

#[test]
fn a_paused_deploy_holds_between_batches_and_resume_finishes_it() {
    run(async {
        let t = setup("paused", 0).await?;
        let id = t.deploys.start(t.request(&[2, 4, 6], 1_000), None).await?.id;
        t.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        // Pause through the real temporal CLI: a signal with the operator's JSON.
        let (ok, out) = temporal(&["workflow", "signal", "--workflow-id", &id, "--name", "pause", "--input", r#"{"by":"ops@cli","reason":"hold for a look"}"#]).await?;
        assert!(ok, "temporal workflow signal failed: {out}");
        let held = t.until(&id, "batch 1 to be judged while paused", Duration::from_secs(60), |s| s.paused && s.last_analysis.is_some()).await?;
        assert_eq!(held.current_batch, 1, "{held:#?}");
        let restarted = t.onto_next(&id)?;
        assert_eq!(restarted, 2, "batch 1 is two instances");
        stays("the paused deploy holds after batch 1", HOLD_WINDOW, || async {
            let st = t.status(&id).await?;
            let now = t.onto_next(&id)?;
            Ok((st.current_batch != 1 || !st.paused || now != restarted).then(|| format!("batch {}, paused {}, {now} restarts", st.current_batch, st.paused)))
        })
        .await?;
        // The status query through the CLI says the same.
        let (ok, out) = temporal(&["workflow", "query", "--workflow-id", &id, "--name", "status", "--output", "json"]).await?;
        assert!(ok && out.contains("\"paused\": true"), "temporal workflow query: {out}");

        t.deploys.resume(&id, cmd("ops@signalbox", "looked fine")).await?;
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(!done.paused);
        assert_eq!(actions(&done), [(Action::Pause, "ops@cli".into()), (Action::Resume, "ops@signalbox".into())]);
        assert_eq!(done.audit[0].reason, "hold for a look");
        t.assert_all_serve("1.1.0").await;
        record_history(&t.deploys, &id, "control_pause").await
    });
}

#[test]
fn a_halt_freezes_an_advance_in_flight_and_an_abort_then_rolls_back() {
    run(async {
        // A build that starts slowly: the second batch (5 instances, one at a time) takes seconds.
        let t = setup("halted", 700).await?;
        let id = t.deploys.start(t.request(&[1, 6], 0), None).await?.id;
        t.until(&id, "batch 2 to be under way", Duration::from_secs(90), |s| s.current_batch == 2 && s.phase == Phase::Rolling).await?;
        wait_for("an instance of batch 2 to restart", Duration::from_secs(60), || async { Ok((t.onto_next(&id)? >= 2).then_some(())) }).await?;

        let halted = t.deploys.halt(&id, cmd("oncall", "pager storm, freeze everything")).await?;
        assert!(halted.halted, "{halted:#?}");
        // Let the instance in flight finish (the halt stops the advance before the next one):
        // every instance serves and two looks in a row see the same fleet.
        let last = std::cell::RefCell::new(None);
        let (versions, ops) = wait_for("the instance in flight to settle", Duration::from_secs(30), || {
            let (t, id, last) = (&t, &id, &last);
            async move {
                let serving = t.fleet.served_versions().await.iter().all(Option::is_some);
                let now = (t.current(), t.ops(id)?.len());
                let settled = serving && last.borrow().as_ref() == Some(&now);
                *last.borrow_mut() = Some(now.clone());
                Ok(settled.then_some(now))
            }
        })
        .await?;
        let updated = t.onto_next(&id)?;
        assert!(updated < FLEET_SIZE, "the halt came too late: all {updated} instances were updated");
        stays("the halted fleet stays as it is", HOLD_WINDOW, || async {
            let st = t.status(&id).await?;
            let now = t.ops(&id)?.len();
            let current = t.current();
            Ok((!st.halted || st.phase == Phase::RollingBack || now != ops || current != versions)
                .then(|| format!("halted {}, phase {:?}, {now} ops (was {ops}), versions {current:?}", st.halted, st.phase)))
        })
        .await?;
        let again = t.deploys.halt(&id, cmd("oncall", "again")).await;
        assert!(refusal(again).contains("already halted"));

        let aborting = t.deploys.abort(&id, cmd("oncall", "the build is bad")).await?;
        assert_eq!(aborting.reason.as_deref(), Some("aborted by oncall: the build is bad"));
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("aborted by oncall: the build is bad"));
        assert!(!done.halted);
        t.assert_all_serve("1.0.0").await;
        assert_eq!(actions(&done), [(Action::Halt, "oncall".into()), (Action::Abort, "oncall".into())]);
        let audit = t.fleet_audit(&id).await?;
        assert_eq!(audit.first().map(String::as_str), Some("apply"), "{audit:?}");
        assert!(audit.iter().position(|a| a == "halt") < audit.iter().position(|a| a == "rollback"), "{audit:?}");
        assert_eq!(audit.last().map(String::as_str), Some("release"), "the freeze is lifted after the rollback: {audit:?}");
        assert!(!t.fleet.fleet.inventory_path().with_file_name("halt").exists(), "the fleet is released");
        record_history(&t.deploys, &id, "control_halt_abort").await
    });
}

#[test]
fn an_abort_through_the_temporal_cli_rolls_back_and_an_abort_without_reason_is_refused() {
    run(async {
        let t = setup("aborted", 0).await?;
        let id = t.deploys.start(t.request(&[2, 4, 6], 120_000), None).await?.id;
        t.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        let (ok, out) = temporal(&["workflow", "update", "execute", "--workflow-id", &id, "--name", "abort", "--input", r#"{"by":"ops@cli"}"#]).await?;
        assert!(!ok && out.contains("reason: an abort needs a reason"), "an abort without reason must be refused: {out}");
        let (ok, out) = temporal(&[
            "workflow", "update", "execute", "--workflow-id", &id, "--name", "abort", "--input", r#"{"by":"ops@cli","reason":"wrong build"}"#,
        ])
        .await?;
        assert!(ok && out.contains("aborted by ops@cli: wrong build"), "temporal workflow update execute: {out}");

        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("aborted by ops@cli: wrong build"));
        assert_eq!(t.onto_next(&id)?, 2, "only batch 1 ever ran the new build");
        t.assert_all_serve("1.0.0").await;
        let late = t.deploys.abort(&id, cmd("ops", "again")).await;
        assert!(refusal(late).contains("already rolled back"));
        Ok(())
    });
}

#[test]
fn a_succeeded_deploy_rolls_back_within_its_window_and_only_once() {
    run(async {
        let t = setup("windowed", 0).await?;
        let mut req = t.request(&[3, 6], 0);
        req.rollback_window_ms = 10 * 60 * 1000;
        let id = t.deploys.start(req, None).await?.id;
        let open = t.until(&id, "success with the window open", DEPLOY_DEADLINE, |s| s.phase == Phase::Succeeded).await?;
        assert!(open.rollback_window_until.is_some(), "{open:#?}");
        t.assert_all_serve("1.1.0").await;

        assert!(refusal(t.deploys.abort(&id, cmd("sre", "late")).await).contains("ask for a rollback"));
        assert!(refusal(t.deploys.rollback(&id, cmd("sre", "")).await).contains("reason"));
        // Two operators at once: one rollback is checked and accepted, the other refused, and
        // each hears its own answer.
        let (first, second) = futures::join!(t.deploys.rollback(&id, cmd("sre", "customer reports")), t.deploys.rollback(&id, cmd("oncall", "me too")));
        let (rolling, other) = match (first, second) {
            (Ok(accepted), Err(refused)) => (accepted, refused),
            (Err(refused), Ok(accepted)) => (accepted, refused),
            both => panic!("exactly one rollback must be accepted: {both:?}"),
        };
        let who = rolling.reason.clone().unwrap_or_default();
        assert!(matches!(who.as_str(), "rolled back by sre: customer reports" | "rolled back by oncall: me too"), "{who}");
        let why = other.to_string();
        assert!(["already being checked", "being rolled back", "already rolled back"].iter().any(|w| why.contains(w)), "{why}");
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason, Some(who), "the accepted rollback's reason");
        assert_eq!(done.instances_per_version, BTreeMap::from([("1.0.0".to_owned(), FLEET_SIZE as u32)]));
        t.assert_all_serve("1.0.0").await;
        let reverted = t.ops(&id)?.iter().filter(|e| e.op == "restart" && e.digest == t.fleet.initial.digest).count();
        assert_eq!(reverted, FLEET_SIZE, "every instance was rolled back");

        assert!(refusal(t.deploys.rollback(&id, cmd("sre", "again")).await).contains("already rolled back"));
        record_history(&t.deploys, &id, "control_rollback_window").await
    });
}

#[test]
fn a_rollback_after_the_window_is_refused() {
    run(async {
        let t = setup("closed", 0).await?;
        let mut req = t.request(&[6], 0);
        req.rollback_window_ms = 1_000;
        let id = t.deploys.start(req, None).await?.id;
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert_eq!(done.rollback_window_until, None);
        let late = t.deploys.rollback(&id, cmd("sre", "too late")).await;
        assert!(refusal(late).contains("rollback window is closed"));
        t.assert_all_serve("1.1.0").await;
        Ok(())
    });
}

fn policy(approvers: &[&str], quorum: u32, expiry_ms: u64, on_expiry: OnExpiry) -> ApprovalPolicy {
    ApprovalPolicy {
        before_batches: vec![2],
        approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
        quorum,
        allow_self_approval: false,
        expiry_ms,
        on_expiry,
    }
}

fn approve(who: &str, why: &str) -> Approve {
    Approve { approver: who.into(), reason: why.into(), grant: String::new() }
}

#[test]
fn approvals_are_checked_and_a_quorum_opens_the_gate() {
    run(async {
        let t = setup("approved", 0).await?;
        let mut req = t.request(&[2, 4, 6], 0);
        let deployer = req.deployer.clone();
        req.approval = Some(policy(&["alice", "bob", &deployer], 2, 10 * 60 * 1000, OnExpiry::Abort));
        let id = t.deploys.start(req, None).await?.id;
        assert_eq!(refusal(t.deploys.approve(&id, approve("alice", "early")).await), "nothing awaits approval");

        let waiting = t.until(&id, "the gate before batch 2", Duration::from_secs(90), |s| s.phase == Phase::AwaitingApproval).await?;
        assert_eq!((waiting.current_batch, waiting.gates.len(), waiting.gates[0].before_batch), (1, 1, 2));
        assert!(refusal(t.deploys.approve(&id, approve("mallory", "me")).await).contains("mallory is not an approver"));
        assert!(refusal(t.deploys.approve(&id, approve(&deployer, "mine")).await).contains("may not approve it"));
        let one = t.deploys.approve(&id, approve("alice", "canary is clean")).await?;
        assert_eq!(one.gates[0].approvals.len(), 1);
        assert!(refusal(t.deploys.approve(&id, approve("alice", "again")).await).contains("already approved"));
        assert_eq!(t.status(&id).await?.phase, Phase::AwaitingApproval, "one approval of two does not open the gate");
        assert_eq!(t.onto_next(&id)?, 2, "nothing past batch 1 before quorum");

        // The second approval through the real temporal CLI.
        let (ok, out) =
            temporal(&["workflow", "update", "execute", "--workflow-id", &id, "--name", "approve", "--input", r#"{"approver":"bob","reason":"lgtm"}"#])
                .await?;
        assert!(ok, "temporal workflow update execute approve: {out}");
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        let gate = &done.gates[0];
        assert_eq!(gate.outcome, Some(GateOutcome::Approved));
        let who: Vec<(&str, &str)> = gate.approvals.iter().map(|a| (a.by.as_str(), a.reason.as_str())).collect();
        assert_eq!(who, [("alice", "canary is clean"), ("bob", "lgtm")]);
        assert!(gate.approvals.iter().all(|a| a.at >= gate.opened_at && a.at <= gate.expires_at));
        assert_eq!(refusal(t.deploys.approve(&id, approve("bob", "late")).await), "nothing awaits approval");
        record_history(&t.deploys, &id, "control_approval").await
    });
}

#[test]
fn an_expired_gate_with_the_abort_policy_rolls_back_and_goes_no_further() {
    run(async {
        let t = setup("expiring", 0).await?;
        let mut req = t.request(&[2, 4, 6], 0);
        req.approval = Some(policy(&["alice"], 1, 2_000, OnExpiry::Abort));
        let id = t.deploys.start(req, None).await?.id;
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");
        assert_eq!(done.reason.as_deref(), Some("approval before batch 2 expired without quorum after 2000 ms"));
        assert_eq!(done.gates[0].outcome, Some(GateOutcome::Expired(OnExpiry::Abort)));
        assert_eq!(actions(&done), [(Action::ApprovalExpired, "signalbox".into())]);
        assert_eq!(t.onto_next(&id)?, 2, "nothing past batch 1 ran the new build");
        t.assert_all_serve("1.0.0").await;
        record_history(&t.deploys, &id, "control_expiry_abort").await
    });
}

#[test]
fn an_expired_gate_with_the_proceed_policy_goes_on() {
    run(async {
        let t = setup("proceeding", 0).await?;
        let mut req = t.request(&[2, 4, 6], 0);
        req.approval = Some(policy(&["alice"], 1, 1_000, OnExpiry::Proceed));
        let id = t.deploys.start(req, None).await?.id;
        let done = t.result(&id).await?;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert_eq!(done.gates[0].outcome, Some(GateOutcome::Expired(OnExpiry::Proceed)));
        t.assert_all_serve("1.1.0").await;
        Ok(())
    });
}

#[test]
fn a_bypass_needs_a_reason_and_skips_every_remaining_gate_and_bake() {
    run(async {
        let t = setup("bypassed", 0).await?;
        // Bakes of ten minutes and two approval gates nobody will answer.
        let mut req = t.request(&[2, 4, 6], 10 * 60 * 1000);
        req.approval = Some(ApprovalPolicy { before_batches: vec![2, 3], ..policy(&["alice"], 1, 10 * 60 * 1000, OnExpiry::Abort) });
        let id = t.deploys.start(req, None).await?.id;
        t.until(&id, "batch 1 to bake", Duration::from_secs(60), |s| s.current_batch == 1 && s.phase == Phase::Baking).await?;

        assert_eq!(refusal(t.deploys.bypass(&id, cmd("sre", "  ")).await), "reason: an emergency bypass needs a reason");
        let granted = t.deploys.bypass(&id, cmd("sre", "sev1: the fix must reach everyone")).await?;
        let entry = granted.bypass.clone().expect("the bypass is recorded");
        assert_eq!((entry.by.as_str(), entry.reason.as_str()), ("sre", "sev1: the fix must reach everyone"));
        // Well before one bake would have ended.
        let done = tokio::time::timeout(Duration::from_secs(90), t.deploys.result(&id)).await??;
        assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
        assert!(done.gates.is_empty(), "no gate opened after the bypass: {:?}", done.gates);
        assert_eq!(actions(&done), [(Action::Bypass, "sre".into())]);
        t.assert_all_serve("1.1.0").await;
        assert!(refusal(t.deploys.bypass(&id, cmd("sre", "again")).await).contains("already"));
        record_history(&t.deploys, &id, "control_bypass").await
    });
}
