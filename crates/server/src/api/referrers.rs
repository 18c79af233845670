//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject is the digest.

use axum::body::Body;
use axum::extract::Request;
use ferry_oci::{Digest, MediaType, RepoName};
use http::StatusCode;

use super::{ApiResult, Query, response};
use crate::App;

pub(crate) fn get(app: &App, repo: &RepoName, subject: &Digest, req: &Request) -> ApiResult {
    let q = Query::of(req);
    let filter = q.get("artifactType").filter(|a| !a.is_empty());
    // Always 200, also for unknown repositories and subjects: "no referrers" is an empty index.
    let manifests = app.store.referrers(repo, subject, filter);
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap_or_default();
    let mut headers = vec![("content-type", MediaType::OCI_INDEX)];
    if filter.is_some() {
        headers.push(("oci-filters-applied", "artifactType"));
    }
    Ok(response(StatusCode::OK, &headers, Body::from(body)))
}
