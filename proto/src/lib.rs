//! The gRPC wire contract of signalbox (`signalbox.v1`, see `proto/signalbox/v1/deploy.proto`)
//! and its conversions to and from the domain types.
//!
//! The generated types live in [`pb`] and stop at the wire: servers convert requests into
//! domain types with `TryFrom`, which refuses missing or malformed fields with a
//! [`signalbox_domain::Error::Invalid`] naming the field, and clients read statuses back the same
//! way. Operator control (`PauseDeploy` ... `ApproveDeploy`) converts to the domain's
//! [`signalbox_domain::Command`] and [`signalbox_domain::Approve`]; whether one is allowed is the
//! deploy's decision, not the wire's.

mod control;
mod release;
mod request;

pub use control::{instant, timestamp};
pub use release::{StartRelease, release_wire_field};
pub use request::{StartDeploy, wire_field};
mod status;

/// Types generated from `signalbox/v1/deploy.proto`, with the tonic client and server.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("signalbox.v1");
}
