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
//!   is answered 429 at once and asks another source.
//! - **Peers are found two ways**: a static list (`peers.nodes`), and with `--p2p` the DHT of
//!   `ferry-peer`, where a node announces a digest when its fill starts. Providers the DHT names
//!   are probed (`HEAD`, answered at once) and asked complete copies first, then the least busy;
//!   then the static list in rendezvous order.
//! - **Only members are served.** With a cluster key or an allow-list, a peer request carries a
//!   proof ([`PEER_AUTH_HEADER`]) that the serving node checks before anything else.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use ferry_client::{BlobResponse, ClientError, Connections, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_peer::{Membership, Network, NodeIdentity};
use tokio::sync::Semaphore;

/// The header that marks a request as one ferry node's to another; its value is the asking node's
/// peer id, which decides who waits for whom when nodes ask each other at once.
pub const PEER_HEADER: &str = "ferry-peer";
/// The asking node's proof of membership (see `ferry_peer::Membership`).
pub const PEER_AUTH_HEADER: &str = "ferry-peer-auth";
/// On a peer's `HEAD`: answer at once with the copy's state, never hold.
pub(crate) const PEER_PROBE_HEADER: &str = "ferry-peer-probe";
/// In a probe's answer: `complete` or `filling`.
pub(crate) const PEER_COPY_HEADER: &str = "ferry-peer-copy";
/// In a probe's answer: transfers this node serves to peers now.
pub(crate) const PEER_LOAD_HEADER: &str = "ferry-peer-load";

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
    /// This node's identity (its peer id names it to peers); a fresh one when `None`.
    pub identity: Option<NodeIdentity>,
    /// Who may take part, and the proofs this node sends.
    pub membership: Membership,
    /// The DHT, when nodes find each other (`--p2p`).
    pub discovery: Option<Network>,
    /// How often everything the store holds is announced again in the DHT (shorter than the
    /// records' TTL, so a node's records never lapse while it holds the blobs).
    pub reannounce: Duration,
}

impl Default for PeerOptions {
    fn default() -> PeerOptions {
        PeerOptions {
            endpoints: Vec::new(),
            max_uploads: 32,
            first_byte_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(10),
            connections: Connections::default(),
            identity: None,
            membership: Membership::default(),
            discovery: None,
            reannounce: Duration::from_secs(10 * 60),
        }
    }
}

/// The peer set of a mirror.
#[derive(Debug)]
pub struct Peers {
    nodes: Vec<Arc<Peer>>,
    /// This node among its peers: its peer id, sent as the [`PEER_HEADER`] value.
    node: String,
    identity: NodeIdentity,
    membership: Membership,
    discovery: Option<Network>,
    /// Clients of providers the DHT named, by endpoint.
    found: std::sync::Mutex<std::collections::HashMap<String, Arc<Peer>>>,
    client_options: RegistryOptions,
    reannounce: Duration,
    max_uploads: usize,
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
/// Clients of DHT-found providers kept at most; the map starts over when full.
const FOUND_MAX: usize = 1024;
/// DHT members asked for a blob no provider announced, at most (the highest-ranked for it).
const MEMBERS_ASKED: usize = 16;

/// What a peer's request says of the asker.
#[derive(Debug, Clone)]
pub(crate) struct PeerAsk {
    /// The [`PEER_HEADER`] value: the asking node's peer id.
    pub node: String,
    /// The [`PEER_AUTH_HEADER`] value.
    pub proof: Option<String>,
    /// A probe ([`PEER_PROBE_HEADER`]): answered at once, never held.
    pub probe: bool,
}

impl PeerAsk {
    /// The asker a request's headers name, if it is a peer's request.
    pub(crate) fn of(headers: &http::HeaderMap) -> Option<PeerAsk> {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().trim().to_owned())
        };
        Some(PeerAsk {
            node: text(PEER_HEADER)?,
            proof: text(PEER_AUTH_HEADER),
            probe: headers.contains_key(PEER_PROBE_HEADER),
        })
    }
}

/// One other node.
#[derive(Debug)]
pub(crate) struct Peer {
    pub endpoint: String,
    client: Registry,
}

impl Peer {
    fn new(options: &RegistryOptions, endpoint: &str) -> Result<Peer, ClientError> {
        let client = Registry::new(RegistryOptions {
            endpoint: endpoint.to_owned(),
            ..options.clone()
        })?;
        Ok(Peer {
            endpoint: client.endpoint().to_owned(),
            client,
        })
    }
}

/// How a provider's answer to a probe sorts, best first: (has nothing, not a complete copy, load).
/// `None`: no answer in time (last, but still asked); `Some(None)`: it has nothing (dropped).
fn probe_rank(answer: Option<Option<&http::HeaderMap>>) -> (bool, bool, u64) {
    match answer {
        Some(Some(h)) => {
            let value = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
            let complete = value(PEER_COPY_HEADER) == Some("complete");
            let load = value(PEER_LOAD_HEADER)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX / 2);
            (false, !complete, load)
        }
        Some(None) => (true, true, u64::MAX),
        None => (false, true, u64::MAX),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        let client_options = RegistryOptions {
            endpoint: String::new(),
            // A peer that fails is skipped, not retried: the next source is as good.
            attempts: 1,
            connect_timeout: options.first_byte_timeout,
            request_timeout: options.first_byte_timeout,
            read_timeout: options.read_timeout,
            connections: options.connections.clone(),
            ..RegistryOptions::default()
        };
        let mut nodes: Vec<Arc<Peer>> = Vec::new();
        for endpoint in &options.endpoints {
            let peer = Peer::new(&client_options, endpoint)?;
            if nodes.iter().all(|p| p.endpoint != peer.endpoint) {
                nodes.push(Arc::new(peer));
            }
        }
        let identity = options.identity.unwrap_or_else(NodeIdentity::ephemeral);
        Ok(Peers {
            nodes,
            node: identity.id().to_string(),
            identity,
            membership: options.membership,
            discovery: options.discovery,
            found: std::sync::Mutex::default(),
            client_options,
            reannounce: options.reannounce,
            max_uploads: options.max_uploads.max(1),
            first_byte_timeout: options.first_byte_timeout,
            uploads: Arc::new(Semaphore::new(options.max_uploads.max(1))),
            order_seed: foldhash::fast::FixedState::with_seed(0x6665_7272_7970_3270),
            distrusted: std::sync::Mutex::default(),
        })
    }

    /// How many peers are listed statically.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no peer is listed and none can be found.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.discovery.is_none()
    }

    /// The DHT, when peers are found through it.
    pub fn discovery(&self) -> Option<&Network> {
        self.discovery.as_ref()
    }

    /// Transfers this node serves to peers now.
    pub(crate) fn load(&self) -> usize {
        self.max_uploads - self.uploads.available_permits().min(self.max_uploads)
    }

    /// The peers to ask for `digest`, best first: providers the DHT names (complete copies, then
    /// the least busy; each probed at once), the DHT's members highest-ranked for the blob first
    /// (at most 16), then the static peers in [`Peers::order`]. `skip`: endpoints asked already.
    pub(crate) async fn candidates(
        &self,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
        skip: &std::collections::HashSet<String>,
        metrics: &crate::Metrics,
    ) -> Vec<Arc<Peer>> {
        let mut out = Vec::new();
        if let Some(net) = &self.discovery {
            metrics.peer_lookups.inc();
            let providers = net.providers(digest.as_str()).await;
            metrics.peer_providers_found.inc_by(providers.len() as u64);
            let fresh: Vec<Arc<Peer>> = providers
                .iter()
                .filter(|p| !skip.contains(&p.url))
                .filter_map(|p| self.found_peer(&p.url))
                .collect();
            out = self.best_first(fresh, upstream, repo, digest).await;
        }
        if let Some(net) = &self.discovery {
            // The members too, highest rank first: when nodes miss a blob at once, before any has
            // announced it, they find each other this way (as with a static list), and
            // the highest-ranked among them fetches while the rest wait for it.
            let mut members = net.members().await;
            members.sort_by_cached_key(|m| std::cmp::Reverse(self.rank(digest, &m.id.to_string())));
            for m in members.into_iter().take(MEMBERS_ASKED) {
                if !skip.contains(&m.url) && out.iter().all(|o| o.endpoint != m.url) {
                    out.extend(self.found_peer(&m.url));
                }
            }
        }
        for p in self.order(digest) {
            if !skip.contains(&p.endpoint) && out.iter().all(|o| o.endpoint != p.endpoint) {
                out.push(p);
            }
        }
        out
    }

    /// A client for the provider at `url`, made once.
    fn found_peer(&self, url: &str) -> Option<Arc<Peer>> {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = found.get(url) {
            return Some(p.clone());
        }
        if found.len() >= FOUND_MAX {
            found.clear();
        }
        let peer = Arc::new(Peer::new(&self.client_options, url).ok()?);
        found.insert(url.to_owned(), peer.clone());
        Some(peer)
    }

    /// `providers` in the order to ask them: with more than one, each is probed at once and
    /// complete copies come first, then the least busy; one that has nothing is dropped.
    async fn best_first(
        &self,
        providers: Vec<Arc<Peer>>,
        upstream: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Vec<Arc<Peer>> {
        if providers.len() < 2 {
            return providers;
        }
        let probes = providers.iter().map(|p| async move {
            let mut headers = self.marker(upstream, digest);
            headers.push((
                http::HeaderName::from_static(PEER_PROBE_HEADER),
                "1".to_owned(),
            ));
            let probe = p.client.head_blob_with(repo, digest, headers);
            let answer = tokio::time::timeout(self.first_byte_timeout, probe).await;
            match answer {
                Ok(Ok(h)) => probe_rank(Some(h.as_ref())),
                _ => probe_rank(None),
            }
        });
        let ranks = futures_util::future::join_all(probes).await;
        let mut ranked: Vec<_> = ranks.into_iter().zip(providers).collect();
        ranked.retain(|(r, _)| !r.0);
        ranked.sort_by_key(|(r, _)| *r);
        ranked.into_iter().map(|(_, p)| p).collect()
    }

    /// Announces that this node is filling (or holds) `digest`.
    pub(crate) fn announce(&self, digest: &Digest) {
        if let Some(net) = &self.discovery {
            net.provide(digest.as_str());
        }
    }

    /// Announces everything `store` holds, now (a restarted node says what it has) and every
    /// re-announcement interval, while the server runs; keeps the members gauge current.
    pub(crate) async fn keep_announced(
        self: Arc<Self>,
        store: Arc<ferry_store::Store>,
        metrics: Arc<crate::Metrics>,
    ) {
        let Some(net) = &self.discovery else {
            return;
        };
        let gauge = async {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let n = net
                    .stats()
                    .members
                    .load(std::sync::atomic::Ordering::Relaxed);
                metrics.peer_members.set(n.try_into().unwrap_or(i64::MAX));
            }
        };
        let announce = async {
            let mut tick = tokio::time::interval(self.reannounce);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.blob_digests().await {
                    Ok(held) => {
                        tracing::debug!(
                            blobs = held.len(),
                            "announcing the store's blobs to peers"
                        );
                        net.hold(held.into_iter().map(|d| d.as_str().to_owned()).collect())
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list the store's blobs to announce them; trying again at the next round")
                    }
                }
            }
        };
        tokio::join!(gauge, announce);
    }

    /// Stops announcing `digest` (its fill failed).
    pub(crate) fn forget(&self, digest: &Digest) {
        if let Some(net) = &self.discovery {
            net.forget(digest.as_str());
        }
    }

    /// Whether peers must prove membership (a cluster key or an allow-list is set): only then may
    /// a peer's request skip the registry's own authentication.
    pub(crate) fn members_only(&self) -> bool {
        self.membership.key.is_some() || !self.membership.allow.is_empty()
    }

    /// Whether a peer's request for `digest`, from `node` with `proof`, is a member's.
    pub(crate) fn admit(
        &self,
        node: &str,
        digest: &Digest,
        proof: Option<&str>,
    ) -> Result<(), ferry_peer::Denied> {
        self.membership
            .check(node, digest.as_str(), proof, unix_now())
    }

    /// The headers that mark a request for `digest` as this node's.
    fn marker(&self, upstream: &str, digest: &Digest) -> Vec<(http::HeaderName, String)> {
        let mut headers = vec![
            (
                http::HeaderName::from_static(PEER_HEADER),
                self.node.clone(),
            ),
            (
                http::HeaderName::from_static("x-registry"),
                upstream.to_owned(),
            ),
        ];
        if let Some(proof) =
            self.membership
                .prove(&self.identity, &self.node, digest.as_str(), unix_now())
        {
            headers.push((http::HeaderName::from_static(PEER_AUTH_HEADER), proof));
        }
        headers
    }

    /// The peers' endpoints, as configured (normalized).
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|p| p.endpoint.as_str())
    }

    /// The peers in the order to ask them for `digest`: highest random weight first (rendezvous
    /// hashing), so every node asks the same peer first for one blob, and blobs spread over peers.
    pub(crate) fn order(&self, digest: &Digest) -> Vec<Arc<Peer>> {
        let mut ranked: Vec<(u64, &Arc<Peer>)> = self
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
        ranked.into_iter().map(|(_, p)| p.clone()).collect()
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
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Where `node` ranks for `digest`. When nodes ask each other for one blob at once (a rollout:
    /// every node misses together), a node holds the request of a lower-ranked one until its own
    /// fill is past asking, and answers a higher-ranked one at once, so the askers settle on the
    /// highest among them fetching from the upstream and the rest streaming from it, without
    /// waiting in a circle.
    pub(crate) fn rank(&self, digest: &Digest, node: &str) -> u64 {
        let mut h = self.order_seed.build_hasher();
        h.write(digest.as_str().as_bytes());
        h.write(node.as_bytes());
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
        let headers = self.marker(upstream, digest);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(copy: &str, load: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(PEER_COPY_HEADER, copy.parse().unwrap());
        h.insert(PEER_LOAD_HEADER, load.parse().unwrap());
        h
    }

    #[test]
    fn complete_copies_come_first_then_the_least_busy_then_the_silent() {
        let (busy_complete, idle_complete) = (answer("complete", "9"), answer("complete", "0"));
        let (idle_filling, garbled) = (answer("filling", "0"), answer("??", "lots"));
        let mut ranked = [
            ("silent", probe_rank(None)),
            ("idle filling", probe_rank(Some(Some(&idle_filling)))),
            ("busy complete", probe_rank(Some(Some(&busy_complete)))),
            ("nothing", probe_rank(Some(None))),
            ("garbled", probe_rank(Some(Some(&garbled)))),
            ("idle complete", probe_rank(Some(Some(&idle_complete)))),
        ];
        ranked.sort_by_key(|r| r.1);
        let order: Vec<&str> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(
            order,
            [
                "idle complete",
                "busy complete",
                "idle filling",
                "garbled",
                "silent",
                "nothing"
            ]
        );
        assert!(
            ranked.iter().filter(|r| r.1.0).all(|r| r.0 == "nothing"),
            "only 'nothing' is dropped"
        );
    }
}
