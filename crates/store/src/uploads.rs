//! Resumable upload sessions: `uploads/<id>/data` grows chunk by chunk; the session survives a
//! restart (its hash state is rebuilt from the data on next use) and only a verified upload is ever
//! moved under `blobs/`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_oci::{Algorithm, Digest, Hasher, RepoName};
use futures_util::Stream;
use tokio::io::AsyncReadExt;

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
}

/// Live sessions. A session's async mutex serialises its chunks; the outer map lock is held only
/// to look a session up.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Session>>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes sessions whose data has not been touched within `ttl`.
pub(crate) fn expire(layout: &Layout, ttl: Duration) -> Result<(), StoreError> {
    let dir = layout.uploads();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(&dir)(e)),
    };
    let now = SystemTime::now();
    for e in rd.flatten() {
        let data = e.path().join("data");
        let fresh = std::fs::metadata(&data)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < ttl);
        if !fresh {
            tracing::info!(upload = ?e.file_name(), "removing expired upload session");
            let _ = std::fs::remove_dir_all(e.path());
        }
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

impl Store {
    /// Starts an upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.layout.upload_dir(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::io(&dir))?;
        let repo_file = dir.join("repo");
        tokio::fs::write(&repo_file, repo.as_str())
            .await
            .map_err(StoreError::io(&repo_file))?;
        let data = dir.join("data");
        tokio::fs::File::create(&data)
            .await
            .map_err(StoreError::io(&data))?;
        let session = Session {
            repo: repo.clone(),
            offset: 0,
            hasher: Some(Algorithm::Sha256.hasher()),
        };
        self.uploads
            .map()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(session)));
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Finds a session, loading it from disk if the process restarted since it began.
    async fn session(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Session>>, StoreError> {
        let unknown = || StoreError::UploadUnknown(id.to_owned());
        let found = self.uploads.map().get(id).cloned();
        let s = match found {
            Some(s) => s,
            None => {
                let dir = self.layout.upload_dir(id);
                let owner = tokio::fs::read_to_string(dir.join("repo"))
                    .await
                    .map_err(|_| unknown())?;
                let owner = RepoName::new(owner.trim()).map_err(|_| unknown())?;
                let len = tokio::fs::metadata(dir.join("data"))
                    .await
                    .map_err(|_| unknown())?
                    .len();
                let s = Arc::new(tokio::sync::Mutex::new(Session {
                    repo: owner,
                    offset: len,
                    hasher: None,
                }));
                self.uploads.map().entry(id.to_owned()).or_insert(s).clone()
            }
        };
        if &s.lock().await.repo != repo {
            return Err(unknown());
        }
        Ok(s)
    }

    /// Current state of a session.
    pub async fn upload_status(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<UploadStatus, StoreError> {
        let s = self.session(repo, id).await?;
        let offset = s.lock().await.offset;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset,
        })
    }

    /// Appends a chunk. `start` (from Content-Range) must equal the current offset; `declared_len`
    /// (Content-Length) is checked when given. A chunk is applied whole or not at all: on any error
    /// the data is truncated back to where it was.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<UploadStatus, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<std::io::Error>,
    {
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        if let Some(start) = start
            && start != s.offset
        {
            return Err(StoreError::OutOfOrder {
                offset: s.offset,
                got: start,
            });
        }
        let path = self.layout.upload_dir(id).join("data");
        if s.hasher.is_none() {
            s.hasher = Some(hash_file(&path, Algorithm::Sha256, Some(s.offset)).await?);
        }
        let before_hash = s.hasher.clone();
        let before = s.offset;
        let res = match s.hasher.as_mut() {
            Some(hasher) => append(&path, hasher, declared_len, body).await,
            None => Err(StoreError::Task("upload hash state missing".into())),
        };
        match res {
            Ok(n) => s.offset += n,
            Err(e) => {
                // Undo the partial chunk so that offset and hash stay those of the data.
                if let Ok(f) = tokio::fs::OpenOptions::new().write(true).open(&path).await {
                    let _ = f.set_len(before).await;
                }
                s.offset = before;
                s.hasher = before_hash;
                return Err(e);
            }
        }
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: s.offset,
        })
    }

    /// Completes an upload: appends an optional last chunk, verifies `digest`, moves the data under
    /// `blobs/` and links it into `repo`. On a digest mismatch the session and its data are removed.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<std::io::Error>,
    {
        self.append_upload(repo, id, start, declared_len, body)
            .await?;
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        let dir = self.layout.upload_dir(id);
        let path = dir.join("data");
        let actual = match (digest.algorithm(), s.hasher.take()) {
            (Algorithm::Sha256, Some(h)) => h.finish(),
            (alg, _) => hash_file(&path, alg, Some(s.offset)).await?.finish(),
        };
        let size = s.offset;
        self.uploads.map().remove(id);
        if &actual != digest {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(StoreError::io(&path))?;
        f.sync_all().await.map_err(StoreError::io(&path))?;
        drop(f);
        self.commit_file(path, digest).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.link_blob(repo, digest).await?;
        Ok(size)
    }

    /// Cancels a session and deletes its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), StoreError> {
        let s = self.session(repo, id).await?;
        let _guard = s.lock().await;
        self.uploads.map().remove(id);
        let dir = self.layout.upload_dir(id);
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(StoreError::io(&dir))
    }
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
    let n = crate::blobs::pump(body, &mut f, path, hasher, declared_len).await?;
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
