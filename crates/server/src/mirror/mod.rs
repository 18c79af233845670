//! The pull-through mirror: which upstream a request is for, and fetching what the store lacks.
//!
//! Routing, in order: the `X-Registry` header; `?ns=<registry>` (what containerd sends for mirrors
//! configured in hosts.toml); an in-path namespace (`/v2/quay.io/org/app/...`: a first path segment
//! containing `.` or `:` that names a configured upstream); then the default upstream — except for
//! repositories under a configured local namespace, which are ferry's own. A name that routes to an
//! upstream is never writable: otherwise a push could replace what every client of the mirror pulls
//! under that name (Docker's `registry-mirrors` sends no `ns`). Without a default upstream, names
//! outside the cache namespaces are local. Cached content is
//! stored under `<registry>/<repository>` (`:` in the registry spelled `__`), so it shows up in the
//! catalog that way and is deduplicated with everything else in the store.

pub mod budget;
mod fill;
pub(crate) mod flight;
mod outage;
pub mod peers;
mod pull;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{ClientError, ErrorKind as ClientKind, Registry};
use ferry_oci::{DOCKER_HUB, ErrorCode, RepoName};
use ferry_policy::glob_match;
use ferry_store::StoreError;
use http::{HeaderMap, StatusCode};

use crate::ApiError;

pub(crate) use pull::{get_blob, get_manifest, get_referrers, get_tags};

/// One upstream registry.
#[derive(Debug)]
pub struct Upstream {
    /// The registry name routing matches (`host[:port]`, lowercase), e.g. `docker.io`.
    pub name: String,
    /// Prefix of the store repositories its content is cached under.
    pub prefix: String,
    /// The client that talks to it.
    pub client: Registry,
    /// How long a tag is served from cache before it is revalidated.
    pub tag_ttl: Duration,
    /// Tags matching these patterns (`*` wildcard) are revalidated on every pull.
    pub always_revalidate: Vec<String>,
    /// The slowest blob transfer tolerated; a slower fill is abandoned so a stalled upstream cannot
    /// hold clients forever.
    pub min_transfer: TransferFloor,
    /// Start fetching an image's blobs as soon as its manifest is fetched, before clients ask.
    pub prefetch_blobs: bool,
    /// Largest blob fetched when no manifest seen by this process gave its size.
    pub max_blob_bytes: u64,
    /// When its failures were last logged.
    outages: outage::OutageLog,
}

/// Why a mirror cannot be built from its configuration: the operator's to fix, nothing is served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorConfigError {
    /// An upstream's name cannot be a store prefix.
    #[error(
        "upstream name {0:?} must be host[:port] (letters, digits, '.', '-', one ':port'; no IPv6 literals)"
    )]
    UpstreamName(String),
    /// Two upstreams have the same name.
    #[error("upstream {0:?} is configured twice")]
    DuplicateUpstream(String),
    /// The default upstream is none of the configured ones.
    #[error("default upstream {name:?} is not a configured upstream ({configured})")]
    UnknownDefault {
        /// As configured.
        name: String,
        /// The configured upstreams, comma separated.
        configured: String,
    },
    /// A local namespace is not a valid repository name.
    // The name error is in the text, not a `source()`, so a chain printer says it once.
    #[error("local namespace {namespace:?}: {reason}")]
    LocalNamespaceName {
        /// As configured.
        namespace: String,
        /// Why it is not a repository name.
        reason: ferry_oci::NameError,
    },
    /// A local namespace lies inside an upstream's cache namespace.
    #[error("local namespace {namespace:?} is inside the cache namespace of upstream {upstream}")]
    LocalNamespaceInCache {
        /// As configured.
        namespace: String,
        /// The upstream whose cache it would overlap.
        upstream: String,
    },
}

/// Why an image cannot be placed in the mirror's cache (see [`Mirror::cache_repo`]): the image's
/// name does not fit this mirror.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheRepoError {
    /// Its registry is not one of the mirror's upstreams.
    #[error(
        "the image names registry {registry:?}, which is not a configured upstream (configured: {configured})"
    )]
    NotAnUpstream {
        /// The image's registry.
        registry: String,
        /// The configured upstreams, comma separated.
        configured: String,
    },
    /// Its repository name cannot be cached under the upstream's prefix (e.g. too long).
    #[error("{0}")]
    Name(String),
}

/// The default largest blob of unknown size fetched from an upstream.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 64 << 30;

/// The slowest acceptable upstream blob transfer: after `grace`, a fill whose average rate is below
/// `bytes_per_sec` is abandoned (its clients get a clean error, nothing is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferFloor {
    /// Minimum average rate once the grace period is over; 0 turns the check off.
    pub bytes_per_sec: u64,
    /// Time a transfer may take to get going before the rate is checked.
    pub grace: Duration,
}

impl Default for TransferFloor {
    fn default() -> TransferFloor {
        TransferFloor {
            bytes_per_sec: 16 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

impl TransferFloor {
    /// Whether a transfer that has written `written` bytes after `elapsed` is too slow.
    pub fn too_slow(&self, written: u64, elapsed: Duration) -> bool {
        self.bytes_per_sec > 0
            && elapsed > self.grace
            && (written as u128) < self.bytes_per_sec as u128 * elapsed.as_millis() / 1000
    }
}

impl Upstream {
    /// An upstream named `name` (`host[:port]`); fails for a name that cannot be a store prefix.
    pub fn new(
        name: &str,
        client: Registry,
        tag_ttl: Duration,
        always_revalidate: Vec<String>,
    ) -> Result<Upstream, MirrorConfigError> {
        let name = normalize_registry(name);
        let prefix = name.replace(':', "__");
        RepoName::new(&prefix).map_err(|_| MirrorConfigError::UpstreamName(name.clone()))?;
        Ok(Upstream {
            name,
            prefix,
            client,
            tag_ttl,
            always_revalidate,
            min_transfer: TransferFloor::default(),
            prefetch_blobs: false,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            outages: outage::OutageLog::default(),
        })
    }

    /// The answer for a failed upstream request, with a warning in the log (rate limited) when the
    /// upstream, not the client's request, is at fault.
    pub(crate) fn fetch_error(&self, e: &ClientError, blob: bool) -> FetchError {
        if e.kind == ClientKind::NotFound {
            // An answer all the same: the upstream is reachable.
            self.reached();
        } else if let Some(unlogged) = self.outages.failed(std::time::Instant::now()) {
            tracing::warn!(
                upstream = %self.name,
                error = %e,
                failures_since_last_warning = unlogged,
                "upstream request failed (further failures of this upstream are logged at most once a minute)"
            );
        }
        FetchError::from_client(e, blob)
    }

    /// The outcome of an upstream request: a failure as [`Upstream::fetch_error`] answers it, a
    /// success noted as the upstream being reachable.
    pub(crate) fn answered<T>(
        &self,
        r: Result<T, ClientError>,
        blob: bool,
    ) -> Result<T, FetchError> {
        match r {
            Ok(v) => {
                self.reached();
                Ok(v)
            }
            Err(e) => Err(self.fetch_error(&e, blob)),
        }
    }

    /// Notes that the upstream answered; the first answer after a logged failure is logged.
    fn reached(&self) {
        if let Some(r) = self.outages.succeeded(std::time::Instant::now()) {
            tracing::info!(
                upstream = %self.name,
                failures_not_logged = r.unlogged,
                down_for_secs = r.down_for.as_secs(),
                "upstream reachable again"
            );
        }
    }

    /// Whether `tag` must be revalidated on every pull.
    pub fn always_revalidates(&self, tag: &str) -> bool {
        self.always_revalidate.iter().any(|p| glob_match(p, tag))
    }

    /// The repository name to use upstream: Docker Hub's official images live under `library/`.
    fn upstream_repo(&self, repo: &RepoName) -> Result<RepoName, ApiError> {
        upstream_repo(&self.name, repo)
    }

    /// The store repository holding the cached copy of upstream `repo`.
    fn store_repo(&self, repo: &RepoName) -> Result<RepoName, ApiError> {
        store_repo(&self.name, &self.prefix, repo)
    }
}

/// How a mirror names its cache: which registries are its upstreams, and the store repository each
/// of their repositories is cached under. Cheap to clone and owns its data, for code that fills the
/// cache while the mirror itself is elsewhere (preloading a data directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNames {
    upstreams: Vec<String>,
}

impl CacheNames {
    /// The store repository caching `repo` of upstream `registry`; refused when `registry` is not
    /// an upstream.
    pub fn cache_repo(&self, registry: &str, repo: &RepoName) -> Result<RepoName, CacheRepoError> {
        let name = normalize_registry(registry);
        if !self.upstreams.contains(&name) {
            return Err(CacheRepoError::NotAnUpstream {
                registry: registry.to_owned(),
                configured: self.upstreams.join(", "),
            });
        }
        cache_repo_of(&name, repo)
    }
}

/// The store repository a mirror caches `repo` of upstream `registry` under, as a pull through
/// it would store it (what [`Mirror::cache_repo`] answers when `registry` is configured): for
/// writing a data directory that a mirror serves later.
pub fn cache_repo_of(registry: &str, repo: &RepoName) -> Result<RepoName, CacheRepoError> {
    let name = normalize_registry(registry);
    let prefix = name.replace(':', "__");
    upstream_repo(&name, repo)
        .and_then(|r| store_repo(&name, &prefix, &r))
        .map_err(|e| CacheRepoError::Name(e.error.message))
}

/// The repository name to use upstream: Docker Hub's official images live under `library/`.
fn upstream_repo(registry: &str, repo: &RepoName) -> Result<RepoName, ApiError> {
    if registry == DOCKER_HUB && !repo.as_str().contains('/') {
        return RepoName::new(&format!("library/{repo}"))
            .map_err(|e| ApiError::new(ErrorCode::NameInvalid, e.to_string()));
    }
    Ok(repo.clone())
}

/// The store repository holding the cached copy of upstream `registry`'s `repo`.
fn store_repo(registry: &str, prefix: &str, repo: &RepoName) -> Result<RepoName, ApiError> {
    RepoName::new(&format!("{prefix}/{repo}")).map_err(|_| {
        ApiError::new(
            ErrorCode::NameInvalid,
            format!(
                "{registry}/{repo} is longer than the 255 characters a cached repository name may have"
            ),
        )
    })
}

/// Docker Hub goes by several names; every one routes to `docker.io`.
fn normalize_registry(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => n,
    }
}

/// Mirror behaviour switches.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Never contact upstreams; answer misses with 404 at once (air-gapped sites).
    pub offline: bool,
    /// Serve cached manifests when the upstream fails (with a warning).
    pub serve_stale: bool,
    /// Largest manifest accepted from an upstream.
    pub max_manifest_bytes: usize,
    /// `repository:tag` patterns (`*` wildcard, repository as cached) that pruning never removes.
    pub pinned: Vec<String>,
    /// Repository name prefixes (whole path components, e.g. `team` or `ci/builds`) that are
    /// ferry's own: pushable, and never routed to the default upstream.
    pub local_namespaces: Vec<String>,
    /// Space left free on the data directory's filesystem: a fill that would eat into it is
    /// refused, or abandoned when the disk fills while it runs.
    pub min_free_bytes: u64,
}

impl Default for MirrorOptions {
    fn default() -> MirrorOptions {
        MirrorOptions {
            offline: false,
            serve_stale: true,
            max_manifest_bytes: 4 * 1024 * 1024,
            pinned: Vec::new(),
            local_namespaces: Vec::new(),
            min_free_bytes: 512 << 20,
        }
    }
}

/// The mirror: upstreams and the in-flight fetches.
#[derive(Debug)]
pub struct Mirror {
    upstreams: BTreeMap<String, Arc<Upstream>>,
    default: Option<Arc<Upstream>>,
    pub(crate) options: MirrorOptions,
    pub(crate) fills: Arc<fill::Fills>,
    pub(crate) manifests: flight::Coalescer<String, Arc<ferry_oci::Manifest>, FetchError>,
    /// Upstream tag-list pages being fetched, shared by identical requests.
    pub(crate) tag_pages:
        flight::Coalescer<String, (Arc<crate::HeldBytes>, Option<http::HeaderValue>), FetchError>,
    /// Memory for parsing manifests fetched upstream (charged at [`crate::MANIFEST_PARSE_FACTOR`]
    /// times their size; fetches wait for it).
    pub(crate) manifest_parse: crate::BufferBudget,
    /// Bounds upstream manifest fetches in flight (each may hold a whole manifest).
    pub(crate) manifest_fetches: Arc<tokio::sync::Semaphore>,
    /// Bytes of relayed tag-list pages held by responses not yet sent (each page once, however
    /// many responses share it); beyond it, 429.
    pub(crate) tag_buffers: crate::BufferBudget,
    /// Bounds upstream tag-list fetches in flight (each holds a page of up to 8 MiB twice).
    pub(crate) tag_fetches: Arc<tokio::sync::Semaphore>,
    /// Recent upstream 404s (see `pull.rs`).
    pub(crate) negative: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Blob sizes from manifests fetched since start (a fill must deliver exactly that many
    /// bytes); bounded by [`EXPECTED_SIZES_MAX`].
    /// Keyed by upstream, repository and digest: one repository's manifest says nothing about the
    /// same digest elsewhere.
    pub(crate) expected_sizes: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Until when a cached tag is known fresh, by a hash of its store repository and name: the
    /// tag file's age is read once per window instead of on every pull. Bounded by
    /// [`FRESH_TAGS_MAX`]; a tag rewritten or deleted meanwhile is still found through the index.
    fresh_tags: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    fresh_tags_hasher: std::collections::hash_map::RandomState,
    /// Bounds blob prefetches in flight across all images (client-driven fills are not bounded by
    /// it: a client waiting must never queue behind speculation).
    pub(crate) prefetch: Arc<tokio::sync::Semaphore>,
    /// Other ferry nodes asked for blobs before the upstream, and served what this one holds.
    pub(crate) peers: Option<Arc<peers::Peers>>,
}

/// Blob sizes remembered at most; the map starts over when full (a size not known only means the
/// fill is bounded by `max_blob_bytes` instead).
const EXPECTED_SIZES_MAX: usize = 200_000;

/// Tags whose freshness is remembered at most (~40 bytes each); the map starts over when full.
const FRESH_TAGS_MAX: usize = 16_384;

/// Upstream manifest fetches in flight at most; more wait their turn.
const MAX_MANIFEST_FETCHES: usize = 32;

/// Upstream tag-list fetches in flight at most; more wait their turn.
const MAX_TAG_FETCHES: usize = 4;

/// Blob prefetches in flight at most, across all images.
const MAX_PREFETCHES: usize = 8;

/// Where a request goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// ferry's own repositories.
    Local,
    /// An upstream; `path` is the request path with any in-path namespace removed.
    Upstream {
        upstream: Arc<Upstream>,
        path: String,
    },
}

impl Mirror {
    /// A mirror over `upstreams`; `default` names the one used when a request names none.
    pub fn new(
        upstreams: Vec<Upstream>,
        default: Option<&str>,
        options: MirrorOptions,
    ) -> Result<Mirror, MirrorConfigError> {
        let mut map = BTreeMap::new();
        for u in upstreams {
            let name = u.name.clone();
            if map.insert(name.clone(), Arc::new(u)).is_some() {
                return Err(MirrorConfigError::DuplicateUpstream(name));
            }
        }
        let default = match default {
            Some(d) => Some(map.get(&normalize_registry(d)).cloned().ok_or_else(|| {
                MirrorConfigError::UnknownDefault {
                    name: d.to_owned(),
                    configured: map.keys().cloned().collect::<Vec<_>>().join(", "),
                }
            })?),
            None if map.len() == 1 => map.values().next().cloned(),
            None => None,
        };
        for ns in &options.local_namespaces {
            RepoName::new(ns).map_err(|reason| MirrorConfigError::LocalNamespaceName {
                namespace: ns.clone(),
                reason,
            })?;
            let first = ns.split('/').next().unwrap_or("");
            if let Some(u) = map
                .values()
                .find(|u| u.prefix == first || u.name == normalize_registry(first))
            {
                return Err(MirrorConfigError::LocalNamespaceInCache {
                    namespace: ns.clone(),
                    upstream: u.name.clone(),
                });
            }
        }
        // Room for two of the largest manifests being parsed at once, at least 128 MiB.
        let parse_budget = (options.max_manifest_bytes)
            .saturating_mul(crate::MANIFEST_PARSE_FACTOR)
            .saturating_mul(2)
            .max(128 << 20);
        Ok(Mirror {
            upstreams: map,
            default,
            options,
            fills: Arc::default(),
            manifests: flight::Coalescer::default(),
            tag_pages: flight::Coalescer::default(),
            tag_buffers: crate::BufferBudget::new(64 << 20),
            manifest_parse: crate::BufferBudget::new(parse_budget),
            manifest_fetches: Arc::new(tokio::sync::Semaphore::new(MAX_MANIFEST_FETCHES)),
            tag_fetches: Arc::new(tokio::sync::Semaphore::new(MAX_TAG_FETCHES)),
            negative: std::sync::Mutex::default(),
            expected_sizes: std::sync::Mutex::default(),
            fresh_tags: std::sync::Mutex::default(),
            fresh_tags_hasher: std::collections::hash_map::RandomState::new(),
            prefetch: Arc::new(tokio::sync::Semaphore::new(MAX_PREFETCHES)),
            peers: None,
        })
    }

    /// The same mirror, asking `peers` for blobs before the upstream and serving them what it
    /// holds (see [`peers`]).
    pub fn with_peers(mut self, peers: peers::Peers) -> Mirror {
        self.peers = Some(Arc::new(peers));
        self
    }

    /// Store prefixes under which upstreams' content is cached.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.upstreams.values().map(|u| u.prefix.as_str())
    }

    /// Names of the configured upstreams.
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// The store repository caching `repo` of upstream `registry` (as a pull through the mirror
    /// would store it), for seeding the cache from image archives.
    pub fn cache_repo(&self, registry: &str, repo: &RepoName) -> Result<RepoName, CacheRepoError> {
        self.cache_names().cache_repo(registry, repo)
    }

    /// How this mirror names its cache, detached from it (for filling the cache elsewhere).
    pub fn cache_names(&self) -> CacheNames {
        CacheNames {
            upstreams: self.upstreams.keys().cloned().collect(),
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(&normalize_registry(name)).cloned()
    }

    fn unknown(&self, name: &str, how: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NameUnknown,
            format!(
                "{how} names registry {name:?}, which is not a configured upstream (configured: {})",
                self.configured()
            ),
        )
    }

    /// The configured upstreams' names, comma separated.
    fn configured(&self) -> String {
        self.upstreams
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Picks the target of a request.
    pub(crate) fn route(
        &self,
        headers: &HeaderMap,
        path: &str,
        ns: Option<&str>,
    ) -> Result<Target, ApiError> {
        if let Some(h) = headers.get("x-registry") {
            let name = h.to_str().unwrap_or("");
            let upstream = self
                .lookup(name)
                .ok_or_else(|| self.unknown(name, "the X-Registry header"))?;
            return Ok(Target::Upstream {
                upstream,
                path: path.to_owned(),
            });
        }
        if let Some(name) = ns.filter(|n| !n.is_empty()) {
            let upstream = self
                .lookup(name)
                .ok_or_else(|| self.unknown(name, "?ns="))?;
            return Ok(Target::Upstream {
                upstream,
                path: path.to_owned(),
            });
        }
        if let Some(rest) = path.strip_prefix("/v2/")
            && let Some((first, tail)) = rest.split_once('/')
            && (first.contains('.') || first.contains(':'))
            && let Some(upstream) = self.lookup(first)
        {
            return Ok(Target::Upstream {
                upstream,
                path: format!("/v2/{tail}"),
            });
        }
        match &self.default {
            // Whether a repository exists locally must not matter: that would let a push shadow
            // the upstream's image of the same name for every client.
            Some(up) if !repo_of(path).is_some_and(|r| self.is_local_namespace(&r)) => {
                Ok(Target::Upstream {
                    upstream: up.clone(),
                    path: path.to_owned(),
                })
            }
            _ => Ok(Target::Local),
        }
    }

    /// Whether cached tag `tag` of store repository `key` is younger than `ttl`; `age` reads its
    /// age from the store, once per freshness window (a 64-bit keyed hash names the tag: two tags
    /// would have to collide for one to borrow the other's window).
    pub(crate) fn tag_fresh(
        &self,
        key: &RepoName,
        tag: &str,
        ttl: Duration,
        age: impl FnOnce() -> Option<Duration>,
    ) -> bool {
        self.tag_fresh_at(std::time::Instant::now(), key, tag, ttl, age)
    }

    fn tag_fresh_at(
        &self,
        now: std::time::Instant,
        key: &RepoName,
        tag: &str,
        ttl: Duration,
        age: impl FnOnce() -> Option<Duration>,
    ) -> bool {
        use std::hash::BuildHasher;
        let h = self.fresh_tags_hasher.hash_one((key.as_str(), tag));
        let lock = || self.fresh_tags.lock().unwrap_or_else(|e| e.into_inner());
        if lock().get(&h).is_some_and(|until| *until > now) {
            return true;
        }
        let Some(left) = age()
            .and_then(|a| ttl.checked_sub(a))
            .filter(|l| !l.is_zero())
        else {
            return false;
        };
        let mut fresh = lock();
        if fresh.len() >= FRESH_TAGS_MAX {
            fresh.clear();
        }
        fresh.insert(h, now + left);
        true
    }

    /// Remembers the sizes manifest `m` of `repo` at `up` gives its blobs.
    pub(crate) fn expect_sizes(&self, up: &Upstream, repo: &RepoName, m: &ferry_oci::Manifest) {
        let mut sizes = self
            .expected_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if sizes.len() >= EXPECTED_SIZES_MAX {
            sizes.clear();
        }
        for d in m.blob_references() {
            sizes.insert(size_key(up, repo, &d.digest), d.size);
        }
    }

    /// The size a manifest of `repo` at `up` gave `digest`, if one was seen.
    pub(crate) fn expected_size(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &ferry_oci::Digest,
    ) -> Option<u64> {
        self.expected_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&size_key(up, repo, digest))
            .copied()
    }

    /// Whether `repo` is under one of the configured local namespaces.
    pub fn is_local_namespace(&self, repo: &str) -> bool {
        self.options.local_namespaces.iter().any(|ns| {
            repo.strip_prefix(ns.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Whether requests that name no upstream go to one (so only local namespaces are writable).
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Whether `repo`, pushed to ferry, is reachable as a local repository: not under a cache
    /// namespace and not shadowed by the default upstream.
    pub fn serves_locally(&self, repo: &str) -> bool {
        self.owns_namespace(repo).is_none()
            && (self.default.is_none() || self.is_local_namespace(repo))
    }

    /// Whether a local write to `repo` would land in an upstream's cache namespace.
    pub fn owns_namespace(&self, repo: &str) -> Option<&str> {
        let first = repo.split('/').next().unwrap_or("");
        self.upstreams
            .values()
            .find(|u| u.prefix == first)
            .map(|u| u.name.as_str())
    }
}

fn size_key(up: &Upstream, repo: &RepoName, digest: &ferry_oci::Digest) -> String {
    format!("{}/{repo}@{digest}", up.name)
}

/// The repository part of a `/v2/<name>/<endpoint>/…` path, if it parses.
fn repo_of(path: &str) -> Option<String> {
    ferry_oci::Route::parse(path)
        .ok()?
        .repo()
        .map(|r| r.as_str().to_owned())
}

/// Why a pull-through fetch failed, shared by every waiter of a coalesced fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// For the server log only: why the storage counts as full (the OS error, or the free space
    /// left), logged once per episode where the answer is counted.
    pub full_storage_cause: Option<String>,
}

impl FetchError {
    pub fn from_client(e: &ClientError, blob: bool) -> FetchError {
        let (status, code) = match e.kind {
            ClientKind::NotFound if blob => (404, ErrorCode::BlobUnknown),
            ClientKind::NotFound => (404, ErrorCode::ManifestUnknown),
            ClientKind::TooManyRequests => (429, ErrorCode::TooManyRequests),
            ClientKind::Unavailable if e.status == Some(503) => (503, ErrorCode::Unavailable),
            ClientKind::Timeout => (504, ErrorCode::Unavailable),
            ClientKind::Unauthorized | ClientKind::Denied => (502, ErrorCode::Unavailable),
            _ => (502, ErrorCode::Unavailable),
        };
        let hint = match e.kind {
            ClientKind::Unauthorized | ClientKind::Denied => {
                " (check ferry's credentials for this upstream)"
            }
            _ => "",
        };
        FetchError {
            status,
            code,
            message: format!("upstream: {}{hint}", e.message),
            retry_after: e.retry_after.map(|d| d.as_secs()),
            full_storage_cause: None,
        }
    }

    pub fn internal(message: &str) -> FetchError {
        FetchError {
            status: 500,
            code: ErrorCode::Internal,
            message: message.to_owned(),
            retry_after: None,
            full_storage_cause: None,
        }
    }

    /// 507 `STORAGE_FULL`, the answer a push to a full store gets; `cause` is for the log.
    pub fn storage_full(message: String, cause: String) -> FetchError {
        FetchError {
            status: 507,
            code: ErrorCode::StorageFull,
            message,
            retry_after: None,
            full_storage_cause: Some(cause),
        }
    }

    pub fn store(e: StoreError) -> FetchError {
        if let StoreError::Full { .. } = e {
            return FetchError::storage_full(
                "the registry's storage is full: the pulled content could not be cached".to_owned(),
                e.to_string(),
            );
        }
        tracing::error!(error = %e, "store failed during pull-through");
        FetchError::internal("storing pulled content failed; see the server log")
    }

    pub fn upstream_protocol(message: &str) -> FetchError {
        FetchError {
            status: 502,
            code: ErrorCode::Unavailable,
            message: format!("upstream: {message}"),
            retry_after: None,
            full_storage_cause: None,
        }
    }

    pub fn timeout(message: &str) -> FetchError {
        FetchError {
            status: 504,
            code: ErrorCode::Unavailable,
            message: format!("upstream: {message}"),
            retry_after: None,
            full_storage_cause: None,
        }
    }

    pub fn into_api(self) -> ApiError {
        let mut e = ApiError::new(self.code, self.message)
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY));
        if let Some(s) = self.retry_after {
            e = e.header(http::header::RETRY_AFTER, &s.to_string());
        }
        if let Some(cause) = self.full_storage_cause {
            e = e.full_storage_cause(cause);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str) -> Upstream {
        let client = Registry::new(ferry_client::RegistryOptions {
            endpoint: format!("http://{name}"),
            ..ferry_client::RegistryOptions::default()
        })
        .unwrap();
        Upstream::new(name, client, Duration::from_secs(1), Vec::new()).unwrap()
    }

    /// A tag's age is read once per freshness window, never trusted past its TTL, and a tag
    /// whose age is unknown (its file gone) is not fresh.
    #[test]
    fn a_fresh_tag_is_checked_once_per_window() {
        let m = Mirror::new(
            vec![upstream("127.0.0.1:1")],
            None,
            MirrorOptions::default(),
        )
        .unwrap();
        let key = RepoName::new("127.0.0.1__1/team/app").unwrap();
        let ttl = Duration::from_secs(300);
        let reads = std::cell::Cell::new(0);
        let age = |a: Option<u64>| {
            reads.set(reads.get() + 1);
            a.map(Duration::from_secs)
        };
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(m.tag_fresh_at(at(0), &key, "v1", ttl, || age(Some(10))));
        assert!(m.tag_fresh_at(at(289), &key, "v1", ttl, || age(Some(299))));
        assert_eq!(reads.get(), 1, "the age was read again inside the window");
        // The window ends when the TTL does (290 s after a tag 10 s old): read again.
        assert!(!m.tag_fresh_at(at(290), &key, "v1", ttl, || age(Some(300))));
        assert_eq!(reads.get(), 2);
        // Another tag, one past its TTL and one whose file is gone are read, not remembered.
        assert!(!m.tag_fresh_at(at(0), &key, "v2", ttl, || age(Some(301))));
        assert!(!m.tag_fresh_at(at(0), &key, "v2", ttl, || age(Some(301))));
        assert!(!m.tag_fresh_at(at(0), &key, "v3", ttl, || age(None)));
        assert_eq!(reads.get(), 5);
        // The same tag name in another repository has its own window.
        let other = RepoName::new("127.0.0.1__1/team/other").unwrap();
        assert!(m.tag_fresh_at(at(1), &other, "v1", ttl, || age(Some(0))));
        assert_eq!(reads.get(), 6);
    }

    #[test]
    fn configuration_mistakes_are_typed_and_say_what_to_fix() {
        let client = upstream("127.0.0.1:1").client;
        assert_eq!(
            Upstream::new("[::1]:5000", client, Duration::ZERO, Vec::new()).unwrap_err(),
            MirrorConfigError::UpstreamName("[::1]:5000".into())
        );
        let twice = Mirror::new(
            vec![upstream("127.0.0.1:1"), upstream("127.0.0.1:1")],
            None,
            MirrorOptions::default(),
        );
        assert_eq!(
            twice.err(),
            Some(MirrorConfigError::DuplicateUpstream("127.0.0.1:1".into()))
        );
        let e = Mirror::new(
            vec![upstream("127.0.0.1:1")],
            Some("quay.io"),
            MirrorOptions::default(),
        )
        .err()
        .unwrap();
        assert!(
            matches!(&e, MirrorConfigError::UnknownDefault { name, configured } if name == "quay.io" && configured == "127.0.0.1:1"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "default upstream \"quay.io\" is not a configured upstream (127.0.0.1:1)"
        );
        let e = Mirror::new(
            vec![upstream("127.0.0.1:1")],
            None,
            MirrorOptions {
                local_namespaces: vec!["127.0.0.1__1/team".into()],
                ..MirrorOptions::default()
            },
        )
        .err()
        .unwrap();
        assert!(
            matches!(e, MirrorConfigError::LocalNamespaceInCache { .. }),
            "{e:?}"
        );
        let m = Mirror::new(
            vec![upstream("127.0.0.1:1")],
            None,
            MirrorOptions::default(),
        )
        .unwrap();
        let repo = RepoName::new("team/app").unwrap();
        assert_eq!(
            m.cache_repo("127.0.0.1:1", &repo).unwrap().as_str(),
            "127.0.0.1__1/team/app"
        );
        assert!(matches!(
            m.cache_repo("quay.io", &repo),
            Err(CacheRepoError::NotAnUpstream { .. })
        ));
    }
}
