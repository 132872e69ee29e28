//! Where builds live: the content-addressed artifact store (the origin), each region's cache
//! that hosts pull from, and the record of every build (service, version, git SHA) that makes a
//! digest alone enough to deploy it. Both stores are [`object_store`]s, a local directory by
//! default, so a bucket can back them without touching the deploy logic.

mod artifacts;
mod error;
mod home;
mod merged;
mod quarantine;

pub use artifacts::{ArtifactStore, Format, IMAGE_LABEL, MAX_LABELS, Record, digest_of};
pub use error::{Error, Result};
pub use home::Home;
pub use merged::{MAX_PUSHES, MergedBranch, Push, body_digest};
pub use quarantine::{MAX_QUARANTINE_EVENTS, QuarantineAction, QuarantineEvent, QuarantineRecord};
