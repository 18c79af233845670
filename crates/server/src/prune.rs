//! Deleting selected images: shared by `ferry prune` (offline) and the admin API (online).

use std::sync::Arc;

use ferry_oci::{RepoName, Tag};
use ferry_policy::PruneRule;
use ferry_store::{ImageInfo, Store, StoreError};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Age criteria.
    pub rule: PruneRule,
    /// `repository:tag` (or `repository@digest`) must match.
    pub pattern: Option<regex_lite::Regex>,
    /// Only images of this repository.
    pub repository: Option<RepoName>,
    /// `repository:tag` patterns (`*` wildcard) of images never selected: the cache's pinned images.
    pub pinned: Vec<String>,
}

/// Whether `repository:tag` of `i` matches one of the `pinned` patterns (`*` wildcard).
pub fn is_pinned(pinned: &[String], i: &ImageInfo) -> bool {
    let name = format!("{}:{}", i.repository, i.tag.as_deref().unwrap_or(""));
    pinned.iter().any(|p| crate::mirror::glob_match(p, &name))
}

/// `repository:tag`, or `repository@digest` for an untagged manifest.
pub fn image_name(i: &ImageInfo) -> String {
    match &i.tag {
        Some(t) => format!("{}:{t}", i.repository),
        None => format!("{}@{}", i.repository, i.digest),
    }
}

impl Selection {
    /// Whether `i` is protected by a pinned pattern.
    pub fn is_pinned(&self, i: &ImageInfo) -> bool {
        is_pinned(&self.pinned, i)
    }

    /// Whether `i` is selected.
    pub fn matches(&self, i: &ImageInfo) -> bool {
        !self.is_pinned(i)
            && self.rule.matches(i.created, i.last_pulled)
            && self
                .pattern
                .as_ref()
                .is_none_or(|r| r.is_match(&image_name(i)))
            && self
                .repository
                .as_ref()
                .is_none_or(|r| r.as_str() == i.repository)
    }
}

/// Deletes the selected images from `images` (the current inventory): a manifest goes when every
/// image naming it is selected, otherwise only the selected tags. Blobs are left to the caller's
/// garbage collection. Returns the names deleted.
pub async fn prune(
    store: &Arc<Store>,
    images: &[ImageInfo],
    selection: &Selection,
) -> Result<Vec<String>, StoreError> {
    let mut deleted = Vec::new();
    for i in images.iter().filter(|i| selection.matches(i)) {
        let Ok(repo) = RepoName::new(&i.repository) else {
            continue;
        };
        let whole = images
            .iter()
            .filter(|o| o.repository == i.repository && o.digest == i.digest)
            .all(|o| selection.matches(o));
        let r = match (&i.tag, whole) {
            (_, true) => store.delete_manifest(&repo, &i.digest).await,
            (Some(t), false) => match Tag::new(t) {
                Ok(t) => store.delete_tag(&repo, &t).await,
                Err(_) => Ok(()),
            },
            (None, false) => Ok(()),
        };
        match r {
            Ok(()) | Err(StoreError::ManifestUnknown(_) | StoreError::NameUnknown(_)) => {
                deleted.push(image_name(i))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
