//! Resumable upload sessions: `uploads/<id>/data` grows chunk by chunk; a session survives a
//! restart (its hash state is rebuilt from the data on next use) and only a verified upload is ever
//! placed under `blobs/`.
//!
//! Every operation on a session runs as its own task holding the session's lock, so a client that
//! disconnects mid-chunk cannot leave the data, the offset and the hash out of step. Finishing or
//! cancelling marks the session closed under that lock before anything else, and finishing first
//! detaches the data file from the session: no other request can append to bytes being verified.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_oci::{Algorithm, Digest, Hasher, RepoName};
use futures_util::Stream;
use tokio::io::AsyncReadExt;

use crate::blobs::{TempFile, pump};
use crate::layout::Layout;
use crate::{Store, StoreError};

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// Session id.
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

#[derive(Debug)]
struct Session {
    repo: RepoName,
    offset: u64,
    /// SHA-256 of `data[..offset]`; `None` after a restart until rebuilt.
    hasher: Option<Hasher>,
    /// Finished or cancelled: every later request gets "unknown".
    closed: bool,
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

/// A live session and who opened it.
#[derive(Debug)]
struct Live {
    session: SessionRef,
    /// The client that started it (`None` for sessions loaded after a restart).
    client: Option<Arc<str>>,
    started: Instant,
}

/// Live sessions. The outer lock is held only to look a session up.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Live>>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<SessionRef> {
        self.map().get(id).map(|l| l.session.clone())
    }

    fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Sessions that never received a byte and were started more than `ttl` ago: abandoned, since
    /// every client sends its first chunk right after starting.
    fn empty_older_than(&self, ttl: Duration) -> Vec<String> {
        self.map()
            .iter()
            .filter(|(_, l)| {
                l.started.elapsed() > ttl
                    && l.session
                        .try_lock()
                        .is_ok_and(|s| s.offset == 0 && !s.closed)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Only ids ferry issues: lower-case hyphenated UUIDs. Anything else can name no session, which
/// also keeps a case-folding spelling of an id from reaching the same directory.
fn canonical(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

fn unknown(id: &str) -> StoreError {
    StoreError::UploadUnknown(id.to_owned())
}

/// Whether the session in `dir` has not been touched within `ttl`, or is still empty after
/// `empty_ttl`.
fn expired(dir: &Path, ttl: Duration, empty_ttl: Duration) -> bool {
    let Ok(meta) = std::fs::metadata(dir.join("data")) else {
        return true;
    };
    let idle = meta
        .modified()
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
        .unwrap_or(Duration::MAX);
    idle >= ttl || (meta.len() == 0 && idle >= empty_ttl)
}

/// Session directories that have [`expired`].
fn expired_on_disk(layout: &Layout, ttl: Duration, empty_ttl: Duration) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(layout.uploads()) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| expired(&e.path(), ttl, empty_ttl))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Removes expired sessions at open, before any request can hold one.
pub(crate) fn expire_on_disk(
    layout: &Layout,
    ttl: Duration,
    empty_ttl: Duration,
) -> Result<(), StoreError> {
    for id in expired_on_disk(layout, ttl, empty_ttl) {
        tracing::info!(upload = %id, "removing expired upload session");
        let _ = std::fs::remove_dir_all(layout.upload_dir(&id));
    }
    Ok(())
}

/// Hashes the first `limit` bytes of a file (all of it when `None`) with `algorithm`.
async fn hash_file(
    path: &Path,
    algorithm: Algorithm,
    limit: Option<u64>,
) -> Result<Hasher, StoreError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(StoreError::io(path))?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f
            .read(&mut buf[..want])
            .await
            .map_err(StoreError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h)
}

/// Appends the body to the file and the hasher; returns the bytes appended.
async fn append<S, E>(
    path: &Path,
    hasher: &mut Hasher,
    declared_len: Option<u64>,
    body: S,
) -> Result<u64, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<std::io::Error>,
{
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(StoreError::io(path))?;
    let n = pump(body, &mut f, path, hasher, declared_len).await?;
    if let Some(d) = declared_len
        && d != n
    {
        return Err(StoreError::SizeMismatch {
            expected: d,
            actual: n,
        });
    }
    Ok(n)
}

impl Store {
    /// Starts an upload session in `repo` for no client in particular (tests, tools).
    pub async fn start_upload(
        self: &Arc<Self>,
        repo: &RepoName,
    ) -> Result<UploadStatus, StoreError> {
        self.start_upload_for(repo, None).await
    }

    /// Starts an upload session in `repo` for `client` (an address), which may hold at most
    /// `max_uploads_per_client` sessions; at the global cap, sessions that never received a byte
    /// within `empty_upload_ttl` make room.
    pub async fn start_upload_for(
        self: &Arc<Self>,
        repo: &RepoName,
        client: Option<&str>,
    ) -> Result<UploadStatus, StoreError> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            repo: repo.clone(),
            offset: 0,
            hasher: Some(Algorithm::Sha256.hasher()),
            closed: false,
        }));
        // Held until the session's files exist: the sweep and the reclaiming of abandoned
        // sessions pass over a session they cannot lock, and would otherwise take one whose
        // directory is made but whose `data` file is not yet.
        let creating = session
            .clone()
            .try_lock_owned()
            .map_err(|_| StoreError::Task("a new upload session was locked".into()))?;
        let client: Option<Arc<str>> = client.map(Arc::from);
        if self.uploads.len() >= self.options.max_uploads {
            self.drop_abandoned().await;
        }
        // Checked and reserved under one lock, so concurrent starts cannot overshoot a cap.
        {
            let mut live = self.uploads.map();
            if let Some(c) = &client {
                let mine = live
                    .values()
                    .filter(|l| l.client.as_ref() == Some(c))
                    .count();
                if mine >= self.options.max_uploads_per_client {
                    return Err(StoreError::TooManyUploadsFromClient(mine));
                }
            }
            if live.len() >= self.options.max_uploads {
                return Err(StoreError::TooManyUploads(live.len()));
            }
            live.insert(
                id.clone(),
                Live {
                    session,
                    client,
                    started: Instant::now(),
                },
            );
        }
        // The directory and both files in one trip to the blocking pool.
        let dir = self.layout.upload_dir(&id);
        let owner = repo.as_str().to_owned();
        let created = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
            let repo_file = dir.join("repo");
            std::fs::write(&repo_file, owner).map_err(StoreError::io(&repo_file))?;
            let data = dir.join("data");
            std::fs::File::create(&data).map_err(StoreError::io(&data))?;
            Ok(())
        })
        .await
        .map_err(StoreError::join)
        .and_then(|r| r);
        if let Err(e) = created {
            self.uploads.remove(&id);
            let _ = tokio::fs::remove_dir_all(self.layout.upload_dir(&id)).await;
            return Err(e);
        }
        drop(creating);
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Closes and removes sessions that never received a byte within `empty_upload_ttl`.
    async fn drop_abandoned(&self) -> usize {
        let ids = self.uploads.empty_older_than(self.options.empty_upload_ttl);
        let mut removed = 0;
        for id in ids {
            let Some(s) = self.uploads.get(&id) else {
                continue;
            };
            let Ok(mut s) = s.try_lock_owned() else {
                continue;
            };
            if s.offset != 0 || s.closed {
                continue;
            }
            s.closed = true;
            self.uploads.remove(&id);
            let _ = tokio::fs::remove_dir_all(self.layout.upload_dir(&id)).await;
            tracing::info!(upload = %id, "removed an upload session that never received a byte");
            removed += 1;
        }
        removed
    }

    /// Finds a session, loading it from disk if the process restarted since it began.
    async fn session(&self, id: &str) -> Result<SessionRef, StoreError> {
        if !canonical(id) {
            return Err(unknown(id));
        }
        if let Some(s) = self.uploads.get(id) {
            return Ok(s);
        }
        let dir = self.layout.upload_dir(id);
        let owner = tokio::fs::read_to_string(dir.join("repo"))
            .await
            .map_err(|_| unknown(id))?;
        let owner = RepoName::new(owner.trim()).map_err(|_| unknown(id))?;
        let len = tokio::fs::metadata(dir.join("data"))
            .await
            .map_err(|_| unknown(id))?
            .len();
        let s = Arc::new(tokio::sync::Mutex::new(Session {
            repo: owner,
            offset: len,
            hasher: None,
            closed: false,
        }));
        Ok(self
            .uploads
            .map()
            .entry(id.to_owned())
            .or_insert(Live {
                session: s,
                client: None,
                started: Instant::now(),
            })
            .session
            .clone())
    }

    /// Current state of a session.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadStatus, StoreError> {
        let s = self.session(id).await?;
        let s = s.lock().await;
        if s.closed || &s.repo != repo {
            return Err(unknown(id));
        }
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: s.offset,
        })
    }

    /// Appends a chunk. `start` (from Content-Range) must equal the current offset; `declared_len`
    /// (Content-Length) is checked when given. A chunk is applied whole or not at all.
    pub async fn append_upload<S, E>(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<UploadStatus, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Into<std::io::Error> + Send + 'static,
    {
        let session = self.session(id).await?;
        let (store, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut s = session.lock_owned().await;
            if s.closed || s.repo != repo {
                return Err(unknown(&id));
            }
            if let Some(start) = start
                && start != s.offset
            {
                return Err(StoreError::OutOfOrder { offset: s.offset, got: start });
            }
            let path = store.layout.upload_dir(&id).join("data");
            if s.hasher.is_none() {
                let rebuilt = match hash_file(&path, Algorithm::Sha256, Some(s.offset)).await {
                    Ok(h) => h,
                    Err(_) if !path.exists() => return Err(unknown(&id)),
                    Err(e) => return Err(e),
                };
                s.hasher = Some(rebuilt);
            }
            let before = (s.offset, s.hasher.clone());
            let Some(hasher) = s.hasher.as_mut() else {
                return Err(StoreError::Task("upload hash state missing".into()));
            };
            match append(&path, hasher, declared_len, body).await {
                Ok(n) => {
                    s.offset += n;
                    Ok(UploadStatus { id, offset: s.offset })
                }
                Err(e) => {
                    // Undo the partial chunk so that offset and hash stay those of the data; if
                    // that is impossible, the session cannot be trusted any more.
                    let undone = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(before.0));
                    match undone {
                        Ok(()) => (s.offset, s.hasher) = before,
                        Err(undo) => {
                            tracing::error!(upload = %id, error = %undo, "cannot roll back a failed chunk; closing the session");
                            s.closed = true;
                            store.uploads.remove(&id);
                            let _ = std::fs::remove_dir_all(store.layout.upload_dir(&id));
                        }
                    }
                    if matches!(e, StoreError::Io { .. }) && !path.exists() {
                        return Err(unknown(&id));
                    }
                    Err(e)
                }
            }
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Completes an upload: appends an optional last chunk, then verifies `digest`, places the data
    /// under `blobs/` and links it into `repo`. An out-of-order last chunk (416) leaves the session
    /// open; any later failure (digest mismatch included) removes it.
    pub async fn finish_upload<S, E>(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: Into<std::io::Error> + Send + 'static,
    {
        self.append_upload(repo, id, start, declared_len, body)
            .await?;
        let session = self.session(id).await?;
        let (store, repo, id, digest) = (self.clone(), repo.clone(), id.to_owned(), digest.clone());
        tokio::spawn(async move {
            let mut s = session.lock_owned().await;
            if s.closed || s.repo != repo {
                return Err(unknown(&id));
            }
            s.closed = true;
            // Detach the data from the session before looking at it: from here on no request can
            // reach these bytes. (Blocking calls, in the pool: a runtime thread never waits on
            // the disk.)
            let dir = store.layout.upload_dir(&id);
            let detached = TempFile::new(store.layout.tmp_file());
            let to = detached.path().to_owned();
            let moved = tokio::task::spawn_blocking(move || {
                let moved = std::fs::rename(dir.join("data"), &to);
                let _ = std::fs::remove_dir_all(&dir);
                moved.and_then(|()| std::fs::metadata(&to).map(|m| m.len()))
            })
            .await
            .map_err(StoreError::join)?;
            store.uploads.remove(&id);
            let len = moved.map_err(|_| unknown(&id))?;
            if len != s.offset {
                return Err(StoreError::Task(format!(
                    "upload {id} holds {len} bytes, expected {}",
                    s.offset
                )));
            }
            let actual = match (digest.algorithm(), s.hasher.take()) {
                (Algorithm::Sha256, Some(h)) => h.finish(),
                (alg, _) => hash_file(detached.path(), alg, None).await?.finish(),
            };
            if actual != digest {
                return Err(StoreError::DigestMismatch {
                    expected: digest,
                    actual,
                });
            }
            store.sync_and_commit_file(detached, &digest).await?;
            store.link_committed(&repo, &digest).await?;
            Ok(len)
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Cancels a session and deletes its data.
    pub async fn cancel_upload(
        self: &Arc<Self>,
        repo: &RepoName,
        id: &str,
    ) -> Result<(), StoreError> {
        let session = self.session(id).await?;
        let (store, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut s = session.lock_owned().await;
            if s.closed || s.repo != repo {
                return Err(unknown(&id));
            }
            s.closed = true;
            store.uploads.remove(&id);
            let dir = store.layout.upload_dir(&id);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io(&dir)(e)),
            }
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Removes upload sessions idle for longer than the TTL and temp files older than a day.
    /// `serve` runs this periodically; sessions in use at that moment are left alone.
    pub async fn sweep(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut removed = 0;
        for id in expired_on_disk(
            &self.layout,
            self.options.upload_ttl,
            self.options.empty_upload_ttl,
        ) {
            if let Some(s) = self.uploads.get(&id) {
                let Ok(mut s) = s.try_lock_owned() else {
                    continue;
                };
                // A chunk may have landed between the scan and the lock.
                if !expired(
                    &self.layout.upload_dir(&id),
                    self.options.upload_ttl,
                    self.options.empty_upload_ttl,
                ) {
                    continue;
                }
                s.closed = true;
                self.uploads.remove(&id);
            }
            let _ = tokio::fs::remove_dir_all(self.layout.upload_dir(&id)).await;
            tracing::info!(upload = %id, "removed expired upload session");
            removed += 1;
        }
        removed += self.drop_abandoned().await;
        let day = Duration::from_secs(24 * 3600);
        if let Ok(rd) = std::fs::read_dir(self.layout.tmp()) {
            let now = SystemTime::now();
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > day);
                if old {
                    let _ = std::fs::remove_file(e.path());
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
