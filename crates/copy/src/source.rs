//! Where images are read from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_client::{ErrorKind, Registry};
use ferry_oci::{Descriptor, Digest, Manifest, Reference};

use crate::archive::{Archive, ArchiveLimits, ArchivedImage};
use crate::error::CopyError;
use crate::layout;
use crate::location::ArchiveImage;

/// Largest manifest or index read from any source.
pub(crate) const MAX_MANIFEST: usize = 4 << 20;

/// An opened source location.
pub(crate) enum Source {
    Registry {
        registry: Arc<Registry>,
        reference: Reference,
    },
    Layout {
        dir: PathBuf,
        reference: Option<String>,
    },
    Dir {
        dir: PathBuf,
    },
    /// One image of an archive (`oci-archive:`, `docker-archive:`), opened and indexed.
    Archive {
        archive: Arc<Archive>,
        /// Which of `archive.images`.
        index: usize,
    },
}

fn parse(bytes: Vec<u8>, media_type: Option<&str>, what: &str) -> Result<Manifest, CopyError> {
    Manifest::parse(bytes, media_type).map_err(|e| CopyError::malformed(what, e))
}

fn verify(m: Manifest, digest: &Digest, what: &str) -> Result<Manifest, CopyError> {
    let actual = Digest::of(digest.algorithm(), m.bytes());
    if &actual != digest {
        return Err(CopyError::Integrity {
            what: what.to_owned(),
            expected: digest.clone(),
            actual,
        });
    }
    Ok(m)
}

fn read_small(path: &Path) -> Result<Vec<u8>, CopyError> {
    let meta = std::fs::metadata(path).map_err(|e| CopyError::io(path, e))?;
    if meta.len() > MAX_MANIFEST as u64 {
        return Err(CopyError::malformed(
            path.display().to_string(),
            format!("larger than {MAX_MANIFEST} bytes, too large for a manifest"),
        ));
    }
    std::fs::read(path).map_err(|e| CopyError::io(path, e))
}

impl Source {
    /// The name of the image, e.g. `127.0.0.1:5000/app:v1`, for naming it at a destination.
    pub(crate) fn image_name(&self) -> Option<String> {
        match self {
            Source::Registry { reference, .. } => Some(reference.to_string()),
            Source::Layout { reference, .. } => reference.clone(),
            Source::Dir { .. } => None,
            Source::Archive { archive, index } => {
                archive.images[*index].name.as_ref().map(|n| n.to_string())
            }
        }
    }

    /// What the source calls the image: a full name and, when it has only that, a bare tag.
    pub(crate) fn names(&self) -> (Option<Reference>, Option<ferry_oci::Tag>) {
        match self {
            Source::Registry { reference, .. } => (Some(reference.clone()), None),
            Source::Layout { reference, .. } => match reference.as_deref() {
                None => (None, None),
                // A `ref.name` is a full name when it names a repository, else a tag.
                Some(r) if r.contains('/') => (Reference::parse_normalized(r).ok(), None),
                Some(r) => (None, ferry_oci::Tag::new(r).ok()),
            },
            Source::Dir { .. } => (None, None),
            Source::Archive { archive, index } => {
                let image = &archive.images[*index];
                (image.name.clone(), image.tag_only.clone())
            }
        }
    }

    /// The manifest the location names (an image manifest or an index).
    pub(crate) async fn top(&self) -> Result<Manifest, CopyError> {
        match self {
            Source::Registry {
                registry,
                reference,
            } => {
                let what = format!("manifest of {reference}");
                let r = reference.manifest_ref().to_string();
                let got = registry
                    .get_manifest(&reference.repo, &r, MAX_MANIFEST)
                    .await
                    .map_err(|e| match e.kind {
                        ErrorKind::NotFound => CopyError::NotFound {
                            what: format!("manifest {reference}"),
                            hint: String::new(),
                        },
                        _ => CopyError::registry(&what, e),
                    })?;
                let m = parse(got.bytes.to_vec(), Some(&got.media_type), &what)?;
                match &reference.digest {
                    Some(d) => verify(m, d, &what),
                    None => Ok(m),
                }
            }
            Source::Layout { dir, reference } => {
                let dir = dir.clone();
                let reference = reference.clone();
                tokio::task::spawn_blocking(move || {
                    let entry = layout::find(&dir, reference.as_deref())?;
                    let path = layout::blob_path(&dir, &entry.digest);
                    let what = path.display().to_string();
                    let m = parse(read_small(&path)?, Some(&entry.media_type), &what)?;
                    verify(m, &entry.digest, &what)
                })
                .await
                .expect("read task panicked")
            }
            Source::Dir { dir } => {
                let path = dir.join("manifest.json");
                let what = path.display().to_string();
                let bytes = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || read_small(&path)
                })
                .await
                .expect("read task panicked")?;
                parse(bytes, None, &what)
            }
            Source::Archive { archive, index } => Ok((*archive.images[*index].content.top).clone()),
        }
    }

    /// A manifest the top one refers to (an index's child), verified against its digest.
    pub(crate) async fn child(&self, desc: &Descriptor) -> Result<Manifest, CopyError> {
        match self {
            Source::Registry {
                registry,
                reference,
            } => {
                let what = format!("manifest {} of {reference}", desc.digest);
                let got = registry
                    .get_manifest(&reference.repo, desc.digest.as_str(), MAX_MANIFEST)
                    .await
                    .map_err(|e| CopyError::registry(&what, e))?;
                let m = parse(got.bytes.to_vec(), Some(&desc.media_type), &what)?;
                verify(m, &desc.digest, &what)
            }
            Source::Layout { .. } | Source::Dir { .. } => {
                let path = match self {
                    Source::Dir { dir } => dir.join(format!("{}.manifest.json", desc.digest.hex())),
                    _ => self
                        .blob_file(&desc.digest)
                        .expect("file sources have blob files"),
                };
                let what = path.display().to_string();
                let bytes = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || read_small(&path)
                })
                .await
                .expect("read task panicked")?;
                verify(
                    parse(bytes, Some(&desc.media_type), &what)?,
                    &desc.digest,
                    &what,
                )
            }
            Source::Archive { archive, index } => archive.images[*index]
                .content
                .children
                .iter()
                .find(|c| c.digest() == &desc.digest)
                .map(|c| (**c).clone())
                .ok_or_else(|| CopyError::NotFound {
                    what: format!("manifest {} in {}", desc.digest, archive.path.display()),
                    hint: String::new(),
                }),
        }
    }

    /// The file holding a blob, for sources that are directories.
    pub(crate) fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        match self {
            Source::Registry { .. } | Source::Archive { .. } => None,
            Source::Layout { dir, .. } => Some(layout::blob_path(dir, digest)),
            Source::Dir { dir } => Some(crate::dest::dir_blob_path(dir, digest)),
        }
    }
}

/// Reads a blob of a file-backed source (a layout, a directory or an archive) from its start.
pub(crate) type BlobReader = Box<dyn std::io::Read + Send>;
/// Opens a blob (on a blocking thread).
pub(crate) type BlobOpener = Box<dyn FnOnce() -> Result<BlobReader, CopyError> + Send>;

impl Source {
    /// How to open a blob of a file-backed source; `None` for a registry.
    pub(crate) fn blob_opener(&self, desc: &Descriptor) -> Option<BlobOpener> {
        match self {
            Source::Registry { .. } => None,
            Source::Archive { archive, .. } => {
                let archive = archive.clone();
                let blob = archive.blob(desc);
                Some(Box::new(move || {
                    archive
                        .open_blob(&blob)
                        .map(|r| Box::new(r) as BlobReader)
                        .map_err(|e| CopyError::malformed(archive.path.display().to_string(), e))
                }))
            }
            Source::Layout { .. } | Source::Dir { .. } => {
                let path = self
                    .blob_file(&desc.digest)
                    .expect("directories hold blob files");
                Some(Box::new(move || {
                    std::fs::File::open(&path)
                        .map(|f| Box::new(f) as BlobReader)
                        .map_err(|e| CopyError::io(&path, e))
                }))
            }
        }
    }
}

/// Opens the archive at `file` and picks the image `wanted` names (an OCI `ref.name`, a docker
/// `RepoTags` name, a position), or its only image; reading it is bounded by `limits`.
pub(crate) fn open_archive(
    file: &Path,
    wanted: Option<ArchiveImage>,
    ref_name: Option<String>,
    limits: &ArchiveLimits,
) -> Result<Source, CopyError> {
    let archive = Archive::open(file, &[], limits).map_err(|error| CopyError::Archive {
        file: file.to_owned(),
        error,
    })?;
    let images = &archive.images;
    let names = || {
        format!(
            "; it holds: {}",
            images
                .iter()
                .map(ArchivedImage::label)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let index = match (&wanted, &ref_name) {
        (Some(ArchiveImage::Index(n)), _) => (*n < images.len()).then_some(*n),
        (Some(ArchiveImage::Named(r)), _) => images.iter().position(|i| i.name.as_ref() == Some(r)),
        (None, Some(r)) => images.iter().position(|i| {
            i.tag_only.as_ref().is_some_and(|t| t.as_str() == r)
                || i.name.as_ref().is_some_and(|n| {
                    n.to_string() == *r || n.tag.as_ref().is_some_and(|t| t.as_str() == r)
                })
        }),
        (None, None) if images.len() == 1 => Some(0),
        (None, None) => {
            return Err(CopyError::NotFound {
                what: format!(
                    "which image of {}: it holds {}, name one",
                    file.display(),
                    images.len()
                ),
                hint: names(),
            });
        }
    };
    let Some(index) = index else {
        let asked = match (&wanted, &ref_name) {
            (Some(w), _) => w.to_string(),
            (None, Some(r)) => r.clone(),
            (None, None) => String::new(),
        };
        return Err(CopyError::NotFound {
            what: format!("image {asked} in {}", file.display()),
            hint: names(),
        });
    };
    Ok(Source::Archive {
        archive: Arc::new(archive),
        index,
    })
}
