//! `GET/HEAD/DELETE /v2/<name>/blobs/<digest>`, with single `Range` requests.

use std::io::SeekFrom;

use axum::body::Body;
use ferry_oci::{ByteRange, Digest, ErrorCode, RepoName};
use http::{StatusCode, header};
use std::io::Seek;

use ferry_store::BlobContent;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use super::{ApiResult, response};
use crate::{ApiError, App};

/// Read size when streaming a large blob: each read is one trip through the blocking pool, so
/// bigger reads mean fewer trips (1 MiB measured faster than 256 KiB); it also bounds the memory one
/// download holds.
const STREAM_CHUNK: usize = 1024 * 1024;

pub(crate) async fn get(
    app: &App,
    repo: &RepoName,
    digest: &Digest,
    head: bool,
    range: Option<http::HeaderValue>,
) -> ApiResult {
    // A malformed range is answered after the blob is found, so that the 416 can carry its length.
    let range = parse_range(range);
    if head && matches!(range, Ok(None)) {
        let len = app.store.blob_len(repo, digest)?;
        return Ok(blob_response(
            StatusCode::OK,
            digest,
            len,
            None,
            Body::empty(),
        ));
    }
    let blob = app.store.open_blob(repo, digest)?;
    let (status, start, len, content_range) = plan_read(range, blob.len)?;
    if !head {
        app.metrics.bytes_served.inc_by(len);
    }
    let body = if head {
        Body::empty()
    } else {
        match blob.content {
            BlobContent::Memory(bytes) => {
                Body::from(bytes.slice(start as usize..(start + len) as usize))
            }
            BlobContent::File(mut file) => {
                if start > 0 {
                    file.seek(SeekFrom::Start(start)).map_err(|e| {
                        tracing::error!(%digest, error = %e, "seeking in blob failed");
                        ApiError::new(
                            ErrorCode::Internal,
                            "reading the blob failed; see the server log",
                        )
                    })?;
                }
                let file = tokio::fs::File::from_std(file);
                Body::from_stream(ReaderStream::with_capacity(file.take(len), STREAM_CHUNK))
            }
        }
    };
    Ok(blob_response(
        status,
        digest,
        len,
        content_range.as_deref(),
        body,
    ))
}

/// How to answer a read of `total` bytes given its parsed `Range`: status, first byte, length and
/// `Content-Range`; a malformed or unsatisfiable range is a 416 carrying the length.
pub(crate) fn plan_read(
    range: Result<Option<ByteRange>, ferry_oci::RangeError>,
    total: u64,
) -> Result<(StatusCode, u64, u64, Option<String>), ApiError> {
    match range.and_then(|r| r.map(|r| r.resolve(total)).transpose()) {
        Ok(None) => Ok((StatusCode::OK, 0, total, None)),
        Ok(Some(r)) => Ok((
            StatusCode::PARTIAL_CONTENT,
            r.start,
            r.len(),
            Some(r.content_range(total)),
        )),
        Err(e) => Err(ApiError::new(ErrorCode::RangeInvalid, e.to_string())
            .header(header::CONTENT_RANGE, &format!("bytes */{total}"))),
    }
}

/// Parses a `Range` header value.
pub(crate) fn parse_range(
    v: Option<http::HeaderValue>,
) -> Result<Option<ByteRange>, ferry_oci::RangeError> {
    match v {
        None => Ok(None),
        Some(v) => ByteRange::parse_header(v.to_str().unwrap_or("")),
    }
}

pub(crate) fn blob_response(
    status: StatusCode,
    digest: &Digest,
    len: u64,
    content_range: Option<&str>,
    body: Body,
) -> axum::response::Response {
    let len = len.to_string();
    let etag = format!("\"{digest}\"");
    let mut headers = vec![
        ("content-type", "application/octet-stream"),
        ("content-length", len.as_str()),
        ("docker-content-digest", digest.as_str()),
        ("accept-ranges", "bytes"),
        ("etag", etag.as_str()),
        ("cache-control", "max-age=31536000"),
    ];
    if let Some(cr) = content_range {
        headers.push(("content-range", cr));
    }
    response(status, &headers, body)
}

pub(super) async fn delete(app: &App, repo: &RepoName, digest: &Digest) -> ApiResult {
    if !app.options.delete_enabled {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "deletes are disabled on this registry",
        ));
    }
    app.store.delete_blob(repo, digest).await?;
    Ok(response(
        StatusCode::ACCEPTED,
        &[("content-length", "0")],
        Body::empty(),
    ))
}
