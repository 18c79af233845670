//! # ferry-store
//!
//! The content store behind `ferry serve`: blob files named by their digest, manifests kept as the
//! exact bytes received, tags and per-repository links, resumable upload sessions, and an in-memory
//! index that is rebuilt from the files at every start.
//!
//! On disk, under the data directory:
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>          content, named by its digest (manifests too)
//! repos/<repo>/_blobs/<alg>/<hex>       empty file: the blob is part of <repo>
//! repos/<repo>/_manifests/<alg>/<hex>   the manifest's media type
//! repos/<repo>/_tags/<tag>              the digest the tag points at
//! uploads/<id>/{repo,data}              an upload session in progress
//! tmp/                                  ingest temp files (same filesystem, wiped at start)
//! quarantine/                           blobs fsck found corrupt
//! ferry.lock                            held by the process that owns the directory
//! ```
//!
//! Architecture invariants:
//! - A file under `blobs/` exists only if its bytes hash to its name: content is written to a temp
//!   file on the same filesystem while being hashed, checked and fsynced, then renamed (and, for
//!   pushed content, the directory fsynced). A mismatch or a crash leaves nothing under `blobs/`.
//! - Links and tags of pushed repositories are fsynced before the write is acknowledged; those of a
//!   cache's repositories are not ([`Durability::Cache`]): a power loss may forget the newest, which
//!   the mirror relinks or fetches again, and the index skips what it cannot read.
//! - The files are the truth; the index is a cache of them and can be deleted (it lives only in
//!   memory) and rebuilt ([`Store::open`]).
//! - This crate knows nothing of HTTP: bodies arrive as streams of bytes and errors are
//!   [`StoreError`]s, which the server maps to OCI error codes.

mod blobs;
mod error;
mod index;
mod inventory;
mod layout;
mod maint;
mod manifests;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use blobs::{BlobContent, BlobFile, Ingest, SMALL_BLOB};
pub use error::{Fault, StoreError};
pub use inventory::{Access, ImageInfo, pull_key};
pub use maint::{FsckReport, GcReport};
pub use manifests::{ManifestHead, StoredManifest};
pub use uploads::UploadStatus;

use ferry_oci::RepoName;
use index::Index;
use layout::Layout;

/// How much of a write must be on disk before the store reports it done. Content under `blobs/` is
/// always fsynced (no crash may leave a corrupt blob); the choice is about the names pointing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Links and tags fsynced too: a registry's acknowledgement of a push is a promise.
    Full,
    /// Links and tags written atomically (temp file and rename) but not fsynced: a pull-through
    /// cache can relink content it has or fetch again what a power loss made it forget, and saves
    /// the flushes on every miss.
    Cache,
}

/// What the store holds, for monitoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Blob files (manifests included).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Repositories with content.
    pub repositories: u64,
    /// Upload sessions open in this process.
    pub uploads: u64,
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upload sessions untouched for longer than this are removed (at start and by [`Store::sweep`]).
    pub upload_ttl: std::time::Duration,
    /// Refuse manifests larger than this many bytes.
    pub max_manifest_bytes: usize,
    /// Upload sessions open at once; more are refused with [`StoreError::TooManyUploads`].
    pub max_uploads: usize,
    /// Upload sessions one client may hold open; more are refused with
    /// [`StoreError::TooManyUploadsFromClient`].
    pub max_uploads_per_client: usize,
    /// A session that has not received a byte this long after it started is abandoned (clients
    /// send their first chunk at once), and removed when room is needed or by [`Store::sweep`].
    pub empty_upload_ttl: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            upload_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            max_manifest_bytes: 4 * 1024 * 1024,
            max_uploads: 10_000,
            max_uploads_per_client: 1_000,
            empty_upload_ttl: std::time::Duration::from_secs(300),
        }
    }
}

/// The content store, always used behind an [`Arc`]: every operation that changes files runs as its
/// own task, so a client that disconnects mid-request cannot leave files and index half-updated.
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    index: RwLock<Index>,
    uploads: uploads::Sessions,
    options: StoreOptions,
    /// Metadata changes (links, manifests, tags) of one repository happen one at a time, so that
    /// "read index → change files → update index" is never interleaved with another change.
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// What the index rebuild found wrong at open (dangling links and tags), for `fsck`.
    problems: index::Problems,
    /// Pull statistics, flushed in batches.
    access: inventory::AccessLog,
    /// Blob files and their bytes, counted at open and kept up to date by commits and gc.
    blob_count: std::sync::atomic::AtomicU64,
    blob_bytes: std::sync::atomic::AtomicU64,
    /// An online collection kept unreferenced content because it was used moments before; the
    /// next maintenance round should collect again.
    gc_deferred: std::sync::atomic::AtomicBool,
    /// One online collection at a time: each walks every manifest and blob file, and several at
    /// once (concurrent prunes) only multiply the memory and I/O for the same result.
    gc_running: tokio::sync::Mutex<()>,
    // Held for the store's lifetime so that offline tools (gc) cannot run underneath a server.
    _lock: Option<std::fs::File>,
}

const STRIPES: usize = 64;

/// How [`Store::open_with`] treats the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Create it if needed, take the lock (fail if another process holds it), clean up temp files
    /// and expired uploads: what `serve` does.
    Exclusive,
    /// The directory must already be a store; take the lock but change nothing on open (`gc`,
    /// `fsck --quarantine`, which then change only what they report).
    ExistingExclusive,
    /// The directory must already be a store; no lock, nothing changed (`fsck`, `gc --dry-run`).
    Shared,
}

impl Store {
    /// Opens (creating if needed) the store under `root`, wipes stale temp files, expires old
    /// upload sessions and rebuilds the index from the files.
    pub async fn open(
        root: impl Into<PathBuf>,
        options: StoreOptions,
    ) -> Result<Arc<Store>, StoreError> {
        Store::open_with(root, options, LockMode::Exclusive).await
    }

    /// [`Store::open`] with an explicit lock mode.
    pub async fn open_with(
        root: impl Into<PathBuf>,
        options: StoreOptions,
        lock: LockMode,
    ) -> Result<Arc<Store>, StoreError> {
        let layout = Layout::new(root.into());
        let l = layout.clone();
        let (ttl, empty_ttl) = (options.upload_ttl, options.empty_upload_ttl);
        let (lock_file, index, problems, count, bytes) = tokio::task::spawn_blocking(move || {
            if lock == LockMode::Exclusive {
                l.create_dirs()?;
            } else if !l.blobs().is_dir() {
                return Err(StoreError::NotAStore(l.root().to_owned()));
            }
            let lock_file = match lock {
                LockMode::Exclusive | LockMode::ExistingExclusive => Some(l.lock()?),
                LockMode::Shared => None,
            };
            if lock == LockMode::Exclusive {
                l.check_case_sensitive()?;
                l.wipe_tmp()?;
                uploads::expire_on_disk(&l, ttl, empty_ttl)?;
            }
            let (index, problems) = Index::rebuild(&l)?;
            let (count, bytes) = maint::count_blobs(&l);
            Ok::<_, StoreError>((lock_file, index, problems, count, bytes))
        })
        .await
        .map_err(StoreError::join)??;
        let access = inventory::AccessLog::load(&layout);
        Ok(Arc::new(Store {
            layout,
            index: RwLock::new(index),
            uploads: uploads::Sessions::default(),
            options,
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
            gc_deferred: std::sync::atomic::AtomicBool::new(false),
            gc_running: tokio::sync::Mutex::new(()),
            problems,
            access,
            blob_count: count.into(),
            blob_bytes: bytes.into(),
            _lock: lock_file,
        }))
    }

    /// Bytes free for ferry on the data directory's filesystem (what an unprivileged process may
    /// use), or `None` if the filesystem does not say.
    pub fn available_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(self.layout.root()).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Counts for monitoring.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            blobs: self.blob_count.load(Relaxed),
            blob_bytes: self.blob_bytes.load(Relaxed),
            repositories: self.read_index().repos.len() as u64,
            uploads: self.uploads.len() as u64,
        }
    }

    pub(crate) fn count_blob(&self, bytes: u64, added: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if added {
            self.blob_count.fetch_add(1, Relaxed);
            self.blob_bytes.fetch_add(bytes, Relaxed);
        } else {
            let _ = self
                .blob_count
                .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(1)));
            let _ = self
                .blob_bytes
                .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(bytes)));
        }
    }

    /// Removes temp files of ingests that never finished (called on graceful shutdown).
    pub async fn clean_tmp(&self) -> Result<(), StoreError> {
        let l = self.layout.clone();
        tokio::task::spawn_blocking(move || l.wipe_tmp())
            .await
            .map_err(StoreError::join)?
    }

    /// Runs `work` as its own task holding `repo`'s metadata lock: it completes even if the caller
    /// stops waiting, and never interleaves with another change to the same repository.
    pub(crate) async fn locked<T, F, Fut>(
        self: &Arc<Self>,
        repo: &RepoName,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Store>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repo.hash(&mut h);
        let stripe = self.stripes[(h.finish() as usize) % self.stripes.len()].clone();
        let store = self.clone();
        tokio::spawn(async move {
            let _guard = stripe.lock_owned().await;
            work(store).await
        })
        .await
        .map_err(StoreError::join)?
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated in a way that matters
        // more than refusing service, so poisoning is ignored.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}
