//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or `?mount=`),
//! and `GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::extract::Request;
use ferry_oci::{ContentRange, Digest, ErrorCode, RepoName};
use http::{HeaderMap, StatusCode, header};

use super::{ApiResult, Query, body_stream, content_length, response, upload_range};
use crate::{ApiError, App};

fn parse_digest(q: &Query) -> Result<Option<Digest>, ApiError> {
    match q.get("digest") {
        None => Ok(None),
        Some(d) => d.parse().map(Some).map_err(|e: ferry_oci::DigestError| {
            ApiError::new(ErrorCode::DigestInvalid, e.to_string())
        }),
    }
}

fn content_range(headers: &HeaderMap) -> Result<Option<ContentRange>, ApiError> {
    match headers.get(header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => ContentRange::parse(v.to_str().unwrap_or(""))
            .map(Some)
            .map_err(|e| ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())),
    }
}

/// Content-Length must agree with a Content-Range's span when both are given; a Content-Range
/// alone (a chunked body) bounds the chunk by its span.
fn declared_len(headers: &HeaderMap, range: Option<ContentRange>) -> Result<Option<u64>, ApiError> {
    let Some(len) = content_length(headers)? else {
        return Ok(range.map(|r| r.len()));
    };
    let len = Some(len);
    if let (Some(r), Some(n)) = (range, len)
        && r.len() != n
    {
        return Err(ApiError::new(
            ErrorCode::SizeInvalid,
            format!(
                "Content-Range {}-{} spans {} bytes but Content-Length is {n}",
                r.start,
                r.end,
                r.len()
            ),
        ));
    }
    Ok(len)
}

fn created(repo: &RepoName, digest: &Digest) -> axum::response::Response {
    let location = format!("/v2/{repo}/blobs/{digest}");
    response(
        StatusCode::CREATED,
        &[
            ("location", &location),
            ("docker-content-digest", digest.as_str()),
            ("content-length", "0"),
        ],
        Body::empty(),
    )
}

fn in_progress(
    status: StatusCode,
    repo: &RepoName,
    id: &str,
    offset: u64,
) -> axum::response::Response {
    let location = format!("/v2/{repo}/blobs/uploads/{id}");
    response(
        status,
        &[
            ("location", &location),
            ("range", &upload_range(offset)),
            ("docker-upload-uuid", id),
            ("content-length", "0"),
        ],
        Body::empty(),
    )
}

pub(super) async fn start(app: &App, repo: &RepoName, req: Request) -> ApiResult {
    let q = Query::of(&req);
    let client = req
        .extensions()
        .get::<crate::ClientAddr>()
        .map(|c| c.0.to_string());
    if let Some(mount) = q.get("mount") {
        let digest: Digest = mount.parse().map_err(|e: ferry_oci::DigestError| {
            ApiError::new(ErrorCode::DigestInvalid, e.to_string())
        })?;
        let mounted = match q.get("from") {
            Some(from) => {
                let from = RepoName::new(from)
                    .map_err(|e| ApiError::new(ErrorCode::NameInvalid, e.to_string()))?;
                app.store.mount_blob(&from, repo, &digest).await?
            }
            None if app.options.auto_mount => app.store.mount_existing(repo, &digest).await?,
            None => false,
        };
        if mounted {
            return Ok(created(repo, &digest));
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
        let s = app.store.start_upload_for(repo, client.as_deref()).await?;
        return Ok(in_progress(StatusCode::ACCEPTED, repo, &s.id, s.offset));
    }
    if let Some(digest) = parse_digest(&q)? {
        let len = content_length(req.headers())?;
        let body = body_stream(
            req.into_body(),
            app.options.body_idle_timeout,
            app.options.min_receive,
        );
        app.store.put_blob(repo, &digest, len, body).await?;
        return Ok(created(repo, &digest));
    }
    let s = app.store.start_upload_for(repo, client.as_deref()).await?;
    Ok(in_progress(StatusCode::ACCEPTED, repo, &s.id, s.offset))
}

pub(super) async fn status(app: &App, repo: &RepoName, id: &str) -> ApiResult {
    let s = app.store.upload_status(repo, id).await?;
    Ok(in_progress(StatusCode::NO_CONTENT, repo, id, s.offset))
}

pub(super) async fn patch(app: &App, repo: &RepoName, id: &str, req: Request) -> ApiResult {
    let range = content_range(req.headers())?;
    let len = declared_len(req.headers(), range)?;
    let body = body_stream(
        req.into_body(),
        app.options.body_idle_timeout,
        app.options.min_receive,
    );
    let s = app
        .store
        .append_upload(repo, id, range.map(|r| r.start), len, body)
        .await
        .map_err(|e| with_location(e.into(), repo, id))?;
    Ok(in_progress(StatusCode::ACCEPTED, repo, id, s.offset))
}

pub(super) async fn put(app: &App, repo: &RepoName, id: &str, req: Request) -> ApiResult {
    let q = Query::of(&req);
    let Some(digest) = parse_digest(&q)? else {
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "completing an upload needs ?digest=<algorithm:hex> naming the blob's digest",
        ));
    };
    let range = content_range(req.headers())?;
    let len = declared_len(req.headers(), range)?;
    let body = body_stream(
        req.into_body(),
        app.options.body_idle_timeout,
        app.options.min_receive,
    );
    app.store
        .finish_upload(repo, id, &digest, range.map(|r| r.start), len, body)
        .await
        .map_err(|e| with_location(e.into(), repo, id))?;
    Ok(created(repo, &digest))
}

pub(super) async fn cancel(app: &App, repo: &RepoName, id: &str) -> ApiResult {
    app.store.cancel_upload(repo, id).await?;
    Ok(response(StatusCode::NO_CONTENT, &[], Body::empty()))
}

/// A rejected chunk leaves the session usable; tell the client where it is.
fn with_location(e: ApiError, repo: &RepoName, id: &str) -> ApiError {
    if e.status == StatusCode::RANGE_NOT_SATISFIABLE {
        e.header(header::LOCATION, &format!("/v2/{repo}/blobs/uploads/{id}"))
            .header(http::HeaderName::from_static("docker-upload-uuid"), id)
    } else {
        e
    }
}
