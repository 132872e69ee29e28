//! Heartbeats of long activities, independent of what they wait for: every 2 seconds, well
//! inside the workflows' 10-second heartbeat timeout whatever a sampling policy says.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use signalbox_domain::SamplingProgress;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// How often long activities tell the server they are alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// What a long activity's heartbeats carry: how far it got, read while it works.
pub trait Progress: Sync {
    /// The heartbeat's details.
    type Details: Serialize + 'static;

    /// The details now.
    fn details(&self) -> Self::Details;
}

/// A plain count of what was done (instances, windows, looks).
impl Progress for AtomicUsize {
    type Details = u64;

    fn details(&self) -> u64 {
        self.load(Ordering::Relaxed) as u64
    }
}

/// A sampling activity's progress: samples taken and, for a judgement, the passes it still
/// needs. Its heartbeats are what a deploy's status shows while it samples (`sampling`).
#[derive(Debug)]
pub struct Sampled {
    samples: AtomicU64,
    /// `u64::MAX`: not known.
    passes_needed: AtomicU64,
}

impl Default for Sampled {
    fn default() -> Self {
        Self { samples: AtomicU64::new(0), passes_needed: AtomicU64::new(u64::MAX) }
    }
}

impl Sampled {
    /// `samples` taken, with `passes_needed` still needed to promote if known.
    pub fn record(&self, samples: usize, passes_needed: Option<u32>) {
        self.passes_needed.store(passes_needed.map_or(u64::MAX, u64::from), Ordering::Relaxed);
        self.samples.store(samples as u64, Ordering::Relaxed);
    }
}

impl Progress for Sampled {
    type Details = SamplingProgress;

    fn details(&self) -> SamplingProgress {
        let samples = u32::try_from(self.samples.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        let passes_needed = u32::try_from(self.passes_needed.load(Ordering::Relaxed)).ok();
        SamplingProgress { samples, passes_needed }
    }
}

/// Runs `work` while heartbeating its progress, so the server notices a dead worker within the
/// heartbeat timeout instead of the (long) start-to-close timeout.
pub async fn with_heartbeat<T, P: Progress>(ctx: &ActivityContext, progress: &P, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let _ = ctx.record_heartbeat(progress.details()).await;
            }
        }
    }
}

/// [`with_heartbeat`] for work that only reads or waits (a judgement, a wait for a lane): it
/// stops when the workflow cancels the activity, which the server tells at a heartbeat, and
/// answers `Cancelled`. Changes are never cut short this way: they run to an instance boundary.
pub async fn until_cancelled<T, P: Progress>(ctx: &ActivityContext, progress: &P, work: impl Future<Output = T>) -> Result<T, ActivityError> {
    tokio::select! {
        out = with_heartbeat(ctx, progress, work) => Ok(out),
        () = ctx.cancelled() => Err(ActivityError::cancelled()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampling_heartbeat_says_how_many_samples_and_passes() {
        let progress = Sampled::default();
        assert_eq!(progress.details(), SamplingProgress { samples: 0, passes_needed: None });
        progress.record(3, Some(7));
        assert_eq!(progress.details(), SamplingProgress { samples: 3, passes_needed: Some(7) });
        progress.record(4, None);
        assert_eq!(progress.details(), SamplingProgress { samples: 4, passes_needed: None });
    }
}
