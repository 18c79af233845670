//! Blobs downloaded into files: hashed while written, resumed with `Range`, verified at the end.

use std::io::SeekFrom;
use std::path::Path;

use ferry_oci::{Digest, Hasher, RepoName};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::{ClientError, ErrorKind};
use crate::registry::{Registry, backoff};

/// What [`Registry::fetch_blob_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes of an earlier partial download that were kept (0 when it started from scratch).
    pub resumed_from: u64,
    /// Bytes received from the registry by this call (across its retries).
    pub downloaded: u64,
}

/// Writes to the file in large pieces: the body arrives in chunks of a few KiB, and each write
/// of a tokio file is a hop to the blocking pool.
const WRITE_BUFFER: usize = 1 << 20;
/// A body that brings nothing for this long has what it brought so far written out.
const FLUSH_WHEN_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The partial file being completed: its writer, what it holds and the hash of that.
struct Partial<'a> {
    path: &'a Path,
    out: BufWriter<tokio::fs::File>,
    have: u64,
    hasher: Hasher,
}

impl Partial<'_> {
    /// Forgets the content: the file is emptied, the hash restarted.
    async fn restart(&mut self) -> Result<(), ClientError> {
        let local = |e| ClientError::local("truncate", self.path, &e);
        self.out.flush().await.map_err(local)?;
        self.out.get_mut().set_len(0).await.map_err(local)?;
        self.out.seek(SeekFrom::Start(0)).await.map_err(local)?;
        self.have = 0;
        self.hasher = self.hasher.algorithm().hasher();
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::local("write", self.path, &e))?;
        self.have += bytes.len() as u64;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        self.out
            .flush()
            .await
            .map_err(|e| ClientError::local("write", self.path, &e))
    }

    fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }
}

impl Registry {
    /// Downloads the blob `digest` of `repo` into the file `partial`, continuing what an earlier
    /// call left there.
    ///
    /// An existing `partial` is hashed first and the `GET` asks for the rest (`Range: bytes=N-`);
    /// a registry that answers 200 instead of 206, or a partial longer than `size`, starts the
    /// file over. The body is hashed while it is written, never held whole in memory. A body cut
    /// off midway (reset, truncation, read timeout) is continued from what is on disk, up to the
    /// client's `attempts`; a failure that ends the call keeps the file for a later resume.
    ///
    /// At the end the size (when `size` is given) and the digest are checked: on a mismatch the
    /// file is deleted and the error is [`ErrorKind::Protocol`], so wrong bytes never survive.
    /// On success the whole blob is at `partial`, not synced (the caller syncs once for many
    /// files) and not renamed (the caller moves it to its final name).
    pub async fn fetch_blob_to(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: Option<u64>,
        partial: &Path,
    ) -> Result<Fetched, ClientError> {
        self.fetch_blob_reporting(repo, digest, size, partial, &|_| {})
            .await
    }

    /// [`Registry::fetch_blob_to`], calling `on_bytes` with the size of each piece of the body as
    /// it is written (for progress displays).
    pub async fn fetch_blob_reporting(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: Option<u64>,
        partial: &Path,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Fetched, ClientError> {
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(partial)
            .await
            .map_err(|e| ClientError::local("open", partial, &e))?;
        let mut hasher = digest.algorithm().hasher();
        let mut have = 0u64;
        let on_disk = file
            .metadata()
            .await
            .map_err(|e| ClientError::local("read", partial, &e))?
            .len();
        if on_disk > 0 && size.is_none_or(|s| on_disk <= s) {
            let mut buf = vec![0u8; WRITE_BUFFER];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| ClientError::local("read", partial, &e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        let mut p = Partial {
            path: partial,
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            have,
            hasher,
        };
        if on_disk > 0 && have == 0 {
            // Longer than the blob: not a prefix of it.
            p.restart().await?;
        }
        let mut resumed_from = p.have;
        let mut downloaded = 0u64;
        let attempts = self.options.attempts.max(1);
        let mut attempt = 0;
        loop {
            if size == Some(p.have) && p.have > 0 {
                if p.digest() == *digest {
                    break;
                }
                // A partial of the full length with other bytes: begin again.
                p.restart().await?;
                resumed_from = 0;
            }
            attempt += 1;
            let response = match self.get_blob(repo, digest, p.have).await {
                Ok(r) => r,
                // Nothing after the partial: it may be the whole blob (its size was not given).
                Err(e) if e.status == Some(416) && p.have > 0 => {
                    if p.digest() == *digest {
                        break;
                    }
                    p.restart().await?;
                    resumed_from = 0;
                    continue;
                }
                Err(e) => {
                    p.flush().await?;
                    return Err(e);
                }
            };
            if response.start != p.have {
                // The registry ignored the Range and sends the whole blob.
                p.restart().await?;
                resumed_from = 0;
            }
            let mut body = response.into_stream();
            let mut cut = None;
            loop {
                // What arrived is on disk whenever the body pauses, so a process killed while a
                // registry stalls resumes from there.
                let next = match tokio::time::timeout(FLUSH_WHEN_IDLE, body.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        p.flush().await?;
                        body.next().await
                    }
                };
                let Some(chunk) = next else { break };
                match chunk {
                    Ok(bytes) => {
                        if size.is_some_and(|s| p.have + bytes.len() as u64 > s) {
                            return Err(discard(
                                &mut p,
                                format!(
                                    "blob {digest} of {repo}: the registry sent more than its {} bytes",
                                    size.unwrap_or_default()
                                ),
                            )
                            .await);
                        }
                        p.write(&bytes).await?;
                        downloaded += bytes.len() as u64;
                        on_bytes(bytes.len() as u64);
                    }
                    Err(e) => {
                        cut = Some(e);
                        break;
                    }
                }
            }
            match cut {
                None => break,
                Some(e) if e.retryable() && attempt < attempts => {
                    p.flush().await?;
                    tracing::debug!(%digest, have = p.have, "blob body cut off; resuming: {e}");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Some(e) => {
                    p.flush().await?;
                    return Err(e);
                }
            }
        }
        p.flush().await?;
        if let Some(s) = size
            && p.have != s
        {
            let have = p.have;
            return Err(discard(
                &mut p,
                format!("blob {digest} of {repo}: got {have} bytes, expected {s}"),
            )
            .await);
        }
        let got = p.digest();
        if got != *digest {
            return Err(discard(
                &mut p,
                format!("blob {digest} of {repo}: the bytes received hash to {got}"),
            )
            .await);
        }
        Ok(Fetched {
            resumed_from,
            downloaded,
        })
    }
}

/// Deletes the partial file (its bytes are wrong) and returns the integrity error `message`.
async fn discard(p: &mut Partial<'_>, message: String) -> ClientError {
    if let Err(e) = tokio::fs::remove_file(p.path).await {
        return ClientError::local("remove the wrong bytes of", p.path, &e);
    }
    ClientError::new(ErrorKind::Protocol, message)
}
