//! Server metrics in OpenMetrics form (`GET /metrics` on the metrics listener).
//!
//! Hot-path cost is a label lookup and an atomic add per request; gauges that describe the store
//! are read from it when scraped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub endpoint: &'static str,
    /// One of a closed set (see [`method_label`]): a label taken from the request would let a
    /// client create series without bound.
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PullLabels {
    /// The upstream registry (`local` for ferry's own repositories).
    pub namespace: String,
    /// `manifest` or `blob`.
    pub kind: &'static str,
    /// `cached` or `upstream`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamErrorLabels {
    pub upstream: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabels {
    /// One of a closed set (`PeerMiss::label`, or `served`).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    /// One of a closed set (never a user name or a credential).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ByLabels {
    /// `user` or `address`.
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub upstream: String,
}

/// The `method` label of a request: the methods a registry client sends, everything else `other`.
pub(crate) fn method_label(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Every series ferry exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub(crate) pulls: Family<PullLabels, Counter>,
    pub(crate) bytes_served: Counter,
    pub(crate) bytes_fetched: Family<UpstreamLabels, Counter>,
    pub(crate) coalesced: Family<EndpointLabels, Counter>,
    pub(crate) upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub(crate) stale_served: Family<UpstreamLabels, Counter>,
    pub(crate) fills_in_flight: Gauge,
    pub(crate) peer_requests: Family<CauseLabels, Counter>,
    pub(crate) peer_fallbacks: Family<CauseLabels, Counter>,
    pub(crate) peer_fetched_bytes: Counter,
    pub(crate) peer_served_bytes: Counter,
    pub(crate) peer_uploads: Gauge,
    pub(crate) peer_uploads_refused: Counter,
    pub(crate) peer_lookups: Counter,
    pub(crate) peer_providers_found: Counter,
    pub(crate) peer_members: Gauge,
    pub(crate) peer_requests_denied: Counter,
    pub(crate) auth_failures: Family<ReasonLabels, Counter>,
    pub(crate) access_denied: Counter,
    pub(crate) rate_limited: Family<ByLabels, Counter>,
    cache_blobs: Gauge,
    cache_bytes: Gauge,
    cache_repositories: Gauge,
    index_repositories: Gauge,
    index_entries: Gauge,
    small_blob_bytes: Gauge,
    uploads_open: Gauge,
    /// Blobs removed to keep the cache within its byte budget.
    pub evictions: Counter,
    /// Requests answered 507 because the storage is full.
    storage_full: Counter,
    /// Whether the last write found the storage full (an episode is logged when it starts and ends).
    storage_is_full: AtomicBool,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s: from a cached small blob to a large pull-through.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("ferry");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            pulls: Family::default(),
            bytes_served: Counter::default(),
            bytes_fetched: Family::default(),
            coalesced: Family::default(),
            upstream_errors: Family::default(),
            stale_served: Family::default(),
            fills_in_flight: Gauge::default(),
            peer_requests: Family::default(),
            peer_fallbacks: Family::default(),
            peer_fetched_bytes: Counter::default(),
            peer_served_bytes: Counter::default(),
            peer_uploads: Gauge::default(),
            peer_uploads_refused: Counter::default(),
            peer_lookups: Counter::default(),
            peer_providers_found: Counter::default(),
            peer_members: Gauge::default(),
            peer_requests_denied: Counter::default(),
            auth_failures: Family::default(),
            access_denied: Counter::default(),
            rate_limited: Family::default(),
            cache_blobs: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_repositories: Gauge::default(),
            index_repositories: Gauge::default(),
            index_entries: Gauge::default(),
            small_blob_bytes: Gauge::default(),
            uploads_open: Gauge::default(),
            evictions: Counter::default(),
            storage_full: Counter::default(),
            storage_is_full: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "Requests by endpoint, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by endpoint",
            m.latency.clone(),
        );
        registry.register(
            "pulls",
            "Manifest and blob pulls by namespace and by whether the cache had them",
            m.pulls.clone(),
        );
        registry.register(
            "served_bytes",
            "Blob bytes sent to clients",
            m.bytes_served.clone(),
        );
        registry.register(
            "upstream_fetched_bytes",
            "Blob bytes fetched from upstreams",
            m.bytes_fetched.clone(),
        );
        registry.register(
            "coalesced_requests",
            "Requests that joined a fetch already in flight instead of starting one",
            m.coalesced.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream fetches by upstream and status ferry answered",
            m.upstream_errors.clone(),
        );
        registry.register(
            "stale_served",
            "Cached manifests served because the upstream failed",
            m.stale_served.clone(),
        );
        registry.register(
            "fills_in_flight",
            "Blob fetches from upstreams in progress",
            m.fills_in_flight.clone(),
        );
        registry.register(
            "peer_requests",
            "Blobs asked of peers, by outcome (served, not_found, busy, timeout, error, interrupted, size)",
            m.peer_requests.clone(),
        );
        registry.register(
            "peer_fallbacks",
            "Fills that asked peers and went to the upstream, by the last peer's outcome (or digest: peers sent wrong bytes)",
            m.peer_fallbacks.clone(),
        );
        registry.register(
            "peer_fetched_bytes",
            "Blob bytes received from peers",
            m.peer_fetched_bytes.clone(),
        );
        registry.register(
            "peer_served_bytes",
            "Blob bytes sent to peers",
            m.peer_served_bytes.clone(),
        );
        registry.register(
            "peer_uploads",
            "Blob transfers to peers in progress",
            m.peer_uploads.clone(),
        );
        registry.register(
            "peer_uploads_refused",
            "Peer requests answered 429 because max_uploads transfers were in progress",
            m.peer_uploads_refused.clone(),
        );
        registry.register(
            "peer_lookups",
            "Provider lookups in the peer DHT (--p2p), one per fill that asks peers and one more before its second round",
            m.peer_lookups.clone(),
        );
        registry.register(
            "peer_providers_found",
            "Providers the peer DHT named, in all lookups",
            m.peer_providers_found.clone(),
        );
        registry.register(
            "peer_members",
            "ferry nodes connected in the peer DHT now",
            m.peer_members.clone(),
        );
        registry.register(
            "peer_requests_denied",
            "Peer requests refused for want of a valid membership proof (cluster key, allow-list)",
            m.peer_requests_denied.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests whose credentials were refused, by reason (malformed, bad_credentials, unsupported_scheme)",
            m.auth_failures.clone(),
        );
        registry.register(
            "access_denied",
            "Requests the access rules refused (401 for anonymous callers, 403 for users)",
            m.access_denied.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests answered 429 by the per-client rate limits, by whose bucket (user, address)",
            m.rate_limited.clone(),
        );
        registry.register("cache_blobs", "Blobs in the store", m.cache_blobs.clone());
        registry.register(
            "cache_bytes",
            "Bytes of blobs in the store",
            m.cache_bytes.clone(),
        );
        registry.register(
            "repositories",
            "Repositories in the store, as of the last walk of the data dir (start, catalog, gc)",
            m.cache_repositories.clone(),
        );
        registry.register(
            "index_repositories",
            "Repositories loaded in the in-memory index",
            m.index_repositories.clone(),
        );
        registry.register(
            "index_entries",
            "Blob links, manifests and tags of the repositories loaded in the index (bounded by limits.index_entries)",
            m.index_entries.clone(),
        );
        registry.register(
            "small_blob_cache_bytes",
            "Memory held by small blobs and manifests served from memory (bounded by limits.small_blob_cache)",
            m.small_blob_bytes.clone(),
        );
        registry.register(
            "uploads_open",
            "Upload sessions open",
            m.uploads_open.clone(),
        );
        registry.register(
            "evictions",
            "Blobs evicted to stay within the byte budget",
            m.evictions.clone(),
        );
        registry.register(
            "storage_full",
            "Requests answered 507 because the storage (disk or quota) is full",
            m.storage_full.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts an answer saying the storage is full; the first of an episode is logged (a full
    /// disk fails every write, and a warning per request would bury the log).
    pub(crate) fn storage_full(&self, cause: Option<&str>) {
        self.storage_full.inc();
        if !self.storage_is_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cause = cause.unwrap_or("no space to cache pulled content"),
                "the storage is full: writes are answered 507 until space is freed (`ferry gc`, `ferry prune`, a smaller cache.max_size); further failures are counted in ferry_storage_full_total, not logged"
            );
        }
    }

    /// Notes a write that succeeded: it ends a storage-full episode.
    pub(crate) fn storage_wrote(&self) {
        if self.storage_is_full.load(Ordering::Relaxed)
            && self.storage_is_full.swap(false, Ordering::Relaxed)
        {
            tracing::info!("the storage accepts writes again");
        }
    }

    /// Counts a pull (a GET of a manifest or blob).
    pub(crate) fn pull(&self, namespace: &str, kind: &'static str, source: &'static str) {
        self.pulls
            .get_or_create(&PullLabels {
                namespace: namespace.to_owned(),
                kind,
                source,
            })
            .inc();
    }

    /// The OpenMetrics text, with the store gauges read now.
    pub fn render(&self, store: &ferry_store::Store) -> String {
        let s = store.stats();
        self.cache_blobs.set(s.blobs as i64);
        self.cache_bytes.set(s.blob_bytes as i64);
        self.cache_repositories.set(s.repositories as i64);
        self.index_repositories.set(s.repositories_loaded as i64);
        self.index_entries.set(s.index_entries as i64);
        self.small_blob_bytes.set(s.small_blob_bytes as i64);
        self.uploads_open.set(s.uploads as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` for `app` (its own listener, so that scrapes never compete with pulls for
/// connection slots and the admin surface stays off the data port).
pub fn router(app: Arc<crate::App>) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let app = app.clone();
        async move {
            use axum::response::IntoResponse;
            if req.uri().path() != "/metrics" {
                return (http::StatusCode::NOT_FOUND, "metrics are at /metrics\n").into_response();
            }
            let body = app.metrics.render(&app.store);
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
                .into_response()
        }
    })
}
