//! `GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use ferry_oci::{Algorithm, ErrorCode, Manifest, ManifestRef, RepoName, Tag};
use futures_util::StreamExt;
use http::{StatusCode, header};

use super::{ApiResult, Query, body_stream, content_length, response};
use crate::{ApiError, App};

pub(crate) async fn get(
    app: &App,
    repo: &RepoName,
    reference: &ManifestRef,
    head: bool,
) -> ApiResult {
    let (m, body) = if head {
        (app.store.resolve_manifest(repo, reference)?, Body::empty())
    } else {
        let m = app.store.get_manifest(repo, reference).await?;
        app.store.record_pull(repo, &m.head.digest);
        (m.head, Body::from(m.bytes))
    };
    Ok(manifest_response(&m.digest, &m.media_type, m.size, body))
}

/// Answers with `manifest` itself (just fetched for `repo`, in hand), not a read of the store: a
/// mirror's answer must not depend on the copy surviving a concurrent prune.
pub(crate) fn serve_fetched(
    app: &App,
    repo: &RepoName,
    manifest: &ferry_oci::Manifest,
    head: bool,
) -> ApiResult {
    let len = manifest.bytes().len() as u64;
    let body = if head {
        Body::empty()
    } else {
        app.store.record_pull(repo, manifest.digest());
        Body::from(Bytes::copy_from_slice(manifest.bytes()))
    };
    Ok(manifest_response(
        manifest.digest(),
        manifest.media_type().as_str(),
        len,
        body,
    ))
}

fn manifest_response(
    digest: &ferry_oci::Digest,
    media_type: &str,
    len: u64,
    body: Body,
) -> axum::response::Response {
    let len = len.to_string();
    let etag = format!("\"{digest}\"");
    response(
        StatusCode::OK,
        &[
            ("content-type", media_type),
            ("content-length", &len),
            ("docker-content-digest", digest.as_str()),
            ("etag", &etag),
        ],
        body,
    )
}

/// How long a push waits for room to parse its manifest before it is answered 429.
const PARSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads at most `max` bytes of body; more is a 413. The bytes are charged to the server-wide
/// manifest budget (held until the returned permit drops): over it, 429 and the client retries.
async fn read_limited(
    app: &App,
    req: Request,
    max: usize,
) -> Result<(Vec<Bytes>, usize, crate::BufferPermit), ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::SizeInvalid,
            format!("manifest exceeds the limit of {max} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = content_length(req.headers())?;
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let budget = &app.options.manifest_buffers;
    let client = req.extensions().get::<crate::ClientAddr>().map(|c| c.0);
    let mut permit = budget.charge_for(client, declared.unwrap_or(0) as usize)?;
    let mut body = body_stream(
        req.into_body(),
        app.options.body_idle_timeout,
        app.options.min_receive,
    );
    // Chunks are kept as they come (no growing buffer copied at each doubling): what is held is
    // what was charged.
    let (mut chunks, mut len) = (Vec::new(), 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            )
        })?;
        if len + chunk.len() > max {
            return Err(too_large());
        }
        let beyond = (len + chunk.len()).saturating_sub(permit.bytes());
        if beyond > 0 {
            permit.merge(budget.charge_for(client, beyond)?);
        }
        len += chunk.len();
        chunks.push(chunk);
    }
    Ok((chunks, len, permit))
}

pub(super) async fn put(
    app: &App,
    repo: &RepoName,
    reference: &ManifestRef,
    req: Request,
) -> ApiResult {
    let q = Query::of(&req);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut tags = Vec::new();
    if let ManifestRef::Tag(t) = reference {
        tags.push(t.clone());
    }
    let mut query_tags = Vec::new();
    for t in q.all("tag") {
        let tag = Tag::new(t).map_err(|e| ApiError::new(ErrorCode::TagInvalid, e.to_string()))?;
        query_tags.push(tag.clone());
        tags.push(tag);
    }
    // Manifests are small: a whole body gets the idle timeout, so a client trickling one cannot
    // hold its share of the budget for an hour at the rate floor.
    let deadline = app.options.body_idle_timeout;
    let (chunks, len, mut charged) = tokio::time::timeout(
        deadline,
        read_limited(app, req, app.store.options().max_manifest_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("the manifest did not arrive within {}s", deadline.as_secs()),
        )
    })??;
    // Parsing takes a multiple of the bytes: charged too, so the budget bounds real memory. Other
    // parses finish in milliseconds, so this waits briefly for room before answering 429.
    let parse = len * (crate::MANIFEST_PARSE_FACTOR - 1);
    let budget = &app.options.manifest_buffers;
    charged.merge(
        tokio::time::timeout(PARSE_WAIT, budget.charge_waiting(parse))
            .await
            .map_err(|_| budget.spent("the server is"))?,
    );
    let bytes = chunks.concat();
    drop(chunks);
    let algorithm = match reference {
        ManifestRef::Digest(d) => d.algorithm(),
        ManifestRef::Tag(_) => Algorithm::Sha256,
    };
    let manifest = Manifest::parse_as(bytes, content_type.as_deref(), algorithm)
        .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
    if let ManifestRef::Digest(d) = reference
        && d != manifest.digest()
    {
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            format!("manifest bytes hash to {}, not {d}", manifest.digest()),
        )
        .detail(serde_json::json!({ "expected": d, "actual": manifest.digest() })));
    }
    app.store
        .put_manifest(
            repo,
            &manifest,
            &tags,
            app.options.check_manifest_references,
        )
        .await?;
    let digest = manifest.digest().as_str();
    let location = format!("/v2/{repo}/manifests/{digest}");
    let mut headers = vec![
        ("location", location.as_str()),
        ("docker-content-digest", digest),
        ("content-length", "0"),
    ];
    let subject = manifest.subject.as_ref().map(|s| s.digest.to_string());
    if let Some(s) = &subject {
        headers.push(("oci-subject", s));
    }
    for t in &query_tags {
        headers.push(("oci-tag", t.as_str()));
    }
    Ok(response(StatusCode::CREATED, &headers, Body::empty()))
}

pub(super) async fn delete(app: &App, repo: &RepoName, reference: &ManifestRef) -> ApiResult {
    if !app.options.delete_enabled {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "deletes are disabled on this registry",
        ));
    }
    match reference {
        ManifestRef::Digest(d) => app.store.delete_manifest(repo, d).await?,
        ManifestRef::Tag(t) => app.store.delete_tag(repo, t).await?,
    }
    Ok(response(
        StatusCode::ACCEPTED,
        &[("content-length", "0")],
        Body::empty(),
    ))
}
