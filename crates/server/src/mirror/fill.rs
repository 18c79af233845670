//! Blob fills: one upstream fetch per digest, streamed into the store while any number of clients
//! read the growing file.
//!
//! The fill runs in its own task (a client that disconnects does not stop it), resumes an
//! interrupted transfer with `Range`, and verifies the digest before the blob becomes visible.
//! Followers never receive the blob's last byte before that verification: a client can see a broken
//! transfer, never a complete response with wrong bytes.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use ferry_client::ClientError;
use ferry_oci::{Digest, RepoName};
use ferry_store::{Store, StoreError};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

use super::peers::{PeerMiss, Peers};
use super::{FetchError, Upstream};
use crate::metrics::{CauseLabels, Metrics, UpstreamLabels};

/// How often an interrupted upstream transfer is resumed before the fill gives up.
const MAX_RESUMES: u32 = 3;
/// Largest read a follower does at once.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// The blob a fill is for: `digest` of upstream `repo`, cached under `key`; asked of `peers`
/// first, when the mirror has any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub peers: Option<&'a Arc<Peers>>,
    pub repo: &'a RepoName,
    pub key: &'a RepoName,
    pub digest: &'a Digest,
}

/// How much a fill may write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillLimits {
    /// The size a manifest gave the blob: the upstream must send exactly this many bytes.
    pub expected: Option<u64>,
    /// The largest blob fetched when its size is not known from a manifest.
    pub max: u64,
    /// Space the fill must leave free on the data directory's filesystem.
    pub min_free: u64,
}

/// How often (in bytes written) a fill re-checks the free space.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// Where a fill stands.
#[derive(Debug, Clone)]
pub(crate) enum FillState {
    /// Asking peers which of them has the blob (none has answered with it yet).
    Asking,
    /// Waiting for the upstream's answer.
    Starting,
    /// Bytes are arriving in `path`.
    Receiving {
        path: Arc<PathBuf>,
        total: Option<u64>,
        written: u64,
    },
    /// Verified and in the store at `path`; a small blob that arrived whole also in `bytes`, so
    /// that its followers need not read back what was just written.
    Done {
        path: Arc<PathBuf>,
        bytes: Option<Bytes>,
    },
    /// Nothing was stored; the reason.
    Failed(FetchError),
}

/// One fill, shared by its followers.
#[derive(Debug)]
pub(crate) struct Fill {
    pub state: watch::Receiver<FillState>,
}

/// Counts bytes fetched, from a peer or from the upstream.
fn count_fetched(
    metrics: &crate::Metrics,
    upstream: &Upstream,
    from_peer: bool,
    peer_bytes: &mut u64,
    n: usize,
) {
    if from_peer {
        *peer_bytes += n as u64;
        metrics.peer_fetched_bytes.inc_by(n as u64);
    } else {
        metrics
            .bytes_fetched
            .get_or_create(&UpstreamLabels {
                upstream: upstream.name.clone(),
            })
            .inc_by(n as u64);
    }
}

/// Fills in flight, by digest.
#[derive(Debug, Default)]
pub(crate) struct Fills {
    inflight: Mutex<HashMap<Digest, Arc<Fill>>>,
}

impl Fills {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fill for `digest`: an existing one, or a new one started now. `None` if the content
    /// turned out to be in the store already (checked under the same lock a finishing fill takes,
    /// so a digest is never fetched twice).
    pub fn join_or_start(
        self: &Arc<Self>,
        store: &Arc<Store>,
        metrics: &Arc<Metrics>,
        blob: Wanted<'_>,
        limits: FillLimits,
    ) -> Option<(Arc<Fill>, bool)> {
        let Wanted {
            upstream,
            peers,
            repo,
            key,
            digest,
        } = blob;
        let mut map = self.map();
        if let Some(f) = map.get(digest) {
            return Some((f.clone(), false));
        }
        if store.has_content_now(digest) {
            return None;
        }
        let asks = peers.is_some_and(|p| !p.is_empty());
        let (tx, rx) = watch::channel(if asks {
            FillState::Asking
        } else {
            FillState::Starting
        });
        let fill = Arc::new(Fill { state: rx });
        map.insert(digest.clone(), fill.clone());
        metrics.fills_in_flight.inc();
        let guard = Guard {
            fills: self.clone(),
            digest: digest.clone(),
            tx,
            metrics: metrics.clone(),
        };
        tokio::spawn(run(
            guard,
            store.clone(),
            Sources {
                upstream: upstream.clone(),
                peers: peers.cloned(),
            },
            repo.clone(),
            key.clone(),
            limits,
        ));
        Some((fill, true))
    }

    /// The fill in flight for `digest`, if any, without starting one (what a peer may be served).
    pub fn in_flight(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.map().get(digest).cloned()
    }
}

/// Where a fill's bytes may come from: its peers, then its upstream.
struct Sources {
    upstream: Arc<Upstream>,
    peers: Option<Arc<Peers>>,
}

/// Owns the fill's sender. However the task ends — finished, failed or panicked — dropping the
/// guard publishes a final state and removes the fill, so waiters are released and the next
/// request elects a new leader.
struct Guard {
    fills: Arc<Fills>,
    digest: Digest,
    tx: watch::Sender<FillState>,
    metrics: Arc<Metrics>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let terminal = matches!(
            *self.tx.borrow(),
            FillState::Done { .. } | FillState::Failed(_)
        );
        if !terminal {
            self.tx.send_replace(FillState::Failed(FetchError::internal(
                "blob fill ended unexpectedly",
            )));
        }
        self.fills.map().remove(&self.digest);
        self.metrics.fills_in_flight.dec();
    }
}

async fn run(
    guard: Guard,
    store: Arc<Store>,
    sources: Sources,
    repo: RepoName,
    key: RepoName,
    limits: FillLimits,
) {
    let started = Instant::now();
    let upstream = sources.upstream;
    // Announced as the fill starts, so nodes missing the blob a moment later stream it from here.
    if let Some(p) = &sources.peers {
        p.announce(&guard.digest);
    }
    let peers = sources
        .peers
        .as_deref()
        .filter(|p| !p.is_empty() && !p.distrusted(&guard.digest));
    let outcome = fetch(
        &guard, &store, &upstream, peers, &repo, &key, started, limits,
    )
    .await;
    let state = match outcome {
        Ok((total, bytes)) => {
            tracing::debug!(digest = %guard.digest, total, ms = started.elapsed().as_millis() as u64, "blob fill done");
            FillState::Done {
                path: Arc::new(store.blob_path(&guard.digest)),
                bytes,
            }
        }
        Err(e) => {
            if let Some(p) = &sources.peers {
                p.forget(&guard.digest);
            }
            tracing::warn!(digest = %guard.digest, upstream = %upstream.name, error = %e.message, "blob fill failed");
            FillState::Failed(e)
        }
    };
    guard.tx.send_replace(state);
}

/// Fetches the blob into the store while followers read it: from peers first (when there are
/// any), else or then from the upstream. A source that breaks off is followed by the next from
/// where it stopped (the next peer, or the upstream with `Range`); the digest is checked before
/// the blob becomes visible or a follower gets its last byte.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    guard: &Guard,
    store: &Arc<Store>,
    upstream: &Upstream,
    peers: Option<&Peers>,
    repo: &RepoName,
    key: &RepoName,
    started: Instant,
    limits: FillLimits,
) -> Result<(u64, Option<Bytes>), FetchError> {
    let digest = &guard.digest;
    let metrics = &guard.metrics;
    let mut asking = peers.map(|p| PeerCursor::new(p, digest));
    // A peer must announce the size, the one a manifest gave when there is one, within bounds.
    let peer_size_fits = |t: Option<u64>| {
        t.is_some_and(|t| {
            limits.expected.is_none_or(|e| e == t) && t <= limits.expected.unwrap_or(limits.max)
        })
    };
    let peer_first = match asking.as_mut() {
        Some(c) => c.next(upstream, repo, 0, peer_size_fits, metrics).await,
        None => None,
    };
    // Where the bytes being written come from: a peer (its endpoint) or the upstream (None).
    let (first, mut source) = match peer_first {
        Some((r, peer)) => (r, Some(peer)),
        None => {
            if let Some(c) = &asking {
                c.fell_back(metrics);
            }
            guard.tx.send_replace(FillState::Starting);
            // Nothing from the upstream is written before its size is known to fit.
            let r = upstream.answered(upstream.client.get_blob(repo, digest, 0).await, true)?;
            (r, None)
        }
    };
    let mut peer_bytes = 0u64;
    // The transfer floor is measured from here: from the fill's start, and again from each
    // switch away from a peer (the next source is not charged for the last one's slowness).
    let mut floor = (started, 0u64);
    let total = first.total;
    // A manifest's size bounds a transfer that announces none. When the upstream announces
    // another, the manifest may be the one that is wrong (anyone can push one naming any digest
    // with any size): the digest check decides, within max_blob_size.
    let expected = match (total, limits.expected) {
        (Some(t), Some(e)) if t != e => {
            tracing::info!(%digest, announced = t, manifest = e, "blob size differs from its manifest's; bounded by max_blob_size instead");
            None
        }
        (_, e) => e,
    };
    let limit = expected.unwrap_or(limits.max);
    if let Some(t) = total
        && t > limit
    {
        return Err(FetchError::upstream_protocol(&format!(
            "upstream sends {t} bytes for {digest}, more than the {limit} a blob of unknown size may have (max_blob_size); nothing was stored"
        )));
    }
    check_space(store, total.or(expected).unwrap_or(0), limits.min_free)?;
    let mut next_space_check = SPACE_CHECK_EVERY;
    let mut ingest = store
        .begin_ingest(digest)
        .await
        .map_err(FetchError::store)?;
    let path = Arc::new(ingest.path().to_owned());
    guard.tx.send_replace(FillState::Receiving {
        path: path.clone(),
        total,
        written: 0,
    });
    let mut stream: Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send + Unpin> =
        Box::new(first.into_stream());
    let mut resumes = 0;
    // A body that arrives whole in its first chunk (most cached blobs) is written and committed
    // in one trip to the blocking pool.
    let mut whole: Option<Bytes> = None;
    loop {
        let next = stream.next().await;
        let interrupted = match next {
            Some(Ok(chunk))
                if ingest.written() == 0
                    && total == Some(chunk.len() as u64)
                    && chunk.len() as u64 <= limit =>
            {
                count_fetched(
                    metrics,
                    upstream,
                    source.is_some(),
                    &mut peer_bytes,
                    chunk.len(),
                );
                whole = Some(chunk);
                break;
            }
            Some(Ok(chunk)) => {
                if total.is_some_and(|t| ingest.written() + chunk.len() as u64 > t) {
                    return Err(FetchError::upstream_protocol(
                        "upstream sent more bytes than its Content-Length",
                    ));
                }
                if ingest.written() + chunk.len() as u64 > limit {
                    return Err(FetchError::upstream_protocol(&format!(
                        "upstream sent more than the {limit} bytes {} for {digest}; nothing was stored",
                        if expected.is_some() {
                            "its manifest gives"
                        } else {
                            "a blob of unknown size may have (max_blob_size)"
                        }
                    )));
                }
                if ingest.written() >= next_space_check {
                    next_space_check += SPACE_CHECK_EVERY;
                    check_space(store, 0, limits.min_free)?;
                }
                ingest.write(&chunk).await.map_err(FetchError::store)?;
                count_fetched(
                    metrics,
                    upstream,
                    source.is_some(),
                    &mut peer_bytes,
                    chunk.len(),
                );
                let written = ingest.written();
                guard.tx.send_modify(|s| {
                    if let FillState::Receiving { written: w, .. } = s {
                        *w = written;
                    }
                });
                let (since, base) = floor;
                if !upstream
                    .min_transfer
                    .too_slow(written - base, since.elapsed())
                {
                    None
                } else if source.is_some() {
                    // A peer trickling bytes is left like one that broke off.
                    Some(ClientError::new(
                        ferry_client::ErrorKind::Timeout,
                        "peer transfer is below the transfer floor",
                    ))
                } else {
                    return Err(FetchError::timeout(
                        "upstream transfer is too slow; abandoned",
                    ));
                }
            }
            Some(Err(e)) => Some(e),
            None if total.is_some_and(|t| ingest.written() < t) => Some(ClientError::new(
                ferry_client::ErrorKind::Unavailable,
                "upstream body ended early",
            )),
            None => break,
        };
        if let Some(e) = &interrupted
            && let Some(peer) = &source
        {
            // A peer broke off: the next one goes on from here, else the upstream does.
            let from = ingest.written();
            tracing::debug!(%digest, %peer, from, error = %e, "peer transfer broke off; asking the next source");
            metrics
                .peer_requests
                .get_or_create(&CauseLabels {
                    cause: PeerMiss::Interrupted.label(),
                })
                .inc();
            let same_size = |t: Option<u64>| t == total;
            let next = match asking.as_mut() {
                Some(c) => {
                    c.last = PeerMiss::Interrupted;
                    c.next(upstream, repo, from, same_size, metrics).await
                }
                None => None,
            };
            floor = (Instant::now(), from);
            match next {
                Some((r, p)) => {
                    source = Some(p);
                    stream = Box::new(r.into_stream());
                }
                None => {
                    if let Some(c) = &asking {
                        c.fell_back(metrics);
                    }
                    source = None;
                    let r = upstream
                        .answered(upstream.client.get_blob(repo, digest, from).await, true)?;
                    if r.start != from || r.total.is_some_and(|t| Some(t) != total) {
                        return Err(FetchError::upstream_protocol(
                            "upstream cannot go on from where a peer stopped (ignored Range, or another size)",
                        ));
                    }
                    stream = Box::new(r.into_stream());
                }
            }
        } else if let Some(e) = interrupted {
            if resumes >= MAX_RESUMES {
                return Err(upstream.fetch_error(&e, true));
            }
            resumes += 1;
            let from = ingest.written();
            tracing::info!(%digest, from, attempt = resumes, error = %e, "resuming interrupted upstream transfer");
            let r = upstream.answered(upstream.client.get_blob(repo, digest, from).await, true)?;
            if r.start != from {
                return Err(FetchError::upstream_protocol(
                    "upstream cannot resume (ignored Range)",
                ));
            }
            stream = Box::new(r.into_stream());
        }
    }
    if whole.is_some() {
        // Read to the end, so that the client sees the body finished and keeps the connection.
        if let Some(Ok(extra)) = stream.next().await
            && !extra.is_empty()
        {
            return Err(FetchError::upstream_protocol(
                "upstream sent more bytes than its Content-Length",
            ));
        }
    }
    let small = whole
        .as_ref()
        .filter(|b| b.len() as u64 <= ferry_store::SMALL_BLOB)
        .cloned();
    let committed = match whole {
        Some(bytes) => ingest.commit_whole(bytes, store, key).await,
        None => ingest.commit(store, key).await,
    };
    match committed {
        Ok(n) => {
            // A cached blob is a write that succeeded: it ends a storage-full episode on a mirror
            // that only pulls (pushes end it in the dispatcher).
            guard.metrics.storage_wrote();
            Ok((n, small))
        }
        Err(StoreError::DigestMismatch { actual, .. }) if peer_bytes > 0 => {
            // Which source lied cannot be told; the next fill of this blob asks no peer.
            if let Some(p) = peers {
                p.distrust(digest);
            }
            metrics
                .peer_fallbacks
                .get_or_create(&CauseLabels {
                    cause: PeerMiss::Digest.label(),
                })
                .inc();
            tracing::warn!(%digest, %actual, peer_bytes, "bytes from peers hash to another digest; nothing was stored, and the next request for it goes to the upstream alone");
            Err(FetchError::upstream_protocol(&format!(
                "peers sent bytes hashing to {actual}, not {digest}; nothing was stored; retry: the blob will be fetched from the upstream"
            )))
        }
        Err(StoreError::DigestMismatch { actual, .. }) => Err(FetchError::upstream_protocol(
            &format!("upstream sent bytes hashing to {actual}, not {digest}; nothing was stored"),
        )),
        Err(e) => Err(FetchError::store(e)),
    }
}

/// The peers a fill asks, best first ([`Peers::candidates`]: DHT providers, the DHT's members by
/// rank, then the static peers in rendezvous order), then once more those that had nothing to give, together with any
/// provider the DHT names by then: one that started fetching the blob meanwhile (a rollout, where
/// every node misses at once) serves it then (`pull.rs::serve_peer` says how simultaneous askers
/// settle on one fetch).
struct PeerCursor<'p> {
    peers: &'p Peers,
    digest: Digest,
    /// Peers left, each with whether this is its second round.
    queue: std::collections::VecDeque<(Arc<super::peers::Peer>, bool)>,
    /// Endpoints asked so far.
    asked: std::collections::HashSet<String>,
    /// Whether the DHT was asked again for the second round.
    looked_again: bool,
    /// Why the last peer asked did not serve (the cause of a fall-back to the upstream).
    last: PeerMiss,
}

impl<'p> PeerCursor<'p> {
    fn new(peers: &'p Peers, digest: &Digest) -> PeerCursor<'p> {
        PeerCursor {
            peers,
            digest: digest.clone(),
            queue: std::collections::VecDeque::new(),
            asked: std::collections::HashSet::new(),
            looked_again: false,
            last: PeerMiss::NotFound,
        }
    }

    /// Fills the queue: the first time with every candidate; once the first round is done,
    /// with the providers the DHT names now that were not asked yet, ahead of the second round.
    async fn refill(&mut self, upstream: &Upstream, repo: &RepoName, metrics: &Metrics) {
        let first = self.asked.is_empty() && self.queue.is_empty();
        if !first {
            if self.looked_again || self.peers.discovery().is_none() {
                return;
            }
            self.looked_again = true;
        }
        let found = self
            .peers
            .candidates(&upstream.name, repo, &self.digest, &self.asked, metrics)
            .await;
        let queued: std::collections::HashSet<String> =
            self.queue.iter().map(|(p, _)| p.endpoint.clone()).collect();
        let new: Vec<_> = found
            .into_iter()
            .filter(|p| !queued.contains(&p.endpoint))
            .collect();
        for p in new.into_iter().rev() {
            self.queue.push_front((p, false));
        }
    }

    /// The next peer that answers for the bytes from `offset` with a size `fits` accepts, and
    /// its endpoint; `None` once every peer has been asked.
    async fn next(
        &mut self,
        upstream: &Upstream,
        repo: &RepoName,
        offset: u64,
        fits: impl Fn(Option<u64>) -> bool,
        metrics: &Metrics,
    ) -> Option<(ferry_client::BlobResponse, String)> {
        let count = |miss: Option<PeerMiss>| {
            metrics
                .peer_requests
                .get_or_create(&CauseLabels {
                    cause: miss.map_or("served", PeerMiss::label),
                })
                .inc();
        };
        if self.asked.is_empty() {
            self.refill(upstream, repo, metrics).await;
        }
        loop {
            let (peer, second) = self.queue.pop_front()?;
            let opened = self
                .peers
                .open(&peer, &upstream.name, repo, &self.digest, offset)
                .await;
            self.asked.insert(peer.endpoint.clone());
            let miss = match opened {
                Ok(r) if fits(r.total) => {
                    count(None);
                    return Some((r, peer.endpoint.clone()));
                }
                Ok(_) => PeerMiss::Size,
                Err(miss) => miss,
            };
            count(Some(miss));
            self.last = miss;
            if miss == PeerMiss::NotFound && !second {
                self.queue.push_back((peer, true));
            }
            // The first round over: the DHT once more, for providers that started meanwhile.
            if self.queue.front().is_none_or(|(_, second)| *second) {
                self.refill(upstream, repo, metrics).await;
            }
        }
    }

    /// Counts the fall-back to the upstream, by the last peer's answer.
    fn fell_back(&self, metrics: &Metrics) {
        metrics
            .peer_fallbacks
            .get_or_create(&CauseLabels {
                cause: self.last.label(),
            })
            .inc();
    }
}

/// Refuses a fill that would leave less than `min_free` bytes free after writing `more`: the
/// storage counts as full, answered and counted as a full disk is.
fn check_space(store: &Store, more: u64, min_free: u64) -> Result<(), FetchError> {
    match store.available_space() {
        Some(free) if free < more.saturating_add(min_free) => {
            let outcome = if more > 0 {
                format!("this blob ({more} bytes) was not cached")
            } else {
                "caching this blob was abandoned".to_owned()
            };
            Err(FetchError::storage_full(
                format!(
                    "the registry's storage is full: {free} bytes are free and the cache keeps min_free_space ({min_free} bytes) free, so {outcome}; retry once space is freed"
                ),
                format!(
                    "{free} bytes free at {}, below min_free_space ({min_free} bytes) plus {more} to cache",
                    store.root().display()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Streams `start..start+len` of the blob while the fill delivers it. Bytes are released only once
/// written, and the blob's final byte only once the digest is verified.
pub(crate) fn follow(
    fill: Arc<Fill>,
    start: u64,
    len: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    struct Cursor {
        rx: watch::Receiver<FillState>,
        file: Option<std::fs::File>,
        pos: u64,
        end: u64,
    }
    let cursor = Cursor {
        rx: fill.state.clone(),
        file: None,
        pos: start,
        end: start + len,
    };
    let fail = |mut c: Cursor, msg: String| {
        c.pos = c.end;
        Some((Err(std::io::Error::other(msg)), c))
    };
    futures_util::stream::unfold(cursor, move |mut c| async move {
        loop {
            if c.pos >= c.end {
                return None;
            }
            let state = c.rx.borrow_and_update().clone();
            let (path, available, done) = match state {
                FillState::Failed(e) => return fail(c, e.message),
                FillState::Asking | FillState::Starting => (None, 0, false),
                FillState::Receiving { path, written, .. } => {
                    (Some(path), written.saturating_sub(1), false)
                }
                FillState::Done {
                    bytes: Some(bytes), ..
                } if c.file.is_none() && c.end <= bytes.len() as u64 => {
                    let part = bytes.slice(c.pos as usize..c.end as usize);
                    c.pos = c.end;
                    return Some((Ok(part), c));
                }
                FillState::Done { path, .. } => (Some(path), c.end, true),
            };
            // Opened once there is something to read (a whole-body fill creates its file only
            // when it commits).
            if c.file.is_none()
                && available > c.pos
                && let Some(p) = &path
            {
                // A temp file renamed away in between is reopened under its final name once Done.
                c.file = std::fs::File::open(p.as_ref()).ok();
            }
            if let Some(file) = &c.file
                && available > c.pos
            {
                let n = (available.min(c.end) - c.pos).min(FOLLOW_CHUNK) as usize;
                let mut buf = vec![0u8; n];
                return match file.read_exact_at(&mut buf, c.pos) {
                    Ok(()) => {
                        c.pos += n as u64;
                        Some((Ok(Bytes::from(buf)), c))
                    }
                    Err(e) => fail(c, format!("reading the blob being filled: {e}")),
                };
            }
            if done {
                return fail(c, "filled blob is not readable".into());
            }
            if c.rx.changed().await.is_err() {
                // The guard publishes a final state before it goes; look at it once more.
                let terminal = matches!(
                    *c.rx.borrow(),
                    FillState::Done { .. } | FillState::Failed(_)
                );
                if !terminal {
                    return fail(c, "blob fill vanished".into());
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small blob that arrived whole is served to its followers from the fill's bytes: the path
    /// named here does not exist, so any read of a file would fail the stream.
    #[tokio::test]
    async fn followers_of_a_whole_small_fill_are_served_from_its_bytes() {
        let bytes = Bytes::from_static(b"0123456789");
        let (_tx, rx) = watch::channel(FillState::Done {
            path: Arc::new(PathBuf::from("/nonexistent/ferry/blob")),
            bytes: Some(bytes.clone()),
        });
        let fill = Arc::new(Fill { state: rx });
        let whole: Vec<_> = follow(fill.clone(), 0, 10).collect().await;
        let whole: Vec<u8> = whole.into_iter().flat_map(|c| c.unwrap()).collect();
        assert_eq!(whole, bytes);
        let part: Vec<_> = follow(fill, 2, 3).collect().await;
        let part: Vec<u8> = part.into_iter().flat_map(|c| c.unwrap()).collect();
        assert_eq!(part, b"234");
    }
}
