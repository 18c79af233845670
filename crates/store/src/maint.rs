//! Offline maintenance: `fsck` (verify every blob hashes to its name) and `gc` (remove blobs that no
//! manifest references).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_oci::{Digest, Manifest, RepoName};
use serde::Serialize;

use crate::index::{Repo, Scan};
use crate::layout::{Layout, remove_if_exists};
use crate::{Changing, Store, StoreError};

/// What `fsck` found.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// Blob files hashed.
    pub blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Files whose bytes do not hash to their name (moved to `quarantine/` when asked).
    pub corrupt: Vec<CorruptBlob>,
    /// Files under `blobs/` whose name is not a digest.
    pub stray: Vec<PathBuf>,
    /// Manifests linked in a repository whose content is missing.
    pub missing: Vec<String>,
    /// Links and tags that point at nothing (skipped when their repository is loaded).
    pub dangling: Vec<String>,
    /// Whether corrupt files were quarantined.
    pub quarantined: bool,
    /// Dangling links and tags removed ([`Store::drop_dangling_names`]).
    pub dropped: Vec<PathBuf>,
}

/// One corrupt blob.
#[derive(Debug, Serialize)]
pub struct CorruptBlob {
    /// The name it is stored under.
    pub expected: Digest,
    /// What its bytes hash to.
    pub actual: Digest,
    /// Where it was (or is).
    pub path: PathBuf,
}

impl FsckReport {
    /// Whether the store is consistent.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.stray.is_empty()
            && self.missing.is_empty()
            && self.dangling.len() == self.dropped.len()
    }
}

/// What `gc` did (or would do with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Blobs still referenced.
    pub kept: u64,
    /// Unreferenced blobs removed (or that would be).
    pub removed: u64,
    /// Bytes freed (or that would be).
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they were written or used moments before (online
    /// collection only); a later collection takes them.
    pub deferred: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The removed digests.
    pub digests: Vec<Digest>,
}

/// What a scan of `blobs/` found.
struct BlobScan {
    /// Every `(digest, path)` whose name is a digest, sorted.
    found: Vec<(Digest, PathBuf)>,
    /// Files whose names are not digests.
    stray: Vec<PathBuf>,
}

fn blob_files(layout: &Layout) -> Result<BlobScan, StoreError> {
    let mut found = Vec::new();
    let mut stray = Vec::new();
    let root = layout.blobs();
    for alg in fs::read_dir(&root)
        .map_err(StoreError::io(&root))?
        .flatten()
    {
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        let Ok(fans) = fs::read_dir(alg.path()) else {
            stray.push(alg.path());
            continue;
        };
        for fan in fans.flatten() {
            let Ok(files) = fs::read_dir(fan.path()) else {
                stray.push(fan.path());
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                match format!("{alg_name}:{name}").parse::<Digest>() {
                    Ok(d) if layout.blob(&d) == f.path() => found.push((d, f.path())),
                    _ => stray.push(f.path()),
                }
            }
        }
    }
    found.sort();
    Ok(BlobScan { found, stray })
}

/// Blob files and their total size (for the monitoring counters): a streaming walk, one `statx`
/// per file through its directory and nothing kept, so counting a large store costs no memory.
pub(crate) fn count_blobs(layout: &Layout) -> (u64, u64) {
    let (mut count, mut bytes) = (0u64, 0u64);
    let Ok(algs) = fs::read_dir(layout.blobs()) else {
        return (0, 0);
    };
    for alg in algs.flatten() {
        let Ok(fans) = fs::read_dir(alg.path()) else {
            continue;
        };
        for fan in fans.flatten() {
            let Ok(files) = fs::read_dir(fan.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Ok(m) = f.metadata()
                    && m.is_file()
                {
                    count += 1;
                    bytes += m.len();
                }
            }
        }
    }
    (count, bytes)
}

fn hash_file(path: &Path, d: &Digest) -> Result<(Digest, u64), StoreError> {
    let mut f = fs::File::open(path).map_err(StoreError::io(path))?;
    let mut h = d.algorithm().hasher();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(StoreError::io(path))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((h.finish(), n))
}

impl Store {
    /// Every blob digest in the store (a scan of `blobs/`; what a peer node announces it holds).
    pub async fn blob_digests(&self) -> Result<Vec<Digest>, StoreError> {
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || {
            blob_files(&layout).map(|s| s.found.into_iter().map(|(d, _)| d).collect())
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Hashes every blob file. With `quarantine`, corrupt files are moved to `quarantine/` so they
    /// can never be served (needs the exclusive lock the store was opened with).
    pub async fn fsck(&self, quarantine: bool) -> Result<FsckReport, StoreError> {
        let layout = self.layout.clone();
        let report = tokio::task::spawn_blocking(move || {
            let scan = Scan::all(&layout)?;
            let dangling = scan.problems.messages;
            let missing: Vec<String> = scan
                .repos
                .iter()
                .flat_map(|(repo, r)| {
                    r.manifests
                        .keys()
                        .filter(|d| !layout.blob(d).exists())
                        .map(move |d| format!("{repo}@{d}"))
                })
                .collect();
            let BlobScan {
                found: files,
                stray,
            } = blob_files(&layout)?;
            let mut report = FsckReport {
                stray,
                missing,
                dangling,
                quarantined: quarantine,
                ..FsckReport::default()
            };
            for (d, path) in files {
                let (actual, n) = hash_file(&path, &d)?;
                report.blobs_checked += 1;
                report.bytes_checked += n;
                if actual != d {
                    let mut path = path;
                    if quarantine {
                        let q = layout.quarantine();
                        fs::create_dir_all(&q).map_err(StoreError::io(&q))?;
                        let dest = q.join(format!("{}-{}", d.algorithm().as_str(), d.hex()));
                        fs::rename(&path, &dest).map_err(StoreError::io(&dest))?;
                        path = dest;
                    }
                    report.corrupt.push(CorruptBlob {
                        expected: d,
                        actual,
                        path,
                    });
                }
            }
            Ok::<_, StoreError>(report)
        })
        .await
        .map_err(StoreError::join)??;
        for c in &report.corrupt {
            self.small.remove(&c.expected);
        }
        Ok(report)
    }

    /// Removes the links and tags that point at nothing (see
    /// [`FsckReport::dangling`]); returns their paths. Names only: no content is touched. For a
    /// store opened with the directory to itself (the server stopped).
    pub async fn drop_dangling_names(&self) -> Result<Vec<PathBuf>, StoreError> {
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || {
            let names = Scan::all(&layout)?.problems.dangling_names;
            for path in &names {
                remove_if_exists(path)?;
                crate::layout::fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
            }
            Ok::<_, StoreError>(names)
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Removes every blob no stored manifest references (manifests count as referencing
    /// themselves, their config, layers and index children). Repository links go first, content
    /// second, so a crash in between never leaves a link to missing content.
    pub async fn gc(self: &Arc<Self>, dry_run: bool) -> Result<GcReport, StoreError> {
        let _one = self.gc_running.lock().await;
        self.collect_garbage(dry_run, None).await
    }

    /// [`Store::gc`] limited to blobs whose every repository link lies under one of `prefixes`
    /// (first path component): what a running mirror may evict, never a pushed image's blobs.
    /// It runs as its own task: a caller that stops waiting (a client gone from the admin API)
    /// cannot stop it between its checks and its removals.
    pub async fn gc_under(self: &Arc<Self>, prefixes: &[String]) -> Result<GcReport, StoreError> {
        let (store, prefixes) = (self.clone(), prefixes.to_vec());
        tokio::spawn(async move {
            let _one = store.gc_running.lock().await;
            let r = store.collect_garbage(false, Some(&prefixes)).await?;
            store
                .gc_deferred
                .store(r.deferred > 0, std::sync::atomic::Ordering::Relaxed);
            Ok(r)
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Whether the last online collection left recently used garbage for a later one.
    pub fn gc_deferred(&self) -> bool {
        self.gc_deferred.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn collect_garbage(
        self: &Arc<Self>,
        dry_run: bool,
        scope: Option<&[String]>,
    ) -> Result<GcReport, StoreError> {
        // Online (scoped) collection runs beside writers: a blob or manifest committed after the
        // index snapshot below is referenced by nothing in it yet. Commits hard-link the file, which
        // sets its ctime, so files whose ctime is not safely older than the snapshot are kept.
        let young_after = scope.map(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
                - 2
        });
        // Manifests stored from here on are kept, whatever the walk below finds.
        let journal = GcJournal::start(self);
        let layout = self.layout.clone();
        let scan = tokio::task::spawn_blocking(move || Scan::all(&layout))
            .await
            .map_err(StoreError::join)??;
        self.repo_count.store(
            scan.repos.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let in_scope = |repo: &RepoName| {
            scope.is_none_or(|p| {
                p.iter()
                    .any(|p| repo.components().next() == Some(p.as_str()))
            })
        };
        let manifests: Vec<Digest> = scan
            .repos
            .values()
            .flat_map(|r| r.manifests.keys())
            .collect();
        let protected: HashSet<Digest> = scan
            .repos
            .iter()
            .filter(|(repo, _)| !in_scope(repo))
            .flat_map(|(_, r)| r.blobs.iter())
            .collect();
        let layout = self.layout.clone();
        let mut report = tokio::task::spawn_blocking(move || {
            let mut marked: HashSet<Digest> = HashSet::new();
            for d in manifests {
                if let Ok(bytes) = fs::read(layout.blob(&d))
                    && let Ok(m) = Manifest::parse(bytes, None)
                {
                    for r in m.config.iter().chain(&m.layers).chain(&m.manifests) {
                        marked.insert(r.digest.clone());
                    }
                }
                marked.insert(d);
            }
            let files = blob_files(&layout)?.found;
            let mut report = GcReport {
                dry_run,
                ..GcReport::default()
            };
            for (d, path) in files {
                let young = young_after.is_some_and(|t| {
                    use std::os::unix::fs::MetadataExt;
                    fs::symlink_metadata(&path).map_or(true, |m| m.ctime() >= t)
                });
                if marked.contains(&d) || protected.contains(&d) {
                    report.kept += 1;
                } else if young {
                    report.deferred += 1;
                } else {
                    report.removed += 1;
                    report.bytes_freed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    report.digests.push(d);
                }
            }
            Ok::<_, StoreError>(report)
        })
        .await
        .map_err(StoreError::join)??;
        if dry_run || report.digests.is_empty() {
            return Ok(report);
        }
        // Online, removal holds every repository lock, so no link or manifest write interleaves;
        // what was written or used since the snapshot (a manifest now in the index, content whose
        // ctime moved) is kept.
        let _all = match scope {
            Some(_) => {
                let mut guards = Vec::with_capacity(self.stripes.len());
                for s in &self.stripes {
                    guards.push(s.clone().lock_owned().await);
                }
                Some(guards)
            }
            None => None,
        };
        let _changing = Changing::new(&self.generations, 0..self.stripes.len());
        if young_after.is_some() {
            let candidates = std::mem::take(&mut report.digests);
            let (layout, idx_manifests) = (self.layout.clone(), journal.take());
            let (kept, still) = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::MetadataExt;
                let mut kept = Vec::new();
                let mut still = Vec::new();
                for d in candidates {
                    let meta = fs::symlink_metadata(layout.blob(&d));
                    let young = meta
                        .as_ref()
                        .is_ok_and(|m| young_after.is_some_and(|t| m.ctime() >= t));
                    if young || idx_manifests.contains(&d) {
                        kept.push((young, meta.map_or(0, |m| m.len())));
                    } else {
                        still.push(d);
                    }
                }
                (kept, still)
            })
            .await
            .map_err(StoreError::join)?;
            let young = kept.iter().filter(|(y, _)| *y).count() as u64;
            report.deferred += young;
            report.kept += kept.len() as u64 - young;
            report.removed -= kept.len() as u64;
            report.bytes_freed = report
                .bytes_freed
                .saturating_sub(kept.iter().map(|(_, n)| n).sum());
            report.digests = still;
            if report.digests.is_empty() {
                return Ok(report);
            }
        }
        self.unlink_everywhere(&report.digests, &scan.repos).await?;
        let (layout, gone) = (self.layout.clone(), std::mem::take(&mut report.digests));
        let store = self.clone();
        report.digests = tokio::task::spawn_blocking(move || {
            for d in &gone {
                let path = layout.blob(d);
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                store.small.remove(d);
                if remove_if_exists(&path)? {
                    store.count_blob(len, false);
                }
            }
            Ok::<_, StoreError>(gone)
        })
        .await
        .map_err(StoreError::join)??;
        Ok(report)
    }

    /// Drops repository links to content that no longer exists (the repositories as walked at the
    /// start of the collection: a link made since is to content marked used, which was kept).
    async fn unlink_everywhere(
        &self,
        gone: &[Digest],
        repos: &std::collections::BTreeMap<RepoName, Repo>,
    ) -> Result<(), StoreError> {
        let gone: HashSet<Digest> = gone.iter().cloned().collect();
        let links: Vec<(RepoName, Digest)> = repos
            .iter()
            .flat_map(|(repo, r)| {
                r.blobs
                    .iter()
                    .filter(|d| gone.contains(d))
                    .map(move |d| (repo.clone(), d))
            })
            .collect();
        let layout = self.layout.clone();
        let l2 = links.clone();
        tokio::task::spawn_blocking(move || {
            for (repo, d) in &l2 {
                let link = layout.blob_link(repo, d);
                remove_if_exists(&link)?;
                crate::layout::fsync_dir(link.parent().unwrap_or(layout.root()))?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(StoreError::join)??;
        for (repo, d) in links {
            self.update_repo(&repo, |r| {
                r.blobs.remove(&d);
            });
        }
        Ok(())
    }

    /// Notes a stored manifest for a collection that is running (see [`GcJournal`]).
    pub(crate) fn journal_manifest(&self, digest: &Digest) {
        let mut j = self.gc_journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = j.as_mut() {
            set.insert(digest.clone());
        }
    }
}

/// The manifests stored while a collection runs: its walk of the repositories is a snapshot, and a
/// manifest stored after it must not be taken. Ended when dropped.
struct GcJournal<'a> {
    store: &'a Store,
}

impl<'a> GcJournal<'a> {
    fn start(store: &'a Store) -> GcJournal<'a> {
        *store.gc_journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashSet::new());
        GcJournal { store }
    }

    /// What was stored so far (the journal goes on recording).
    fn take(&self) -> HashSet<Digest> {
        let mut j = self
            .store
            .gc_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        j.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl Drop for GcJournal<'_> {
    fn drop(&mut self) {
        *self
            .store
            .gc_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}
