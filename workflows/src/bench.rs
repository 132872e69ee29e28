//! The yardstick of the orchestration-overhead benchmark: a bare workflow running a chain of
//! no-op activities, so a deploy can be compared with the same number of activity round trips.

use std::time::Duration;

use signalbox_contract::Received;
use signalbox_contract::activities::Noop;
use signalbox_contract::bench::NoopChainRun;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::shared::stop::refuse;

/// Runs `n` no-op activities one after another.
#[workflow]
#[derive(Default)]
pub struct NoopChainWorkflow;

#[workflow_methods]
impl NoopChainWorkflow {
    /// Runs the chain; returns how many activities ran.
    #[run(name = NoopChainRun::NAME)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, n: Received<u32>) -> WorkflowResult<u32> {
        let n = n.into_result().map_err(|e| refuse(e.to_string()))?;
        let mut ran = 0;
        for i in 0..n {
            ctx.execute_activity(Noop, i, ActivityOptions::start_to_close_timeout(Duration::from_secs(30))).await?;
            ran += 1;
        }
        Ok(ran)
    }
}
