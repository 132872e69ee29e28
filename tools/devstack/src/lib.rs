//! The local stack that the demo, the integration tests and the benchmarks run against.
//!
//! Everything here drives *real* components: the Temporal CLI's dev server, workspace binaries,
//! fleet processes. Two rules shape the API:
//!
//! - **Nothing leaks.** A [`ManagedProcess`] runs in its own process group and is killed when it
//!   is dropped and, as a last resort, when the owning process exits (an `atexit` hook). Only
//!   [`ManagedProcess::spawn_detached`] creates processes meant to outlive their spawner.
//! - **Nothing sleeps.** Readiness is a condition polled with a deadline ([`wait_for`]), and a
//!   timeout says what was awaited and the last error seen.
//!
//! A process killed by a signal (Ctrl-C with the default handler, SIGKILL) does not run `atexit`
//! hooks; binaries should catch Ctrl-C (`tokio::signal::ctrl_c`) and return from `main` normally.

pub mod browser;
pub mod etcd;
pub mod haproxy;
pub mod kube;
mod locate;
pub mod netns;
pub mod nginx;
mod process;
pub mod prometheus;
pub mod s3;
pub mod tls_front;
mod sys;
mod temporal;
mod wait;

pub use locate::{free_port, temporal_binary, workspace_binary};
pub use process::ManagedProcess;
pub use temporal::{DevServerOptions, TemporalDevServer};
pub use wait::{wait_for, wait_http_ok};
