//! The admin API under `/admin/` on the serving port: inventory, pruning, fsck, stats, readiness.
//!
//! Off unless a token is configured; every request must then carry `Authorization: Bearer <token>`
//! (401 otherwise). Online pruning deletes the selected manifests and then only blobs cached from
//! upstreams: blobs of pushed repositories wait for an offline `ferry gc`, because a push in
//! progress uploads its blobs before its manifest.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use ferry_oci::{ErrorCode, RepoName};
use ferry_policy::{PruneRule, Selection};
use http::{Method, StatusCode, header};

use crate::api::{ApiResult, Query, json_response};
use crate::prune::{plan, policy_image, prune};
use crate::units::parse_age;
use crate::{ApiError, App};

/// Whether `presented` equals `expected`, in time independent of where they differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn bad(msg: String) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, msg).status(StatusCode::BAD_REQUEST)
}

fn selection(q: &Query) -> Result<Selection, ApiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let age = |key: &str| -> Result<Option<u64>, ApiError> {
        q.get(key)
            .map(|v| {
                parse_age(v)
                    .map(|s| now.saturating_sub(s))
                    .map_err(|e| bad(format!("{key}: {e}")))
            })
            .transpose()
    };
    let pattern = q
        .get("pattern")
        .map(|p| regex_lite::Regex::new(p).map_err(|e| bad(format!("pattern: {e}"))))
        .transpose()?;
    let repository = q
        .get("repository")
        .map(|r| RepoName::new(r).map_err(|e| ApiError::new(ErrorCode::NameInvalid, e.to_string())))
        .transpose()?;
    Ok(Selection {
        rule: PruneRule {
            accessed_before: age("accessed-before")?,
            created_before: age("created-before")?,
        },
        pattern,
        repository,
        pinned: Vec::new(),
    })
}

/// Handles `/admin/…`; `None` when the path is not an admin path.
pub(crate) async fn handle(app: &Arc<App>, req: Request) -> Option<ApiResult> {
    let path = req.uri().path().strip_prefix("/admin")?.to_owned();
    if !(path.is_empty() || path.starts_with('/')) {
        return None;
    }
    Some(serve(app, &path, req).await)
}

async fn serve(app: &Arc<App>, path: &str, req: Request) -> ApiResult {
    let Some(token) = app.options.admin_token.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the admin API is off; configure admin_token_file or FERRY_ADMIN_TOKEN to enable it",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(presented.as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the admin API needs Authorization: Bearer <token>",
        )
        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"ferry-admin\""));
    }
    let q = Query::of(&req);
    let json = |v: serde_json::Value| {
        json_response(
            StatusCode::OK,
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )
    };
    match (req.method(), path) {
        (&Method::GET, "/images") => {
            let sel = selection(&q)?;
            let images: Vec<_> = app
                .store
                .images()
                .await?
                .into_iter()
                .filter(|i| sel.matches(&policy_image(i)))
                .collect();
            Ok(json(serde_json::to_value(images).unwrap_or_default()))
        }
        (&Method::POST, "/prune") => {
            let mut sel = selection(&q)?;
            if let Some(m) = &app.mirror {
                sel.pinned = m.options.pinned.clone();
            }
            if sel.rule == PruneRule::default() && sel.pattern.is_none() && sel.repository.is_none()
            {
                return Err(bad(
                    "say what to prune: accessed-before, created-before, pattern and/or repository"
                        .into(),
                ));
            }
            let plan = plan(&app.store.images().await?, &sel);
            if q.get("dry-run").is_some_and(|v| v != "false") {
                return Ok(json(
                    serde_json::json!({"dry_run": true, "images": plan.images}),
                ));
            }
            prune(&app.store, &plan).await?;
            let prefixes: Vec<String> = app
                .mirror
                .iter()
                .flat_map(|m| m.prefixes().map(str::to_owned).collect::<Vec<_>>())
                .collect();
            let freed = if prefixes.is_empty() {
                None
            } else {
                Some(app.store.gc_under(&prefixes).await?)
            };
            Ok(json(serde_json::json!({
                "dry_run": false,
                "images": plan.images,
                "cached_blobs_removed": freed.as_ref().map_or(0, |g| g.removed),
                "cached_bytes_freed": freed.as_ref().map_or(0, |g| g.bytes_freed),
            })))
        }
        (&Method::POST, "/fsck") => Ok(json(
            serde_json::to_value(app.store.fsck(false).await?).unwrap_or_default(),
        )),
        (&Method::GET, "/stats") => {
            let s = app.store.stats();
            Ok(json(serde_json::json!({
                "blobs": s.blobs, "blob_bytes": s.blob_bytes, "repositories": s.repositories, "uploads_open": s.uploads,
                "upstreams": app.mirror.iter().flat_map(|m| m.upstream_names().map(str::to_owned).collect::<Vec<_>>()).collect::<Vec<_>>(),
            })))
        }
        (&Method::GET, "/ready") => Ok((StatusCode::OK, "ready\n").into_response()),
        (_, "/images" | "/prune" | "/fsck" | "/stats" | "/ready") => Err(ApiError::new(
            ErrorCode::Unsupported,
            "method not allowed here",
        )),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            "admin endpoints: GET /admin/images, POST /admin/prune, POST /admin/fsck, GET /admin/stats, GET /admin/ready",
        )),
    }
}
