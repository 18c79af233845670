//! Where images are read from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_client::{ErrorKind, Registry};
use ferry_oci::{Descriptor, Digest, Manifest, Reference};

use crate::error::CopyError;
use crate::layout;

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
        }
    }

    /// The file holding a blob, for sources that are directories.
    pub(crate) fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        match self {
            Source::Registry { .. } => None,
            Source::Layout { dir, .. } => Some(layout::blob_path(dir, digest)),
            Source::Dir { dir } => Some(crate::dest::dir_blob_path(dir, digest)),
        }
    }
}
