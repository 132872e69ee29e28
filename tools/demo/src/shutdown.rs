//! Process shutdown on SIGTERM or SIGINT, shared by both binaries.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

use crate::{Error, Result};

/// Installs SIGTERM and SIGINT handlers now, and returns a future that resolves at the
/// first of either. Installing before serving matters: a SIGTERM sent right after the
/// instance reported ready must drain it, not kill it with the default action.
pub fn on_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    let install = |kind| {
        signal(kind).map_err(|error| Error::Io {
            context: "installing signal handler",
            error,
        })
    };
    let mut terminate = install(SignalKind::terminate())?;
    let mut interrupt = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
