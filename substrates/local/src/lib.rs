//! The local fleet: the embedded default substrate (kind `local`). N instances are N real OS
//! processes of a service binary on loopback ports; each pulls a build from its region's cache
//! into a cold directory, verifies it, and switches to it atomically, keeping the previous
//! build for an instant rollback.

mod fleet;
mod inventory;
mod journal;

use std::sync::Arc;

use signalbox_store::Home;
use signalbox_substrate::{Kind, Result, Substrate};

pub use fleet::{HaltMark, LocalFleet, OpLogEntry};
pub use signalbox_host::{InstanceDir, Ready};
pub use inventory::{InstanceSpec, Inventory};

/// The kind name of the local fleet.
pub const KIND: &str = signalbox_domain::target::LOCAL;

/// The local fleets under one signalbox home, as a substrate [`Kind`].
#[derive(Debug, Clone)]
pub struct LocalFleets {
    home: Home,
}

impl LocalFleets {
    /// The fleets under `home`.
    pub fn new(home: Home) -> Self {
        Self { home }
    }
}

impl Kind for LocalFleets {
    fn open(&self, name: &str) -> Result<Arc<dyn Substrate>> {
        Ok(Arc::new(LocalFleet::open(&self.home, name)?))
    }
}
