//! ferry's own content store as a destination (`ferry-store:DATA_DIR`).
//!
//! The binary opens the store (it holds the store's lock, so no server writes it meanwhile) and
//! says where an image goes in it ([`StoreNaming`]: a mirror keeps upstream images under a
//! repository of its own, e.g. `docker.io/library/alpine` under `docker.io/library/alpine` with
//! the upstream's prefix); the engine moves the blobs and manifests. The store checks every
//! blob's digest and size as it takes it in, and only verified content gets a final name.

use std::sync::Arc;

use ferry_oci::{Reference, RepoName, Tag};
use ferry_store::Store;

/// A store the copy writes into, and how images are named in it.
pub struct StoreTarget {
    /// The opened store.
    pub store: Arc<Store>,
    /// Where each image goes.
    pub naming: Box<StoreNaming>,
}

impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTarget")
            .field("store", &self.store.root())
            .finish_non_exhaustive()
    }
}

/// What a source calls an image, for naming it in a store.
#[derive(Debug, Clone, Copy)]
pub struct SourceNames<'a> {
    /// Its full name (registry, repository, tag or digest), when the source has one: a registry
    /// reference, an archive's saved name, an OCI layout's `ref.name` when it is a full name.
    pub reference: Option<&'a Reference>,
    /// A bare tag, when that is all the source gives (skopeo's `oci-archive:FILE:v1`).
    pub tag_only: Option<&'a Tag>,
}

/// Where an image goes in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreName {
    /// The store repository.
    pub repo: RepoName,
    /// Tags pointed at the image's manifest (none: kept by digest only).
    pub tags: Vec<Tag>,
}

/// Why an image has no place in a store (the message says what to give instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NamingError(pub String);

/// Names an image in a store from what its source calls it.
pub type StoreNaming = dyn Fn(&SourceNames<'_>) -> Result<StoreName, NamingError> + Send + Sync;
