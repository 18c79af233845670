//! # ferry-copy
//!
//! The transports of `ferry copy`: where an image is read from or written to. Today this crate
//! holds only the parser of image locations ([`Location`]), with skopeo's spellings accepted as
//! aliases, and of wildcard sources ([`ImagePattern`]: `registry://host/ns/*:latest`,
//! `quay://org/*:tag`); the readers, writers and the copy engine come next (issue #12).
//!
//! Architecture invariant: `location.rs` does no I/O — parsing a location never touches the
//! file system or the network, so a command can validate all its arguments before it starts.

mod location;

pub use location::{
    ArchiveImage, ImagePattern, Location, LocationError, PatternProblem, Transport,
};
