//! Keeping the cache within its byte budget: least recently pulled cached images go first, pinned
//! ones never, and images pushed to ferry itself are never touched.

use std::sync::Arc;

use ferry_oci::{Digest, RepoName};
use ferry_policy::{Item, lru_victims};
use ferry_store::{ImageInfo, Store, StoreError};

use super::Mirror;
use crate::Metrics;
use crate::prune::Selection;

/// The cache's limits.
#[derive(Debug, Clone, Default)]
pub struct CacheBudget {
    /// Bytes the store may hold before cached images are evicted; 0 means no limit.
    pub max_bytes: u64,
    /// `repository:tag` patterns (`*` wildcard, repository as cached, e.g. `docker.io/library/*`)
    /// never evicted.
    pub pinned: Vec<String>,
    /// Standing prune rules: cached images any of them selects are removed every round.
    pub expiry: Vec<ExpiryRule>,
}

/// A standing prune rule (`[[cache.prune]]`): all of its criteria must hold.
#[derive(Debug, Clone, Default)]
pub struct ExpiryRule {
    /// Not pulled for this long (never-pulled images count from when they were stored).
    pub accessed_before: Option<std::time::Duration>,
    /// Stored this long ago.
    pub created_before: Option<std::time::Duration>,
    /// `repository:tag` (repository as cached, e.g. `docker.io/library/alpine:3.20`) must match.
    pub pattern: Option<regex_lite::Regex>,
}

impl ExpiryRule {
    fn selection(&self, now: u64) -> Selection {
        let before = |d: Option<std::time::Duration>| d.map(|d| now.saturating_sub(d.as_secs()));
        Selection {
            rule: ferry_policy::PruneRule {
                accessed_before: before(self.accessed_before),
                created_before: before(self.created_before),
            },
            pattern: self.pattern.clone(),
            repository: None,
            pinned: Vec::new(),
        }
    }
}

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
    let is_pinned = |i: &ImageInfo| crate::prune::is_pinned(&budget.pinned, i);
    let mut expired = Eviction::default();
    if !budget.expiry.is_empty() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let selections: Vec<Selection> = budget.expiry.iter().map(|r| r.selection(now)).collect();
        let images = store.images().await?;
        let selected = |i: &ImageInfo| {
            cached(&i.repository) && !is_pinned(i) && selections.iter().any(|s| s.matches(i))
        };
        for i in images.iter().filter(|i| selected(i)) {
            let Ok(repo) = RepoName::new(&i.repository) else {
                continue;
            };
            // The manifest goes when every name it has is selected; otherwise only this tag.
            let whole = images
                .iter()
                .filter(|o| o.repository == i.repository && o.digest == i.digest)
                .all(selected);
            let r = match (&i.tag, whole) {
                (_, true) => store.delete_manifest(&repo, &i.digest).await,
                (Some(t), false) => match ferry_oci::Tag::new(t) {
                    Ok(t) => store.delete_tag(&repo, &t).await,
                    Err(_) => Ok(()),
                },
                (None, false) => Ok(()),
            };
            match r {
                Ok(()) => expired.images += 1,
                Err(StoreError::ManifestUnknown(_) | StoreError::NameUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
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
    if budget.max_bytes == 0 || used <= budget.max_bytes {
        if budget.expiry.is_empty() && store.gc_deferred() {
            // Content a previous round had to leave (used moments before) goes now.
            let r = store.gc_under(&prefixes).await?;
            expired.blobs += r.removed;
            expired.bytes += r.bytes_freed;
            metrics.evictions.inc_by(r.removed);
        }
        return Ok(expired);
    }
    let images = store.images().await?;
    // One item per manifest: pinned if any of its tags is.
    let mut items: Vec<Item<(String, Digest)>> = Vec::new();
    for img in images.iter().filter(|i| cached(&i.repository)) {
        let pinned = is_pinned(img);
        let key = (img.repository.clone(), img.digest.clone());
        match items.iter_mut().find(|i| i.key == key) {
            Some(i) => i.pinned |= pinned,
            None => items.push(Item {
                key,
                bytes: img.size,
                last_access: img.last_pulled.unwrap_or(img.created),
                pinned,
            }),
        }
    }
    let victims = lru_victims(&items, used, budget.max_bytes);
    let mut out = expired;
    let before = out.images;
    for (repo, digest) in &victims {
        let Ok(repo) = RepoName::new(repo) else {
            continue;
        };
        match store.delete_manifest(&repo, digest).await {
            Ok(()) => out.images += 1,
            Err(StoreError::ManifestUnknown(_) | StoreError::NameUnknown(_)) => {}
            Err(e) => return Err(e),
        }
    }
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
