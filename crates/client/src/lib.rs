//! # ferry-client
//!
//! A client for OCI distribution registries, built for a pull-through cache: it resolves and
//! fetches manifests and streams blobs (from any offset, so an interrupted transfer resumes with
//! `Range`), authenticates the way registries expect (anonymous or credentialed bearer tokens from
//! the `WWW-Authenticate` challenge, cached until they expire; HTTP basic), and retries what a retry
//! can fix (connection failures, 502/503/504, 429 within a bounded `Retry-After`). It lists what a
//! registry holds — tag lists and the catalog, page by page, bounded
//! ([`Registry::all_repositories`]) — and, for Quay, which serves no catalog, a namespace's
//! repositories and tags through Quay's REST API ([`Quay`]).
//!
//! Every failure is a [`ClientError`] that says whose fault it is and whether retrying may help, so
//! the server can answer its own client precisely (404 stays 404, 429 stays 429, a dead upstream is a
//! 502 or 504) instead of collapsing everything into a 500.

mod auth;
mod catalog;
mod credentials;
mod error;
mod quay;
mod registry;

pub use auth::Challenge;
pub use catalog::CatalogPage;
pub use credentials::{Credentials, DockerConfig, DockerConfigError};
pub use error::{ClientError, ErrorKind};
pub use quay::{Quay, QuayOptions, QuayTag};
pub use registry::{BlobResponse, ManifestResponse, Registry, RegistryOptions, TagPage};
