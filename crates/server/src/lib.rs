//! # ferry-server
//!
//! The registry HTTP API: every endpoint of the OCI Distribution Spec v1.1 (pull, push with
//! monolithic, chunked and streamed uploads, cross-repository mounts, tags with pagination, the
//! catalog, referrers, deletes) over a [`ferry_store::Store`].
//!
//! Requests enter through one catch-all handler that parses the path with
//! [`ferry_oci::Route::parse`] and dispatches to one module per endpoint under `api/`. Every error a
//! client sees is an OCI error envelope ([`ApiError`]).
//!
//! Architecture invariants:
//! - Bodies are streamed, never buffered whole (manifests excepted: they are bounded by
//!   `max_manifest_bytes`).
//! - A 500 means a bug or a broken disk; everything the client can cause is a 4xx.
//! - Every connection, header read and idle body is bounded ([`ServeOptions`]).

mod admin;
mod api;
mod error;
mod listen;
pub mod metrics;
pub mod mirror;
pub mod prune;

use std::sync::Arc;

use axum::Router;
use ferry_store::Store;

pub use error::ApiError;
pub use listen::{ClientAddr, RateFloor, ServeOptions, serve};
pub use metrics::Metrics;
pub use mirror::{Mirror, MirrorOptions, TransferFloor, Upstream};

/// Behaviour switches of the registry API.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Allow DELETE of manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Refuse manifests whose blobs (or index children) are not in the repository.
    pub check_manifest_references: bool,
    /// Mount without `from` when the blob exists anywhere in the store.
    pub auto_mount: bool,
    /// Abort an upload whose body sends nothing for this long.
    pub body_idle_timeout: std::time::Duration,
    /// The slowest a request body may arrive.
    pub min_receive: RateFloor,
    /// Bearer token of the admin API; `None` turns the API off.
    pub admin_token: Option<String>,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            delete_enabled: true,
            check_manifest_references: true,
            auto_mount: true,
            body_idle_timeout: std::time::Duration::from_secs(60),
            min_receive: RateFloor::default(),
            admin_token: None,
        }
    }
}

/// Shared state of every request.
#[derive(Debug)]
pub struct App {
    /// The content store.
    pub store: Arc<Store>,
    /// Behaviour switches.
    pub options: RegistryOptions,
    /// The pull-through mirror, when upstreams are configured.
    pub mirror: Option<Arc<Mirror>>,
    /// What is counted.
    pub metrics: Arc<Metrics>,
}

/// Builds the service: `/v2/...`, `/healthz`, `/readyz`.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(api::dispatch).with_state(app)
}
