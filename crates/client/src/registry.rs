//! The registry client proper.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_oci::{Digest, MediaType, RepoName};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode, header};

use crate::auth::{Challenge, Token};
use crate::connections::Connections;
use crate::credentials::Credentials;
use crate::error::{ClientError, ErrorKind};
use crate::pace::RateLimit;
pub(crate) use crate::pace::backoff;

/// How to reach and treat one upstream registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `scheme://host[:port]`, e.g. `https://registry-1.docker.io`.
    pub endpoint: String,
    /// Credentials.
    pub credentials: Credentials,
    /// Extra CA certificates (PEM) to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated) for mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
    /// Connection establishment limit.
    pub connect_timeout: Duration,
    /// Whole-request limit for manifests and token requests.
    pub request_timeout: Duration,
    /// Longest silence while reading a response body.
    pub read_timeout: Duration,
    /// Attempts per request (1 = no retries). Connection failures, timeouts and 429, 502, 503
    /// and 504 answers are retried after an exponential backoff with jitter, or after the
    /// answer's `Retry-After`; other 4xx answers never are.
    pub attempts: u32,
    /// A `Retry-After` longer than this is not waited for; the error goes to the caller.
    pub max_retry_after: Duration,
    /// Send credentials to a token realm on another host over plain HTTP (a registry's
    /// `WWW-Authenticate` names the realm, so otherwise an upstream could send them anywhere).
    pub allow_plain_http_realm: bool,
    /// Requests per second, at most, over every request of this [`Registry`] (token requests,
    /// retries and redirects included), evenly spaced. A process that must stay under one limit
    /// for several tasks shares one `Registry` between them (it is cheap to share: tokens and the
    /// limit are inside); two `Registry` values have two limits, even over shared connections.
    pub rate_limit: Option<f64>,
    /// The pool whose connections this `Registry` uses and adds to. A process passes clones of
    /// one handle to every `Registry` it builds so they share connections; the default is a new
    /// pool of its own.
    pub connections: Connections,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            endpoint: String::new(),
            credentials: Credentials::Anonymous,
            ca_pem: None,
            identity_pem: None,
            insecure_skip_verify: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            attempts: 3,
            max_retry_after: Duration::from_secs(5),
            allow_plain_http_realm: false,
            rate_limit: None,
            connections: Connections::default(),
        }
    }
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    /// Exact bytes.
    pub bytes: Bytes,
    /// `Content-Type`.
    pub media_type: String,
    /// `Docker-Content-Digest`, if sent and valid.
    pub digest: Option<Digest>,
}

/// What a request needs a token for: the token cache is keyed by this scope's text, which names
/// the repository (and a mount's source), and a [`Registry`] serves one host, so a cached token is
/// only ever reused for the same registry, repository and actions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access<'a> {
    /// `repository:<repo>:pull`
    Pull,
    /// `repository:<repo>:pull,push`
    Push,
    /// `repository:<repo>:pull,push repository:<from>:pull` (a cross-repository mount)
    Mount(&'a RepoName),
    /// `registry:catalog:*` (the catalog; the request's repository is not part of the scope)
    Catalog,
}

impl Access<'_> {
    fn scope(self, repo: &RepoName) -> String {
        match self {
            Access::Pull => format!("repository:{repo}:pull"),
            Access::Push => format!("repository:{repo}:pull,push"),
            Access::Mount(from) => {
                format!("repository:{repo}:pull,push repository:{from}:pull")
            }
            Access::Catalog => "registry:catalog:*".to_owned(),
        }
    }
}

/// A request body, and whether it can be sent again for a retry.
pub(crate) enum Payload<'a> {
    /// No body.
    Empty,
    /// Bytes in memory with their content type (cheap to clone, resent on retries).
    Bytes(&'static str, Bytes),
    /// `len` bytes of a file from `offset`, reopened for every attempt.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
    /// A stream of `len` bytes that can be sent once only: a request that would need it again
    /// returns what it got instead.
    Once(Mutex<Option<reqwest::Body>>, u64),
}

impl Payload<'_> {
    fn resendable(&self) -> bool {
        match self {
            Payload::Once(body, _) => body.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
            _ => true,
        }
    }

    /// Adds the body (and its type and length) to `req`; `None` if a once-only body was sent.
    async fn attach(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<reqwest::RequestBuilder>, ClientError> {
        const OCTETS: &str = "application/octet-stream";
        Ok(Some(match self {
            Payload::Empty => req,
            Payload::Bytes(content_type, bytes) => req
                .header(header::CONTENT_TYPE, *content_type)
                .body(bytes.clone()),
            Payload::File { path, offset, len } => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let local = |e: std::io::Error| {
                    ClientError::new(
                        ErrorKind::Local,
                        format!("cannot read {}: {e}", path.display()),
                    )
                };
                let mut file = tokio::fs::File::open(path).await.map_err(local)?;
                file.seek(std::io::SeekFrom::Start(*offset))
                    .await
                    .map_err(local)?;
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(file.take(*len), FILE_READ_CHUNK);
                req.header(header::CONTENT_TYPE, OCTETS)
                    .header(header::CONTENT_LENGTH, *len)
                    .body(reqwest::Body::wrap_stream(stream))
            }
            Payload::Once(body, len) => {
                let Some(body) = body.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                    return Ok(None);
                };
                req.header(header::CONTENT_TYPE, OCTETS)
                    .header(header::CONTENT_LENGTH, *len)
                    .body(body)
            }
        }))
    }
}

/// Reads of a file being uploaded.
const FILE_READ_CHUNK: usize = 256 * 1024;

/// One request as [`Registry::send_with`] sends it.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub repo: &'a RepoName,
    pub range: Option<&'a str>,
    /// Apply the whole-request timeout (small bodies); streams are bounded by the read timeout.
    pub whole: bool,
    pub access: Access<'a>,
    pub payload: Payload<'a>,
    /// More headers (e.g. a chunk's `Content-Range`).
    pub headers: Vec<(header::HeaderName, String)>,
    /// Retry failures a retry may fix (off where the caller retries a larger sequence).
    pub retry: bool,
}

impl<'a> Request<'a> {
    /// A request with no body, retried, with a pull-scoped token.
    pub fn new(method: Method, url: &'a str, repo: &'a RepoName) -> Request<'a> {
        Request {
            method,
            url,
            repo,
            range: None,
            whole: true,
            access: Access::Pull,
            payload: Payload::Empty,
            headers: Vec::new(),
            retry: true,
        }
    }
}

/// One page of an upstream's tag list.
#[derive(Debug, Clone)]
pub struct TagPage {
    /// The registry's JSON body, unparsed (a caller that relays it can filter it without
    /// collecting every tag: see `ferry_oci::filter_tag_list`).
    pub body: Vec<u8>,
    /// Whether the registry announced a next page.
    pub more: bool,
}

/// What a manifest HEAD says.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`, if sent and valid.
    pub digest: Option<Digest>,
    /// `Content-Type`.
    pub media_type: Option<String>,
}

/// A blob response whose body has not been read yet.
#[derive(Debug)]
pub struct BlobResponse {
    /// Offset of the first byte of the body.
    pub start: u64,
    /// Total blob size, if the upstream said.
    pub total: Option<u64>,
    response: reqwest::Response,
}

impl BlobResponse {
    /// The HTTP version of the response (HTTP/2 when TLS negotiated it).
    pub fn http_version(&self) -> reqwest::Version {
        self.response.version()
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + Unpin {
        self.response
            .bytes_stream()
            .map(|r| r.map_err(|e| ClientError::from_reqwest(&e, "reading blob body")))
    }
}

/// A client for one upstream registry. Cheap to share; tokens are cached inside, connections
/// come from [`RegistryOptions::connections`].
#[derive(Debug)]
pub struct Registry {
    pub(crate) options: RegistryOptions,
    /// The endpoint as a URL: requests to its origin (scheme, host, port) carry credentials,
    /// requests redirected anywhere else do not.
    origin: reqwest::Url,
    http: reqwest::Client,
    limit: Option<RateLimit>,
    /// Bearer tokens by scope. The scope names the repository and the actions (see `Access`),
    /// and a `Registry` talks to one registry, so the cache is in effect keyed by registry,
    /// repository and scope. Bounded by the number of repositories used, and each entry is
    /// replaced when it expires.
    tokens: Mutex<HashMap<String, Token>>,
    /// Set once the registry asked for basic auth: send it up front from then on.
    basic: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// Builds a client; fails on bad TLS material or an endpoint that is not `http(s)://host[:port]`.
    pub fn new(options: RegistryOptions) -> Result<Registry, ClientError> {
        let bad = |m: String| ClientError::new(ErrorKind::Request, m);
        let ep = options.endpoint.trim_end_matches('/').to_owned();
        if !(ep.starts_with("http://") || ep.starts_with("https://"))
            || ep
                .split("://")
                .nth(1)
                .is_none_or(|h| h.is_empty() || h.contains('/'))
        {
            return Err(bad(format!(
                "upstream endpoint {:?} must be http(s)://host[:port]",
                options.endpoint
            )));
        }
        let origin = reqwest::Url::parse(&ep)
            .map_err(|e| bad(format!("upstream endpoint {:?}: {e}", options.endpoint)))?;
        let limit = match options.rate_limit {
            None => None,
            Some(rate) => Some(RateLimit::new(rate).ok_or_else(|| {
                bad(format!(
                    "rate limit {rate} is not a positive number of requests per second"
                ))
            })?),
        };
        let http = options.connections.client(&options)?;
        let mut options = options;
        options.endpoint = ep;
        Ok(Registry {
            options,
            origin,
            http,
            limit,
            tokens: Mutex::default(),
            basic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.options.endpoint
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<ManifestHead, ClientError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.options.endpoint);
        let r = self.send(Method::HEAD, &url, repo, None, true).await?;
        check(&r, "manifest HEAD")?;
        Ok(ManifestHead {
            digest: digest_header(&r),
            media_type: content_type(&r),
        })
    }

    /// `GET /v2/<repo>/manifests/<reference>`, whole (manifests are small and bounded by `max`).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        max: usize,
    ) -> Result<ManifestResponse, ClientError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.options.endpoint);
        let r = self.send(Method::GET, &url, repo, None, true).await?;
        check(&r, "manifest GET")?;
        if r.content_length().is_some_and(|n| n > max as u64) {
            return Err(ClientError::new(
                ErrorKind::Protocol,
                format!("upstream manifest larger than {max} bytes"),
            ));
        }
        let digest = digest_header(&r);
        let media_type = content_type(&r).unwrap_or_default();
        let mut body = r.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::from_reqwest(&e, "reading manifest"))?;
            if buf.len() + chunk.len() > max {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!("upstream manifest larger than {max} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(ManifestResponse {
            bytes: Bytes::from(buf),
            media_type,
            digest,
        })
    }

    /// Whether `repo` has the blob `digest` (`HEAD`, with a push-scoped token: used before a push).
    pub async fn blob_exists(&self, repo: &RepoName, digest: &Digest) -> Result<bool, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.options.endpoint);
        let r = self
            .send_with(Request {
                access: Access::Push,
                ..Request::new(Method::HEAD, &url, repo)
            })
            .await?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => check(&r, "blob HEAD").map(|()| false),
        }
    }

    /// `HEAD` of the blob `digest` with extra request `headers` (a ferry node probing a peer):
    /// the response's headers, or `None` when the registry has no such blob.
    pub async fn head_blob_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        headers: Vec<(header::HeaderName, String)>,
    ) -> Result<Option<header::HeaderMap>, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.options.endpoint);
        let mut rq = Request::new(Method::HEAD, &url, repo);
        rq.headers = headers;
        let r = self.send_with(rq).await?;
        match r.status() {
            s if s.is_success() => Ok(Some(r.headers().clone())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => check(&r, "blob HEAD").map(|()| None),
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; the digest the registry reports, if any.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        media_type: &'static str,
        bytes: Bytes,
    ) -> Result<Option<Digest>, ClientError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.options.endpoint);
        let r = self
            .send_with(Request {
                access: Access::Push,
                payload: Payload::Bytes(media_type, bytes),
                ..Request::new(Method::PUT, &url, repo)
            })
            .await?;
        check(&r, "manifest PUT")?;
        Ok(digest_header(&r))
    }

    /// A `Location` header (absolute, or relative to the endpoint) as a URL.
    pub(crate) fn resolve(&self, location: &str) -> Result<reqwest::Url, ClientError> {
        let base = reqwest::Url::parse(&format!("{}/", self.options.endpoint))
            .map_err(|e| ClientError::new(ErrorKind::Request, e.to_string()))?;
        base.join(location).map_err(|e| {
            ClientError::new(
                ErrorKind::Protocol,
                format!("unusable upload Location {location:?}: {e}"),
            )
        })
    }

    /// `GET /v2/<repo>/tags/list`, one page (`n` tags after `last`); the body is bounded by `max`
    /// bytes. Returns the tags and whether the registry says more follow (a `Link` header).
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
        max: usize,
    ) -> Result<TagPage, ClientError> {
        let mut url =
            reqwest::Url::parse(&format!("{}/v2/{repo}/tags/list", self.options.endpoint))
                .map_err(|e| ClientError::new(ErrorKind::Request, e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = n {
                q.append_pair("n", &n.to_string());
            }
            if let Some(l) = last {
                q.append_pair("last", l);
            }
        }
        let url = url.to_string().trim_end_matches('?').to_owned();
        let r = self.send(Method::GET, &url, repo, None, true).await?;
        check(&r, "tags list")?;
        let more = r.headers().contains_key(header::LINK);
        let body = read_bounded(r, max, "upstream tag list").await?;
        Ok(TagPage { body, more })
    }

    /// Every tag of `repo`, following the registry's pagination: each page asks for the tags
    /// after the last one of the previous page (what a Distribution `Link` header says), until a
    /// page comes without `Link`. `page_size` is the `n` to ask for (`None`: the registry's
    /// default); each page's body is bounded by `max_page` bytes and all pages together by
    /// `max_total`, and a page must move past the previous one, so a registry that pages forever
    /// or repeats itself is an error, not a hang.
    pub async fn all_tags(
        &self,
        repo: &RepoName,
        page_size: Option<usize>,
        max_page: usize,
        max_total: usize,
    ) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags: Vec<String> = Vec::new();
        let mut total = 0usize;
        loop {
            let before = tags.last().cloned();
            let page = self
                .list_tags(repo, page_size, before.as_deref(), max_page)
                .await?;
            total += page.body.len();
            if total > max_total {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!("tag list of {repo} is larger than {max_total} bytes"),
                ));
            }
            let parsed: Page = serde_json::from_slice(&page.body).map_err(|e| {
                ClientError::new(ErrorKind::Protocol, format!("tag list of {repo}: {e}"))
            })?;
            let got = parsed.tags.unwrap_or_default();
            // A page with no tags cannot move `last` on: stop rather than ask for it again.
            let empty = got.is_empty();
            tags.extend(got);
            if !page.more || empty {
                return Ok(tags);
            }
            if tags.last() == before.as_ref() {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the registry's tag list of {repo} does not move past {:?}",
                        before.unwrap_or_default()
                    ),
                ));
            }
        }
    }

    /// `GET /v2/<repo>/blobs/<digest>` from byte `offset` on (a `Range` request when not 0).
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobResponse, ClientError> {
        self.get_blob_with(repo, digest, offset, Vec::new()).await
    }

    /// [`Registry::get_blob`] with more request headers (a ferry node asking another marks its
    /// request as a peer's and names the upstream).
    pub async fn get_blob_with(
        &self,
        repo: &RepoName,
        digest: &Digest,
        offset: u64,
        headers: Vec<(header::HeaderName, String)>,
    ) -> Result<BlobResponse, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.options.endpoint);
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let mut rq = Request::new(Method::GET, &url, repo);
        rq.range = range.as_deref();
        rq.whole = false;
        rq.headers = headers;
        let r = self.send_with(rq).await?;
        check(&r, "blob GET")?;
        let (start, total) = match r.status() {
            StatusCode::PARTIAL_CONTENT => r
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    ClientError::new(ErrorKind::Protocol, "206 without a valid Content-Range")
                })?,
            _ if offset > 0 => {
                // The upstream ignored the Range: it is sending from byte 0.
                (0, r.content_length())
            }
            _ => (0, r.content_length()),
        };
        if start != offset && start != 0 {
            return Err(ClientError::new(
                ErrorKind::Protocol,
                format!("asked for bytes from {offset}, got them from {start}"),
            ));
        }
        Ok(BlobResponse {
            start,
            total,
            response: r,
        })
    }

    /// Sends with authentication and retries. `whole` applies the request timeout (for small
    /// bodies); blob streams are bounded by the read timeout instead.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repo: &RepoName,
        range: Option<&str>,
        whole: bool,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with(Request {
            range,
            whole,
            ..Request::new(method, url, repo)
        })
        .await
    }

    /// [`Registry::send`] for any request: its access decides the token's scope, its payload the
    /// body (resent on retries when it can be).
    pub(crate) async fn send_with(
        &self,
        rq: Request<'_>,
    ) -> Result<reqwest::Response, ClientError> {
        let Request {
            method,
            url,
            repo,
            range,
            whole,
            access,
            payload,
            headers,
            retry,
        } = rq;
        let scope = access.scope(repo);
        let attempts = if retry {
            self.options.attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        let mut authed_retry = false;
        let mut target = reqwest::Url::parse(url)
            .map_err(|e| ClientError::new(ErrorKind::Request, format!("{url}: {e}")))?;
        let mut redirects = 0;
        loop {
            attempt += 1;
            let to_registry = same_origin(&target, &self.origin);
            let mut req = self
                .http
                .request(method.clone(), target.clone())
                .header(header::ACCEPT, MediaType::ACCEPT_ALL);
            if whole {
                req = req.timeout(self.options.request_timeout);
            }
            if let Some(r) = range {
                req = req.header(header::RANGE, r);
            }
            for (name, value) in &headers {
                req = req.header(name, value);
            }
            let Some(req) = payload.attach(req).await? else {
                return Err(ClientError::new(
                    ErrorKind::Request,
                    format!("{method} {url}: a streamed body cannot be sent twice"),
                ));
            };
            // Credentials go to the registry only, never to where it redirects on another origin
            // (blob storage URLs are signed; they need none).
            let req = if to_registry {
                self.authorize(req, &scope)
            } else {
                req
            };
            let last = attempt >= attempts || !payload.resendable();
            self.pace().await;
            let r = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let err = ClientError::from_reqwest(&e, &format!("{method} {url}"));
                    if err.retryable() && !last {
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = r.status();
            if status.is_redirection()
                && matches!(method, Method::GET | Method::HEAD)
                && redirects < MAX_REDIRECTS
                && let Some(location) = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
            {
                target = target.join(location).map_err(|e| {
                    ClientError::new(
                        ErrorKind::Protocol,
                        format!("{method} {url}: unusable redirect {location:?}: {e}"),
                    )
                })?;
                if !matches!(target.scheme(), "http" | "https") {
                    return Err(ClientError::new(
                        ErrorKind::Protocol,
                        format!("{method} {url}: redirect to a non-HTTP URL"),
                    ));
                }
                redirects += 1;
                attempt -= 1;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && to_registry
                && !authed_retry
                && payload.resendable()
            {
                authed_retry = true;
                let challenge = r
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                let given_token = matches!(self.options.credentials, Credentials::Bearer { .. });
                match challenge {
                    // A token given by the user is the only one there is: its refusal stands.
                    Some(Challenge::Bearer {
                        realm,
                        service,
                        scope: asked,
                    }) if !given_token => {
                        self.fetch_token(&realm, service.as_deref(), asked.as_deref(), &scope)
                            .await?;
                        attempt -= 1;
                        continue;
                    }
                    Some(Challenge::Basic)
                        if self.options.credentials != Credentials::Anonymous =>
                    {
                        self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                        attempt -= 1;
                        continue;
                    }
                    _ => return Ok(r),
                }
            }
            if matches!(status.as_u16(), 429 | 502 | 503 | 504) && !last {
                let wait = retry_after(&r).unwrap_or_else(|| backoff(attempt));
                if wait <= self.options.max_retry_after {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Ok(r);
        }
    }

    /// Waits for the rate limit, if there is one.
    async fn pace(&self) {
        if let Some(limit) = &self.limit {
            limit.wait().await;
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder, scope: &str) -> reqwest::RequestBuilder {
        if let Credentials::Bearer { token } = &self.options.credentials {
            return req.bearer_auth(token);
        }
        let token = {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens
                .get(scope)
                .filter(|t| t.expires > Instant::now())
                .map(|t| t.value.clone())
        };
        if let Some(t) = token {
            return req.bearer_auth(t);
        }
        if self.basic.load(std::sync::atomic::Ordering::Relaxed)
            && let Credentials::Basic { username, password } = &self.options.credentials
        {
            return req.basic_auth(username, Some(password));
        }
        req
    }

    /// Fetches a token for the scopes the challenge asked for and the ones `key` names (a
    /// registry's challenge may leave out a mount's source), and caches it under `key`.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        asked: Option<&str>,
        key: &str,
    ) -> Result<(), ClientError> {
        let realm_url = reqwest::Url::parse(realm).map_err(|e| {
            ClientError::new(
                ErrorKind::Protocol,
                format!("the registry's token realm {realm:?} is not a URL: {e}"),
            )
        })?;
        if !matches!(realm_url.scheme(), "http" | "https") {
            return Err(ClientError::new(
                ErrorKind::Protocol,
                format!("the registry's token realm {realm:?} is not http(s)"),
            ));
        }
        let credentialed = matches!(self.options.credentials, Credentials::Basic { .. });
        if credentialed {
            let endpoint_host = reqwest::Url::parse(&self.options.endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            let same_host = realm_url.host_str().map(str::to_owned) == endpoint_host;
            if realm_url.scheme() == "http" && !same_host && !self.options.allow_plain_http_realm {
                return Err(ClientError::new(
                    ErrorKind::Denied,
                    format!(
                        "the registry's token realm {realm} is on another host over plain HTTP; ferry does not send credentials there (set allow_plain_http_realm for this upstream if that is intended)"
                    ),
                ));
            }
            tracing::info!(
                realm = %format_args!("{}://{}{}", realm_url.scheme(), realm_url.host_str().unwrap_or(""), realm_url.port().map(|p| format!(":{p}")).unwrap_or_default()),
                endpoint = %self.options.endpoint,
                "sending this upstream's credentials to its token realm"
            );
        }
        let mut scopes: Vec<&str> = Vec::new();
        for one in asked
            .unwrap_or("")
            .split_whitespace()
            .chain(key.split_whitespace())
        {
            if !scopes.contains(&one) {
                scopes.push(one);
            }
        }
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", *s)).collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut target = realm_url.clone();
        let mut redirects = 0;
        let r = loop {
            let mut req = self
                .http
                .get(target.clone())
                .timeout(self.options.request_timeout);
            if redirects == 0 {
                req = req.query(&query);
            }
            // The credentials go to the realm's origin only.
            if let Credentials::Basic { username, password } = &self.options.credentials
                && same_origin(&target, &realm_url)
            {
                req = req.basic_auth(username, Some(password));
            }
            self.pace().await;
            let r = req
                .send()
                .await
                .map_err(|e| ClientError::from_reqwest(&e, "token request"))?;
            let next = r
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| target.join(l).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            match next {
                Some(next) if r.status().is_redirection() && redirects < MAX_REDIRECTS => {
                    target = next;
                    redirects += 1;
                }
                _ => break r,
            }
        };
        if !r.status().is_success() {
            let mut e =
                ClientError::from_status(r.status().as_u16(), retry_after(&r), "token request");
            if r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::FORBIDDEN {
                e.kind = ErrorKind::Unauthorized;
            }
            return Err(e);
        }
        let bytes = read_bounded(r, MAX_TOKEN_BYTES, "token response").await?;
        let token = Token::from_json(&bytes, Instant::now()).ok_or_else(|| {
            ClientError::new(
                ErrorKind::Protocol,
                "token endpoint answered without a token",
            )
        })?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(key.to_owned(), token);
        Ok(())
    }
}

/// Largest token response read (real ones are a few KiB).
const MAX_TOKEN_BYTES: usize = 1 << 20;

/// Reads a response body of at most `max` bytes.
pub(crate) async fn read_bounded(
    r: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, ClientError> {
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ClientError::from_reqwest(&e, what))?;
        if buf.len() + chunk.len() > max {
            return Err(ClientError::new(
                ErrorKind::Protocol,
                format!("{what} larger than {max} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

pub(crate) fn check(r: &reqwest::Response, what: &str) -> Result<(), ClientError> {
    if r.status().is_success() {
        Ok(())
    } else {
        Err(ClientError::from_status(
            r.status().as_u16(),
            retry_after(r),
            what,
        ))
    }
}

/// Redirects followed for one request.
const MAX_REDIRECTS: u32 = 5;

/// Whether two URLs have the same scheme, host and port.
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `Retry-After`, in seconds or as an HTTP date (a date in the past is no wait).
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        r.headers().get(header::RETRY_AFTER)?.to_str().ok()?,
        SystemTime::now(),
    )
}

fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn digest_header(r: &reqwest::Response) -> Option<Digest> {
    r.headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn content_type(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_owned())
}

/// `bytes START-END/TOTAL` → (start, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A registry on 127.0.0.1 whose tag pages always say there is more: `page(n)` is the body of
    /// the n-th page.
    async fn paging_forever(page: fn(usize) -> String) -> Registry {
        let addr = crate::scripted::serve(move |n, _| {
            crate::scripted::endless_page("/v2/r/tags/list?last=x", &page(n))
        })
        .await;
        Registry::new(RegistryOptions {
            endpoint: format!("http://{addr}"),
            attempts: 1,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_registry_that_pages_forever_is_cut_off() {
        let repo = RepoName::new("r").unwrap();
        let endless = paging_forever(|n| format!(r#"{{"name":"r","tags":["t{n:09}"]}}"#)).await;
        // Without the bounds these calls never return: the timeout turns that into a failure.
        let within = std::time::Duration::from_secs(20);
        let e = tokio::time::timeout(within, endless.all_tags(&repo, None, 1024, 4096))
            .await
            .expect("cut off")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        let stuck = paging_forever(|_| r#"{"name":"r","tags":["same"]}"#.to_owned()).await;
        let e = stuck
            .all_tags(&repo, None, 1024, 1 << 20)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not move past"), "{e}");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 10:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 02 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 02 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("100-199/1000"), None);
    }

    #[test]
    fn endpoints_are_checked() {
        for bad in ["", "ftp://x", "http://", "http://host/path", "registry.io"] {
            let o = RegistryOptions {
                endpoint: bad.into(),
                ..Default::default()
            };
            assert!(Registry::new(o).is_err(), "{bad}");
        }
        let o = RegistryOptions {
            endpoint: "http://127.0.0.1:5000/".into(),
            ..Default::default()
        };
        assert_eq!(
            Registry::new(o).unwrap().endpoint(),
            "http://127.0.0.1:5000"
        );
    }

    proptest! {
        #[test]
        fn content_range_never_panics(s in "\\PC{0,60}") {
            let _ = parse_content_range(&s);
        }
    }
}
