//! The gates between a stage's deploys and the next stage: its approval, its own analysis over
//! its targets together, and its soak, watched window after window.

use std::pin::{Pin, pin};
use std::time::Duration;

use futures::FutureExt;
use futures::future::FusedFuture;
use signalbox_contract::activities::{SampleTargets, TargetHealthInput};
use signalbox_domain::approval::{self, ApprovalPolicy, Gate, GateOutcome};
use signalbox_domain::control::{Action, AuditEntry, SYSTEM, timestamp};
use signalbox_domain::{Command, GroupFigures, HealthPolicy, OnExpiry, Stage, ReleasePhase, ReleaseRequest, StagePhase};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{CancellableFuture, TimerOptions, TimerResult, WorkflowContext};

use crate::shared::options::long;

use super::state::{ReleaseWorkflow, Stop, requests_only};

/// Stage `si`'s approval gate: open until quorum, the bypass, an abort or its expiry, which
/// the policy decides (`abort` stops the release, `proceed` goes on).
pub(crate) async fn gate(ctx: &WorkflowContext<ReleaseWorkflow>, si: usize, policy: &ApprovalPolicy) -> Result<(), Stop> {
    if let Some(stop) = ctx.state(ReleaseWorkflow::aborted) {
        return Err(stop);
    }
    let now = timestamp(ctx.workflow_time());
    let name = ctx.state_mut(|s| {
        let stage = &mut s.status.stages[si];
        let mut gate = Gate::open(si as u32 + 1, now, policy);
        if stage.bypass.is_some() {
            gate.outcome = Some(GateOutcome::Bypassed);
        } else {
            stage.phase = StagePhase::AwaitingApproval;
            stage.awaits = Some(approval::awaiting(policy, &s.deployer, &gate));
            s.status.phase = ReleasePhase::AwaitingApproval;
        }
        stage.gate = Some(gate);
        stage.name.clone()
    });
    if ctx.state(|s| s.bypassed(si)) {
        return Ok(());
    }
    let expiry = TimerOptions::builder(Duration::from_millis(policy.expiry_ms)).summary(format!("approval of stage {name} expires")).build();
    let mut expiry = pin!(ctx.timer(expiry));
    let outcome = loop {
        let settled = |s: &ReleaseWorkflow, expired: bool| {
            let gate = s.status.stages[si].gate.as_ref()?;
            approval::settle(policy, gate, s.bypassed(si), s.abort.is_some(), expired)
        };
        select! {
            _ = ctx.wait_condition_with_options(|s: &ReleaseWorkflow| settled(s, false).is_some(), requests_only()) => {
                if let Some(outcome) = ctx.state(|s| settled(s, false)) {
                    expiry.cancel();
                    break outcome;
                }
            }
            fired = expiry.as_mut() => {
                let expired = fired != TimerResult::Cancelled;
                break ctx.state(|s| settled(s, expired)).unwrap_or(GateOutcome::Aborted);
            }
        }
    };
    let now = timestamp(ctx.workflow_time());
    ctx.state_mut(|s| {
        s.clock = now;
        if let Some(gate) = s.status.stages[si].gate.as_mut() {
            gate.outcome = Some(outcome);
        }
        s.status.stages[si].awaits = None;
        s.status.stages[si].phase = StagePhase::Deploying;
        if s.abort.is_none() {
            s.status.phase = ReleasePhase::Deploying;
        }
        if let GateOutcome::Expired(then) = outcome {
            let what = match then {
                OnExpiry::Abort => "the release stops",
                OnExpiry::Proceed => "the stage proceeds",
            };
            let note = format!("the approval of stage {name} expired without quorum; {what}");
            s.status.audit.push(AuditEntry::of(Action::ApprovalExpired, &Command::new(SYSTEM, note), now));
        }
    });
    match outcome {
        GateOutcome::Approved | GateOutcome::Bypassed | GateOutcome::Expired(OnExpiry::Proceed) => Ok(()),
        GateOutcome::Expired(OnExpiry::Abort) => Err(Stop::failed(format!("its approval expired without quorum of {}", policy.quorum), None)),
        GateOutcome::Aborted => Err(ctx.state(ReleaseWorkflow::aborted).unwrap_or_else(|| Stop::failed("its approval gate was cancelled".into(), None))),
    }
}

/// One window of every target of `stage`, read at once; `None` when they could not be read
/// (the soak then goes on without that window).
pub(crate) async fn sample_targets(ctx: &WorkflowContext<ReleaseWorkflow>, stage: &Stage, what: &str) -> Option<Vec<GroupFigures>> {
    let input: Vec<TargetHealthInput> = stage.targets.iter().map(|t| TargetHealthInput { target: t.target.clone(), policy: t.deploy.health.clone() }).collect();
    let span = stage.targets.iter().map(|t| t.deploy.health.sample_interval_ms.saturating_mul(u64::from(t.deploy.health.consecutive_bad_samples))).max().unwrap_or(0);
    let options = long(format!("health of stage {} {what}", stage.name), Duration::from_millis(span));
    ctx.execute_activity(SampleTargets, input, options).await.ok()
}

/// The stage's own analysis: one window of its targets together against the same before
/// their deploys. A regression is a failed verdict of the stage (of its build, when the release
/// has one service); targets that could not be read leave it undecided, and the stage goes on.
pub(crate) async fn analyse(ctx: &WorkflowContext<ReleaseWorkflow>, req: &ReleaseRequest, stage: &Stage, policy: &HealthPolicy, before: &[GroupFigures]) -> Result<(), Stop> {
    let Some(now) = sample_targets(ctx, stage, "after its deploys, together").await else { return Ok(()) };
    match policy.regression(&GroupFigures::together(before), &GroupFigures::together(&now)) {
        None => Ok(()),
        Some(why) => {
            let build = (req.services.len() == 1).then(|| req.services[0].service.clone());
            Err(Stop::failed(format!("its analysis over its {} targets together failed: {why}", stage.targets.len()), build))
        }
    }
}

/// The first target of `stage` whose window `now` regressed from `before`, in words.
fn regressed(stage: &Stage, before: &[GroupFigures], now: &[GroupFigures]) -> Option<String> {
    stage.targets.iter().zip(before).zip(now).find_map(|((t, b), n)| t.deploy.health.regression(b, n).map(|why| format!("{}: {why}", t.target)))
}

/// Stage `si`'s soak: a durable timer, ended early by the stage's bypass; an abort stops it.
/// With `before` (the targets before their deploys), the targets are read window after window
/// while it soaks; a window that regressed from `before` by the gate's thresholds restarts the
/// soak, and one more restart than `max_soak_restarts` fails the stage.
pub(crate) async fn soak(ctx: &WorkflowContext<ReleaseWorkflow>, stage: &Stage, si: usize, before: &[GroupFigures]) -> Result<(), Stop> {
    if let Some(stop) = ctx.state(ReleaseWorkflow::aborted) {
        return Err(stop);
    }
    if ctx.state(|s| s.bypassed(si)) {
        return Ok(());
    }
    let watched = !before.is_empty();
    let mut restarts = 0;
    'soak: loop {
        let until = timestamp(ctx.workflow_time()) + chrono::Duration::milliseconds(stage.soak_ms as i64);
        ctx.state_mut(|s| {
            s.status.phase = ReleasePhase::Soaking;
            let st = &mut s.status.stages[si];
            st.phase = StagePhase::Soaking;
            st.soak_until = Some(until);
            st.soak_restarts = restarts;
        });
        let summary = match restarts {
            0 => format!("soak of stage {}", stage.name),
            n => format!("soak of stage {}, restart {n}", stage.name),
        };
        let mut timer = pin!(ctx.timer(TimerOptions::builder(Duration::from_millis(stage.soak_ms)).summary(summary).build()));
        loop {
            let mut window: Pin<Box<dyn FusedFuture<Output = Option<Vec<GroupFigures>>> + '_>> =
                if watched { Box::pin(sample_targets(ctx, stage, "while it soaks").fuse()) } else { Box::pin(futures::future::pending()) };
            select! {
                _ = timer.as_mut() => break 'soak,
                _ = ctx.wait_condition_with_options(|s: &ReleaseWorkflow| s.abort.is_some() || s.bypassed(si), requests_only()) => {
                    timer.cancel();
                    break 'soak;
                }
                now = window.as_mut() => {
                    let Some(why) = now.and_then(|now| regressed(stage, before, &now)) else { continue };
                    timer.cancel();
                    restarts += 1;
                    ctx.state_mut(|s| s.status.stages[si].last_regression = Some(why.clone()));
                    if restarts > stage.max_soak_restarts {
                        return Err(Stop::failed(format!("its health regressed during the soak {restarts} times; the last: {why}"), None));
                    }
                    continue 'soak;
                }
            }
        }
    }
    ctx.state(ReleaseWorkflow::aborted).map_or(Ok(()), Err)
}

