//! Compensations as data: each step that changed the world registers its undo before it runs,
//! and on failure or abort they run in reverse order on a cancellation token of their own, so
//! an aborted deploy still rolls back.

use std::time::Duration;

use signalbox_domain::contract::{EvictArtifact, EvictInput, RollbackInput, RollbackInstances};
use signalbox_domain::traffic::{LbTarget, SetWeights, SetWeightsInput, Weights};
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowCancellationToken, WorkflowContext};

/// An undo step.
#[derive(Debug, Clone)]
pub(crate) enum Compensation {
    /// Remove the artifact from the regional caches that a push filled.
    Evict(EvictInput),
    /// Return instances to the versions they ran before.
    Rollback(RollbackInput),
    /// Put load-balancer weights back.
    Weights(SetWeightsInput),
}

impl Compensation {
    /// Setting `weights` on `lb` again.
    pub(crate) fn weights(lb: &LbTarget, weights: &Weights) -> Self {
        Self::Weights(SetWeightsInput { lb: lb.clone(), weights: weights.clone() })
    }
}

/// The registered compensations of one deploy.
#[derive(Debug, Default)]
pub(crate) struct Saga {
    steps: Vec<Compensation>,
}

impl Saga {
    /// Registers `c`; returns its index so a later, more precise version can replace it.
    pub(crate) fn push(&mut self, c: Compensation) -> usize {
        self.steps.push(c);
        self.steps.len() - 1
    }

    /// Replaces the compensation at `index`.
    pub(crate) fn replace(&mut self, index: usize, c: Compensation) {
        self.steps[index] = c;
    }

    /// Runs every compensation, most recent first; `done` sees each that completed. Each is
    /// retried until it succeeds or its retry budget runs out; the error of the first that could
    /// not complete is returned after the others were still attempted.
    pub(crate) async fn compensate<W>(self, ctx: &WorkflowContext<W>, mut done: impl FnMut(&Compensation)) -> Result<(), String> {
        let mut first_error = None;
        for (i, step) in self.steps.into_iter().enumerate().rev() {
            // A fresh token: cancelling the deploy (abort) must not cancel its rollback.
            let opts = |summary: String| {
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30 * 60))
                    .heartbeat_timeout(Duration::from_secs(10))
                    .retry_policy(
                        RetryPolicy::builder()
                            .initial_interval(Duration::from_millis(500))
                            .maximum_interval(Duration::from_secs(10))
                            .maximum_attempts(20)
                            .build(),
                    )
                    .cancellation_token(WorkflowCancellationToken::new())
                    .summary(summary)
                    .build()
            };
            let result: Result<(), ActivityExecutionError> = match &step {
                Compensation::Rollback(input) => {
                    let summary = format!("compensation {}: roll back {} instances", i + 1, input.changes.len());
                    ctx.execute_activity(RollbackInstances, input.clone(), opts(summary)).await.map(|_| ())
                }
                Compensation::Evict(input) => {
                    let summary = format!("compensation {}: evict artifact from {} regions", i + 1, input.regions.len());
                    ctx.execute_activity(EvictArtifact, input.clone(), opts(summary)).await
                }
                Compensation::Weights(input) => {
                    let summary = format!("compensation {}: weights of {} servers back", i + 1, input.weights.len());
                    ctx.execute_activity(SetWeights, input.clone(), opts(summary)).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => done(&step),
                Err(e) => {
                    first_error.get_or_insert_with(|| crate::deploy::failure_message(&e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
