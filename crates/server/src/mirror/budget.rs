//! Keeping the cache within its byte budget: least recently pulled cached images go first, pinned
//! ones never, and images pushed to ferry itself are never touched.

use std::sync::Arc;

use ferry_oci::{Digest, RepoName};
use ferry_policy::{Item, lru_victims};
use ferry_store::{Store, StoreError};

use super::{Mirror, glob_match};
use crate::Metrics;

/// The cache's limits.
#[derive(Debug, Clone, Default)]
pub struct CacheBudget {
    /// Bytes the store may hold before cached images are evicted; 0 means no limit.
    pub max_bytes: u64,
    /// `repository:tag` patterns (`*` wildcard, repository as cached, e.g. `docker.io/library/*`)
    /// never evicted.
    pub pinned: Vec<String>,
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

/// Evicts cached images until the store fits `budget` (or only pinned ones are left).
pub async fn evict(
    store: &Arc<Store>,
    mirror: &Mirror,
    metrics: &Metrics,
    budget: &CacheBudget,
) -> Result<Eviction, StoreError> {
    let used = store.stats().blob_bytes;
    if budget.max_bytes == 0 || used <= budget.max_bytes {
        return Ok(Eviction::default());
    }
    let prefixes: Vec<String> = mirror.prefixes().map(str::to_owned).collect();
    let cached = |repo: &str| {
        prefixes
            .iter()
            .any(|p| repo.split('/').next() == Some(p.as_str()))
    };
    let images = store.images().await?;
    // One item per manifest: pinned if any of its tags is.
    let mut items: Vec<Item<(String, Digest)>> = Vec::new();
    for img in images.iter().filter(|i| cached(&i.repository)) {
        let name = format!("{}:{}", img.repository, img.tag.as_deref().unwrap_or(""));
        let pinned = budget.pinned.iter().any(|p| glob_match(p, &name));
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
    let mut out = Eviction::default();
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
    if out.images > 0 {
        let r = store.gc_under(&prefixes).await?;
        out.blobs = r.removed;
        out.bytes = r.bytes_freed;
        metrics.evictions.inc_by(r.removed);
        tracing::info!(
            images = out.images,
            blobs = out.blobs,
            bytes = out.bytes,
            budget = budget.max_bytes,
            "evicted cached images to stay within the budget"
        );
    }
    Ok(out)
}
