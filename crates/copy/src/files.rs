//! Blobs written to files: every byte hashed on its way in, kept under a partial name until it is
//! verified, then renamed into place. A partial left by an interrupted copy is continued, not
//! restarted: its bytes are hashed again and the rest is asked for with `Range`.
//!
//! Architecture invariant: a file under a blob's final name always holds exactly that blob.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_client::{ErrorKind, Registry};
use ferry_oci::{Descriptor, Digest, Hasher, RepoName};

use crate::error::CopyError;
use crate::progress::{Event, Progress};

/// Where partial blobs live, inside the destination directory (the same file system as the final
/// names, so a rename is atomic).
pub(crate) const PARTIAL_DIR: &str = ".ferry-partial";

/// Read and write buffer size: large enough that a syscall per buffer is negligible.
const BUFFER: usize = 1 << 20;

/// Reports bytes of one blob of one image.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub progress: Arc<dyn Progress>,
    pub image: Arc<str>,
}

impl Reporter {
    pub(crate) fn bytes(&self, digest: &Digest, bytes: u64) {
        self.progress.event(Event::BlobProgress {
            image: &self.image,
            digest,
            bytes,
        });
    }

    pub(crate) fn retrying(&self, what: &str, error: &str) {
        self.progress.event(Event::Retrying {
            image: &self.image,
            what,
            error,
        });
    }
}

/// The partial file of `digest` under the destination directory `root`.
pub(crate) fn partial_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join(PARTIAL_DIR)
        .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
}

/// Whether `path` holds a blob of `size` bytes (a file under a final name was verified when it
/// was renamed there).
pub(crate) async fn present(path: &Path, size: u64) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.is_file() && m.len() == size)
}

/// An exclusive lock on a partial file, held while it is written, so two processes copying into
/// one directory never write the same partial at once.
pub(crate) struct PartialLock {
    _file: std::fs::File,
}

pub(crate) async fn lock_partial(path: PathBuf) -> Result<PartialLock, CopyError> {
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CopyError::io(parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(&path)
            .map_err(|e| CopyError::io(&path, e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| CopyError::io(&path, e.into()))?;
        Ok(PartialLock { _file: file })
    })
    .await
    .expect("lock task panicked")
}

/// Moves a verified partial to its final name.
pub(crate) async fn commit(partial: &Path, target: &Path) -> Result<(), CopyError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| CopyError::io(parent, e))?;
    }
    tokio::fs::rename(partial, target)
        .await
        .map_err(|e| CopyError::io(target, e))
}

fn check(desc: &Descriptor, hasher: Hasher, len: u64, what: &str) -> Result<(), CopyError> {
    if len != desc.size {
        return Err(CopyError::Size {
            what: what.to_owned(),
            expected: desc.size,
            actual: len,
        });
    }
    let actual = hasher.finish();
    if actual != desc.digest {
        return Err(CopyError::Integrity {
            what: what.to_owned(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// Copies a blob from `open`'s reader to `partial`, hashing it; on a mismatch the partial is
/// removed.
pub(crate) async fn copy_verified(
    open: crate::source::BlobOpener,
    partial: PathBuf,
    desc: Descriptor,
    reporter: Reporter,
) -> Result<(), CopyError> {
    tokio::task::spawn_blocking(move || {
        let what = format!("blob {}", desc.digest);
        let result = (|| {
            let mut src = open()?;
            let mut dst =
                std::fs::File::create(&partial).map_err(|e| CopyError::io(&partial, e))?;
            let mut hasher = desc.digest.algorithm().hasher();
            let mut buf = vec![0u8; BUFFER];
            let mut len = 0u64;
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| CopyError::malformed(&what, e))?;
                if n == 0 {
                    break;
                }
                len += n as u64;
                if len > desc.size {
                    break;
                }
                hasher.update(&buf[..n]);
                dst.write_all(&buf[..n])
                    .map_err(|e| CopyError::io(&partial, e))?;
                reporter.bytes(&desc.digest, n as u64);
            }
            check(&desc, hasher, len, &what)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    })
    .await
    .expect("copy task panicked")
}

/// Downloads a blob from a registry into `partial`, continuing what an earlier attempt left there
/// (the client hashes the kept bytes, asks for the rest with `Range` and continues a body cut off
/// midway). A kept partial that does not verify is fetched once more whole: a crash can leave
/// garbage at the end of a file. Returns how many bytes of an earlier partial were kept.
pub(crate) async fn download(
    registry: &Registry,
    repo: &RepoName,
    desc: &Descriptor,
    partial: &Path,
    reporter: &Reporter,
) -> Result<u64, CopyError> {
    let what = format!("blob {} of {repo}", desc.digest);
    let kept = tokio::fs::metadata(partial).await.map_or(0, |m| m.len());
    let on_bytes = |n: u64| reporter.bytes(&desc.digest, n);
    let fetch =
        || registry.fetch_blob_reporting(repo, &desc.digest, Some(desc.size), partial, &on_bytes);
    match fetch().await {
        Ok(f) => Ok(f.resumed_from),
        Err(e) if kept > 0 && e.kind == ErrorKind::Protocol => {
            // The client deleted the wrong bytes; this fetch starts from nothing.
            reporter.retrying(&what, "the resumed blob did not verify; fetching it whole");
            fetch()
                .await
                .map(|f| f.resumed_from)
                .map_err(|e| CopyError::registry(what, e))
        }
        Err(e) => Err(CopyError::registry(what, e)),
    }
}

/// Writes small content (a manifest) under its final name: temp file, then rename.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CopyError> {
    let path = path.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || write_atomically_blocking(&path, &bytes))
        .await
        .expect("write task panicked")
}

pub(crate) fn write_atomically_blocking(path: &Path, bytes: &[u8]) -> Result<(), CopyError> {
    replace_file(path, bytes, Durability::AtTheEnd)
}

/// When a file written whole ([`replace_file`]) reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced before its rename, so after a crash the name holds the old bytes or the new ones:
    /// for writers that do not sync everything they wrote at the end.
    BeforeRename,
    /// With the copy's one sync pass over its destination at the end ([`sync_dir`]).
    AtTheEnd,
}

/// Gives `path` the content `bytes`, whole or not at all: a temporary file beside it, renamed over
/// it.
pub(crate) fn replace_file(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), CopyError> {
    let tmp = write_temporary(path, bytes, durability)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CopyError::io(path, e)
    })
}

/// Gives `path` the content `bytes` unless it exists: the file, once there, is never replaced
/// (a layout's `oci-layout` is the lock its writers take, so its inode must stay).
pub(crate) fn create_file_once(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), CopyError> {
    let tmp = write_temporary(path, bytes, durability)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(|e| CopyError::io(path, e)),
    }
}

/// A new file beside `path`, holding `bytes`, under a name of its own.
fn write_temporary(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<PathBuf, CopyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CopyError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        uuid_like()
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        if durability == Durability::BeforeRename {
            f.sync_data()?;
        }
        Ok(())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CopyError::io(&tmp, e));
    }
    Ok(tmp)
}

/// A name no other writer in this or another process picks at the same time.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// fsyncs `path`. One that is gone is no error: another writer into the same directory renamed
/// or removed its temporary file, and syncs the new name itself.
fn sync_path(path: &Path) -> Result<(), CopyError> {
    match std::fs::File::open(path).and_then(|f| f.sync_all()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| CopyError::io(path, e)),
    }
}

/// Makes everything under `dir` durable: every file and directory is fsynced (files already on
/// disk cost next to nothing). Unlike `syncfs`, this waits only for this destination's data, not
/// for whatever else is being written to the same file system.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), CopyError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            let d = dirs[i].clone();
            i += 1;
            let entries = match std::fs::read_dir(&d) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.map_err(|e| CopyError::io(&d, e))?,
            };
            for entry in entries {
                let entry = entry.map_err(|e| CopyError::io(&d, e))?;
                // Gone since it was listed: another writer's temporary file, renamed.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() && entry.file_name() != PARTIAL_DIR {
                    dirs.push(entry.path());
                } else if kind.is_file() {
                    files.push(entry.path());
                }
            }
        }
        // A few threads: the disk takes writes from several files at once.
        let chunk = files.len().div_ceil(8).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        for f in part {
                            sync_path(f)?;
                        }
                        Ok::<(), CopyError>(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("sync thread panicked"))
        })?;
        for d in dirs.iter().rev() {
            sync_path(d)?;
        }
        Ok(())
    })
    .await
    .expect("sync task panicked")
}

/// Puts the verified blob file `file` into a layer cache at `cached`: a hard link where the
/// cache is on the same file system, else a copy under a temporary name, renamed.
pub(crate) async fn add_to_cache(file: &Path, cached: &Path) -> Result<(), CopyError> {
    let (file, cached) = (file.to_owned(), cached.to_owned());
    tokio::task::spawn_blocking(move || {
        let dir = cached.parent().expect("cache blobs are in a directory");
        std::fs::create_dir_all(dir).map_err(|e| CopyError::io(dir, e))?;
        match std::fs::hard_link(&file, &cached) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => {
                let tmp = dir.join(format!(".{}.tmp", uuid_like()));
                std::fs::copy(&file, &tmp).map_err(|e| CopyError::io(&tmp, e))?;
                std::fs::rename(&tmp, &cached).map_err(|e| CopyError::io(&cached, e))
            }
        }
    })
    .await
    .expect("cache task panicked")
}
