//! The contract between signalbox's workers and its clients: every Temporal wire name (workflow
//! types, signals, queries, updates, activities) with its input and output types, and the
//! search attributes and memo a deploy carries.
//!
//! Workers implement these names (`workflows`, `activities`); clients (`client`, the API, the
//! CLI, the tests) start and steer workflows through them, never through workflow code. The
//! strings are what history records: renaming a Rust type must never change one.

#[macro_use]
mod macros;

pub mod activities;
pub mod bench;
pub mod deploy;
pub mod lane;
pub mod legacy;
mod received;
pub mod release;
pub mod search;

pub use received::{Received, Unreadable};
