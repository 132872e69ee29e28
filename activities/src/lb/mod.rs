//! The load balancer in front of a target: HAProxy's runtime API ([`RuntimeApi`]) and the
//! activities that steer traffic with it ([`TrafficActivities`]): read per-server stats, set
//! weights, set server states.
//!
//! Every write is absolute and returns what it replaced, so the write that undoes it is the same
//! activity with the returned values: retrying either is harmless.

// `#[activities]` generates constants that cannot carry docs; every handwritten item is documented.
#[allow(missing_docs)]
mod activities;
mod runtime;

pub use activities::TrafficActivities;
pub use runtime::{RuntimeApi, StatError, admin_state, parse_stat};
