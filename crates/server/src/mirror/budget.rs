//! Keeping the cache within its byte budget: the configured replacement policy (`[cache] policy`,
//! LRU by default) chooses which cached images go, through the code the trace simulator runs;
//! pinned images never go, and images pushed to ferry itself are never touched.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_policy::{CacheState, ManifestKey, PrunePlan, evictable_units};
use ferry_store::{Store, StoreError, pull_key};

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

/// Pulls the journal keeps between two rounds (8 bytes each); more are counted and dropped, and
/// the policy then misses them.
pub const PULL_JOURNAL: usize = 1 << 20;

/// Removes the cached images the budget's standing prune rules select (pinned ones never), then
/// replays the pulls since the last round through the budget's policy (`state`, which the caller
/// keeps from round to round) and evicts what it chooses, until the store fits the budget (or only
/// pinned ones are left). The store must journal pulls ([`Store::journal_pulls`]) for the policy
/// to see them; without, it orders images by their last pull alone.
pub async fn evict(
    store: &Arc<Store>,
    mirror: &Mirror,
    metrics: &Metrics,
    budget: &CacheBudget,
    state: &mut CacheState,
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
    store.blobs_counted().await;
    let used = store.stats().blob_bytes;
    let (pull_keys, dropped) = store.take_pulls();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            kept = pull_keys.len(),
            "more pulls in one housekeeping round than the journal holds: the cache policy missed some; shorten cache.maintenance_interval_secs"
        );
    }
    let first_round = state.rounds() == 0;
    if budget.max_bytes == 0 || (!budget.over(used) && pull_keys.is_empty() && !first_round) {
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
    let units = evictable_units(&images, &budget.pinned, cached);
    let by_pull_key: HashMap<u64, &ManifestKey> = units
        .iter()
        .map(|u| (pull_key(&u.key.repository, &u.key.digest), &u.key))
        .collect();
    let pulls: Vec<ManifestKey> = pull_keys
        .iter()
        .filter_map(|k| by_pull_key.get(k).map(|&key| key.clone()))
        .collect();
    let victims = state.round(&units, &pulls, used, budget.max_bytes);
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
            policy = state.policy_name(),
            "evicted cached images to stay within the budget"
        );
    }
    Ok(out)
}
