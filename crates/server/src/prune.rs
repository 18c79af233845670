//! Carrying out prunes: shared by `ferry prune` (offline), the admin API (online) and the cache
//! budget's standing rules. What goes is decided by [`ferry_policy::prune_plan`]; this deletes it.

use std::sync::Arc;

use ferry_oci::{RepoName, Tag};
use ferry_policy::{Image, PrunePlan, Selection};
use ferry_store::{ImageInfo, Store, StoreError};

/// The policy's record of a stored image.
pub fn policy_image(i: &ImageInfo) -> Image {
    Image {
        repository: i.repository.clone(),
        tag: i.tag.clone(),
        digest: i.digest.clone(),
        bytes: i.size,
        created: i.created,
        last_pulled: i.last_pulled,
    }
}

/// The policy's records of a store's inventory.
pub fn inventory(images: &[ImageInfo]) -> Vec<Image> {
    images.iter().map(policy_image).collect()
}

/// `repository:tag`, or `repository@digest` for an untagged manifest.
pub fn image_name(i: &ImageInfo) -> String {
    ferry_policy::image_name(&i.repository, i.tag.as_deref(), &i.digest)
}

/// What pruning the images of `images` (the current inventory) that `selection` selects deletes.
pub fn plan(images: &[ImageInfo], selection: &Selection) -> PrunePlan {
    ferry_policy::prune_plan(&inventory(images), |i| selection.matches(i))
}

/// Deletes what `plan` says: whole manifests, then lone tags. Blobs are left to the caller's
/// garbage collection. Returns how many manifests and tags were deleted (ones already gone are not
/// counted).
pub async fn prune(store: &Arc<Store>, plan: &PrunePlan) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for m in &plan.manifests {
        let Ok(repo) = RepoName::new(&m.repository) else {
            continue;
        };
        deleted += gone(store.delete_manifest(&repo, &m.digest).await)?;
    }
    for (repo, tag) in &plan.tags {
        let (Ok(repo), Ok(tag)) = (RepoName::new(repo), Tag::new(tag)) else {
            continue;
        };
        deleted += gone(store.delete_tag(&repo, &tag).await)?;
    }
    Ok(deleted)
}

/// 1 for a delete done, 0 for one a concurrent delete beat us to.
fn gone(r: Result<(), StoreError>) -> Result<usize, StoreError> {
    match r {
        Ok(()) => Ok(1),
        Err(StoreError::ManifestUnknown(_) | StoreError::NameUnknown(_)) => Ok(0),
        Err(e) => Err(e),
    }
}
