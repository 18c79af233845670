//! # ferry-copy
//!
//! The transports of `ferry copy`: where an image is read from or written to. Today this crate
//! holds the parser of image locations ([`Location`]), with skopeo's spellings accepted as
//! aliases; the image archives ([`archive`]: one reader for OCI layouts, `oci-archive` and `docker
//! save` tars, plain or gzip, and one writer per format); and the `--platform` filter
//! ([`Platform`]). The registry transport and the copy engine come next (issue #12).
//!
//! Architecture invariant: `location.rs` does no I/O — parsing a location never touches the
//! file system or the network, so a command can validate all its arguments before it starts.

pub mod archive;
mod location;
mod platform;

pub use location::{ArchiveImage, Location, LocationError, Transport};
pub use platform::{Platform, PlatformError};
