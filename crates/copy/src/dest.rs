//! Where images are written.

use std::path::{Path, PathBuf};

use ferry_oci::{Descriptor, Digest, Manifest};

use crate::error::CopyError;
use crate::files::{self, Reporter};
use crate::layout;
use crate::progress::BlobOutcome;
use crate::source::Source;

/// The `version` file of a `dir:` destination, as containers/image writes it.
const DIR_VERSION: &str = "Directory Transport Version: 1.1\n";
/// The list of images in a `dir:DIR?unique_names=true`.
pub(crate) const DIR_CATALOG: &str = "images.json";

/// The path of a blob in a `dir:` directory: the digest's hex for SHA-256 (as skopeo names
/// them), `alg-hex` otherwise.
pub(crate) fn dir_blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    match digest.algorithm() {
        ferry_oci::Algorithm::Sha256 => dir.join(digest.hex()),
        a => dir.join(format!("{}-{}", a.as_str(), digest.hex())),
    }
}

/// An opened destination location.
pub(crate) enum Dest {
    Layout {
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` of the copied image.
        name: Option<String>,
        /// `io.containerd.image.name` of the copied image.
        image_name: Option<String>,
    },
    Dir {
        dir: PathBuf,
        unique: bool,
        image_name: Option<String>,
    },
}

impl Dest {
    /// The directory everything is written under.
    pub(crate) fn root(&self) -> &Path {
        match self {
            Dest::Layout { dir, .. } | Dest::Dir { dir, .. } => dir,
        }
    }

    /// Creates what the destination needs before blobs arrive.
    pub(crate) async fn prepare(&self) -> Result<(), CopyError> {
        let dest = match self {
            Dest::Layout { dir, .. } => (dir.clone(), true),
            Dest::Dir { dir, .. } => (dir.clone(), false),
        };
        tokio::task::spawn_blocking(move || {
            let (dir, is_layout) = dest;
            if is_layout {
                layout::prepare(&dir)
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| CopyError::io(&dir, e))?;
                let version = dir.join("version");
                if !version.exists() {
                    files::write_atomically_blocking(&version, DIR_VERSION.as_bytes())?;
                }
                Ok(())
            }
        })
        .await
        .expect("prepare task panicked")
    }

    fn blob_target(&self, digest: &Digest) -> PathBuf {
        match self {
            Dest::Layout { dir, .. } => layout::blob_path(dir, digest),
            Dest::Dir { dir, .. } => dir_blob_path(dir, digest),
        }
    }

    /// Puts one blob at the destination, unless it is there already.
    pub(crate) async fn put_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        attempts: u32,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        let target = self.blob_target(&desc.digest);
        if files::present(&target, desc.size).await {
            return Ok(BlobOutcome::Present);
        }
        let partial = files::partial_path(self.root(), &desc.digest);
        let _lock = files::lock_partial(partial.clone()).await?;
        // Another process may have finished it while this one waited for the lock.
        if files::present(&target, desc.size).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Ok(BlobOutcome::Present);
        }
        let resumed_from = match source {
            Source::Registry {
                registry,
                reference,
            } => {
                files::download(
                    registry,
                    &reference.repo,
                    desc,
                    &partial,
                    attempts,
                    reporter,
                )
                .await?
            }
            Source::Layout { .. } | Source::Dir { .. } => {
                let from = source
                    .blob_file(&desc.digest)
                    .expect("file sources have blob files");
                files::copy_verified(from, partial.clone(), desc.clone(), reporter.clone()).await?;
                0
            }
        };
        files::commit(&partial, &target).await?;
        Ok(BlobOutcome::Copied { resumed_from })
    }

    /// Writes a manifest. `top` is the one the copy was asked for (it gets the image's name);
    /// others are the children of an index.
    pub(crate) async fn put_manifest(&self, m: &Manifest, top: bool) -> Result<(), CopyError> {
        let target = match self {
            Dest::Layout { dir, .. } => layout::blob_path(dir, m.digest()),
            Dest::Dir { dir, unique, .. } => {
                if top && !unique {
                    dir.join("manifest.json")
                } else {
                    dir.join(format!("{}.manifest.json", m.digest().hex()))
                }
            }
        };
        files::write_atomically(&target, m.bytes()).await?;
        if !top {
            return Ok(());
        }
        let entry = layout::entry(
            m.media_type().as_str(),
            m.digest(),
            m.bytes().len() as u64,
            match self {
                Dest::Layout { name, .. } => name.as_deref(),
                Dest::Dir { .. } => None,
            },
            match self {
                Dest::Layout { image_name, .. } | Dest::Dir { image_name, .. } => {
                    image_name.as_deref()
                }
            },
        );
        match self {
            Dest::Layout { dir, .. } => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || layout::add_entry(&dir, entry))
                    .await
                    .expect("index task panicked")
            }
            Dest::Dir {
                dir,
                unique: true,
                image_name,
            } => {
                let dir = dir.clone();
                let name = image_name.clone();
                tokio::task::spawn_blocking(move || add_to_catalog(&dir, name.as_deref(), &entry))
                    .await
                    .expect("catalog task panicked")
            }
            Dest::Dir { .. } => Ok(()),
        }
    }
}

/// Records an image in a `dir:…?unique_names=true` catalog (`images.json`: name → manifest), under
/// a lock on the directory's `version` file, so concurrent copies keep every entry.
fn add_to_catalog(dir: &Path, name: Option<&str>, entry: &Descriptor) -> Result<(), CopyError> {
    let version = dir.join("version");
    let lock = std::fs::File::open(&version).map_err(|e| CopyError::io(&version, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| CopyError::io(&version, e.into()))?;
    let path = dir.join(DIR_CATALOG);
    let mut catalog: serde_json::Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CopyError::malformed(path.display().to_string(), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({"images": []}),
        Err(e) => return Err(CopyError::io(&path, e)),
    };
    let images = catalog
        .get_mut("images")
        .and_then(|i| i.as_array_mut())
        .ok_or_else(|| CopyError::malformed(path.display().to_string(), "no images array"))?;
    let name = name.unwrap_or("");
    images.retain(|i| i.get("name").and_then(|n| n.as_str()) != Some(name));
    images.push(serde_json::json!({
        "name": name,
        "mediaType": entry.media_type,
        "digest": entry.digest,
        "size": entry.size,
        "manifest": format!("{}.manifest.json", entry.digest.hex()),
    }));
    files::write_atomically_blocking(&path, &serde_json::to_vec_pretty(&catalog).expect("JSON"))
}
