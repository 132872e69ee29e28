//! Activities: every side effect of a deploy that is not a substrate's own. The artifact store
//! and its regional caches, health sampling and the analysis engine's judgement (one loop for
//! every strategy), lanes, and the load balancer. Targets are reached only through the
//! substrate registry, by kind. Each operation is idempotent, so a retry after a crash never
//! redoes what already took effect.

// `#[activities]` generates constants that cannot carry docs; every handwritten item is documented.
#[allow(missing_docs)]
pub mod deploy;
pub mod error;
pub mod heartbeat;
#[allow(missing_docs)]
pub mod lane;
pub mod lb;
#[allow(missing_docs)]
pub mod release;
pub mod sampling;

pub use deploy::DeployActivities;
pub use error::{Error, Result};
pub use lane::LaneActivities;
pub use lb::TrafficActivities;
pub use release::ReleaseActivities;
