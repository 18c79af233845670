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
//!   file on the same filesystem while being hashed, checked, fsynced, renamed, and the directory is
//!   fsynced. A mismatch or a crash leaves nothing under `blobs/`.
//! - The files are the truth; the index is a cache of them and can be deleted (it lives only in
//!   memory) and rebuilt ([`Store::open`]).
//! - This crate knows nothing of HTTP: bodies arrive as streams of bytes and errors are
//!   [`StoreError`]s, which the server maps to OCI error codes.

mod blobs;
mod error;
mod index;
mod layout;
mod maint;
mod manifests;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use blobs::{BlobContent, BlobFile, Ingest, SMALL_BLOB};
pub use error::{Fault, StoreError};
pub use maint::{FsckReport, GcReport};
pub use manifests::{ManifestHead, StoredManifest};
pub use uploads::UploadStatus;

use index::Index;
use layout::Layout;

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Upload sessions untouched for longer than this are removed at start.
    pub upload_ttl: std::time::Duration,
    /// Refuse manifests larger than this many bytes.
    pub max_manifest_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            upload_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            max_manifest_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The content store. Cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Store {
    layout: Layout,
    index: RwLock<Index>,
    uploads: uploads::Sessions,
    options: StoreOptions,
    // Held for the store's lifetime so that offline tools (gc) cannot run underneath a server.
    _lock: Option<std::fs::File>,
}

/// How [`Store::open`] treats the data directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Take the lock; fail if another process holds it (serve, gc, fsck --quarantine).
    Exclusive,
    /// Do not take it (read-only inspection such as `fsck` without repairs).
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
        let ttl = options.upload_ttl;
        let (lock_file, index) = tokio::task::spawn_blocking(move || {
            l.create_dirs()?;
            let lock_file = match lock {
                LockMode::Exclusive => Some(l.lock()?),
                LockMode::Shared => None,
            };
            if lock == LockMode::Exclusive {
                l.wipe_tmp()?;
                uploads::expire(&l, ttl)?;
            }
            let index = Index::rebuild(&l)?;
            Ok::<_, StoreError>((lock_file, index))
        })
        .await
        .map_err(StoreError::join)??;
        Ok(Arc::new(Store {
            layout,
            index: RwLock::new(index),
            uploads: uploads::Sessions::default(),
            options,
            _lock: lock_file,
        }))
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Removes temp files of ingests that never finished (called on graceful shutdown).
    pub async fn clean_tmp(&self) -> Result<(), StoreError> {
        let l = self.layout.clone();
        tokio::task::spawn_blocking(move || l.wipe_tmp())
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
