//! Pull-through handlers: serve from the store when it has the content, else fetch it once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use ferry_oci::{Algorithm, Digest, ErrorCode, Manifest, ManifestRef, RepoName};
use ferry_store::Store;
use http::{HeaderValue, header};

use super::fill::{FillLimits, FillState, Wanted, follow};
use super::{FetchError, Mirror, Upstream};
use crate::api::{self, ApiResult};
use crate::metrics::{EndpointLabels, UpstreamErrorLabels, UpstreamLabels};
use crate::{ApiError, App};

/// How long an upstream 404 is remembered, so a storm of requests for a missing tag costs one
/// upstream request, not one each.
const NEGATIVE_TTL: Duration = Duration::from_secs(15);
/// Bound on remembered 404s.
const NEGATIVE_MAX: usize = 10_000;

impl Mirror {
    fn negative_hit(&self, key: &str) -> bool {
        let mut n = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        match n.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                n.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, key: String) {
        let mut n = self.negative.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() >= NEGATIVE_MAX {
            let now = Instant::now();
            n.retain(|_, until| *until > now);
            if n.len() >= NEGATIVE_MAX {
                n.clear();
            }
        }
        n.insert(key, Instant::now() + NEGATIVE_TTL);
    }
}

pub(crate) async fn get_manifest(
    app: &App,
    mirror: &Mirror,
    up: &Arc<Upstream>,
    repo: &RepoName,
    reference: &ManifestRef,
    head: bool,
) -> ApiResult {
    let upstream_repo = up.upstream_repo(repo)?;
    let key = up.store_repo(&upstream_repo)?;
    let mut cached = app.store.resolve_manifest(&key, reference).ok();
    let fresh = match (reference, &cached) {
        (_, None) => false,
        (ManifestRef::Digest(_), Some(_)) => true,
        (ManifestRef::Tag(t), Some(_)) => {
            !up.always_revalidates(t.as_str())
                && mirror.tag_fresh(&key, t.as_str(), up.tag_ttl, || app.store.tag_age(&key, t))
        }
    };
    if fresh || (mirror.options.offline && cached.is_some()) {
        match api::manifests::get(app, &key, reference, head).await {
            // Evicted or pruned between finding it and reading it: fetch it again below.
            Err(e) if e.error.code == ErrorCode::ManifestUnknown && !mirror.options.offline => {
                tracing::debug!(%repo, %reference, "cached manifest removed while being read; fetching again");
                cached = None;
            }
            r => {
                if !head && r.is_ok() {
                    app.metrics.pull(&up.name, "manifest", "cached");
                }
                return r;
            }
        }
    }
    let miss = |why: &str| {
        ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("{}/{upstream_repo}:{reference} {why}", up.name),
        )
    };
    if mirror.options.offline {
        return Err(miss("is not cached and ferry is offline"));
    }
    let flight_key = format!("{}/{upstream_repo}@{reference}", up.name);
    if cached.is_none() && mirror.negative_hit(&flight_key) {
        return Err(miss("was not found upstream moments ago"));
    }
    let (store, upc, r, k, refc, max, budget, fetches) = (
        app.store.clone(),
        up.clone(),
        upstream_repo.clone(),
        key.clone(),
        reference.clone(),
        mirror.options.max_manifest_bytes,
        mirror.manifest_parse.clone(),
        mirror.manifest_fetches.clone(),
    );
    let (outcome, led) = mirror
        .manifests
        .run(
            flight_key.clone(),
            move || async move {
                // Each fetch may hold a whole manifest before it is parsed: bounded in number.
                let _fetching = fetches
                    .acquire_owned()
                    .await
                    .map_err(|_| FetchError::internal("manifest fetches closed"))?;
                refresh_manifest(&store, &upc, (&r, &k), &refc, max, &budget).await
            },
            || FetchError::internal("manifest fetch ended unexpectedly"),
        )
        .await;
    if !led {
        app.metrics
            .coalesced
            .get_or_create(&EndpointLabels {
                endpoint: "manifest",
            })
            .inc();
    }
    if let Err(e) = &outcome {
        app.metrics
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: up.name.clone(),
                status: e.status,
            })
            .inc();
    }
    match outcome {
        Ok(m) => {
            mirror.expect_sizes(up, &upstream_repo, &m);
            if led && up.prefetch_blobs {
                prefetch_blobs(app, mirror, up, &upstream_repo, &key, &m);
            }
            if !head {
                app.metrics.pull(&up.name, "manifest", "upstream");
            }
            api::manifests::serve_fetched(app, &key, &m, head)
        }
        Err(e) if e.status == 404 => {
            mirror.remember_missing(flight_key);
            Err(e.into_api())
        }
        Err(e) if cached.is_some() && mirror.options.serve_stale => {
            app.metrics
                .stale_served
                .get_or_create(&UpstreamLabels {
                    upstream: up.name.clone(),
                })
                .inc();
            tracing::warn!(upstream = %up.name, repo = %upstream_repo, %reference, error = %e.message, "upstream failed; serving the cached manifest stale");
            // The cached copy may have been pruned meanwhile: then the upstream's failure stands.
            let Ok(mut res) = api::manifests::get(app, &key, reference, head).await else {
                return Err(e.into_api());
            };
            res.headers_mut().insert(
                header::WARNING,
                HeaderValue::from_static("110 - \"Response is Stale\""),
            );
            Ok(res)
        }
        Err(e) => Err(e.into_api()),
    }
}

/// Starts fills for the blobs of the image manifest just fetched (`prefetch_blobs_on_manifest`), in
/// the background and bounded by the mirror's prefetch permits; clients asking for a blob meanwhile
/// join its fill as usual. Index children are not followed: a client asks for its platform's
/// manifest next, which prefetches that image's blobs.
fn prefetch_blobs(
    app: &App,
    mirror: &Mirror,
    up: &Arc<Upstream>,
    upstream_repo: &RepoName,
    key: &RepoName,
    m: &Arc<Manifest>,
) {
    if m.media_type().is_index() {
        return;
    }
    let (store, metrics, fills, permits, min_free) = (
        app.store.clone(),
        app.metrics.clone(),
        mirror.fills.clone(),
        mirror.prefetch.clone(),
        mirror.options.min_free_bytes,
    );
    let peers = mirror.peers.clone();
    let (up, upstream_repo, key, m) = (up.clone(), upstream_repo.clone(), key.clone(), m.clone());
    tokio::spawn(async move {
        for d in m.blob_references() {
            if store.has_content_now(&d.digest) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let limits = FillLimits {
                expected: Some(d.size),
                max: up.max_blob_bytes,
                min_free,
            };
            let wanted = Wanted {
                upstream: &up,
                peers: peers.as_ref(),
                repo: &upstream_repo,
                key: &key,
                digest: &d.digest,
            };
            let Some((fill, _)) = fills.join_or_start(&store, &metrics, wanted, limits) else {
                continue;
            };
            // The permit is held until the fill ends, so at most MAX_PREFETCHES run at once.
            let mut state = fill.state.clone();
            tokio::spawn(async move {
                let _ = state
                    .wait_for(|s| matches!(s, FillState::Done { .. } | FillState::Failed(_)))
                    .await;
                drop(permit);
            });
        }
        tracing::debug!(upstream = %up.name, repo = %upstream_repo, manifest = %m.digest(), "blob prefetch started");
    });
}

/// Brings the cached copy of `reference` up to date with the upstream; the manifest as it now is.
/// Fetches (or revalidates) a manifest of upstream `repo` into the cache under `key`. Every parse
/// is charged to `budget` first, so concurrent fetches of huge manifests wait instead of taking
/// memory without bound.
async fn refresh_manifest(
    store: &Arc<Store>,
    up: &Upstream,
    (repo, key): (&RepoName, &RepoName),
    reference: &ManifestRef,
    max: usize,
    budget: &crate::BufferBudget,
) -> Result<Arc<Manifest>, FetchError> {
    let mut _charged = crate::BufferPermit::none();
    match reference {
        ManifestRef::Digest(d) => {
            let r = up.answered(up.client.get_manifest(repo, d.as_str(), max).await, false)?;
            drop(std::mem::take(&mut _charged));
            _charged = budget
                .charge_waiting(r.bytes.len() * crate::MANIFEST_PARSE_FACTOR)
                .await;
            let m = Manifest::parse_as(r.bytes.to_vec(), Some(&r.media_type), d.algorithm())
                .map_err(|e| FetchError::upstream_protocol(&format!("unusable manifest: {e}")))?;
            if m.digest() != d {
                return Err(FetchError::upstream_protocol(&format!(
                    "manifest bytes hash to {}, not the {d} asked for; nothing was stored",
                    m.digest()
                )));
            }
            store
                .cache_manifest(key, &m, &[])
                .await
                .map_err(FetchError::store)?;
            Ok(Arc::new(m))
        }
        ManifestRef::Tag(t) => {
            if let Ok(cached) = store.resolve_manifest(key, reference) {
                // A HEAD costs no body and, on Docker Hub, no pull from the rate limit.
                let head = up.answered(up.client.head_manifest(repo, t.as_str()).await, false)?;
                if head.digest.as_ref() == Some(&cached.digest)
                    && let Ok(stored) = store.get_manifest(key, reference).await
                {
                    drop(std::mem::take(&mut _charged));
                    _charged = budget
                        .charge_waiting(stored.bytes.len() * crate::MANIFEST_PARSE_FACTOR)
                        .await;
                    if let Ok(m) = Manifest::parse_as(
                        stored.bytes.to_vec(),
                        Some(&stored.head.media_type),
                        stored.head.digest.algorithm(),
                    ) && store.touch_tag(key, t).is_ok()
                    {
                        return Ok(Arc::new(m));
                    }
                }
                // Moved upstream, or the cached copy went meanwhile: fetch it.
            }
            let r = up.answered(up.client.get_manifest(repo, t.as_str(), max).await, false)?;
            let algorithm = r
                .digest
                .as_ref()
                .map_or(Algorithm::Sha256, Digest::algorithm);
            drop(std::mem::take(&mut _charged));
            _charged = budget
                .charge_waiting(r.bytes.len() * crate::MANIFEST_PARSE_FACTOR)
                .await;
            let m = Manifest::parse_as(r.bytes.to_vec(), Some(&r.media_type), algorithm)
                .map_err(|e| FetchError::upstream_protocol(&format!("unusable manifest: {e}")))?;
            if let Some(d) = &r.digest
                && d != m.digest()
            {
                return Err(FetchError::upstream_protocol(&format!(
                    "manifest bytes hash to {}, but the upstream said {d}; nothing was stored",
                    m.digest()
                )));
            }
            store
                .cache_manifest(key, &m, std::slice::from_ref(t))
                .await
                .map_err(FetchError::store)?;
            Ok(Arc::new(m))
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn get_blob(
    app: &App,
    mirror: &Mirror,
    up: &Arc<Upstream>,
    repo: &RepoName,
    digest: &Digest,
    head: bool,
    range: Option<HeaderValue>,
    peer: Option<&super::peers::PeerAsk>,
) -> ApiResult {
    let upstream_repo = up.upstream_repo(repo)?;
    let key = up.store_repo(&upstream_repo)?;
    if let Some(asker) = peer {
        return serve_peer(app, mirror, &key, digest, head, range, asker).await;
    }
    {
        // The index first: a cached blob (nearly every request) costs no `stat`; content stored
        // under another repository is linked here, where a link that fails (the content
        // collected meanwhile) still falls through to a fetch; a link whose file is gone is
        // refetched below.
        let linked = app.store.has_blob(&key, digest)
            || (app.store.has_content_now(digest)
                && app.store.link_cached_blob(&key, digest).await.is_ok());
        if linked {
            match api::blobs::get(app, &key, digest, head, range.clone()).await {
                // Evicted or pruned between the check and the open: fetch it again below.
                Err(e) if e.error.code == ErrorCode::BlobUnknown => {
                    tracing::debug!(%digest, "cached blob removed while being opened; refetching");
                }
                r => {
                    if !head && r.is_ok() {
                        app.metrics.pull(&up.name, "blob", "cached");
                    }
                    return r;
                }
            }
        }
    }
    if mirror.options.offline {
        return Err(ApiError::new(
            ErrorCode::BlobUnknown,
            format!("{digest} is not cached and ferry is offline"),
        ));
    }
    let mut collected = 0;
    let (fill, led) = loop {
        let joined = mirror.fills.join_or_start(
            &app.store,
            &app.metrics,
            Wanted {
                upstream: up,
                peers: mirror.peers.as_ref(),
                repo: &upstream_repo,
                key: &key,
                digest,
            },
            FillLimits {
                expected: mirror.expected_size(up, &upstream_repo, digest),
                max: up.max_blob_bytes,
                min_free: mirror.options.min_free_bytes,
            },
        );
        if let Some(f) = joined {
            break f;
        }
        // Finished between our look at the store and now; if a collection took it before it
        // could be linked, start over (a fill this time).
        match app.store.link_cached_blob(&key, digest).await {
            Ok(()) => return api::blobs::get(app, &key, digest, head, range).await,
            Err(ferry_store::StoreError::BlobUnknown(_)) if collected < 3 => collected += 1,
            Err(e) => return Err(e.into()),
        }
    };
    if !led {
        app.metrics
            .coalesced
            .get_or_create(&EndpointLabels { endpoint: "blob" })
            .inc();
    }
    if !head {
        app.metrics.pull(&up.name, "blob", "upstream");
    }
    let mut rx = fill.state.clone();
    let waited = rx
        .wait_for(|s| !matches!(s, FillState::Asking | FillState::Starting))
        .await
        .map(|s| s.clone());
    let state = waited.unwrap_or_else(|_| rx.borrow().clone());
    let total = match state {
        FillState::Failed(e) => {
            app.metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: up.name.clone(),
                    status: e.status,
                })
                .inc();
            return Err(e.into_api());
        }
        FillState::Done { .. } | FillState::Receiving { total: None, .. } => {
            // Complete already, or an upstream that did not say the size: serve from the store.
            let done = rx
                .wait_for(|s| matches!(s, FillState::Done { .. } | FillState::Failed(_)))
                .await
                .map(|s| s.clone());
            if let Ok(FillState::Failed(e)) = done {
                return Err(e.into_api());
            }
            // Linked by the fill when it was for this repository.
            if !app.store.has_blob(&key, digest) {
                app.store.link_cached_blob(&key, digest).await?;
            }
            return api::blobs::get(app, &key, digest, head, range).await;
        }
        FillState::Receiving { total: Some(t), .. } => t,
        FillState::Asking | FillState::Starting => {
            return Err(FetchError::internal("blob fill did not start").into_api());
        }
    };
    let (status, start, len, content_range) =
        api::blobs::plan_read(api::blobs::parse_range(range), total)?;
    let body = if head {
        Body::empty()
    } else {
        app.metrics.bytes_served.inc_by(len);
        Body::from_stream(follow(fill, start, len))
    };
    Ok(api::blobs::blob_response(
        status,
        digest,
        len,
        content_range.as_deref(),
        body,
    ))
}

/// A peer's request for a blob (see `peers`): served from the store or from a fill in flight
/// whose size is known, never fetched, so a request between nodes cannot loop or reach an
/// upstream. A fill still waiting for its upstream's answer, or (for a lower-ranked asker, see
/// `Peers::rank`) still asking peers, is waited for up to `Peers::hold`. Transfers to peers are
/// bounded; past the bound the answer is 429 at once.
async fn serve_peer(
    app: &App,
    mirror: &Mirror,
    key: &RepoName,
    digest: &Digest,
    head: bool,
    range: Option<HeaderValue>,
    asker: &super::peers::PeerAsk,
) -> ApiResult {
    let Some(peers) = &mirror.peers else {
        return Err(ApiError::new(
            ErrorCode::Denied,
            "this node does not share blobs with peers (no peers are configured)",
        ));
    };
    let not_here = || {
        ApiError::new(
            ErrorCode::BlobUnknown,
            format!(
                "{digest} is not on this node (a peer is served what is cached or being fetched, nothing is fetched for it)"
            ),
        )
    };
    if let Err(denied) = peers.admit(&asker.node, digest, asker.proof.as_deref()) {
        app.metrics.peer_requests_denied.inc();
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!("not a member of this node's peer cluster: {denied}"),
        ));
    }
    if asker.node == peers.node() {
        return Err(not_here());
    }
    if asker.probe {
        return probe(app, mirror, peers, digest).ok_or_else(not_here);
    }
    let holds = peers.rank(digest, &asker.node) < peers.rank(digest, peers.node());
    let permit = if head {
        None
    } else {
        match peers.uploads.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                app.metrics.peer_uploads_refused.inc();
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    "this node serves as many peers as it may (peers.max_uploads); ask another source",
                ));
            }
        }
    };
    let until = tokio::time::Instant::now() + peers.hold();
    let response = loop {
        if app.store.has_content_now(digest) {
            app.store.link_cached_blob(key, digest).await?;
            break api::blobs::get(app, key, digest, head, range).await?;
        }
        let fill = mirror.fills.in_flight(digest).ok_or_else(not_here)?;
        let mut rx = fill.state.clone();
        let state = rx.borrow_and_update().clone();
        match state {
            FillState::Receiving { total: Some(t), .. } => {
                let (status, start, len, content_range) =
                    api::blobs::plan_read(api::blobs::parse_range(range), t)?;
                let body = if head {
                    Body::empty()
                } else {
                    Body::from_stream(follow(fill, start, len))
                };
                break api::blobs::blob_response(
                    status,
                    digest,
                    len,
                    content_range.as_deref(),
                    body,
                );
            }
            FillState::Done { .. } => continue,
            // Waiting for its upstream: the bytes are about to flow.
            FillState::Starting => {}
            // Asking around itself: a lower-ranked asker waits for it, a higher-ranked one is
            // told at once (and this node will wait for that one instead).
            FillState::Asking if holds => {}
            // Of unknown size, or failed: the asker is better served elsewhere.
            FillState::Asking | FillState::Receiving { total: None, .. } | FillState::Failed(_) => {
                return Err(not_here());
            }
        }
        if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
            return Err(not_here());
        }
    };
    Ok(match permit {
        Some(permit) => upload_to_peer(response, permit, &app.metrics),
        None => response,
    })
}

/// A probe's answer, at once: whether this node holds `digest` whole or is filling it, and how
/// many transfers it serves to peers now; `None` when it has nothing.
fn probe(
    app: &App,
    mirror: &Mirror,
    peers: &super::peers::Peers,
    digest: &Digest,
) -> Option<axum::response::Response> {
    use super::peers::{PEER_COPY_HEADER, PEER_LOAD_HEADER};
    let copy = if app.store.has_content_now(digest) {
        "complete"
    } else {
        match *mirror.fills.in_flight(digest)?.state.borrow() {
            FillState::Failed(_) => return None,
            FillState::Done { .. } => "complete",
            _ => "filling",
        }
    };
    let mut response = axum::response::Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(PEER_COPY_HEADER, HeaderValue::from_static(copy));
    h.insert(PEER_LOAD_HEADER, HeaderValue::from(peers.load()));
    Some(response)
}

/// `response` with its body holding `permit` (and counted as a transfer to a peer) until the body
/// is sent or dropped.
fn upload_to_peer(
    response: axum::response::Response,
    permit: tokio::sync::OwnedSemaphorePermit,
    metrics: &Arc<crate::Metrics>,
) -> axum::response::Response {
    struct Upload {
        _permit: tokio::sync::OwnedSemaphorePermit,
        metrics: Arc<crate::Metrics>,
    }
    impl Drop for Upload {
        fn drop(&mut self) {
            self.metrics.peer_uploads.dec();
        }
    }
    use futures_util::StreamExt;
    metrics.peer_uploads.inc();
    let upload = Upload {
        _permit: permit,
        metrics: metrics.clone(),
    };
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            upload.metrics.peer_served_bytes.inc_by(c.len() as u64);
        }
        chunk
    });
    axum::response::Response::from_parts(parts, Body::from_stream(body))
}

/// Largest upstream tag-list page ferry relays (a page of Docker Hub's biggest repositories is far
/// smaller).
const MAX_TAG_LIST_BYTES: usize = 8 << 20;

/// Tags of a mirrored repository: the upstream's list, page for page (`n`, `last`); when the
/// upstream fails (or ferry is offline), the tags pulled through so far, marked stale.
pub(crate) async fn get_tags(
    app: &App,
    mirror: &Mirror,
    up: &Arc<Upstream>,
    repo: &RepoName,
    q: api::Query,
) -> ApiResult {
    let upstream_repo = up.upstream_repo(repo)?;
    let key = up.store_repo(&upstream_repo)?;
    let cached = || api::listing::tags_by_query(app, &key, repo, &q);
    if mirror.options.offline {
        return cached();
    }
    let n = q.n()?;
    let last = q.get("last").map(str::to_owned);
    let flight_key = format!(
        "{}/{upstream_repo} as {repo}?n={n:?}&last={}",
        up.name,
        last.as_deref().unwrap_or("")
    );
    let (upc, r, permits, named, budget) = (
        up.clone(),
        upstream_repo.clone(),
        mirror.tag_fetches.clone(),
        repo.clone(),
        mirror.tag_buffers.clone(),
    );
    let (page, _) = mirror
        .tag_pages
        .run(
            flight_key,
            move || async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| FetchError::internal("tag list fetches closed"))?;
                let page = upc.answered(
                    upc.client
                        .list_tags(&r, n, last.as_deref(), MAX_TAG_LIST_BYTES)
                        .await,
                    false,
                )?;
                // Only names that are tags: the list is relayed, not trusted. Some registries
                // (Distribution before 3.0) ignore `n` and `last` on tag lists: the page is cut
                // here (the OCI spec orders tags lexically).
                let kept = ferry_oci::filter_tag_list(&page.body, last.as_deref(), n)
                    .map_err(|e| FetchError::upstream_protocol(&e.to_string()))?;
                drop(page.body);
                let (bytes, link) = api::listing::tag_page(&named, &kept, n, page.more);
                // Charged once per page, held until the last response sharing it is sent.
                let permit = budget.charge(bytes.len()).map_err(|_| FetchError {
                    status: 429,
                    code: ErrorCode::TooManyRequests,
                    message: "the server is holding as many tag lists as it allows; retry shortly"
                        .to_owned(),
                    retry_after: Some(1),
                    full_storage_cause: None,
                })?;
                let held = crate::HeldBytes {
                    bytes,
                    _permit: permit,
                };
                Ok((Arc::new(held), link))
            },
            || FetchError::internal("tag list fetch ended unexpectedly"),
        )
        .await;
    match page {
        Ok(page) => {
            // Identical requests share the page; its charge lasts until the last of them is sent.
            let mut res = api::json_response_body(
                http::StatusCode::OK,
                Body::new(crate::HeldBody::new(page.0.clone())),
            );
            if let Some(link) = &page.1 {
                res.headers_mut().insert(header::LINK, link.clone());
            }
            Ok(res)
        }
        Err(e) => {
            if e.status == 404 {
                return Err(ApiError::new(
                    ErrorCode::NameUnknown,
                    format!("{}/{upstream_repo} has no tags upstream", up.name),
                ));
            }
            if !mirror.options.serve_stale || !app.store.has_repository(key.as_str()) {
                return Err(e.into_api());
            }
            tracing::warn!(upstream = %up.name, repo = %upstream_repo, error = %e.message, "upstream failed; listing the cached tags");
            let mut res = cached()?;
            res.headers_mut().insert(
                header::WARNING,
                HeaderValue::from_static("110 - \"Response is Stale\""),
            );
            Ok(res)
        }
    }
}

/// Referrers of a mirrored subject: those pulled through so far.
pub(crate) fn get_referrers(
    app: &App,
    up: &Arc<Upstream>,
    repo: &RepoName,
    digest: &Digest,
    req: &axum::extract::Request,
) -> ApiResult {
    let key = up.store_repo(&up.upstream_repo(repo)?)?;
    api::referrers::get(app, &key, digest, req)
}
