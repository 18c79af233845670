//! Request dispatch and what the endpoint modules share.

pub(crate) mod blobs;
pub(crate) mod listing;
pub(crate) mod manifests;
pub(crate) mod referrers;
mod uploads;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_oci::{ErrorCode, Route, RouteError};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use crate::metrics::{EndpointLabels, RequestLabels};
use crate::mirror::{Mirror, Target, Upstream};
use crate::{ApiError, App};

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Every response says which API it speaks; Docker clients check this on `/v2/`.
const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");

pub(crate) async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // `connection` is an HTTP/1 header; HTTP/2 resets a stream instead of dropping a connection.
    let http1 = req.version() < http::Version::HTTP_2;
    let span = tracing::debug_span!("request", %method, path = %req.uri().path());
    let (req, body_read) = track_body(req);
    let endpoint = endpoint_of(req.uri().path());
    let metrics = app.metrics.clone();
    let logged = app
        .options
        .access_log
        .clone()
        .map(|log| (log, crate::access_log::RequestFacts::of(&req, started)));
    let mut res = async {
        let res = route(app, req)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        tracing::debug!(
            status = res.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "done"
        );
        res
    }
    .instrument(span)
    .await;
    res.headers_mut()
        .insert("docker-distribution-api-version", API_VERSION);
    if let Some(crate::error::StorageFullAnswer(cause)) = res.extensions().get() {
        metrics.storage_full(cause.as_deref());
    } else if matches!(
        method,
        http::Method::PUT | http::Method::POST | http::Method::PATCH
    ) && res.status().is_success()
    {
        metrics.storage_wrote();
    }
    metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint,
            method: crate::metrics::method_label(&method),
            status: res.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
    if http1 && body_read.is_some_and(|read| !read.load(Ordering::Relaxed)) {
        // hyper drops a connection whose request body was left unread (e.g. a chunk refused with
        // 416 before it was received); saying so stops keep-alive clients from reusing it.
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some((log, facts)) = logged {
        let status = res.status().as_u16();
        res = res.map(|body| log.wrap(&facts, status, body));
    }
    res
}

/// The endpoint of a path, for metrics labels, without parsing it fully.
fn endpoint_of(path: &str) -> &'static str {
    if path.contains("/blobs/uploads") {
        "upload"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.ends_with("/tags/list") {
        "tags"
    } else if path.contains("/referrers/") {
        "referrers"
    } else if path == "/v2/_catalog" {
        "catalog"
    } else if path == "/v2/" || path == "/v2" {
        "base"
    } else {
        "other"
    }
}

/// Wraps a non-empty request body so that the dispatcher learns whether a handler read it to the end.
fn track_body(req: Request) -> (Request, Option<Arc<AtomicBool>>) {
    if http_body::Body::is_end_stream(req.body()) {
        return (req, None);
    }
    let flag = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(TrackedBody {
        inner: body,
        read: flag.clone(),
    });
    (Request::from_parts(parts, body), Some(flag))
}

struct TrackedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn route(app: Arc<App>, req: Request) -> ApiResult {
    let path = req.uri().path();
    match path {
        "/healthz" => return Ok((StatusCode::OK, "ok\n").into_response()),
        "/readyz" => return Ok((StatusCode::OK, "ready\n").into_response()),
        _ => {}
    }
    if path.starts_with("/admin") {
        let req_path = path.to_owned();
        if let Some(r) = crate::admin::handle(&app, req).await {
            return r;
        }
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no such endpoint: {req_path}"),
        ));
    }
    let token_endpoint = path == "/token";
    let mut req = req;
    if let Some(auth) = app.options.auth.clone() {
        if token_endpoint && auth.issues_tokens() {
            limit_rate(&app, &req)?;
            return auth.issue(req).await;
        }
        gate(&app, &auth, &mut req).await?;
    }
    limit_rate(&app, &req)?;
    let path = req.uri().path();
    if let Some(mirror) = app.mirror.clone() {
        let write = !matches!(*req.method(), Method::GET | Method::HEAD);
        let ns = Query::of(&req).get("ns").map(str::to_owned);
        let target = mirror.route(req.headers(), path, ns.as_deref())?;
        match target {
            Target::Upstream { upstream, path } => {
                return mirrored(&app, &mirror, &upstream, &path, req).await;
            }
            Target::Local => {
                if write
                    && let Some(repo) = Route::parse(path).ok().as_ref().and_then(Route::repo)
                    && let Some(owner) = mirror.owns_namespace(repo.as_str())
                {
                    return Err(ApiError::new(
                        ErrorCode::Denied,
                        format!(
                            "{repo} is in the cache namespace of upstream {owner}; push to another repository name"
                        ),
                    ));
                }
            }
        }
    }
    let route = parse_route(path, req.method())?;
    local(app, route, req).await
}

/// One request from the caller's bucket (the user's once authenticated, else the address's).
fn limit_rate(app: &App, req: &Request) -> Result<(), ApiError> {
    let Some(rate) = &app.options.rate else {
        return Ok(());
    };
    let user = match req.extensions().get::<crate::auth::Caller>() {
        Some(crate::auth::Caller {
            identity: crate::auth::Identity::User(u),
            ..
        }) => Some(u.as_str()),
        _ => None,
    };
    let address = req.extensions().get::<crate::ClientAddr>().map(|a| a.0);
    rate.check(user, address).map_err(|limited| {
        app.metrics
            .rate_limited
            .get_or_create(&crate::metrics::ByLabels {
                by: limited.by.label(),
            })
            .inc();
        limited.answer()
    })
}

/// Authentication and access control, before anything is routed: the caller's identity goes
/// into the request's extensions (the catalog filters by it). A peer's request for a blob with a
/// valid membership proof is the peers' business (checked where it is served), not the rules'.
async fn gate(app: &App, auth: &crate::auth::Auth, req: &mut Request) -> Result<(), ApiError> {
    let route = Route::parse(req.uri().path()).ok();
    if let (Some(ask), Some(Route::Blob { digest, .. })) =
        (crate::mirror::peers::PeerAsk::of(req.headers()), &route)
        && let Some(peers) = app.mirror.as_ref().and_then(|m| m.peers.as_ref())
        && peers.members_only()
        && peers.admit(&ask.node, digest, ask.proof.as_deref()).is_ok()
    {
        return Ok(());
    }
    let realm = auth.realm_for(req);
    let caller = auth.identify(req, &realm).await.map_err(|(e, why)| {
        app.metrics
            .auth_failures
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: why.label(),
            })
            .inc();
        e
    })?;
    let decided = match &route {
        Some(Route::Base) => auth.base(&caller, &realm),
        Some(Route::Catalog) | None => Ok(()),
        Some(route) => {
            let mut needs = crate::auth::needs(req.method(), route);
            if req.method() == Method::POST
                && matches!(route, Route::UploadStart { .. })
                && let Some(from) = Query::of(req)
                    .get("from")
                    .filter(|_| Query::of(req).get("mount").is_some())
                && auth.mount_wants_scope(&caller, from)
            {
                needs.push((from.to_owned(), ferry_auth::Action::Pull));
            }
            auth.authorize(&caller, &needs, &realm)
        }
    };
    if let Err(e) = decided {
        app.metrics.access_denied.inc();
        return Err(e);
    }
    if req.method() == Method::POST
        && matches!(route, Some(Route::UploadStart { .. }))
        && let Some(query) = req.uri().query()
        && let Some(kept) = crate::auth::mount_query(query, |from| auth.may_pull(&caller, from))
    {
        let path = req.uri().path();
        let pq = if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{kept}")
        };
        if let Ok(pq) = pq.parse::<http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

/// Parses the path; a tag that cannot exist names no manifest, so GET/HEAD/DELETE answer 404 as for
/// any unknown manifest and only a PUT is told its tag is invalid.
fn parse_route(path: &str, method: &Method) -> Result<Route, ApiError> {
    match Route::parse(path) {
        Ok(r) => Ok(r),
        Err(RouteError::Tag(e)) if method != Method::PUT => {
            Err(ApiError::new(ErrorCode::ManifestUnknown, e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Requests for an upstream's namespace: read-only, served through the cache.
async fn mirrored(
    app: &App,
    mirror: &Mirror,
    up: &Arc<Upstream>,
    path: &str,
    req: Request,
) -> ApiResult {
    let route = parse_route(path, req.method())?;
    let m = req.method().clone();
    let peer = crate::mirror::peers::PeerAsk::of(req.headers());
    if peer.is_some()
        && !matches!(
            (&route, &m),
            (Route::Blob { .. }, &Method::GET | &Method::HEAD)
        )
    {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "a peer request (ferry-peer header) asks for a blob by digest; nothing else is served to peers",
        ));
    }
    match (&route, &m) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec()))
        }
        (Route::Catalog, &Method::GET) => listing::catalog(app, &req).await,
        (Route::Manifest { repo, reference }, &Method::GET | &Method::HEAD) => {
            crate::mirror::get_manifest(app, mirror, up, repo, reference, m == Method::HEAD).await
        }
        (Route::Blob { repo, digest }, &Method::GET | &Method::HEAD) => {
            let range = req.headers().get(header::RANGE).cloned();
            let head = m == Method::HEAD;
            crate::mirror::get_blob(app, mirror, up, repo, digest, head, range, peer.as_ref()).await
        }
        (Route::TagsList { repo }, &Method::GET) => {
            // The query, not the request, crosses the upstream call (a body is not `Sync`).
            let q = Query::of(&req);
            crate::mirror::get_tags(app, mirror, up, repo, q).await
        }
        (Route::Referrers { repo, digest }, &Method::GET) => {
            crate::mirror::get_referrers(app, up, repo, digest, &req)
        }
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "{m} is not supported for {}, a mirrored registry: its namespace is read-only{}",
                up.name,
                if mirror.has_default() {
                    " (names that name no upstream go to the default upstream; push under a \
                     namespace listed in `local_namespaces` / --local-namespace)"
                } else {
                    ""
                }
            ),
        )
        .header(header::ALLOW, "GET, HEAD")),
    }
}

async fn local(app: Arc<App>, route: Route, req: Request) -> ApiResult {
    let m = req.method().clone();
    match (&route, &m) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec()))
        }
        (Route::Catalog, &Method::GET | &Method::HEAD) => listing::catalog(&app, &req).await,
        (Route::TagsList { repo }, &Method::GET | &Method::HEAD) => listing::tags(&app, repo, &req),
        (Route::Referrers { repo, digest }, &Method::GET | &Method::HEAD) => {
            referrers::get(&app, repo, digest, &req)
        }
        (Route::Manifest { repo, reference }, &Method::GET | &Method::HEAD) => {
            if m == Method::GET {
                app.metrics.pull("local", "manifest", "cached");
            }
            manifests::get(&app, repo, reference, m == Method::HEAD).await
        }
        (Route::Manifest { repo, reference }, &Method::PUT) => {
            manifests::put(&app, repo, reference, req).await
        }
        (Route::Manifest { repo, reference }, &Method::DELETE) => {
            manifests::delete(&app, repo, reference).await
        }
        (Route::Blob { repo, digest }, &Method::GET | &Method::HEAD) => {
            if m == Method::GET {
                app.metrics.pull("local", "blob", "cached");
            }
            let range = req.headers().get(header::RANGE).cloned();
            blobs::get(&app, repo, digest, m == Method::HEAD, range).await
        }
        (Route::Blob { repo, digest }, &Method::DELETE) => blobs::delete(&app, repo, digest).await,
        (Route::UploadStart { repo }, &Method::POST) => uploads::start(&app, repo, req).await,
        (Route::Upload { repo, id }, &Method::GET) => uploads::status(&app, repo, id).await,
        (Route::Upload { repo, id }, &Method::PATCH) => uploads::patch(&app, repo, id, req).await,
        (Route::Upload { repo, id }, &Method::PUT) => uploads::put(&app, repo, id, req).await,
        (Route::Upload { repo, id }, &Method::DELETE) => uploads::cancel(&app, repo, id).await,
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("{m} is not supported on the {} endpoint", route.endpoint()),
        )
        .header(header::ALLOW, allowed(&route))),
    }
}

/// The methods an endpoint answers, for `Allow` on a 405.
fn allowed(route: &Route) -> &'static str {
    match route {
        Route::Base | Route::Catalog | Route::TagsList { .. } | Route::Referrers { .. } => {
            "GET, HEAD"
        }
        Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
        Route::Blob { .. } => "GET, HEAD, DELETE",
        Route::UploadStart { .. } => "POST",
        Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
    }
}

/// Query parameters, percent-decoded.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn of(req: &Request) -> Query {
        Query(
            req.uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `n` page size; `Err` if present but not a number.
    pub fn n(&self) -> Result<Option<usize>, ApiError> {
        match self.get("n") {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
                ApiError::new(
                    ErrorCode::Unsupported,
                    format!("n={v:?} is not a non-negative integer"),
                )
                .status(StatusCode::BAD_REQUEST)
            }),
        }
    }
}

/// A `Content-Length` request header, if present and valid.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(ErrorCode::SizeInvalid, "Content-Length is not a number")),
    }
}

/// The request body as a stream of chunks that fails if the client goes quiet for `idle`, or sends
/// less than `floor` allows in any of its windows (a body trickled a byte at a time would
/// otherwise hold its connection and upload session forever).
pub(crate) fn body_stream(
    body: Body,
    idle: Duration,
    floor: crate::RateFloor,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    // Only time spent waiting for the client counts: a handler busy elsewhere (a session lock,
    // rehashing a resumed upload) is not the client being slow.
    struct Pace<S> {
        inner: S,
        waited: Duration,
        moved: u64,
    }
    let state = Pace {
        inner: body.into_data_stream(),
        waited: Duration::ZERO,
        moved: 0,
    };
    let slow = move |moved: u64| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "request body sent {moved} bytes in {}s, below the floor of {} bytes/s",
                floor.window.as_secs(),
                floor.bytes_per_sec
            ),
        )
    };
    Box::pin(futures_util::stream::unfold(
        Some(state),
        move |state| async move {
            let mut p = state?;
            let idle_deadline = tokio::time::Instant::now() + idle;
            loop {
                let started = tokio::time::Instant::now();
                let window_end = started + floor.window.saturating_sub(p.waited);
                let deadline = idle_deadline.min(window_end);
                let next = tokio::time::timeout_at(deadline, p.inner.next()).await;
                p.waited += started.elapsed();
                let window_over = p.waited >= floor.window;
                match next {
                    Ok(Some(Ok(b))) => {
                        p.moved += b.len() as u64;
                        if window_over {
                            if !floor.met(p.moved) {
                                return Some((Err(slow(p.moved)), None));
                            }
                            (p.waited, p.moved) = (Duration::ZERO, 0);
                        }
                        return Some((Ok(b), Some(p)));
                    }
                    Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                    Ok(None) => return None,
                    Err(_) if !window_over => {
                        return Some((
                            Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no request body data for {}s", idle.as_secs()),
                            )),
                            None,
                        ));
                    }
                    Err(_) => {
                        // A window ended while waiting: judge it, then keep waiting.
                        if !floor.met(p.moved) {
                            return Some((Err(slow(p.moved)), None));
                        }
                        (p.waited, p.moved) = (Duration::ZERO, 0);
                    }
                }
            }
        },
    ))
}

/// `0-<last byte>` as the upload endpoints report progress (`0-0` before any byte).
pub(crate) fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// A JSON response over any body.
pub(crate) fn json_response_body(status: StatusCode, body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Builds a response with explicit headers; values that are not valid header text are skipped.
pub(crate) fn response(status: StatusCode, headers: &[(&str, &str)], body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    res
}
