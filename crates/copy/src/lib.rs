//! # ferry-copy
//!
//! `ferry copy`: image locations (transports), image archives, and the engine that moves images
//! between them.
//!
//! - [`Location`] parses where an image is (`registry://`, `oci:`, `oci-archive:`,
//!   `docker-archive:`, `dir:`, `ferry-store:`), with skopeo's spellings accepted as aliases, and
//!   wildcard sources ([`ImagePattern`]: `registry://host/ns/*:latest`, `quay://org/*:tag`).
//! - [`archive`]: one reader for OCI layouts, `oci-archive` and `docker save` tars (plain or
//!   gzip), and one writer per format.
//! - [`Copier`] copies images: blobs the destination lacks, `-j` at a time per image and `-J`
//!   images at a time, each verified by digest on its way in and written under a partial name
//!   until verified; an interrupted copy resumes (complete blobs are kept, a partial one continues
//!   with `Range`); manifests are written byte-identical, children before the index.
//! - [`Platform`] is a `--platform os/arch[/variant]`; [`PlatformChoice`] what a copy takes from an
//!   index.
//! - [`Progress`] receives what happens; drawing it is the binary's business.
//!
//! Architecture invariants: `location.rs` does no I/O — parsing a location never touches the
//! file system or the network, so a command can validate all its arguments before it starts. A
//! file under a blob's final name at a destination always holds exactly that blob.

pub mod archive;
mod dest;
mod engine;
mod error;
mod files;
mod layout;
mod location;
mod platform;
mod progress;
mod recompress;
mod source;
mod store;
mod tarball;

pub use engine::{Copied, Copier, CopyOptions, RegistryFactory, destination_for};
pub use error::CopyError;
pub use location::{
    ArchiveImage, ImagePattern, Location, LocationError, PatternProblem, Transport,
};
pub use platform::{Platform, PlatformChoice, PlatformError};
pub use progress::{BlobOutcome, Event, Progress, Silent};
pub use recompress::{Compression, UnknownCompression};
pub use store::{NamingError, SourceNames, StoreName, StoreNaming, StoreTarget};
