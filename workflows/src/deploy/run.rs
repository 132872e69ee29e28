//! One run of a deploy: its context, and how it answers its operators between and during its
//! steps. Handlers only record what was asked (see `super`); this is where the run acts on it,
//! at points that are the same on every replay:
//!
//! - [`Run::hold`] at step boundaries: a pause holds before a step, a halt everywhere, until
//!   resume; an accepted abort or rollback stops the rollout there.
//! - [`Run::attend`] around a step in progress: a halt freezes the target at once
//!   (`fleet.halt`) while the step goes on; an abort cancels a bake or a judgement, and freezes
//!   the target under a change so it stops before its next instance; the bypass cancels a bake
//!   or a judgement.
//! - [`Run::gate`] before a gated step: waits for quorum, raced with the gate's expiry timer.
//!
//! A halt is a freeze, never a fault: a change that fails while this deploy froze the target
//! (the substrate's `Halted`, for the instances it did not reach) registers no failure and
//! triggers no rollback. The deploy holds; on `resume` it lifts the freeze and applies the same
//! change again (applying is idempotent, so instances already updated are skipped, and a real
//! fault hidden by the freeze shows up then); on `abort` it rolls back the whole change as
//! planned (rolling back is idempotent too) and everything before it, then lifts the freeze.
//!
//! The steps every strategy shares live here too, each under that control: push, baseline,
//! update, bake, judge, and setting weights.

use std::pin::pin;
use std::time::Duration;

use signalbox_contract::activities::{
    AaPeriodInput, AdvanceBatch, AnalyzeHealth, AnalyzeInput, BaselineInput, EvaluateHealth, EvaluateInput, HaltFleet, HaltInput, InstanceChange,
    PreflightOutput, ReleaseFleet, ReleaseInput, SampleAaPeriod, SampleBaseline,
};
use signalbox_contract::search;
use signalbox_domain::analysis::{AnalysisReport, Sample};
use signalbox_domain::approval::{Gate, GateOutcome};
use signalbox_domain::control::{self, Action, AuditEntry, Boundary, Step, timestamp};
use signalbox_domain::traffic::{LbTarget, Weights};
use signalbox_domain::{DeployRequest, GroupFigures, OnExpiry, Phase, Sampling, TrafficState};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{CancellableFuture, TimerOptions, TimerResult, WaitConditionOptions, WorkflowCancellationToken, WorkflowContext};

use super::state::DeployWorkflow;
use crate::shared::options::{detached, long, windows};
use crate::shared::saga::{Compensation, Saga};
use crate::shared::steps::{self, UPDATE_AT_MOST, Update};
use crate::shared::stop::{Stop, failure_message};

/// Patch id of indexing the phase as a search attribute.
const PHASE_SEARCH_ATTRIBUTE: &str = "signalbox-phase-search-attribute";

/// Patch id of judging batches with the analysis engine (`health.analyze`) when the request
/// opted in. Histories recorded before the engine judged every step carry it only then.
const ANALYSIS_ENGINE: &str = "signalbox-analysis-engine";

/// Patch id of the engine judging every step (the first-version gate became its preset).
/// Histories recorded before judge batches without a policy with `health.evaluate`.
const ONE_HEALTH_PATH: &str = "signalbox-one-health-path";

/// Patch id of the live A/A period: a policy with metric kinds (or `aa_windows`) reads the first
/// batch next to the rest before the first change. Histories recorded before read none.
const LIVE_AA_PERIOD: &str = "signalbox-live-aa-period";

/// Patch id of every step reading its own A/A period just before it changes anything: a
/// rolling batch's instances next to those that stay, a canary's canaries before they leave
/// rotation, blue/green's green set next to blue under the verification load. Histories
/// recorded before read one before a rolling deploy's first change only, and none for the
/// traffic strategies.
const AA_EVERY_STEP: &str = "signalbox-aa-every-step";

/// Patch id of holding wherever a change is about to start or the run is about to end (see
/// [`Run::checkpoint`]). Histories recorded before held only around steps, so a halt or a pause
/// that came while queued, before a canary's first weights, or during a last step went unheld.
const HOLDS: &str = "signalbox-holds";

/// One run of a deploy: the workflow's context, the request (its artifact resolved from the
/// store's record), what preflight read, and the compensations registered so far.
pub(crate) struct Run<'a> {
    /// The workflow's context.
    pub(crate) ctx: &'a WorkflowContext<DeployWorkflow>,
    /// The request, with version and git SHA as the store records them.
    pub(crate) req: DeployRequest,
    /// The deploy's id (its workflow id).
    pub(crate) id: String,
    /// The target as preflight read it (empty until preflight ran).
    pub(crate) pre: PreflightOutput,
    /// What undoes what the run changed so far.
    pub(crate) saga: Saga,
    /// The live A/A period last read, when the policy asked for one: the next analysis's
    /// baseline (every analysis's, in runs recorded before every step read its own).
    pub(crate) aa: Vec<Sample>,
}

/// A wait that only operator requests end: workflow cancellation (the older abort) reaches
/// the step itself, which then ends as before (and closes a rollback window early).
pub(crate) fn requests_only() -> WaitConditionOptions {
    WaitConditionOptions::builder().cancellation_token(WorkflowCancellationToken::new()).build()
}

/// Moves the deploy to `phase`, in its status and in the `SignalboxPhase` search attribute that
/// the Temporal UI filters by.
pub(crate) fn enter(ctx: &WorkflowContext<DeployWorkflow>, phase: Phase) {
    ctx.state_mut(|s| s.status.phase = phase);
    // Histories recorded before the phase was indexed carry no upserts; they replay as such.
    if ctx.patched(PHASE_SEARCH_ATTRIBUTE) {
        ctx.upsert_search_attributes([search::PHASE.value_set(search::phase_value(phase))]);
    }
}

impl Run<'_> {
    /// Moves the deploy to `phase`.
    pub(crate) fn enter(&self, phase: Phase) {
        enter(self.ctx, phase);
    }

    /// Records the traffic the balancer has now, for the status.
    pub(crate) fn traffic(&self, update: impl FnOnce(&mut TrafficState)) {
        self.ctx.state_mut(|s| {
            if let Some(t) = s.status.traffic.as_mut() {
                update(t);
            }
        });
    }

    /// Sets the target's halt mark. The run holds whether or not the mark could be set: a
    /// failure is recorded in the audit trail, and no further step starts either way.
    async fn freeze(&self) {
        let reason = self.ctx.state(|s| {
            let halt = s.status.audit.iter().rev().find(|e| e.action == Action::Halt).map(|e| format!("halted by {}: {}", e.by, e.reason));
            s.stop.clone().or(halt).unwrap_or_default()
        });
        let input = HaltInput { deploy_id: self.id.clone(), fleet: self.req.target.clone(), reason: reason.clone(), dry_run: self.req.dry_run };
        let done = self.ctx.execute_activity(HaltFleet, input, detached(format!("freeze fleet {}: {reason}", self.req.target.name))).await;
        let at = timestamp(self.ctx.workflow_time());
        self.ctx.state_mut(|s| {
            s.frozen = true;
            if let Err(e) = done {
                let why = format!("the fleet's halt mark could not be set ({}); the deploy holds anyway", failure_message(&e));
                s.audit(AuditEntry { action: Action::Halt, by: control::SYSTEM.into(), at, reason: why });
            }
        });
    }

    /// Lifts the target's halt mark set by [`Run::freeze`].
    pub(crate) async fn release(&self) {
        let input = ReleaseInput { deploy_id: self.id.clone(), fleet: self.req.target.clone(), dry_run: self.req.dry_run };
        let done = self.ctx.execute_activity(ReleaseFleet, input, detached(format!("release fleet {}", self.req.target.name))).await;
        let at = timestamp(self.ctx.workflow_time());
        self.ctx.state_mut(|s| {
            s.frozen = false;
            if let Err(e) = done {
                let why = format!("the fleet's halt mark could not be lifted: {}", failure_message(&e));
                s.audit(AuditEntry { action: Action::Resume, by: control::SYSTEM.into(), at, reason: why });
            }
        });
    }

    /// Holds while paused (before a step) or halted; lifts this deploy's freeze on resume. An
    /// accepted abort or rollback, or a workflow cancellation, ends the hold with [`Stop`].
    pub(crate) async fn hold(&self, at: Boundary) -> Result<(), Stop> {
        loop {
            if let Some(reason) = self.ctx.state(|s| s.stop.clone()) {
                return Err(Stop(reason));
            }
            if self.ctx.state(|s| s.must_freeze(None)) {
                self.freeze().await;
                continue;
            }
            if !self.ctx.state(|s| s.holds(at)) {
                if self.ctx.state(|s| s.frozen) {
                    self.release().await;
                }
                return Ok(());
            }
            // Inherits workflow cancellation: cancelling a held deploy still aborts it.
            if self.ctx.wait_condition(move |s: &DeployWorkflow| s.unholds(at)).await.is_err() {
                return Err(Stop("aborted while held".into()));
            }
        }
    }

    /// [`Run::hold`] where runs recorded before held nothing: before preflight, before a
    /// traffic strategy's first change, after a canary's promotion, before success.
    pub(crate) async fn checkpoint(&self, at: Boundary) -> Result<(), Stop> {
        if self.holds_everywhere() { self.hold(at).await } else { Ok(()) }
    }

    /// Whether this run holds at every checkpoint (it was not recorded before they were).
    pub(crate) fn holds_everywhere(&self) -> bool {
        self.ctx.patched(HOLDS)
    }

    /// Drives `fut` (a step of kind `step`) to its end while answering operator requests that
    /// cannot wait for it. Returns its output, `None` when the bypass skipped it, or [`Stop`]
    /// when an abort cancelled it.
    pub(crate) async fn attend<F: CancellableFuture>(&self, step: Step, fut: F) -> Result<Option<F::Output>, Stop> {
        let mut fut = pin!(fut);
        loop {
            // The step first: a step that ended in the same moment as a request keeps its result.
            select! {
                out = fut.as_mut() => return Ok(Some(out)),
                _ = self.ctx.wait_condition_with_options(move |s: &DeployWorkflow| s.interrupts(step), requests_only()) => {}
            }
            if self.ctx.state(|s| s.must_freeze(Some(step))) {
                self.freeze().await;
                continue;
            }
            if step == Step::Advance {
                continue;
            }
            fut.cancel();
            let _ = fut.as_mut().await;
            return match self.ctx.state(|s| s.stop.clone()) {
                Some(reason) => Err(Stop(reason)),
                None => Ok(None),
            };
        }
    }

    /// The approval gate before `step` (1-based) of `total`, if the policy has one there and the
    /// gates were not bypassed: waits for quorum, the bypass, an abort or the expiry, records the
    /// outcome, and goes on or stops as it says. A halt while it waits holds before acting.
    pub(crate) async fn gate(&self, step: u32, total: u32) -> Result<(), Stop> {
        let Some(policy) = &self.req.approval else { return Ok(()) };
        if !policy.gated_batches(total).contains(&step) || self.ctx.state(|s| s.status.bypass.is_some() || s.stop.is_some()) {
            return Ok(());
        }
        // A rolling deploy's steps are batches; a canary's, traffic steps; blue/green's, the flip.
        let word = match self.req.strategy {
            signalbox_domain::Strategy::Rolling => "batch",
            _ => "step",
        };
        let opened = timestamp(self.ctx.workflow_time());
        self.ctx.state_mut(|s| s.status.gates.push(Gate::open(step, opened, policy)));
        self.enter(Phase::AwaitingApproval);
        let expiry = TimerOptions::builder(Duration::from_millis(policy.expiry_ms))
            .summary(format!("approval before {word} {step}/{total} expires"))
            .build();
        let mut expiry = pin!(self.ctx.timer(expiry));
        let outcome = loop {
            // The decision first: an approval that comes with the expiry counts.
            select! {
                _ = self.ctx.wait_condition_with_options(|s: &DeployWorkflow| s.gate_moves(policy), requests_only()) => {}
                fired = expiry.as_mut() => {
                    if fired == TimerResult::Cancelled {
                        break GateOutcome::Aborted;
                    }
                    break self.ctx.state(|s| s.gate_outcome(policy, true)).unwrap_or(GateOutcome::Expired(policy.on_expiry));
                }
            }
            if self.ctx.state(|s| s.must_freeze(None)) {
                self.freeze().await;
                continue;
            }
            if let Some(outcome) = self.ctx.state(|s| s.gate_outcome(policy, false)) {
                expiry.cancel();
                break outcome;
            }
        };
        let at = timestamp(self.ctx.workflow_time());
        self.ctx.state_mut(|s| {
            if let Some(gate) = s.status.gates.last_mut() {
                gate.outcome = Some(outcome);
            }
            if let GateOutcome::Expired(then) = outcome {
                let then = match then {
                    OnExpiry::Abort => "rolling back",
                    OnExpiry::Proceed => "proceeding",
                };
                let reason = format!("no quorum before {word} {step} within {} ms; {then}", policy.expiry_ms);
                s.audit(AuditEntry { action: Action::ApprovalExpired, by: control::SYSTEM.into(), at, reason });
            }
        });
        self.hold(Boundary::WithinStep).await?;
        match outcome {
            GateOutcome::Approved | GateOutcome::Bypassed | GateOutcome::Expired(OnExpiry::Proceed) => Ok(()),
            GateOutcome::Expired(OnExpiry::Abort) => Err(Stop(format!("approval before {word} {step} expired without quorum after {} ms", policy.expiry_ms))),
            GateOutcome::Aborted => Err(Stop(self.ctx.state(|s| s.stop.clone()).unwrap_or_else(|| "aborted while awaiting approval".into()))),
        }
    }

    /// Copies the artifact into the target's regional caches; undone by evicting what it added.
    pub(crate) async fn push(&mut self) -> Result<(), Stop> {
        self.enter(Phase::Pushing);
        steps::push(self.ctx, &mut self.saga, &self.req.artifact, &self.pre.regions, self.req.dry_run).await
    }

    /// Samples `instances` before anything changes: the reference of later judgements.
    pub(crate) async fn baseline(&self, instances: Vec<String>, summary: &str) -> Result<GroupFigures, Stop> {
        let policy = &self.req.health;
        let input = BaselineInput { fleet: self.req.target.clone(), instances, policy: policy.clone(), dry_run: self.req.dry_run };
        let window = Duration::from_millis(policy.sample_interval_ms);
        Ok(self.ctx.execute_activity(SampleBaseline, input, long(summary, windows(window, policy.consecutive_bad_samples))).await?)
    }

    /// The A/A period of runs recorded before every step read its own: `canary` (the instances
    /// the first batch changes) next to `stable` (the rest) before the first change, kept for
    /// every later analysis. Nothing in runs that read one per step ([`Run::step_aa_period`]).
    pub(crate) async fn first_aa_period(&mut self, canary: &[String], stable: &[String]) -> Result<(), Stop> {
        let Some(input) = self.aa_input(canary, stable, None) else { return Ok(()) };
        if self.ctx.patched(AA_EVERY_STEP) || !self.ctx.patched(LIVE_AA_PERIOD) {
            return Ok(());
        }
        let summary = format!("A/A period: {} to change first next to {} others, {} windows", canary.len(), stable.len(), input.windows);
        let timeout = windows(Duration::from_millis(input.window_ms), input.windows.saturating_add(1));
        self.aa = self.ctx.execute_activity(SampleAaPeriod, input, long(summary, timeout)).await?;
        Ok(())
    }

    /// Reads `canary` (the instances the step `what` is about to change) next to `stable` (those
    /// it leaves alone) for the policy's A/A windows, under `load_rps` if the step's judgement
    /// drives one, and keeps the samples for that judgement: its noise is then measured on the
    /// groups it compares (the batch's instances for the instances updated so far), just
    /// before. The status shows the windows left (phase `Evaluating`, `sampling.aa_period`);
    /// an abort cancels it, the bypass skips it. Nothing to read without a policy asking for it, a stable
    /// group, or after the bypass, when the last one read stands.
    pub(crate) async fn step_aa_period(&mut self, canary: &[String], stable: &[String], load_rps: Option<u32>, what: &str) -> Result<(), Stop> {
        let Some(input) = self.aa_input(canary, stable, load_rps) else { return Ok(()) };
        if !self.ctx.patched(AA_EVERY_STEP) {
            return Ok(());
        }
        self.hold(Boundary::BeforeStep).await?;
        self.enter(Phase::Evaluating);
        let summary = format!("A/A period before {what}: {} to change next to {} others, {} windows", canary.len(), stable.len(), input.windows);
        let (window_ms, n) = (input.window_ms, input.windows);
        let timeout = windows(Duration::from_millis(window_ms), n.saturating_add(1));
        self.sampling(what, true, n);
        let step = self.ctx.execute_activity(SampleAaPeriod, input, long(summary, timeout));
        let read = self.attend(Step::Evaluate, step).await;
        self.ctx.state_mut(|s| s.status.sampling = None);
        if let Some(samples) = read? {
            self.aa = samples?;
        }
        // Nothing changed yet: a pause that came while reading holds before the change.
        self.hold(Boundary::BeforeStep).await
    }

    /// The A/A period's input for `canary` next to `stable`, when the policy asks for one and
    /// there is something to compare (and the gates are not bypassed).
    fn aa_input(&self, canary: &[String], stable: &[String], load_rps: Option<u32>) -> Option<AaPeriodInput> {
        let policy = self.req.analysis.clone()?;
        let n = policy.aa_windows();
        if n == 0 || canary.is_empty() || stable.is_empty() || self.ctx.state(|s| s.status.bypass.is_some()) {
            return None;
        }
        Some(AaPeriodInput {
            fleet: self.req.target.clone(),
            service: self.req.service.clone(),
            canary: canary.to_vec(),
            stable: stable.to_vec(),
            policy,
            window_ms: self.req.health.sample_interval_ms,
            windows: n,
            dry_run: self.req.dry_run,
            load_rps,
        })
    }

    /// Shows in the status that the run samples for `what` (at most `max_samples` windows).
    fn sampling(&self, what: &str, aa_period: bool, max_samples: u32) {
        let started_at = timestamp(self.ctx.workflow_time());
        let window_ms = self.req.health.sample_interval_ms;
        self.ctx.state_mut(|s| {
            s.status.sampling = Some(Sampling::started(what, aa_period, max_samples, window_ms, started_at));
        });
    }

    /// Updates `instances` to the artifact under operator control: the undo is registered
    /// before the step (a step that fails halfway is still undone) and replaced by the actual
    /// changes once it returns. Failing while this deploy froze the target is the freeze taking
    /// effect, not a fault: the run holds, and on resume applies the same update again.
    pub(crate) async fn update(&mut self, instances: &[String], summary: String) -> Result<Vec<InstanceChange>, Stop> {
        let update = Update::plan(&self.id, &self.pre, &self.req.target, &self.req.artifact, instances, self.req.dry_run);
        let undo_at = self.saga.push(update.planned_undo());
        let out = loop {
            let step = self.ctx.execute_activity(AdvanceBatch, update.input.clone(), long(summary.clone(), UPDATE_AT_MOST));
            match self.attend(Step::Advance, step).await? {
                Some(Ok(out)) => break out,
                Some(Err(_)) if self.ctx.state(|s| s.frozen) => self.hold(Boundary::WithinStep).await?,
                Some(Err(e)) => return Err(e.into()),
                None => unreachable!("an update is never skipped"),
            }
        };
        self.ctx.state_mut(|s| {
            for c in &out.changes {
                s.status.move_instances(&c.from_version, &c.to_version, 1);
            }
        });
        self.saga.replace(undo_at, update.undo(&out.changes));
        Ok(out.changes)
    }

    /// Bakes before a judgement, unless the gates were bypassed or nothing bakes. An abort
    /// cancels the bake. `label` names the timer (`batch 2/4`), `what` the step in the reason.
    pub(crate) async fn bake(&self, label: &str, what: &str) -> Result<(), Stop> {
        if self.req.bake_ms == 0 || self.ctx.state(|s| s.status.bypass.is_some()) {
            return Ok(());
        }
        self.enter(Phase::Baking);
        let bake = TimerOptions::builder(Duration::from_millis(self.req.bake_ms)).summary(format!("bake {label}")).build();
        if let Some(TimerResult::Cancelled) = self.attend(Step::Bake, self.ctx.timer(bake)).await? {
            return Err(Stop(format!("aborted while baking {what}")));
        }
        self.hold(Boundary::WithinStep).await
    }

    /// Judges `canary` against `stable` (the instances still on the old build, or another set
    /// under the same load) with the analysis engine, under the request's policy or the gate
    /// preset; with `load_rps`, drives that verification load at both while sampling. Goes on
    /// only on a pass; the bypass skips it. `what` names the step in summaries and reasons
    /// (`batch 2`, `step 3 (25%)`).
    pub(crate) async fn judge(&self, canary: Vec<String>, stable: Vec<String>, baseline: GroupFigures, load_rps: Option<u32>, what: &str) -> Result<(), Stop> {
        if self.ctx.state(|s| s.status.bypass.is_some()) {
            return Ok(());
        }
        self.enter(Phase::Evaluating);
        let policy = &self.req.health;
        let window = Duration::from_millis(policy.sample_interval_ms);
        let engine = self.ctx.patched(ONE_HEALTH_PATH) || (self.req.analysis.is_some() && self.ctx.patched(ANALYSIS_ENGINE));
        if !engine {
            return self.judge_by_gate(canary, stable, baseline, what).await;
        }
        let analysis = self.req.analysis_policy();
        let windows_n = signalbox_domain::analysis::windows(&analysis, policy);
        let summary = match load_rps {
            Some(rps) => format!("verify {what}: {} new against {} old under {rps} rps each", canary.len(), stable.len()),
            None => format!("analyse {what}: {} updated vs {} not", canary.len(), stable.len()),
        };
        let analyze = AnalyzeInput {
            fleet: self.req.target.clone(),
            service: self.req.service.clone(),
            canary,
            stable,
            baseline,
            baseline_span_ms: policy.sample_interval_ms.saturating_mul(u64::from(policy.consecutive_bad_samples)),
            policy: analysis,
            window_ms: policy.sample_interval_ms,
            windows: windows_n,
            dry_run: self.req.dry_run,
            load_rps,
            aa: self.aa.clone(),
        };
        self.sampling(what, false, windows_n);
        let step = self.ctx.execute_activity(AnalyzeHealth, analyze, long(summary, windows(window, windows_n.saturating_add(1))));
        let output = self.attend(Step::Evaluate, step).await;
        self.ctx.state_mut(|s| s.status.sampling = None);
        let Some(output) = output? else {
            return Ok(());
        };
        // The judged input stays in history only (for `signalbox backtest export`).
        let report: AnalysisReport = output?.report;
        self.hold(Boundary::WithinStep).await?;
        let stop = report.stop_reason(what);
        self.ctx.state_mut(|s| s.status.last_analysis = Some(report));
        stop.map_or(Ok(()), |reason| Err(Stop(reason)))
    }

    /// A batch judged by the first-version gate, as runs recorded before the engine judged
    /// every step did (`health.evaluate`).
    async fn judge_by_gate(&self, canary: Vec<String>, control: Vec<String>, baseline: GroupFigures, what: &str) -> Result<(), Stop> {
        let policy = &self.req.health;
        let window = Duration::from_millis(policy.sample_interval_ms);
        let summary = format!("judge {what}: {} updated vs {} not", canary.len(), control.len());
        let evaluate = EvaluateInput { fleet: self.req.target.clone(), canary, control, baseline, policy: policy.clone(), dry_run: self.req.dry_run };
        let step = self.ctx.execute_activity(EvaluateHealth, evaluate, long(summary, windows(window, policy.samples.saturating_add(1))));
        let Some(report) = self.attend(Step::Evaluate, step).await? else {
            return Ok(());
        };
        let report = report?;
        // A halt during the evaluation freezes the deploy before its verdict is acted on.
        self.hold(Boundary::WithinStep).await?;
        let (verdict, summary) = (report.verdict, report.summary.clone());
        self.ctx.state_mut(|s| s.status.last_verdict = Some(report));
        match verdict {
            signalbox_domain::analysis::Decision::Pass => Ok(()),
            signalbox_domain::analysis::Decision::Fail => Err(Stop(format!("{what}: unhealthy: {summary}"))),
            // Never promote on missing evidence.
            _ => Err(Stop(format!("{what}: {summary}"))),
        }
    }

    /// Sets weights on the balancer and records them in the status; with `undo`, first
    /// registers the weights that undo it.
    pub(crate) async fn shift(&mut self, lb: &LbTarget, weights: &Weights, undo: Option<&Weights>, summary: String) -> Result<(), Stop> {
        if let Some(undo) = undo {
            self.saga.push(Compensation::weights(lb, undo, self.req.dry_run));
        }
        steps::set_weights(self.ctx, lb, weights, self.req.dry_run, summary).await?;
        self.traffic(|t| t.weights.extend(weights.clone()));
        Ok(())
    }
}
