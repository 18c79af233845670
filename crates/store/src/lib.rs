//! # ferry-store
//!
//! The content store behind `ferry serve`: blob files named by their digest, manifests kept as the
//! exact bytes received, tags and per-repository links, resumable upload sessions, and an in-memory
//! index of the repositories in use, loaded from the files on first use.
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
//! - The files are the truth; the index is a bounded cache of them (in memory only): a repository
//!   is loaded when first asked for and dropped when others need the room, so opening a store of
//!   any size walks nothing, and memory does not grow with what is stored. Whole-store work (gc,
//!   fsck, the inventory, the catalog) walks the files; the catalog keeps its last walk (names
//!   only) until any change starts or ends.
//! - A load never keeps a picture older than the files: every change to a repository's files runs
//!   under its stripe's lock and moves the stripe's generation (odd while it runs); a load that
//!   saw the generation odd or moved answers from what it read and keeps nothing.
//! - This crate knows nothing of HTTP: bodies arrive as streams of bytes and errors are
//!   [`StoreError`]s, which the server maps to OCI error codes.

mod blobs;
mod compact;
mod error;
mod index;
mod inventory;
mod layout;
mod maint;
mod manifests;
mod small;
mod uploads;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use blobs::{BlobContent, BlobFile, Ingest, SMALL_BLOB};
pub use error::{Fault, StoreError};
pub use inventory::{Access, ImageInfo, pull_key};
pub use maint::{FsckReport, GcReport};
pub use manifests::{ManifestHead, StoredManifest};
pub use uploads::UploadStatus;

use ferry_oci::{Digest, RepoName};
use index::{Index, Repo};
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
    /// Blob files (manifests included). Counted in the background after open (see `counted`),
    /// then kept up to date by commits and gc.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Whether the count of blobs after open has finished (before that, `blobs` and
    /// `blob_bytes` hold only what was added since).
    pub counted: bool,
    /// Repositories with content, as of the last walk of `repos/` (at open, and at every
    /// catalog, inventory and gc).
    pub repositories: u64,
    /// Repositories in the index now.
    pub repositories_loaded: u64,
    /// Their blobs, manifests and tags (as counted when each was loaded).
    pub index_entries: u64,
    /// Memory held by small blobs and manifests served from memory.
    pub small_blob_bytes: u64,
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
    /// Blobs, manifests and tags the index keeps in memory at most; past it, the repositories
    /// least recently used are dropped (and loaded again from the files when asked for).
    pub index_entries: usize,
    /// Bytes of small blobs and manifests (each at most [`SMALL_BLOB`]) kept in memory to be
    /// served without touching the files; 0 keeps none.
    pub small_blob_cache: usize,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            upload_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            max_manifest_bytes: 4 * 1024 * 1024,
            max_uploads: 10_000,
            max_uploads_per_client: 1_000,
            empty_upload_ttl: std::time::Duration::from_secs(300),
            // ~190 bytes each, measured (20,000 one-image repositories, 8 entries each, took
            // 30 MB): about 36 MiB at most, whatever the size of the store.
            index_entries: 200_000,
            small_blob_cache: 16 << 20,
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
    /// Per stripe: moved when a change to files under it starts (to odd) and ends (to even), so a
    /// load that raced one is not kept (see the crate's invariants).
    generations: Arc<Generations>,
    /// The last walk of `repos/` for the catalog, kept until a change starts or ends: a client
    /// paging through (or looping on) `_catalog` does not walk the tree on every request.
    catalog: Mutex<Option<CatalogWalk>>,
    /// One catalog walk at a time: requests that arrive during a walk wait for it and share it.
    catalog_walking: tokio::sync::Mutex<()>,
    /// Repositories found by the last walk of `repos/`.
    repo_count: AtomicU64,
    /// The background count of blobs after open has finished.
    counted: AtomicBool,
    counted_now: tokio::sync::Notify,
    /// Manifests stored while a collection runs: it keeps them, though its walk did not see them.
    gc_journal: Mutex<Option<HashSet<Digest>>>,
    /// Small blobs and manifests served from memory.
    small: small::SmallBlobs,
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
    /// Opens (creating if needed) the store under `root`, wipes stale temp files and expires old
    /// upload sessions. Nothing else is read: repositories are loaded when first asked for, and the
    /// blobs are counted in the background.
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
        let lock_file = tokio::task::spawn_blocking(move || {
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
            Ok::<_, StoreError>(lock_file)
        })
        .await
        .map_err(StoreError::join)??;
        let access = inventory::AccessLog::load(&layout);
        let store = Arc::new(Store {
            layout,
            index: RwLock::new(Index::new(options.index_entries)),
            small: small::SmallBlobs::new(options.small_blob_cache),
            uploads: uploads::Sessions::default(),
            options,
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
            generations: Arc::new(Generations::new(STRIPES)),
            catalog: Mutex::new(None),
            catalog_walking: tokio::sync::Mutex::new(()),
            repo_count: AtomicU64::new(0),
            counted: AtomicBool::new(false),
            counted_now: tokio::sync::Notify::new(),
            gc_journal: Mutex::new(None),
            gc_deferred: AtomicBool::new(false),
            gc_running: tokio::sync::Mutex::new(()),
            access,
            blob_count: 0.into(),
            blob_bytes: 0.into(),
            _lock: lock_file,
        });
        // Counted beside serving: a walk of every blob file takes seconds on a large store.
        // Commits during the walk are added as they happen, so a blob committed meanwhile may be
        // counted twice (nothing recounts: the counters are for monitoring and the cache budget,
        // which an error of a few blobs does not move).
        let weak = Arc::downgrade(&store);
        let l = store.layout.clone();
        tokio::task::spawn_blocking(move || {
            let (count, bytes) = maint::count_blobs(&l);
            let repos = index::repo_names(&l).map_or(0, |r| r.len() as u64);
            if let Some(store) = weak.upgrade() {
                store.blob_count.fetch_add(count, Ordering::Relaxed);
                store.blob_bytes.fetch_add(bytes, Ordering::Relaxed);
                store.repo_count.store(repos, Ordering::Relaxed);
                store.counted.store(true, Ordering::Release);
                store.counted_now.notify_waiters();
            }
        });
        Ok(store)
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
        let idx = self.read_index();
        StoreStats {
            blobs: self.blob_count.load(Relaxed),
            blob_bytes: self.blob_bytes.load(Relaxed),
            counted: self.counted.load(std::sync::atomic::Ordering::Acquire),
            repositories: self.repo_count.load(Relaxed),
            repositories_loaded: idx.loaded() as u64,
            index_entries: idx.entries() as u64,
            small_blob_bytes: self.small.bytes() as u64,
            uploads: self.uploads.len() as u64,
        }
    }

    /// Waits for the count of blobs after open (what a cache budget needs before its first round).
    pub async fn blobs_counted(&self) {
        loop {
            let notified = self.counted_now.notified();
            if self.counted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
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
        let i = self.stripe_of(repo);
        let stripe = self.stripes[i].clone();
        let store = self.clone();
        tokio::spawn(async move {
            let _guard = stripe.lock_owned().await;
            let _changing = Changing::new(&store.generations, [i]);
            work(store.clone()).await
        })
        .await
        .map_err(StoreError::join)?
    }

    fn stripe_of(&self, repo: &RepoName) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        repo.hash(&mut h);
        (h.finish() as usize) % self.stripes.len()
    }

    /// Runs `f` on `repo`'s index entry, loading the repository from its files if it is not
    /// loaded (and keeping it, unless a change raced the load); `None` if it has no content.
    pub(crate) fn with_repo<T>(
        &self,
        repo: &RepoName,
        f: impl FnOnce(&Repo) -> T,
    ) -> Result<Option<T>, StoreError> {
        if let Some(r) = self.read_index().get(repo) {
            return Ok(Some(f(r)));
        }
        let before = self.generation_of(repo);
        let Some(loaded) = index::load_repo(&self.layout, repo)? else {
            return Ok(None);
        };
        Ok(Some(self.keep_loaded(repo, loaded, before, f)))
    }

    fn generation_of(&self, repo: &RepoName) -> u64 {
        self.generations.stripes[self.stripe_of(repo)].load(Ordering::SeqCst)
    }

    /// Answers `f` from a repository read from its files when the generation was `before`, and
    /// keeps it in the index unless a change ran meanwhile (or another load was kept first).
    fn keep_loaded<T>(
        &self,
        repo: &RepoName,
        loaded: Repo,
        before: u64,
        f: impl FnOnce(&Repo) -> T,
    ) -> T {
        let mut idx = self.write_index();
        if let Some(r) = idx.get(repo) {
            return f(r);
        }
        if before % 2 == 1 || self.generation_of(repo) != before {
            // A change ran while the files were read: answer from them, keep nothing.
            return f(&loaded);
        }
        f(idx.insert(repo.clone(), loaded))
    }

    /// [`Store::with_repo`] for callers that only ask a question: a repository that cannot be
    /// read answers as if empty (and is logged).
    pub(crate) fn ask_repo(&self, repo: &RepoName, f: impl FnOnce(&Repo) -> bool) -> bool {
        match self.with_repo(repo, f) {
            Ok(answer) => answer.unwrap_or(false),
            Err(e) => {
                tracing::warn!(%repo, error = %e, "reading a repository's links failed");
                false
            }
        }
    }

    /// Applies a change to `repo`'s index entry if it is loaded (a repository not loaded is read
    /// from the files, which already hold the change, when next asked for). Callers hold the
    /// repository's lock.
    pub(crate) fn update_repo(&self, repo: &RepoName, f: impl FnOnce(&mut Repo)) {
        let mut idx = self.write_index();
        if let Some(r) = idx.repos.get_mut(repo) {
            f(r);
            if r.is_empty() {
                idx.repos.remove(repo);
            }
        }
    }

    pub(crate) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated in a way that matters
        // more than refusing service, so poisoning is ignored.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Change counters: one per stripe (odd while a change to its files runs), and over the whole
/// store how many changes run now and how many have started or ended (what a cached catalog walk
/// checks).
#[derive(Debug)]
pub(crate) struct Generations {
    stripes: Vec<AtomicU64>,
    running: AtomicU64,
    moves: AtomicU64,
}

impl Generations {
    fn new(stripes: usize) -> Generations {
        Generations {
            stripes: (0..stripes).map(|_| AtomicU64::new(0)).collect(),
            running: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    /// A mark to compare with [`Generations::unchanged_since`] later, or `None` if a change runs
    /// now (a walk started now may see it half done).
    fn quiet_mark(&self) -> Option<u64> {
        let mark = self.moves.load(Ordering::SeqCst);
        (self.running.load(Ordering::SeqCst) == 0).then_some(mark)
    }

    /// No change has started or ended since `mark` was taken.
    fn unchanged_since(&self, mark: u64) -> bool {
        self.moves.load(Ordering::SeqCst) == mark
    }
}

/// Names found by a walk of `repos/` that started when the store's changes were at `mark`.
#[derive(Debug)]
struct CatalogWalk {
    mark: u64,
    names: Arc<Vec<RepoName>>,
}

/// Marks the files of some stripes as changing (their generations odd) for as long as it lives.
pub(crate) struct Changing {
    generations: Arc<Generations>,
    stripes: Vec<usize>,
}

impl Changing {
    pub(crate) fn new(
        generations: &Arc<Generations>,
        stripes: impl IntoIterator<Item = usize>,
    ) -> Changing {
        let stripes: Vec<usize> = stripes.into_iter().collect();
        generations.running.fetch_add(1, Ordering::SeqCst);
        generations.moves.fetch_add(1, Ordering::SeqCst);
        for &i in &stripes {
            generations.stripes[i].fetch_add(1, Ordering::SeqCst);
        }
        Changing {
            generations: generations.clone(),
            stripes,
        }
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        for &i in &self.stripes {
            self.generations.stripes[i].fetch_add(1, Ordering::SeqCst);
        }
        self.generations.moves.fetch_add(1, Ordering::SeqCst);
        self.generations.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_chunk(
        bytes: &'static [u8],
    ) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin {
        futures_util::stream::iter([Ok(bytes::Bytes::from_static(bytes))])
    }

    /// The interleavings a load can meet, played one step at a time.
    #[tokio::test]
    async fn a_load_that_raced_a_change_answers_but_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        let repo = RepoName::new("race/one").unwrap();
        let d = Digest::sha256(b"layer");
        store
            .put_blob(&repo, &d, None, one_chunk(b"layer"))
            .await
            .unwrap();

        // Read before a delete, kept after it: the answer is the old one, the index is not.
        let before = store.generation_of(&repo);
        let old = index::load_repo(&store.layout, &repo).unwrap().unwrap();
        store.delete_blob(&repo, &d).await.unwrap();
        assert!(store.keep_loaded(&repo, old, before, |r| r.blobs.contains(&d)));
        assert_eq!(
            store.stats().repositories_loaded,
            0,
            "a stale picture was kept"
        );
        assert!(!store.has_blob(&repo, &d));

        // Read while a change is under way: not kept either.
        store
            .put_blob(&repo, &d, None, one_chunk(b"layer"))
            .await
            .unwrap();
        let changing = Changing::new(&store.generations, [store.stripe_of(&repo)]);
        let during = store.generation_of(&repo);
        let read = index::load_repo(&store.layout, &repo).unwrap().unwrap();
        store.keep_loaded(&repo, read, during, |_| ());
        drop(changing);
        assert_eq!(store.stats().repositories_loaded, 0);

        // No change: kept.
        let quiet = store.generation_of(&repo);
        let read = index::load_repo(&store.layout, &repo).unwrap().unwrap();
        assert!(store.keep_loaded(&repo, read, quiet, |r| r.blobs.contains(&d)));
        assert_eq!(store.stats().repositories_loaded, 1);
    }
}
