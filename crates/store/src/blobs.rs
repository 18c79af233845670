//! Blob ingest (hash while writing, verify, fsync, rename) and blob reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ferry_oci::{Digest, Hasher, RepoName};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::layout::{claim_content, create_link, fsync_dir, remove_if_exists};
use crate::{Durability, Store, StoreError};

/// Blobs up to this size are read whole, on the calling thread. They come from the page cache in
/// microseconds, while each trip through tokio's blocking pool (open, stat, read) costs more than
/// the read itself: measured with `cargo xtask bench serve`, small-image pulls ran 3× slower that way.
pub const SMALL_BLOB: u64 = 64 * 1024;

/// An open blob: its length and its bytes (small blobs) or an open file (large ones).
#[derive(Debug)]
pub struct BlobFile {
    /// Length in bytes.
    pub len: u64,
    /// The content.
    pub content: BlobContent,
}

/// Where an open blob's bytes are.
#[derive(Debug)]
pub enum BlobContent {
    /// Read whole (at most [`SMALL_BLOB`] bytes).
    Memory(Bytes),
    /// Positioned at the start; stream it.
    File(std::fs::File),
}

/// Copies `body` into `file`, feeding `hasher` on the way; returns the bytes copied. Fails with
/// `SizeMismatch` as soon as more than `max_len` bytes arrive.
pub(crate) async fn pump<S, E>(
    mut body: S,
    file: &mut tokio::fs::File,
    path: &Path,
    hasher: &mut Hasher,
    max_len: Option<u64>,
) -> Result<u64, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<std::io::Error>,
{
    let mut n: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Body(e.into()))?;
        n += chunk.len() as u64;
        if let Some(max) = max_len
            && n > max
        {
            return Err(StoreError::SizeMismatch {
                expected: max,
                actual: n,
            });
        }
        // Hash only what was written, so an error (or a cancelled task) between the two can never
        // leave the hash ahead of the file.
        file.write_all(&chunk).await.map_err(StoreError::io(path))?;
        hasher.update(&chunk);
    }
    file.flush().await.map_err(StoreError::io(path))?;
    Ok(n)
}

/// Removes a temp file when dropped, unless disarmed: a failed or abandoned ingest leaves nothing.
pub(crate) struct TempFile(Option<PathBuf>);

impl TempFile {
    pub fn new(path: PathBuf) -> TempFile {
        TempFile(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Links an fsynced, verified temp file into `blobs/` under `dest` (content already there stays:
/// it hashed to the same name when it was written), removes the temp name and, for
/// [`Durability::Full`], fsyncs the directory; whether the content is new, and its length. Blocking.
fn place_blob(
    verified: TempFile,
    dest: &Path,
    durability: Durability,
    known_len: Option<u64>,
) -> Result<(bool, u64), StoreError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let len = known_len.unwrap_or_else(|| {
        std::fs::metadata(verified.path())
            .map(|m| m.len())
            .unwrap_or(0)
    });
    let added = match crate::layout::in_dir(dest, || std::fs::hard_link(verified.path(), dest)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(StoreError::io(dest)(e)),
    };
    drop(verified);
    if durability == Durability::Full {
        fsync_dir(parent)?;
    }
    Ok((added, len))
}

/// Writes `body` to a fresh temp file while hashing it with `hasher`, and fsyncs it; returns the
/// file (removed again if dropped), the digest and the byte count.
pub(crate) async fn write_hashed<S, E>(
    tmp: PathBuf,
    mut hasher: Hasher,
    max_len: Option<u64>,
    body: S,
) -> Result<(TempFile, Digest, u64), StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<std::io::Error>,
{
    let guard = TempFile::new(tmp);
    let mut file = tokio::fs::File::create(guard.path())
        .await
        .map_err(StoreError::io(guard.path()))?;
    let n = pump(body, &mut file, guard.path(), &mut hasher, max_len).await?;
    file.sync_all()
        .await
        .map_err(StoreError::io(guard.path()))?;
    Ok((guard, hasher.finish(), n))
}

impl Store {
    /// Whether `digest` is readable through `repo` (a linked blob or a manifest of the repo).
    pub fn has_blob(&self, repo: &RepoName, digest: &Digest) -> bool {
        self.ask_repo(repo, |r| {
            r.blobs.contains(digest) || r.manifests.contains_key(digest)
        })
    }

    /// Whether the content exists anywhere in the store, without leaving the thread (one `stat`).
    pub fn has_content_now(&self, digest: &Digest) -> bool {
        self.layout.blob(digest).exists()
    }

    /// Where the content of `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob(digest)
    }

    /// Whether the content exists anywhere in the store (for automatic cross-repository mounts).
    pub async fn has_content(&self, digest: &Digest) -> bool {
        tokio::fs::metadata(self.layout.blob(digest)).await.is_ok()
    }

    /// Opens a blob of `repo`: small blobs are read whole, large ones are returned as an open file.
    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobFile, StoreError> {
        if !self.has_blob(repo, digest) {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        if let Some(bytes) = self.small.get(digest) {
            return Ok(BlobFile {
                len: bytes.len() as u64,
                content: BlobContent::Memory(bytes),
            });
        }
        let path = self.layout.blob(digest);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::BlobUnknown(digest.clone()));
            }
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        let len = file.metadata().map_err(StoreError::io(&path))?.len();
        if len > SMALL_BLOB {
            return Ok(BlobFile {
                len,
                content: BlobContent::File(file),
            });
        }
        // Exactly `len` bytes in one read: `read_to_end` would stat and seek again and read once
        // more to find the end, four syscalls more per small blob.
        let mut buf = vec![0u8; len as usize];
        std::io::Read::read_exact(&mut file, &mut buf).map_err(StoreError::io(&path))?;
        let bytes = Bytes::from(buf);
        self.small.insert(digest, &bytes);
        Ok(BlobFile {
            len,
            content: BlobContent::Memory(bytes),
        })
    }

    /// Size of a blob of `repo` without reading it (HEAD).
    pub fn blob_len(&self, repo: &RepoName, digest: &Digest) -> Result<u64, StoreError> {
        if !self.has_blob(repo, digest) {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        if let Some(bytes) = self.small.get(digest) {
            return Ok(bytes.len() as u64);
        }
        let path = self.layout.blob(digest);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    /// Ingests a whole blob whose digest the client named, then links it into `repo`.
    /// `declared_len` (Content-Length) is checked when given. Returns the size.
    pub async fn put_blob<S, E>(
        self: &Arc<Self>,
        repo: &RepoName,
        expected: &Digest,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<std::io::Error>,
    {
        let (tmp, actual, n) = write_hashed(
            self.layout.tmp_file(),
            expected.algorithm().hasher(),
            declared_len,
            body,
        )
        .await?;
        if let Some(d) = declared_len
            && d != n
        {
            return Err(StoreError::SizeMismatch {
                expected: d,
                actual: n,
            });
        }
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.commit_file(tmp, expected).await?;
        self.link_committed(repo, expected).await?;
        Ok(n)
    }

    /// Puts a verified file into place under its digest, never replacing content already there
    /// (what is there hashed to the same name when it was written), then fsyncs the directory.
    pub(crate) async fn commit_file(
        &self,
        verified: TempFile,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.place_verified(verified, digest, false).await
    }

    /// [`Store::commit_file`] of a file not fsynced yet: fsynced first, in the same trip to the
    /// blocking pool.
    pub(crate) async fn sync_and_commit_file(
        &self,
        verified: TempFile,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.place_verified(verified, digest, true).await
    }

    async fn place_verified(
        &self,
        verified: TempFile,
        digest: &Digest,
        sync_first: bool,
    ) -> Result<(), StoreError> {
        let dest = self.layout.blob(digest);
        let (added, len) = tokio::task::spawn_blocking(move || {
            if sync_first {
                let path = verified.path();
                std::fs::File::open(path)
                    .and_then(|f| f.sync_all())
                    .map_err(StoreError::io(path))?;
            }
            place_blob(verified, &dest, Durability::Full, None)
        })
        .await
        .map_err(StoreError::join)??;
        if added {
            self.count_blob(len, true);
        }
        Ok(())
    }

    /// Starts a streaming ingest of the blob `digest` (see [`Ingest`]). The temp file is created
    /// with the first chunk, in the same trip to the blocking pool.
    pub async fn begin_ingest(&self, digest: &Digest) -> Result<Ingest, StoreError> {
        Ok(Ingest {
            path: self.layout.tmp_file(),
            file: None,
            hasher: Some(digest.algorithm().hasher()),
            digest: digest.clone(),
            written: 0,
        })
    }

    /// Makes an existing blob part of `repo`, and marks its content as just used so a concurrent
    /// online collection keeps it. `BlobUnknown` if the content is gone (collected meanwhile).
    pub async fn link_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.link_blob_as(repo, digest, Durability::Full, false)
            .await
    }

    /// [`Store::link_blob`] for a cache's repository: the link is not fsynced (see
    /// [`Durability::Cache`]).
    pub async fn link_cached_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.link_blob_as(repo, digest, Durability::Cache, false)
            .await
    }

    async fn link_blob_as(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        durability: Durability,
        content_synced: bool,
    ) -> Result<(), StoreError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.locked(&repo.clone(), move |store| async move {
            store
                .link_unlocked(&repo, &digest, durability, content_synced)
                .await
        })
        .await
    }

    /// [`Store::link_blob`] right after [`Store::commit_file`], which made the content's name
    /// durable already: one directory fsync fewer per pushed blob.
    pub(crate) async fn link_committed(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        self.link_blob_as(repo, digest, Durability::Full, true)
            .await
    }

    /// [`Store::link_blob`] for callers already holding the repository's lock.
    pub(crate) async fn link_unlocked(
        &self,
        repo: &RepoName,
        digest: &Digest,
        durability: Durability,
        content_synced: bool,
    ) -> Result<(), StoreError> {
        let content = self.layout.blob(digest);
        let linked = self.has_blob(repo, digest);
        let link = self.layout.blob_link(repo, digest);
        let d = digest.clone();
        tokio::task::spawn_blocking(move || {
            claim_content(&content, &d)?;
            if durability == Durability::Full && !content_synced {
                // The content may have been placed by a cache fill, whose rename into `blobs/`
                // was not fsynced; a push acknowledged on top of it must not lose it. (A
                // directory with nothing new to write syncs in microseconds.)
                fsync_dir(content.parent().unwrap_or(Path::new(".")))?;
            }
            if linked {
                return Ok(());
            }
            create_link(&link)?;
            match durability {
                Durability::Full => fsync_dir(link.parent().unwrap_or(Path::new("."))),
                Durability::Cache => Ok(()),
            }
        })
        .await
        .map_err(StoreError::join)??;
        self.update_repo(repo, |r| {
            r.blobs.insert(digest.clone());
        });
        Ok(())
    }

    /// Cross-repository mount: links `digest` from `from` into `to` if `from` has it.
    pub async fn mount_blob(
        self: &Arc<Self>,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if !self.has_blob(from, digest) || !self.has_content(digest).await {
            return Ok(false);
        }
        match self.link_blob(to, digest).await {
            Ok(()) => Ok(true),
            // Collected since the check: the client uploads it instead.
            Err(StoreError::BlobUnknown(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Links content that exists anywhere in the store into `repo` (automatic mount).
    pub async fn mount_existing(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        if !self.has_content(digest).await {
            return Ok(false);
        }
        self.link_blob(repo, digest).await?;
        Ok(true)
    }

    /// Removes the blob from `repo`. The content stays until `gc` finds it unreferenced.
    pub async fn delete_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.locked(&repo.clone(), move |store| async move {
            let linked = store
                .with_repo(&repo, |r| r.blobs.contains(&digest))?
                .unwrap_or(false);
            if !linked {
                return Err(StoreError::BlobUnknown(digest));
            }
            let link = store.layout.blob_link(&repo, &digest);
            tokio::task::spawn_blocking(move || {
                remove_if_exists(&link)?;
                fsync_dir(link.parent().unwrap_or(Path::new(".")))
            })
            .await
            .map_err(StoreError::join)??;
            store.update_repo(&repo, |r| {
                r.blobs.remove(&digest);
            });
            Ok(())
        })
        .await
    }
}

/// A blob being written from a stream the store does not own (a pull-through fill): bytes are
/// appended and hashed as they arrive; other readers may open [`Ingest::path`] and read what has
/// been written so far. Nothing becomes visible under `blobs/` until [`Ingest::commit`] verifies
/// the digest; dropping an unfinished ingest removes its temp file. The content is fsynced before it
/// becomes visible; the link into the repository is a cache's ([`Durability::Cache`]).
#[derive(Debug)]
pub struct Ingest {
    path: PathBuf,
    /// `None` until the first chunk (or after commit).
    file: Option<tokio::fs::File>,
    hasher: Option<Hasher>,
    digest: Digest,
    written: u64,
}

impl Ingest {
    /// The temp file, for readers that follow the fill.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Err(StoreError::Task("write after commit".into()));
        };
        match self.file.as_mut() {
            Some(file) => {
                file.write_all(chunk)
                    .await
                    .map_err(StoreError::io(&self.path))?;
                // Flush so that readers following the file see the bytes at once.
                file.flush().await.map_err(StoreError::io(&self.path))?;
            }
            None => {
                // Create and write in one trip: most cached blobs are a single chunk.
                let (path, bytes) = (self.path.clone(), Bytes::copy_from_slice(chunk));
                let file = tokio::task::spawn_blocking(move || {
                    let mut f = std::fs::File::create(&path)?;
                    std::io::Write::write_all(&mut f, &bytes)?;
                    Ok::<_, std::io::Error>(f)
                })
                .await
                .map_err(StoreError::join)?
                .map_err(StoreError::io(&self.path))?;
                self.file = Some(tokio::fs::File::from_std(file));
            }
        }
        hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Verifies the digest; then, in one trip to the blocking pool, fsyncs the file, moves it
    /// under `blobs/` and links it into `repo` (names as [`Durability::Cache`]).
    pub async fn commit(self, store: &Arc<Store>, repo: &RepoName) -> Result<u64, StoreError> {
        self.commit_with(None, store, repo).await
    }

    /// [`Ingest::commit`] of a blob whose every byte is `whole` (nothing written before): the
    /// file is created, written, fsynced, placed and linked in a single trip to the blocking
    /// pool, not two (most cached blobs arrive in one chunk).
    pub async fn commit_whole(
        mut self,
        whole: Bytes,
        store: &Arc<Store>,
        repo: &RepoName,
    ) -> Result<u64, StoreError> {
        if self.file.is_some() {
            self.write(&whole).await?;
            return self.commit(store, repo).await;
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&whole);
        }
        self.written = whole.len() as u64;
        self.commit_with(Some(whole), store, repo).await
    }

    async fn commit_with(
        mut self,
        whole: Option<Bytes>,
        store: &Arc<Store>,
        repo: &RepoName,
    ) -> Result<u64, StoreError> {
        let Some(hasher) = self.hasher.take() else {
            return Err(StoreError::Task("commit twice".into()));
        };
        let actual = hasher.finish();
        if actual != self.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let file = match self.file.take() {
            Some(f) => Some(f.into_std().await),
            None => None,
        };
        // From here the TempFile guard owns the temp path.
        let tmp = TempFile::new(std::mem::take(&mut self.path));
        let dest = store.layout.blob(&self.digest);
        let link = store.layout.blob_link(repo, &self.digest);
        // A small blob that arrived whole is served from memory from the start: the request
        // waiting for this fill, and the next ones, need not read back what was just written.
        // Copied, so that the cache holds no larger buffer the bytes may be a slice of.
        let small = whole
            .as_ref()
            .filter(|b| b.len() as u64 <= SMALL_BLOB)
            .map(|b| Bytes::copy_from_slice(b));
        let written = self.written;
        let (added, len) = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                // Nothing was written yet (all of it is in `whole`, or an empty blob): create
                // the file now.
                None => {
                    let mut f =
                        std::fs::File::create(tmp.path()).map_err(StoreError::io(tmp.path()))?;
                    if let Some(bytes) = &whole {
                        std::io::Write::write_all(&mut f, bytes)
                            .map_err(StoreError::io(tmp.path()))?;
                    }
                    f
                }
            };
            file.sync_all().map_err(StoreError::io(tmp.path()))?;
            drop(file);
            let (added, len) = place_blob(tmp, &dest, Durability::Cache, Some(written))?;
            if added {
                // Written here rather than under the repository's lock; the lock below checks
                // that the content is still there before the index names it.
                create_link(&link)?;
            }
            Ok::<_, StoreError>((added, len))
        })
        .await
        .map_err(StoreError::join)??;
        if added {
            store.count_blob(len, true);
            let (repo, digest) = (repo.clone(), self.digest.clone());
            store
                .locked(&repo.clone(), move |store| async move {
                    // An online collection that started while this commit was stalled (its ctime
                    // grace is 2 s) may have taken the content; never index what is gone. The
                    // chmod marks it used for collections still to come. One metadata call, so
                    // it runs here rather than through the blocking pool.
                    if let Err(e) = claim_content(&store.layout.blob(&digest), &digest) {
                        let _ = std::fs::remove_file(store.layout.blob_link(&repo, &digest));
                        return Err(e);
                    }
                    store.update_repo(&repo, |r| {
                        r.blobs.insert(digest);
                    });
                    Ok(())
                })
                .await?;
        } else {
            // Content that was there already may be an orphan a collection is about to take:
            // mark and link it under the lock.
            store.link_cached_blob(repo, &self.digest).await?;
        }
        if let Some(bytes) = &small {
            store.small.insert(&self.digest, bytes);
        }
        Ok(self.written)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
