//! Waiting on conditions with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::time::Instant;

/// The first pause between checks; it doubles up to [`MAX_PAUSE`], so fast conditions are seen
/// quickly and slow ones are not hammered.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Polls `check` until it returns `Ok(Some(value))`, and returns that value.
///
/// `Ok(None)` means "not yet", and an error is remembered and retried. A check still running at
/// the deadline is abandoned. After the deadline, the error names `what` and the last error seen.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let until = Instant::now() + deadline;
    let mut pause = FIRST_PAUSE;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(until, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => {
                last_error = Some(anyhow!("the last check was still running at the deadline"))
            }
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep(pause.min(until - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    match last_error {
        Some(error) => {
            bail!("timed out after {deadline:?} waiting for {what}; last error: {error:#}")
        }
        None => bail!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Waits until a GET of `url` answers with a 2xx status.
pub async fn wait_http_ok(url: &str, deadline: Duration) -> Result<()> {
    // Bounded per request, so one hung connection cannot eat the whole deadline.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_for(&format!("{url} to answer 2xx"), deadline, || {
        let request = client.get(url).send();
        async move {
            let status = request.await?.status();
            if status.is_success() {
                Ok(Some(()))
            } else {
                bail!("HTTP {status}")
            }
        }
    })
    .await
}
