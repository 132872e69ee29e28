//! Activities: every side effect of a deploy. The artifact store and regional caches, the local
//! fleet substrate, and health sampling; each operation idempotent, so a retry after a crash
//! never redoes what already took effect.

// `#[activities]` generates constants that cannot carry docs; every handwritten item is documented.
#[allow(missing_docs)]
pub mod deploy;
pub mod analyze;
pub mod error;
pub mod fleet;
pub mod health;
pub mod home;
pub mod journal;
pub mod lb;
pub mod store;
pub mod substrate;

pub use deploy::DeployActivities;
pub use error::{Error, Result};
pub use home::Home;
pub use substrate::Substrate;
