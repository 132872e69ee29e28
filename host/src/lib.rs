//! One instance on one host, as both the local fleet and the host agent keep it: releases
//! unpacked side by side, `current` and `previous` switched atomically, the deploy that last
//! changed it, and the one service process that runs its current release.

mod error;
mod instance;

pub use error::{Error, Result};
pub use instance::{InstanceDir, Ready, signal_named};
