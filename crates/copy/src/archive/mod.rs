//! Image archives: OCI image layouts (a directory, or a tar of one: `oci-archive`) and `docker
//! save` tarballs (the legacy `manifest.json` form and the OCI form Docker 25+ writes), each plain
//! or gzip-compressed; one reader for all of them ([`Archive`]) and one writer per format
//! ([`ArchiveWriter`] for a tar that is both an `oci-archive` and a `docker-archive`,
//! [`OciLayoutWriter`] for a layout directory).
//!
//! Archives are read with random access: a tar is indexed once (a gzip one is decompressed to a
//! temporary file as it is indexed), then manifests are read whole (they are small and bounded)
//! and blobs streamed from their offsets. Nothing here trusts the archive: manifests are checked
//! against their digests here, blobs must be checked by whoever stores them, and what an archive
//! can make ferry hold, read, write or repeat is bounded (`limits.rs`), each with an error that
//! says which bound it hit.

mod docker;
mod error;
mod files;
mod limits;
mod oci;
mod tar_index;
mod writer;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_oci::{Descriptor, Digest, Manifest, Reference, Tag};

pub use error::{ArchiveError, ArchiveErrorKind, UnpackedBound, UnpackedTooLarge};
pub use files::{file_kind, is_archive};
pub use limits::ArchiveLimits;
pub use writer::{ArchiveEntry, ArchiveWriter, DockerSaveEntry, OciLayoutWriter};

use crate::Platform;
use error::{At, bail, ensure};
use files::Files;
use limits::MAX_IMAGES;

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// A blob to copy out of the archive.
#[derive(Debug, Clone)]
pub struct ArchivedBlob {
    /// Its digest (not checked here: whoever stores the blob checks it).
    pub digest: Digest,
    /// File name inside the archive.
    path: String,
    /// Its size.
    pub size: u64,
}

/// The manifests of one image, shared by every name the archive gives it.
#[derive(Debug)]
pub struct ImageContent {
    /// The manifest or index the names point at.
    pub top: Arc<Manifest>,
    /// Children of an index that are imported (the chosen platforms present in the archive).
    pub children: Vec<Arc<Manifest>>,
    /// How many blob references its manifests make (repeats included).
    blob_refs: usize,
}

impl ImageContent {
    fn new(top: Arc<Manifest>, children: Vec<Arc<Manifest>>) -> ImageContent {
        let blob_refs = std::iter::once(&top)
            .chain(&children)
            .map(|m| m.blob_references().count())
            .sum();
        ImageContent {
            top,
            children,
            blob_refs,
        }
    }

    /// Every blob its manifests need, each once.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = HashSet::new();
        std::iter::once(&self.top)
            .chain(&self.children)
            .flat_map(|m| m.blob_references())
            .filter(|d| seen.insert(&d.digest))
            .collect()
    }
}

/// One image found in an archive: a name and what it points at.
#[derive(Debug)]
pub struct ArchivedImage {
    /// The name the archive gives it (`None`: none, or only a tag in `tag_only`).
    pub name: Option<Reference>,
    /// A bare tag the archive gives it (OCI `ref.name` annotations are often just the tag).
    pub tag_only: Option<Tag>,
    /// Its manifests.
    pub content: Arc<ImageContent>,
}

impl ArchivedImage {
    /// How to call this image in messages.
    pub fn label(&self) -> String {
        match (&self.name, &self.tag_only) {
            (Some(r), _) => r.to_string(),
            (None, Some(t)) => format!("(tag {t})"),
            (None, None) => format!("({})", self.content.top.digest()),
        }
    }
}

/// An opened archive and the images in it.
pub struct Archive {
    files: Files,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its images, each distinct name → manifest pair once.
    pub images: Vec<ArchivedImage>,
    /// Files of a docker-save archive by digest (an OCI layout names its blobs by digest).
    blob_paths: HashMap<Digest, String>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("images", &self.images)
            .finish()
    }
}

impl Archive {
    /// Opens `path` and lists its images, keeping only `platforms` of multi-platform ones (all when
    /// empty).
    pub fn open(
        path: &Path,
        platforms: &[Platform],
        limits: &ArchiveLimits,
    ) -> Result<Archive, ArchiveError> {
        let files = Files::open(path, limits)?;
        let (images, blob_paths) = (|| {
            if files.exists("index.json") {
                oci::oci_images(&files, platforms).map(|i| (i, HashMap::new()))
            } else if files.exists("manifest.json") {
                docker::docker_images(&files)
            } else {
                bail!(
                    invalid,
                    "neither an OCI layout (index.json) nor a docker-save archive (manifest.json){}",
                    files.truncation_hint()
                )
            }
        })()
        .at(|| path.display())?;
        ensure!(
            !images.is_empty(),
            invalid,
            "{}: the archive holds no images",
            path.display()
        );
        Ok(Archive {
            files,
            path: path.to_owned(),
            images,
            blob_paths,
        })
    }

    /// Where the blob `d` is in the archive.
    pub fn blob(&self, d: &Descriptor) -> ArchivedBlob {
        ArchivedBlob {
            digest: d.digest.clone(),
            path: self
                .blob_paths
                .get(&d.digest)
                .cloned()
                .unwrap_or_else(|| blob_path(&d.digest)),
            size: d.size,
        }
    }

    /// A reader positioned at `blob`'s bytes, limited to its size.
    pub fn open_blob(
        &self,
        blob: &ArchivedBlob,
    ) -> Result<std::io::Take<std::fs::File>, ArchiveError> {
        let (f, size, _) = self.files.open_file(&blob.path)?;
        ensure!(
            size == blob.size,
            invalid,
            "{}: {} is {size} bytes, but its manifest says {}",
            self.path.display(),
            blob.path,
            blob.size
        );
        Ok(f.take(size))
    }
}

/// Keeps the first of each name → manifest pair, and refuses more than [`MAX_IMAGES`] of them.
fn distinct_images(images: Vec<ArchivedImage>) -> Result<Vec<ArchivedImage>, ArchiveError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for i in images {
        if seen.insert((
            i.name.clone(),
            i.tag_only.clone(),
            i.content.top.digest().clone(),
        )) {
            ensure!(
                out.len() < MAX_IMAGES,
                limit,
                "more than {MAX_IMAGES} images (name → manifest pairs) in one archive; split it"
            );
            out.push(i);
        }
    }
    Ok(out)
}
