//! The artifact format a user ships: a tarball (gzip-compressed or not) whose root holds the
//! program and a `signalbox.json` manifest saying how to start it, how to tell it is ready,
//! where its metrics are and how to drain it. Nothing here is special to any one service: the
//! local fleet and the host agent run every bundle the same way.
//!
//! [`Manifest::read`] checks a manifest and names the field of any problem; [`Bundle`] reads
//! the manifest out of a tarball's bytes and unpacks it, refusing entries that would land
//! outside the release directory.

mod archive;
mod error;
mod manifest;

pub use archive::{Bundle, MANIFEST, is_bundle};
pub use error::{Error, Result};
pub use manifest::{Drain, Manifest, Metrics, PLACEHOLDERS, Ready, Start, Vars};
