//! The host agent and the etcd protocol it shares with the agent substrate.
//!
//! Per target, etcd holds under `/signalbox/targets/<target>/`:
//!
//! - `spec`: the target's regions and the cache each region's hosts pull from;
//! - `hosts/<host>/registration`: the agent's address, region and port, under a lease, so it is
//!   gone when the agent is;
//! - `hosts/<host>/desired`: the build the host should run, with a generation, written by the
//!   worker with compare-and-set;
//! - `hosts/<host>/observed`: what the host runs, written back by its agent;
//! - `halt`: a deploy froze the target; agents take no step while it is there.
//!
//! The agent ([`agent::run`]) watches its keys, pulls a build from its region's cache, verifies
//! its digest, unpacks it into a cold directory, drains the running process, switches the
//! `current` link at once, starts the new build and waits until it is ready.

pub mod agent;
pub mod protocol;

/// A client of the etcd at `endpoints`, with the timeouts every signalbox component uses: two
/// seconds to connect, five per request.
pub async fn connect_etcd(endpoints: &[String]) -> Result<etcd_client::Client, etcd_client::Error> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(std::time::Duration::from_secs(2)).with_timeout(std::time::Duration::from_secs(5));
    etcd_client::Client::connect(endpoints, Some(options)).await
}
