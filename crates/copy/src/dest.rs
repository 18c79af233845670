//! Where images are written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_client::Registry;
use futures_util::StreamExt;

use ferry_oci::{Descriptor, Digest, Manifest, Reference};

use crate::error::CopyError;
use crate::files::{self, Durability, Reporter};
use crate::layout;
use crate::progress::BlobOutcome;
use crate::source::Source;
use crate::store::StoreName;

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
    Registry {
        registry: Arc<Registry>,
        reference: Reference,
    },
    /// ferry's own store (`ferry-store:`).
    Store {
        store: Arc<ferry_store::Store>,
        name: StoreName,
        /// The destination as the user wrote it, for messages.
        label: String,
    },
}

impl Dest {
    /// The directory everything is written under, for destinations that are files.
    pub(crate) fn root(&self) -> Option<&Path> {
        match self {
            Dest::Layout { dir, .. } | Dest::Dir { dir, .. } => Some(dir),
            Dest::Registry { .. } | Dest::Store { .. } => None,
        }
    }

    /// What identifies a blob at this destination, for keeping two writers of it apart.
    pub(crate) fn blob_key(&self, digest: &Digest) -> String {
        match self {
            Dest::Layout { dir, .. } | Dest::Dir { dir, .. } => {
                format!("{}/{digest}", dir.display())
            }
            Dest::Registry {
                registry,
                reference,
            } => format!("{}/{}/{digest}", registry.endpoint(), reference.repo),
            Dest::Store { store, name, .. } => {
                format!("store:{}/{}/{digest}", store.root().display(), name.repo)
            }
        }
    }

    /// Creates what the destination needs before blobs arrive.
    pub(crate) async fn prepare(&self) -> Result<(), CopyError> {
        let dest = match self {
            Dest::Layout { dir, .. } => (dir.clone(), true),
            Dest::Dir { dir, .. } => (dir.clone(), false),
            Dest::Registry { .. } | Dest::Store { .. } => return Ok(()),
        };
        tokio::task::spawn_blocking(move || {
            let (dir, is_layout) = dest;
            if is_layout {
                layout::prepare(&dir, Durability::AtTheEnd)
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
            Dest::Registry { .. } | Dest::Store { .. } => {
                unreachable!("registries and stores have no blob files")
            }
        }
    }

    /// The file a blob is kept in at this destination, if it is a directory.
    pub(crate) fn blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        self.root().map(|_| self.blob_target(digest))
    }

    /// Puts one blob at the destination, unless it is there already.
    pub(crate) async fn put_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        attempts: u32,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        let Some(root) = self.root() else {
            if let Dest::Store { .. } = self {
                return self.store_blob(source, desc, attempts, reporter).await;
            }
            return self.push_blob(source, desc, attempts, reporter).await;
        };
        let target = self.blob_target(&desc.digest);
        if files::present(&target, desc.size).await {
            return Ok(BlobOutcome::Present);
        }
        let partial = files::partial_path(root, &desc.digest);
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
            } => files::download(registry, &reference.repo, desc, &partial, reporter).await?,
            _ => {
                let open = source
                    .blob_opener(desc)
                    .expect("sources other than registries are files");
                files::copy_verified(open, partial.clone(), desc.clone(), reporter.clone()).await?;
                0
            }
        };
        files::commit(&partial, &target).await?;
        Ok(BlobOutcome::Copied { resumed_from })
    }

    /// Writes a manifest. `top` is the one the copy was asked for (it gets the image's name);
    /// others are the children of an index.
    pub(crate) async fn put_manifest(&self, m: &Manifest, top: bool) -> Result<(), CopyError> {
        if let Dest::Registry {
            registry,
            reference,
        } = self
        {
            // Children by digest; the named manifest by its tag, or by digest when none is given.
            let at = match (&reference.digest, &reference.tag) {
                (None, Some(tag)) if top => tag.to_string(),
                _ => m.digest().to_string(),
            };
            let what = format!("manifest {} to {reference}", m.digest());
            registry
                .put_manifest(
                    &reference.repo,
                    &at,
                    m.media_type().as_str(),
                    bytes::Bytes::copy_from_slice(m.bytes()),
                )
                .await
                .map_err(|e| CopyError::registry(what, e))?;
            return Ok(());
        }
        if let Dest::Store {
            store, name, label, ..
        } = self
        {
            // Children are kept by digest; the named manifest gets the tags. An index may list
            // platforms the copy left out, so its references are not checked (as a mirror that
            // pulled one platform holds it).
            let (tags, check_refs) = if top {
                (name.tags.as_slice(), !m.media_type().is_index())
            } else {
                (&[][..], true)
            };
            return store
                .put_manifest(&name.repo, m, tags, check_refs)
                .await
                .map_err(|e| CopyError::Destination {
                    destination: label.clone(),
                    why: format!("manifest {} into {}: {e}", m.digest(), name.repo),
                });
        }
        let target = match self {
            Dest::Layout { dir, .. } => layout::blob_path(dir, m.digest()),
            Dest::Dir { dir, unique, .. } => {
                if top && !unique {
                    dir.join("manifest.json")
                } else {
                    dir.join(format!("{}.manifest.json", m.digest().hex()))
                }
            }
            Dest::Registry { .. } | Dest::Store { .. } => unreachable!("handled above"),
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
                _ => None,
            },
            match self {
                Dest::Layout { image_name, .. } | Dest::Dir { image_name, .. } => {
                    image_name.as_deref()
                }
                Dest::Registry { .. } | Dest::Store { .. } => None,
            },
        );
        match self {
            Dest::Layout { dir, .. } => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    layout::add_entries(&dir, &[entry], Durability::AtTheEnd)
                })
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
            Dest::Dir { .. } | Dest::Registry { .. } | Dest::Store { .. } => Ok(()),
        }
    }

    /// Puts a blob into a destination registry: nothing if it has it, a cross-repository mount
    /// when the source is another repository of the same registry, else an upload streamed from
    /// the source (the registry checks the digest).
    async fn push_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        attempts: u32,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        let Dest::Registry {
            registry,
            reference,
        } = self
        else {
            unreachable!("only registries are pushed to");
        };
        let repo = &reference.repo;
        let what = format!("blob {} to {}", desc.digest, reference);
        if registry
            .blob_exists(repo, &desc.digest)
            .await
            .map_err(|e| CopyError::registry(&what, e))?
        {
            return Ok(BlobOutcome::Present);
        }
        if let Source::Registry {
            registry: from_registry,
            reference: from,
        } = source
            && from_registry.endpoint() == registry.endpoint()
            && from.repo != *repo
            && registry
                .mount_blob(repo, &desc.digest, &from.repo)
                .await
                .map_err(|e| CopyError::registry(&what, e))?
        {
            return Ok(BlobOutcome::Mounted);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = if matches!(source, Source::Registry { .. }) {
                // The source's answer and the destination's upload session are both a round
                // trip away: wait for them together, not one after the other.
                let (stream, upload) = tokio::join!(
                    source_stream(source, desc, reporter),
                    registry.start_upload(repo)
                );
                let stream = stream?;
                match upload {
                    Ok(upload) => {
                        registry
                            .finish_upload_stream(repo, upload, &desc.digest, desc.size, stream)
                            .await
                    }
                    Err(e) => Err(e),
                }
            } else {
                let stream = source_stream(source, desc, reporter).await?;
                registry
                    .push_blob_stream(repo, &desc.digest, desc.size, stream)
                    .await
            };
            match result {
                Ok(()) => return Ok(BlobOutcome::Copied { resumed_from: 0 }),
                Err(e) if e.retryable() && attempt < attempts.max(1) => {
                    reporter.retrying(&what, &e.to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5)))
                        .await;
                }
                Err(e) => return Err(CopyError::registry(what, e)),
            }
        }
    }
}

impl Dest {
    /// Puts a blob into a store: linked when the store has its content already (under any
    /// repository), else streamed in from the source (the store verifies digest and size before
    /// the blob gets its name). A registry source's transfer is retried.
    async fn store_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        attempts: u32,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        let Dest::Store { store, name, label } = self else {
            unreachable!("only stores are stored into");
        };
        let failed = |e: ferry_store::StoreError| CopyError::Destination {
            destination: label.clone(),
            why: format!("blob {} into {}: {e}", desc.digest, name.repo),
        };
        if store.has_content_now(&desc.digest) {
            store
                .link_blob(&name.repo, &desc.digest)
                .await
                .map_err(failed)?;
            return Ok(BlobOutcome::Present);
        }
        let retries = if matches!(source, Source::Registry { .. }) {
            attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let stream = source_stream(source, desc, reporter).await?;
            match store
                .put_blob(&name.repo, &desc.digest, Some(desc.size), stream)
                .await
            {
                Ok(_) => return Ok(BlobOutcome::Copied { resumed_from: 0 }),
                Err(e) if attempt < retries => {
                    reporter.retrying(
                        &format!("blob {} into {label}", desc.digest),
                        &e.to_string(),
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5)))
                        .await;
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }
}

/// A blob's bytes from its start, counted into the progress as they are read.
async fn source_stream(
    source: &Source,
    desc: &Descriptor,
    reporter: &Reporter,
) -> Result<futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>, CopyError>
{
    let Source::Registry {
        registry,
        reference,
    } = source
    else {
        let open = source
            .blob_opener(desc)
            .expect("sources other than registries are files");
        return Ok(reader_stream(open, reporter.clone(), desc.digest.clone()).boxed());
    };
    let body = registry
        .get_blob(&reference.repo, &desc.digest, 0)
        .await
        .map_err(|e| CopyError::registry(format!("blob {} of {reference}", desc.digest), e))?;
    let counter = reporter.clone();
    let digest = desc.digest.clone();
    Ok(body
        .into_stream()
        .map(move |chunk| {
            chunk
                .inspect(|b| counter.bytes(&digest, b.len() as u64))
                .map_err(std::io::Error::other)
        })
        .boxed())
}

/// Reads a blob on a blocking thread into a stream of chunks (a bounded channel, so a slow
/// upload holds at most a few chunks in memory).
fn reader_stream(
    open: crate::source::BlobOpener,
    reporter: Reporter,
    digest: Digest,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = match open() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    reporter.bytes(&digest, n as u64);
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
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
