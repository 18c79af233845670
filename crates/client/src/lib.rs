//! # ferry-client
//!
//! A client for OCI distribution registries, used by ferry's pull-through cache, its load
//! generator and its copy tool. One [`Registry`] talks to one registry (`scheme://host[:port]`)
//! and is cheap to share between tasks: its token cache and its rate limit are inside. Its
//! connections (HTTP/2 by ALPN over TLS, HTTP/1.1 otherwise) come from a [`Connections`] pool that
//! every `Registry` of a process can share ([`RegistryOptions::connections`]).
//!
//! - **Reads.** Manifests whole and bounded ([`Registry::get_manifest`]); blobs as streams from
//!   any offset ([`Registry::get_blob`]) or into a file ([`Registry::fetch_blob_to`]): an existing
//!   partial file is hashed and continued with `Range`, a body cut off midway is continued from
//!   what is on disk, and the size and digest are checked at the end, so wrong bytes never
//!   survive. Tag lists follow pagination ([`Registry::all_tags`]).
//! - **Writes.** Blobs from memory, a stream or a file in one `PUT` with `Content-Length`
//!   ([`Registry::push_blob`], [`Registry::push_blob_stream`], [`Registry::push_blob_file`]; or
//!   [`Registry::start_upload`] early and [`Registry::finish_upload_stream`] once the bytes come), in
//!   chunks honouring `OCI-Chunk-Min-Length` ([`Registry::push_blob_chunked`]), or mounted from
//!   another repository ([`Registry::mount_blob`]); manifests ([`Registry::put_manifest`]).
//! - **Authentication.** Anonymous or credentialed bearer tokens from the `WWW-Authenticate`
//!   challenge, cached per registry, repository and scope until they expire; HTTP basic; a given
//!   bearer token. [`resolve_credentials`] finds a registry's credentials as podman and docker
//!   do (`--creds`/`--token`, an auth file, `$REGISTRY_AUTH_FILE`, containers' `auth.json`,
//!   docker's `config.json` with `credHelpers` and `credsStore`).
//! - **Redirects** of `GET` and `HEAD` are followed by the client itself: credentials go only to
//!   the registry's own origin (scheme, host and port), never to blob storage elsewhere.
//! - **Retries.** Connection failures, timeouts and 429/502/503/504 answers are retried, up to
//!   [`RegistryOptions::attempts`], after an exponential backoff with jitter or the answer's
//!   `Retry-After` (seconds or an HTTP date, up to [`RegistryOptions::max_retry_after`]); other
//!   4xx answers never are. [`RegistryOptions::rate_limit`] spaces every request of a
//!   `Registry` evenly.
//! - **Listings.** The catalog, page by page and bounded ([`Registry::all_repositories`]); for
//!   Quay, which serves no catalog, a namespace's repositories and tags through Quay's REST API
//!   ([`Quay`]).
//!
//! Every failure is a [`ClientError`] that says whose fault it is and whether retrying may help, so
//! the server can answer its own client precisely (404 stays 404, 429 stays 429, a dead upstream is a
//! 502 or 504) instead of collapsing everything into a 500.

mod auth;
mod catalog;
mod connections;
mod credentials;
mod download;
mod error;
mod pace;
mod quay;
mod registry;
#[cfg(test)]
mod scripted;
mod upload;

pub use auth::Challenge;
pub use catalog::CatalogPage;
pub use connections::Connections;
pub use credentials::{
    CredentialSources, Credentials, DockerConfig, DockerConfigError, resolve_credentials,
};
pub use download::Fetched;
pub use error::{ClientError, ErrorKind};
pub use quay::{Quay, QuayOptions, QuayTag};
pub use registry::{BlobResponse, ManifestResponse, Registry, RegistryOptions, TagPage};
pub use upload::Upload;
