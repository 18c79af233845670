//! `GET/HEAD/DELETE /v2/<name>/blobs/<digest>`, with single `Range` requests.

use std::io::SeekFrom;

use axum::body::Body;
use ferry_oci::{ByteRange, Digest, ErrorCode, RepoName};
use http::{StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{ApiResult, response};
use crate::{ApiError, App};

/// Blobs up to this size are read in one call and sent as one buffer; larger ones are streamed.
const SMALL_BLOB: u64 = 64 * 1024;
/// Read size when streaming: large enough that per-chunk overhead vanishes next to the copy.
const STREAM_CHUNK: usize = 256 * 1024;

pub(super) async fn get(
    app: &App,
    repo: &RepoName,
    digest: &Digest,
    head: bool,
    range: Option<http::HeaderValue>,
) -> ApiResult {
    // A malformed range is answered after the blob is found, so that the 416 can carry its length.
    let range = match range {
        None => Ok(None),
        Some(v) => ByteRange::parse_header(v.to_str().unwrap_or("")),
    };
    if head && matches!(range, Ok(None)) {
        let len = app.store.blob_len(repo, digest).await?;
        return Ok(blob_response(
            StatusCode::OK,
            digest,
            len,
            None,
            Body::empty(),
        ));
    }
    let mut blob = app.store.open_blob(repo, digest).await?;
    let total = blob.len;
    let (status, start, len, content_range) =
        match range.and_then(|r| r.map(|r| r.resolve(total)).transpose()) {
            Ok(None) => (StatusCode::OK, 0, total, None),
            Ok(Some(r)) => (
                StatusCode::PARTIAL_CONTENT,
                r.start,
                r.len(),
                Some(r.content_range(total)),
            ),
            Err(e) => {
                return Err(ApiError::new(ErrorCode::RangeInvalid, e.to_string())
                    .header(header::CONTENT_RANGE, &format!("bytes */{total}")));
            }
        };
    if head {
        return Ok(blob_response(
            status,
            digest,
            len,
            content_range.as_deref(),
            Body::empty(),
        ));
    }
    let io = |e: std::io::Error| {
        tracing::error!(%digest, error = %e, "reading blob failed");
        ApiError::new(
            ErrorCode::Internal,
            "reading the blob failed; see the server log",
        )
    };
    if start > 0 {
        blob.file.seek(SeekFrom::Start(start)).await.map_err(io)?;
    }
    let body = if len <= SMALL_BLOB {
        let mut buf = Vec::with_capacity(len as usize);
        (&mut blob.file)
            .take(len)
            .read_to_end(&mut buf)
            .await
            .map_err(io)?;
        if buf.len() as u64 != len {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shorter than its size",
            )));
        }
        Body::from(buf)
    } else {
        Body::from_stream(ReaderStream::with_capacity(
            blob.file.take(len),
            STREAM_CHUNK,
        ))
    };
    Ok(blob_response(
        status,
        digest,
        len,
        content_range.as_deref(),
        body,
    ))
}

fn blob_response(
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
