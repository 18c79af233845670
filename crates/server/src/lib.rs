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
//!
//! [`run`] is the whole serving lifecycle (listeners, housekeeping, shutdown) over an [`App`].

pub mod access_log;
mod admin;
mod api;
pub mod auth;
mod error;
mod lifecycle;
mod listen;
pub mod metrics;
pub mod mirror;
pub mod prune;
pub mod rate;
mod streams;
pub mod tls;
pub mod units;

use std::sync::Arc;

use access_log::AccessLog;

use axum::Router;
use ferry_store::Store;

pub use error::ApiError;
pub use lifecycle::{RunError, RunSettings, run};
pub use listen::{ClientAddr, RateFloor, ServeOptions, TlsConnection, serve};
pub use metrics::Metrics;
pub use mirror::peers::{PEER_HEADER, PeerOptions, Peers};
pub use mirror::{
    CacheNames, CacheRepoError, Mirror, MirrorConfigError, MirrorOptions, TransferFloor, Upstream,
    cache_repo_of,
};

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
    /// Bytes of pushed manifests held in memory at once, across all requests (shared by clones).
    pub manifest_buffers: BufferBudget,
    /// Bearer token of the admin API; `None` turns the API off.
    pub admin_token: Option<String>,
    /// Where each request is recorded in the traces' format (`--access-log`); `None`: nowhere.
    pub access_log: Option<Arc<AccessLog>>,
    /// Authentication and access rules; `None`: anyone may do anything the routing allows.
    pub auth: Option<Arc<auth::Auth>>,
    /// Per-client request rates; `None`: unlimited.
    pub rate: Option<Arc<rate::RateLimits>>,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            delete_enabled: true,
            check_manifest_references: true,
            auto_mount: true,
            body_idle_timeout: std::time::Duration::from_secs(60),
            min_receive: RateFloor::default(),
            manifest_buffers: BufferBudget::new(64 << 20),
            admin_token: None,
            access_log: None,
            auth: None,
            rate: None,
        }
    }
}

/// A server-wide bound on bytes buffered in memory for requests (manifests are read whole to be
/// hashed and parsed): each request's own limit times the connection count is far too much. One
/// client address may hold at most a quarter of it while its bodies arrive, so a client that
/// trickles many bodies cannot spend it all.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: usize,
    per_client: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// Bytes charged to a [`BufferBudget`], returned when dropped.
#[derive(Debug, Default)]
pub struct BufferPermit {
    global: Option<tokio::sync::OwnedSemaphorePermit>,
    client: Option<ClientShare>,
}

/// Bytes charged to one client's share of a [`BufferBudget`].
#[derive(Debug)]
struct ClientShare {
    map: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
    bytes: usize,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get_mut(&self.ip) {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// How many bytes of memory parsing a manifest may take per byte of manifest, with a margin (measured:
/// 11.8× for a 4 MiB manifest of one-character annotations, 8× for empty `urls`, 2.6× for plain
/// layers); what a manifest is charged to a [`BufferBudget`] while it is parsed and handled.
pub const MANIFEST_PARSE_FACTOR: usize = 16;

impl BufferBudget {
    /// Charges `n` bytes, waiting for others to return theirs (for work that must not fail, such
    /// as a mirror's own upstream fetches; `n` beyond the whole budget is cut to it).
    pub(crate) async fn charge_waiting(&self, n: usize) -> BufferPermit {
        let n = n.min(self.total).min(u32::MAX as usize) as u32;
        if n == 0 {
            return BufferPermit::default();
        }
        BufferPermit {
            global: self.bytes.clone().acquire_many_owned(n).await.ok(),
            client: None,
        }
    }

    /// A budget of `total` bytes.
    pub fn new(total: usize) -> BufferBudget {
        let total = total.min(tokio::sync::Semaphore::MAX_PERMITS);
        BufferBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(total)),
            total,
            per_client: Arc::default(),
        }
    }

    pub(crate) fn spent(&self, whose: &str) -> ApiError {
        ApiError::new(
            ferry_oci::ErrorCode::TooManyRequests,
            format!(
                "{whose} holding as many bytes of manifests as the server allows ({} in all, a quarter per client); retry shortly",
                self.total
            ),
        )
        .header(http::header::RETRY_AFTER, "1")
    }

    /// Charges `n` bytes now, or answers 429 (with `Retry-After`) when the budget is spent.
    pub(crate) fn charge(&self, n: usize) -> Result<BufferPermit, ApiError> {
        if n == 0 {
            return Ok(BufferPermit::default());
        }
        let n = u32::try_from(n).map_err(|_| self.spent("the server is"))?;
        self.bytes
            .clone()
            .try_acquire_many_owned(n)
            .map(|p| BufferPermit {
                global: Some(p),
                client: None,
            })
            .map_err(|_| self.spent("the server is"))
    }

    /// [`BufferBudget::charge`], also within `client`'s share (a quarter of the budget).
    pub(crate) fn charge_for(
        &self,
        client: Option<std::net::IpAddr>,
        n: usize,
    ) -> Result<BufferPermit, ApiError> {
        let Some(ip) = client else {
            return self.charge(n);
        };
        let share = {
            let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let held = map.entry(ip).or_insert(0);
            if *held + n > self.total / 4 {
                if *held == 0 {
                    map.remove(&ip);
                }
                return Err(self.spent("this client is"));
            }
            *held += n;
            ClientShare {
                map: self.per_client.clone(),
                ip,
                bytes: n,
            }
        };
        let mut permit = self.charge(n)?;
        permit.client = Some(share);
        Ok(permit)
    }
}

impl BufferPermit {
    /// A permit holding nothing.
    pub(crate) fn none() -> BufferPermit {
        BufferPermit::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.global.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Adds `other`'s bytes to this permit.
    pub fn merge(&mut self, mut other: BufferPermit) {
        match (&mut self.global, other.global.take()) {
            (Some(p), Some(o)) => p.merge(o),
            (slot @ None, o) => *slot = o,
            (_, None) => {}
        }
        match (&mut self.client, other.client.take()) {
            (Some(mine), Some(mut theirs)) if mine.ip == theirs.ip => {
                mine.bytes += std::mem::take(&mut theirs.bytes);
            }
            (slot @ None, theirs) => *slot = theirs,
            // One request has one client; were it otherwise, the other share is returned here.
            (Some(_), Some(theirs)) => drop(theirs),
            (_, None) => {}
        }
    }
}

/// Bytes in memory charged to a budget once, however many responses send them.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    pub bytes: bytes::Bytes,
    pub _permit: BufferPermit,
}

/// A response body over [`HeldBytes`], in pieces: hyper asks for the next piece only once the
/// last is on its way, so a slow reader keeps the charge (and the bytes) alive while it reads,
/// and no more than a piece sits in hyper's buffer.
#[derive(Debug)]
pub(crate) struct HeldBody {
    held: Arc<HeldBytes>,
    at: usize,
}

impl HeldBody {
    const PIECE: usize = 64 * 1024;

    pub(crate) fn new(held: Arc<HeldBytes>) -> HeldBody {
        HeldBody { held, at: 0 }
    }
}

impl http_body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let len = this.held.bytes.len();
        if this.at >= len {
            return std::task::Poll::Ready(None);
        }
        let end = (this.at + Self::PIECE).min(len);
        let piece = this.held.bytes.slice(this.at..end);
        this.at = end;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.held.bytes.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.held.bytes.len() - self.at) as u64)
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
