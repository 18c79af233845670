//! # ferry-oci
//!
//! The vocabulary every other ferry crate speaks: [`Digest`], [`RepoName`], [`Tag`], [`Reference`],
//! [`MediaType`], the raw-bytes [`Manifest`] wrapper, HTTP [`ByteRange`] parsing, the `/v2` path router
//! ([`Route::parse`]) and the OCI error envelope ([`ErrorCode`], [`OciError`]).
//!
//! Architecture invariant: this crate is pure. It does no I/O, spawns nothing and never reads the clock,
//! so every parser here can be property-tested exhaustively and reused by the server, the client, the
//! trace lab and the copy engine alike.
//!
//! Parsers are strict in the direction the OCI Distribution Spec is strict (repository names, tags,
//! digests) and never panic on any input: every failure is a typed error that maps to an OCI error code.

mod digest;
mod error;
mod manifest;
mod media;
mod range;
mod reference;
mod route;
mod tag_list;
pub mod timestamp;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorCode, ErrorEnvelope, OciError};
pub use manifest::{Descriptor, Manifest, ManifestError, Platform};
pub use media::MediaType;
pub use range::{ByteRange, ContentRange, RangeError, ResolvedRange};
pub use reference::{
    DOCKER_HUB, DOCKER_HUB_ENDPOINT, ManifestRef, NameError, Reference, RepoName, Tag,
};
pub use route::{Route, RouteError};
pub use tag_list::{FilteredTags, TagListError, filter_tag_list};
