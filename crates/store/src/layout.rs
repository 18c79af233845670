//! Where everything lives on disk. The only module that builds paths.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ferry_oci::{Algorithm, Digest, RepoName, Tag};

use crate::{Durability, StoreError};

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn tmp_file(&self) -> PathBuf {
        self.tmp().join(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    pub fn repo(&self, repo: &RepoName) -> PathBuf {
        self.repos().join(repo.as_str())
    }

    pub fn blob_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn manifest_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_manifests")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.repo(repo).join("_tags").join(tag.as_str())
    }

    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads().join(id)
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn create_dirs(&self) -> Result<(), StoreError> {
        for d in [self.blobs(), self.tmp(), self.repos(), self.uploads()] {
            fs::create_dir_all(&d).map_err(StoreError::io(&d))?;
        }
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = self.blobs().join(alg.as_str());
            fs::create_dir_all(&d).map_err(StoreError::io(&d))?;
        }
        Ok(())
    }

    /// Takes the data directory's exclusive lock (released when the file is closed, also by a crash).
    pub fn lock(&self) -> Result<fs::File, StoreError> {
        let p = self.root.join("ferry.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(StoreError::io(&p))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(self.root.clone())),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::io(&p)(e)),
        }
    }

    /// Refuses a case-folding filesystem: tag files `v1` and `V1` would be one file.
    pub fn check_case_sensitive(&self) -> Result<(), StoreError> {
        let probe = self.tmp().join("CaseProbe");
        std::fs::write(&probe, b"").map_err(StoreError::io(&probe))?;
        let folded = self.tmp().join("caseprobe").exists();
        let _ = std::fs::remove_file(&probe);
        if folded {
            return Err(StoreError::CaseInsensitive(self.root.clone()));
        }
        Ok(())
    }

    pub fn wipe_tmp(&self) -> Result<(), StoreError> {
        let t = self.tmp();
        match fs::remove_dir_all(&t) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&t)(e)),
        }
        fs::create_dir_all(&t).map_err(StoreError::io(&t))
    }
}

/// Makes a rename or create in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io(dir))
}

/// Writes `bytes` to `path` atomically: temp file in `tmp`, fsync, rename, fsync dir.
pub(crate) fn write_atomic(layout: &Layout, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_replacing(layout, path, bytes, Durability::Full)
}

/// Writes content to `path` (under `blobs/`): the bytes are fsynced before the rename whatever the
/// durability, so no power loss leaves a file whose bytes do not match its name; with
/// [`Durability::Full`] the rename is fsynced too.
pub(crate) fn write_content(
    layout: &Layout,
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), StoreError> {
    write_file(layout, path, bytes, true, durability == Durability::Full)
}

/// Writes `bytes` to `path` by a rename from `tmp`, so readers see the old or the new file; with
/// [`Durability::Full`] the file and the rename are fsynced first.
pub(crate) fn write_replacing(
    layout: &Layout,
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), StoreError> {
    let full = durability == Durability::Full;
    write_file(layout, path, bytes, full, full)
}

fn write_file(
    layout: &Layout,
    path: &Path,
    bytes: &[u8],
    sync_file: bool,
    sync_dir: bool,
) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(layout.root());
    let tmp = layout.tmp_file();
    let res = (|| {
        let mut f = fs::File::create(&tmp).map_err(StoreError::io(&tmp))?;
        std::io::Write::write_all(&mut f, bytes).map_err(StoreError::io(&tmp))?;
        if sync_file {
            f.sync_all().map_err(StoreError::io(&tmp))?;
        }
        in_dir(path, || fs::rename(&tmp, path)).map_err(StoreError::io(path))?;
        if sync_dir {
            fsync_dir(parent)?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Marks content as just used: changing its mode to itself sets its ctime, which an online
/// collection running beside writers reads as "keep" (see `collect_garbage`).
pub(crate) fn mark_used(path: &Path) -> std::io::Result<()> {
    let perms = fs::metadata(path)?.permissions();
    fs::set_permissions(path, perms)
}

/// [`mark_used`] for content a name is about to point at: `BlobUnknown` if it is gone (collected
/// meanwhile). Only a missing file matters; a file we may not chmod (another owner) is still there.
pub(crate) fn claim_content(content: &Path, digest: &Digest) -> Result<(), StoreError> {
    match mark_used(content) {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::BlobUnknown(digest.clone())),
        _ => Ok(()),
    }
}

/// Creates the empty file that makes a blob part of a repository, and its directory.
pub(crate) fn create_link(link: &Path) -> Result<(), StoreError> {
    in_dir(link, || fs::File::create(link).map(drop)).map_err(StoreError::io(link))
}

/// Runs `op`, which creates `path`; if its directory is missing, makes it and runs `op` again.
/// Directories nearly always exist already: trying first saves a `mkdir` and a `stat` per write.
pub(crate) fn in_dir<T>(
    path: &Path,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    match op() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            op()
        }
        r => r,
    }
}

/// Removes a file; absent is fine. Returns whether it existed.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path)(e)),
    }
}
