//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, with `n`/`last` pagination.

use axum::extract::Request;
use ferry_oci::RepoName;
use http::StatusCode;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{ApiResult, Query, json_response};
use crate::App;

/// Adds `Link: <…>; rel="next"` when a page was cut short by `n`.
fn with_next_link(
    mut res: axum::response::Response,
    base: &str,
    items: &[String],
    n: Option<usize>,
) -> axum::response::Response {
    if let (Some(n), Some(last)) = (n, items.last())
        && n > 0
        && items.len() == n
    {
        let link = format!(
            "<{base}?n={n}&last={}>; rel=\"next\"",
            utf8_percent_encode(last, NON_ALPHANUMERIC)
        );
        if let Ok(v) = http::HeaderValue::from_str(&link) {
            res.headers_mut().insert(http::header::LINK, v);
        }
    }
    res
}

pub(crate) fn catalog<'a>(
    app: &'a App,
    req: &Request,
) -> impl std::future::Future<Output = ApiResult> + Send + 'a {
    // Taken out of the request first: the listing awaits a walk, and a request is not `Sync`.
    let q = Query::of(req);
    let n = q.n();
    let last = q.get("last").map(str::to_owned);
    let caller = req.extensions().get::<crate::auth::Caller>().cloned();
    async move { catalog_page(app, n?, last, caller).await }
}

async fn catalog_page(
    app: &App,
    n: Option<usize>,
    last: Option<String>,
    caller: Option<crate::auth::Caller>,
) -> ApiResult {
    let repos = match (&app.options.auth, caller) {
        // Filtered before the page is cut, so `n` and the `Link` count only visible names.
        (Some(auth), Some(who)) => {
            let mut visible: Vec<String> = app
                .store
                .repositories(last.as_deref(), None)
                .await?
                .into_iter()
                .filter(|r| auth.may_pull(&who, r))
                .collect();
            if let Some(n) = n {
                visible.truncate(n);
            }
            visible
        }
        _ => app.store.repositories(last.as_deref(), n).await?,
    };
    let body =
        serde_json::to_vec(&serde_json::json!({ "repositories": repos })).unwrap_or_default();
    Ok(with_next_link(
        json_response(StatusCode::OK, body),
        "/v2/_catalog",
        &repos,
        n,
    ))
}

pub(super) fn tags(app: &App, repo: &RepoName, req: &Request) -> ApiResult {
    tags_of(app, repo, repo, req)
}

/// One page of tags relayed from an upstream, with a `Link` to the next when the upstream has one
/// (or the page is full).
pub(crate) fn tag_page(
    repo: &RepoName,
    kept: &ferry_oci::FilteredTags,
    n: Option<usize>,
    upstream_has_more: bool,
) -> (bytes::Bytes, Option<http::HeaderValue>) {
    // The name is a validated repository name and the tags are valid tags: neither needs escaping.
    let mut body = Vec::with_capacity(kept.json.len() + repo.as_str().len() + 20);
    body.extend_from_slice(b"{\"name\":\"");
    body.extend_from_slice(repo.as_str().as_bytes());
    body.extend_from_slice(b"\",\"tags\":");
    body.extend_from_slice(&kept.json);
    body.push(b'}');
    // The upstream may cap a page below `n`: its word that more follow is what counts.
    let full = n.is_some_and(|n| n > 0 && kept.count == n);
    let link = match (upstream_has_more || kept.cut || full, &kept.last) {
        (true, Some(last)) => http::HeaderValue::from_str(&format!(
            "</v2/{repo}/tags/list?n={}&last={}>; rel=\"next\"",
            n.unwrap_or(kept.count),
            utf8_percent_encode(last, NON_ALPHANUMERIC)
        ))
        .ok(),
        _ => None,
    };
    (bytes::Bytes::from(body), link)
}

/// Tags stored under `key`, reported as those of `repo` (they differ for mirrored repositories).
pub(crate) fn tags_of(app: &App, key: &RepoName, repo: &RepoName, req: &Request) -> ApiResult {
    tags_by_query(app, key, repo, &Query::of(req))
}

/// [`tags_of`] for a query already taken from its request.
pub(crate) fn tags_by_query(app: &App, key: &RepoName, repo: &RepoName, q: &Query) -> ApiResult {
    let n = q.n()?;
    let tags = app.store.tags(key, q.get("last"), n)?;
    let body = serde_json::to_vec(&serde_json::json!({ "name": repo.as_str(), "tags": tags }))
        .unwrap_or_default();
    let base = format!("/v2/{repo}/tags/list");
    Ok(with_next_link(
        json_response(StatusCode::OK, body),
        &base,
        &tags,
        n,
    ))
}
