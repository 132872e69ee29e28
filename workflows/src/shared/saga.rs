//! Compensations as data: each step that changes the world registers its undo before it runs,
//! and on failure or abort they run in reverse order on a cancellation token of their own, so
//! an aborted deploy still rolls back.

use signalbox_contract::activities::{EvictArtifact, EvictInput, RollbackInput, RollbackInstances, SetWeights, SetWeightsInput};
use signalbox_domain::traffic::{LbTarget, Weights};
use temporalio_sdk::{ActivityExecutionError, WorkflowContext};

use super::options::compensation;
use super::stop::failure_message;

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
    /// Setting `weights` on `lb` again (a rehearsal's only checks them).
    pub(crate) fn weights(lb: &LbTarget, weights: &Weights, dry_run: bool) -> Self {
        Self::Weights(SetWeightsInput { lb: lb.clone(), weights: weights.clone(), dry_run })
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

    /// Every instance a registered rollback would return: what this deploy changed.
    pub(crate) fn changed_instances(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .steps
            .iter()
            .filter_map(|c| match c {
                Compensation::Rollback(r) => Some(r.changes.iter().map(|c| c.instance.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Runs every compensation, most recent first; `done` sees each that completed. Each is
    /// retried until it succeeds or its retry budget runs out; the error of the first that could
    /// not complete is returned after the others were still attempted.
    pub(crate) async fn compensate<W>(self, ctx: &WorkflowContext<W>, mut done: impl FnMut(&Compensation)) -> Result<(), String> {
        let mut first_error = None;
        for (i, step) in self.steps.into_iter().enumerate().rev() {
            let result: Result<(), ActivityExecutionError> = match &step {
                Compensation::Rollback(input) => {
                    let summary = format!("compensation {}: roll back {} instances", i + 1, input.changes.len());
                    ctx.execute_activity(RollbackInstances, input.clone(), compensation(summary)).await.map(|_| ())
                }
                Compensation::Evict(input) => {
                    let summary = format!("compensation {}: evict artifact from {} regions", i + 1, input.regions.len());
                    ctx.execute_activity(EvictArtifact, input.clone(), compensation(summary)).await
                }
                Compensation::Weights(input) => {
                    let summary = format!("compensation {}: weights of {} servers back", i + 1, input.weights.len());
                    ctx.execute_activity(SetWeights, input.clone(), compensation(summary)).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => done(&step),
                Err(e) => {
                    first_error.get_or_insert_with(|| failure_message(&e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
