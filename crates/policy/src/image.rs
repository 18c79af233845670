//! The inventory as the policies see it: one record per name of a stored manifest.

use ferry_oci::Digest;

/// One name of a stored manifest: a tag, or the digest of a manifest no tag points at. A manifest
/// with several tags is several images sharing a [`ManifestKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Repository (cached ones start with their upstream's name, e.g. `docker.io/library/alpine`).
    pub repository: String,
    /// Tag, or `None` for a manifest no tag points at.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest plus everything it references: what deleting the manifest frees at most.
    pub bytes: u64,
    /// When the manifest was stored, seconds on the caller's clock.
    pub created: u64,
    /// Last pull, seconds on the caller's clock; `None` when never pulled.
    pub last_pulled: Option<u64>,
}

impl Image {
    /// `repository:tag`, or `repository@digest` when untagged.
    pub fn name(&self) -> String {
        image_name(&self.repository, self.tag.as_deref(), &self.digest)
    }

    /// The manifest this name points at.
    pub fn manifest(&self) -> ManifestKey {
        ManifestKey {
            repository: self.repository.clone(),
            digest: self.digest.clone(),
        }
    }

    /// Last pull, or when stored if never pulled: what recency-based policies compare.
    pub fn last_access(&self) -> u64 {
        self.last_pulled.unwrap_or(self.created)
    }

    /// The order plans list images in: repository, then tag (untagged first), then digest.
    pub(crate) fn sort_key(&self) -> (&str, Option<&str>, &Digest) {
        (&self.repository, self.tag.as_deref(), &self.digest)
    }
}

/// `repository:tag`, or `repository@digest` for an untagged manifest: how images are named to
/// users and matched by prune patterns.
pub fn image_name(repository: &str, tag: Option<&str>, digest: &Digest) -> String {
    match tag {
        Some(t) => format!("{repository}:{t}"),
        None => format!("{repository}@{digest}"),
    }
}

/// A manifest in a repository: what deleting an image whole removes, and the unit of eviction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestKey {
    /// Repository.
    pub repository: String,
    /// Manifest digest.
    pub digest: Digest,
}
