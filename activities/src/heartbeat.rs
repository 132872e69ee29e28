//! Heartbeats of long activities, independent of what they wait for: every 2 seconds, well
//! inside the workflows' 10-second heartbeat timeout whatever a sampling policy says.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// How often long activities tell the server they are alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Runs `work` while heartbeating the progress counter, so the server notices a dead worker
/// within the heartbeat timeout instead of the (long) start-to-close timeout.
pub async fn with_heartbeat<T>(ctx: &ActivityContext, progress: &AtomicUsize, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let _ = ctx.record_heartbeat(progress.load(Ordering::Relaxed) as u64).await;
            }
        }
    }
}

/// [`with_heartbeat`] for work that only reads or waits (a judgement, a wait for a lane): it
/// stops when the workflow cancels the activity, which the server tells at a heartbeat, and
/// answers `Cancelled`. Changes are never cut short this way: they run to an instance boundary.
pub async fn until_cancelled<T>(ctx: &ActivityContext, progress: &AtomicUsize, work: impl Future<Output = T>) -> Result<T, ActivityError> {
    tokio::select! {
        out = with_heartbeat(ctx, progress, work) => Ok(out),
        () = ctx.cancelled() => Err(ActivityError::cancelled()),
    }
}
