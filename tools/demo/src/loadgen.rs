//! The load generator: real `GET /` requests spread round-robin over the instances of
//! a fleet inventory file, paced by a token bucket, with bounded concurrency. The
//! inventory is re-read every second, so instances a deploy adds get load too; an
//! instance that is restarting only costs connection errors, which are counted.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::fleet::{Instance, Inventory};
use crate::pacing::TokenBucket;
use crate::{Error, Result};

/// How often the inventory file is re-read.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How often a progress line is printed to stderr.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// How long requests still in flight when the run ends may take to finish.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Most requests in flight that can be asked for.
pub const MAX_CONCURRENCY: usize = 100_000;

/// How to generate load.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fleet inventory file, re-read every [`REFRESH_INTERVAL`].
    pub fleet_file: PathBuf,
    /// Total requests per second over all instances.
    pub rps: f64,
    /// Stop after this long; `None` runs until the shutdown future resolves.
    pub duration: Option<Duration>,
    /// Most requests in flight at once; when all are busy, pacing waits.
    pub concurrency: usize,
    /// Per-request timeout, connecting included.
    pub request_timeout: Duration,
}

/// Request counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Requests started.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Answered with another status.
    pub other_status: u64,
    /// Failed without a complete answer: refused, reset, timed out.
    pub conn_errors: u64,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} ok={} 5xx={} conn_err={} other={}",
            self.sent, self.ok, self.server_errors, self.conn_errors, self.other_status
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    server_errors: AtomicU64,
    other_status: AtomicU64,
    conn_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Totals {
        Totals {
            sent: self.sent.load(Relaxed),
            ok: self.ok.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            other_status: self.other_status.load(Relaxed),
            conn_errors: self.conn_errors.load(Relaxed),
        }
    }
}

/// The URLs currently receiving load, swapped whole on each inventory change.
type Targets = Arc<RwLock<Arc<Vec<String>>>>;

/// Generates load until `options.duration` elapses or `shutdown` resolves, printing
/// progress to stderr, and returns the counts. Only an unusable option or an
/// unreadable inventory at start-up is an error; later failures are counted or logged.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<Totals> {
    if !(options.rps > 0.0 && options.rps.is_finite()) {
        return Err(Error::InvalidOption {
            option: "--rps",
            reason: format!("is {}, must be a positive number", options.rps),
        });
    }
    if !(1..=MAX_CONCURRENCY).contains(&options.concurrency) {
        return Err(Error::InvalidOption {
            option: "--concurrency",
            reason: format!(
                "is {}, must be within 1..={MAX_CONCURRENCY}",
                options.concurrency
            ),
        });
    }
    let inventory = Inventory::from_path(&options.fleet_file)?;
    let targets: Targets = Arc::new(RwLock::new(Arc::new(urls(&inventory))));
    eprintln!(
        "loadgen: {} instance(s) in {}; {} rps, concurrency {}",
        inventory.instances.len(),
        options.fleet_file.display(),
        options.rps,
        options.concurrency
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(options.request_timeout.min(Duration::from_secs(1)))
        .timeout(options.request_timeout)
        .build()
        .map_err(Error::Client)?;

    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let refresher = tokio::spawn(follow_inventory(
        options.fleet_file.clone(),
        Arc::clone(&targets),
    ));
    let reporter = tokio::spawn(report(Arc::clone(&counters), Arc::clone(&targets), started));
    let permits = Arc::new(Semaphore::new(options.concurrency));
    // Far enough to never fire when no duration is given.
    let deadline = started
        + options
            .duration
            .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    let mut bucket = TokenBucket::new(
        options.rps,
        TokenBucket::default_burst(options.rps),
        started.into_std(),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;

    loop {
        if Instant::now() >= deadline {
            break;
        }
        if let Err(wait) = bucket.try_take(Instant::now().into_std()) {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until((Instant::now() + wait).min(deadline)) => continue,
            }
        }
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(deadline) => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let list = Arc::clone(&targets.read().unwrap_or_else(PoisonError::into_inner));
        if list.is_empty() {
            continue;
        }
        let url = list[next % list.len()].clone();
        next = next.wrapping_add(1);
        counters.sent.fetch_add(1, Relaxed);
        let (client, counters) = (client.clone(), Arc::clone(&counters));
        tokio::spawn(async move {
            let counter = match send(&client, &url).await {
                Ok(status) if status.is_success() => &counters.ok,
                Ok(status) if status.is_server_error() => &counters.server_errors,
                Ok(_) => &counters.other_status,
                Err(_) => &counters.conn_errors,
            };
            counter.fetch_add(1, Relaxed);
            drop(permit);
        });
    }

    let all = u32::try_from(options.concurrency).expect("bounded by MAX_CONCURRENCY");
    if tokio::time::timeout(FINISH_TIMEOUT, permits.acquire_many(all))
        .await
        .is_err()
    {
        eprintln!("loadgen: abandoning requests still in flight after {FINISH_TIMEOUT:?}");
    }
    refresher.abort();
    reporter.abort();
    let totals = counters.snapshot();
    eprintln!(
        "loadgen: done after {:.1}s: {totals}",
        started.elapsed().as_secs_f64()
    );
    Ok(totals)
}

/// Sends one `GET`, reading the whole body so the connection can be reused.
async fn send(client: &reqwest::Client, url: &str) -> reqwest::Result<reqwest::StatusCode> {
    let response = client.get(url).send().await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

fn urls(inventory: &Inventory) -> Vec<String> {
    inventory.instances.iter().map(Instance::work_url).collect()
}

/// Re-reads the inventory every [`REFRESH_INTERVAL`]. A file that cannot be read or
/// parsed (e.g. caught mid-write by a non-atomic writer) keeps the previous targets.
async fn follow_inventory(path: PathBuf, targets: Targets) {
    let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
    let mut last_error = None;
    loop {
        ticker.tick().await;
        match read_urls(&path) {
            Ok(fresh) => {
                last_error = None;
                let mut current = targets.write().unwrap_or_else(PoisonError::into_inner);
                if **current != fresh {
                    eprintln!("loadgen: fleet now has {} instance(s)", fresh.len());
                    *current = Arc::new(fresh);
                }
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    eprintln!("loadgen: keeping the previous fleet: {message}");
                    last_error = Some(message);
                }
            }
        }
    }
}

fn read_urls(path: &Path) -> Result<Vec<String>> {
    Inventory::from_path(path).map(|inventory| urls(&inventory))
}

async fn report(counters: Arc<Counters>, targets: Targets, started: Instant) {
    let mut ticker = tokio::time::interval_at(started + REPORT_INTERVAL, REPORT_INTERVAL);
    loop {
        ticker.tick().await;
        let instances = targets.read().unwrap_or_else(PoisonError::into_inner).len();
        eprintln!(
            "loadgen: {:.0}s {} instances={instances}",
            started.elapsed().as_secs_f64(),
            counters.snapshot()
        );
    }
}
