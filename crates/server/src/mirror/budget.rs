//! Keeping the cache within its byte budget: least recently pulled cached images go first, pinned
//! ones never, and images pushed to ferry itself are never touched.

use std::sync::Arc;

use ferry_policy::PrunePlan;
use ferry_store::{Store, StoreError};

use super::Mirror;
use crate::Metrics;
use crate::prune::{inventory, prune};

// The budget is policy; re-exported because `evict` takes it.
pub use ferry_policy::{CacheBudget, ExpiryRule};

/// What one eviction round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// Manifests deleted.
    pub images: usize,
    /// Blobs removed.
    pub blobs: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes the cached images the budget's standing prune rules select (pinned ones never), then
/// evicts least recently pulled cached images until the store fits the budget (or only pinned ones
/// are left).
pub async fn evict(
    store: &Arc<Store>,
    mirror: &Mirror,
    metrics: &Metrics,
    budget: &CacheBudget,
) -> Result<Eviction, StoreError> {
    let prefixes: Vec<String> = mirror.prefixes().map(str::to_owned).collect();
    let cached = |repo: &str| {
        prefixes
            .iter()
            .any(|p| repo.split('/').next() == Some(p.as_str()))
    };
    let mut expired = Eviction::default();
    if !budget.expiry.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let images = inventory(&store.images().await?);
        expired.images = prune(store, &budget.expired(&images, now, cached)).await?;
        if expired.images > 0 || store.gc_deferred() {
            let r = store.gc_under(&prefixes).await?;
            expired.blobs = r.removed;
            expired.bytes = r.bytes_freed;
            metrics.evictions.inc_by(r.removed);
            tracing::info!(
                images = expired.images,
                blobs = expired.blobs,
                bytes = expired.bytes,
                "removed cached images selected by the [[cache.prune]] rules"
            );
        }
    }
    let used = store.stats().blob_bytes;
    if !budget.over(used) {
        if budget.expiry.is_empty() && store.gc_deferred() {
            // Content a previous round had to leave (used moments before) goes now.
            let r = store.gc_under(&prefixes).await?;
            expired.blobs += r.removed;
            expired.bytes += r.bytes_freed;
            metrics.evictions.inc_by(r.removed);
        }
        return Ok(expired);
    }
    let images = inventory(&store.images().await?);
    let victims = budget.victims(&images, used, cached);
    let mut out = expired;
    let before = out.images;
    out.images += prune(
        store,
        &PrunePlan {
            manifests: victims,
            ..PrunePlan::default()
        },
    )
    .await?;
    if out.images > before {
        let r = store.gc_under(&prefixes).await?;
        out.blobs += r.removed;
        out.bytes += r.bytes_freed;
        metrics.evictions.inc_by(r.removed);
        tracing::info!(
            images = out.images - before,
            blobs = r.removed,
            bytes = r.bytes_freed,
            budget = budget.max_bytes,
            "evicted cached images to stay within the budget"
        );
    }
    Ok(out)
}
