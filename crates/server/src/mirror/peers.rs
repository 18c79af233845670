//! Other ferry nodes as blob sources. A fill asks its peers for a blob before the upstream; a node
//! serves a peer what it holds or is filling right now, and nothing else.
//!
//! The rules that keep a cluster of mirrors sound:
//! - **No loops.** A peer's request carries the [`PEER_HEADER`] marker; a node answers it from its
//!   store or from a fill already in flight, never by fetching (from its own peers or its
//!   upstream), so a blob missing everywhere costs one quick 404 per peer asked.
//! - **Peers never decide what a name means.** Only blobs, by digest, are asked of peers; tags
//!   and manifests always come from the upstream (or the tag cache under its TTL).
//! - **A peer's bytes are checked as an upstream's are.** They stream to the node's clients as
//!   they arrive, the last byte held until the blob hashes to its digest. A peer that stalls,
//!   trickles below the upstream's transfer floor or breaks off costs time only: the fill goes on from the next peer, or from the upstream, from
//!   where it stopped. Bytes of another digest break the transfers in flight (a client never gets
//!   a whole wrong blob, nothing is stored) and the blob's next fill asks no peer.
//! - **One fetch for a rollout.** When every node misses at once, the askers rank themselves per
//!   blob (`Peers::rank`): a node holds a lower-ranked peer's request while it is still asking
//!   around itself, and answers a higher-ranked one at once; every node asks the peers that had
//!   nothing a second time before its upstream. The highest-ranked asker fetches, the rest stream
//!   from it.
//! - **A busy node says so.** Transfers served to peers are bounded per node; past the bound a peer
//!   is answered 503 at once and asks another source.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{BlobResponse, ClientError, Connections, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use tokio::sync::Semaphore;

/// The header that marks a request as one ferry node's to another; its value is the asking node's
/// identity (16 hex digits), which decides who waits for whom when nodes ask each other at once.
pub const PEER_HEADER: &str = "ferry-peer";

/// How a mirror shares blobs with other ferry nodes.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The other nodes' registry endpoints, `http(s)://host[:port]` (this node's own address may
    /// be among them: a request to oneself is answered as any peer's, without a fetch).
    pub endpoints: Vec<String>,
    /// Blob transfers this node serves to peers at once; more are answered 503 at once.
    pub max_uploads: usize,
    /// How long a peer may take to answer before the next source is asked.
    pub first_byte_timeout: Duration,
    /// Longest silence in a peer's body before it counts as broken off.
    pub read_timeout: Duration,
    /// The connection pool (shared with the upstreams' clients).
    pub connections: Connections,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        PeerOptions {
            endpoints: Vec::new(),
            max_uploads: 32,
            first_byte_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(10),
            connections: Connections::default(),
        }
    }
}

/// The peer set of a mirror.
#[derive(Debug)]
pub struct Peers {
    nodes: Vec<Peer>,
    /// This node among its peers: random per process, sent as the [`PEER_HEADER`] value.
    node: u64,
    first_byte_timeout: Duration,
    /// Transfers served to peers in flight.
    pub(crate) uploads: Arc<Semaphore>,
    /// Seeds the order in which peers are asked.
    order_seed: foldhash::fast::FixedState,
    /// Blobs for which peers sent bytes of another digest: their next fill asks no peer.
    distrusted: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

/// Blobs remembered as distrusted at most; the set starts over when full (forgetting only costs a
/// peer's second chance).
const DISTRUSTED_MAX: usize = 4096;

/// One other node.
#[derive(Debug)]
pub(crate) struct Peer {
    pub endpoint: String,
    client: Registry,
}

/// Why a peer did not deliver a blob (the `cause` label of the peer metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerMiss {
    /// It does not hold the blob and is not filling it.
    NotFound,
    /// It serves as many peers as it may.
    Busy,
    /// No answer within the first-byte timeout.
    Timeout,
    /// Unreachable, or an answer that is not the blob.
    Error,
    /// The body broke off or stalled.
    Interrupted,
    /// It announced a size the blob cannot have.
    Size,
    /// The bytes peers sent do not hash to the digest.
    Digest,
}

impl PeerMiss {
    /// As the metrics label it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PeerMiss::NotFound => "not_found",
            PeerMiss::Busy => "busy",
            PeerMiss::Timeout => "timeout",
            PeerMiss::Error => "error",
            PeerMiss::Interrupted => "interrupted",
            PeerMiss::Size => "size",
            PeerMiss::Digest => "digest",
        }
    }
}

impl Peers {
    /// The peer set `options` describe; fails on an endpoint that is not `http(s)://host[:port]`.
    pub fn new(options: PeerOptions) -> Result<Peers, ClientError> {
        let mut nodes = Vec::new();
        for endpoint in &options.endpoints {
            let client = Registry::new(RegistryOptions {
                endpoint: endpoint.clone(),
                // A peer that fails is skipped, not retried: the next source is as good.
                attempts: 1,
                connect_timeout: options.first_byte_timeout,
                request_timeout: options.first_byte_timeout,
                read_timeout: options.read_timeout,
                connections: options.connections.clone(),
                ..RegistryOptions::default()
            })?;
            let endpoint = client.endpoint().to_owned();
            if nodes.iter().all(|p: &Peer| p.endpoint != endpoint) {
                nodes.push(Peer { endpoint, client });
            }
        }
        let node = {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        };
        Ok(Peers {
            nodes,
            node,
            first_byte_timeout: options.first_byte_timeout,
            uploads: Arc::new(Semaphore::new(options.max_uploads.max(1))),
            order_seed: foldhash::fast::FixedState::with_seed(0x6665_7272_7970_3270),
            distrusted: std::sync::Mutex::default(),
        })
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The peers' endpoints, as configured (normalized).
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|p| p.endpoint.as_str())
    }

    /// The peers in the order to ask them for `digest`: highest random weight first (rendezvous
    /// hashing), so every node asks the same peer first for one blob, and blobs spread over peers.
    pub(crate) fn order(&self, digest: &Digest) -> Vec<&Peer> {
        let mut ranked: Vec<(u64, &Peer)> = self
            .nodes
            .iter()
            .map(|p| {
                let mut h = self.order_seed.build_hasher();
                h.write(digest.as_str().as_bytes());
                h.write(p.endpoint.as_bytes());
                (h.finish(), p)
            })
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        ranked.into_iter().map(|(_, p)| p).collect()
    }

    /// Remembers that peers sent wrong bytes for `digest`.
    pub(crate) fn distrust(&self, digest: &Digest) {
        let mut set = self.distrusted.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= DISTRUSTED_MAX {
            set.clear();
        }
        set.insert(digest.clone());
    }

    /// Whether peers sent wrong bytes for `digest` before.
    pub(crate) fn distrusted(&self, digest: &Digest) -> bool {
        self.distrusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(digest)
    }

    /// This node's identity among its peers.
    pub(crate) fn node(&self) -> u64 {
        self.node
    }

    /// Where `node` ranks for `digest`. When nodes ask each other for one blob at once (a rollout:
    /// every node misses together), a node holds the request of a lower-ranked one until its own
    /// fill is past asking, and answers a higher-ranked one at once, so the askers settle on the
    /// highest among them fetching from the upstream and the rest streaming from it, without
    /// waiting in a circle.
    pub(crate) fn rank(&self, digest: &Digest, node: u64) -> u64 {
        let mut h = self.order_seed.build_hasher();
        h.write(digest.as_str().as_bytes());
        h.write_u64(node);
        h.finish()
    }

    /// How long a lower-ranked peer's request may be held: within its first-byte timeout.
    pub(crate) fn hold(&self) -> Duration {
        self.first_byte_timeout * 3 / 4
    }

    /// Asks `peer` for `digest` of `upstream`'s `repo` from byte `offset` on.
    pub(crate) async fn open(
        &self,
        peer: &Peer,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobResponse, PeerMiss> {
        let headers = vec![
            (
                http::HeaderName::from_static(PEER_HEADER),
                format!("{:016x}", self.node),
            ),
            (
                http::HeaderName::from_static("x-registry"),
                upstream.to_owned(),
            ),
        ];
        let asked = peer.client.get_blob_with(repo, digest, offset, headers);
        match tokio::time::timeout(self.first_byte_timeout, asked).await {
            Err(_) => Err(PeerMiss::Timeout),
            Ok(Ok(r)) if r.start != offset => Err(PeerMiss::Error),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(match (e.status, e.kind) {
                (Some(404), _) => PeerMiss::NotFound,
                (Some(429 | 503), _) => PeerMiss::Busy,
                (_, ferry_client::ErrorKind::Timeout) => PeerMiss::Timeout,
                _ => PeerMiss::Error,
            }),
        }
    }
}
