//! Activity options, in one place: every long activity heartbeats every 2 seconds (the
//! activities crate does so whatever the sampling policy says), so a dead worker is noticed
//! within the heartbeat timeout, and no policy value can overflow a timeout.

use std::time::Duration;

use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, WorkflowCancellationToken};

/// How long an activity may go without a heartbeat before Temporal moves it to another worker.
pub(crate) const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of a short, retried activity.
pub(crate) fn quick(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::builder().maximum_attempts(5).maximum_interval(Duration::from_secs(5)).build())
        .summary(summary.into())
        .build()
}

/// Options of a long, heartbeating activity that runs for at most `run_at_most`.
pub(crate) fn long(summary: impl Into<String>, run_at_most: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(run_at_most.saturating_add(Duration::from_secs(60)))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .build(),
        )
        .summary(summary.into())
        .build()
}

/// Options of a short activity that is not cancelled with the workflow (setting or lifting a
/// halt mark, reading owners for a rollback), so a cancelled deploy still finishes it.
pub(crate) fn detached(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::builder().maximum_attempts(10).maximum_interval(Duration::from_secs(5)).build())
        .cancellation_token(WorkflowCancellationToken::new())
        .summary(summary.into())
        .build()
}

/// Options of a compensation: long, retried harder, heartbeating, and on a cancellation token
/// of its own, so aborting a deploy (cancelling its workflow) never cancels its rollback.
pub(crate) fn compensation(summary: String) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30 * 60))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
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
}

/// `window` times `n`, saturating: a policy can never overflow a timeout.
pub(crate) fn windows(window: Duration, n: u32) -> Duration {
    window.saturating_mul(n)
}
