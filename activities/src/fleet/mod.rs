//! The local fleet: the embedded default substrate. N instances are N real OS processes of the
//! demo service on loopback ports; each pulls a build into a cold directory, verifies it, and
//! switches to it atomically, keeping the previous build for an instant rollback.

mod instance;
mod inventory;
mod local;

pub use instance::{InstanceDir, Ready};
pub use inventory::{InstanceSpec, Inventory};
pub use local::{LocalFleet, OpLogEntry};
