//! Access statistics (which image was pulled when, how often) and the image inventory that
//! `ferry list`, `ferry prune` and the cache budget work from.
//!
//! Pulls are recorded in memory, sharded so concurrent pulls rarely meet on a lock, and written to
//! `access.json` in batches (`Store::flush_access`), not on every request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_oci::{Digest, Manifest, RepoName};
use serde::{Deserialize, Serialize};

use crate::layout::{Layout, write_atomic};
use crate::{Store, StoreError};

const SHARDS: usize = 16;

/// Pull statistics of one manifest in one repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Last pull, seconds since the Unix epoch.
    pub last: u64,
    /// Pulls counted.
    pub count: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    repository: String,
    digest: Digest,
    last: u64,
    count: u64,
}

#[derive(Debug)]
pub(crate) struct AccessLog {
    shards: Vec<Mutex<HashMap<(RepoName, Digest), Access>>>,
    journal: Mutex<PullJournal>,
}

/// The order of pulls since the cache budget's last round, for its replacement policy: a manifest's
/// [`pull_key`] per pull, 8 bytes each, at most `capacity` (later pulls are counted as dropped).
#[derive(Debug, Default)]
struct PullJournal {
    capacity: usize,
    keys: Vec<u64>,
    dropped: u64,
}

/// The key a pull of `digest` in `repository` has in [`Store::take_pulls`].
pub fn pull_key(repository: &str, digest: &Digest) -> u64 {
    use std::hash::{Hash, Hasher};
    // Unkeyed SipHash: the same in every run of this build, and only compared within one process.
    let mut h = std::hash::DefaultHasher::new();
    (repository, digest.as_str()).hash(&mut h);
    h.finish()
}

impl AccessLog {
    pub fn load(layout: &Layout) -> AccessLog {
        let log = AccessLog {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            journal: Mutex::default(),
        };
        let path = layout.root().join("access.json");
        let records: Vec<Record> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable access statistics");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        for r in records {
            if let Ok(repo) = RepoName::new(&r.repository) {
                log.shard(&repo, &r.digest).insert(
                    (repo, r.digest),
                    Access {
                        last: r.last,
                        count: r.count,
                    },
                );
            }
        }
        log
    }

    fn shard(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> std::sync::MutexGuard<'_, HashMap<(RepoName, Digest), Access>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (repo, digest).hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One image in the inventory: a manifest of a repository, under one tag (or none).
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    /// Repository (cached ones start with their upstream's name).
    pub repository: String,
    /// Tag, or `None` for a manifest no tag points at.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest plus everything it references that is stored (index children included).
    pub size: u64,
    /// When the manifest was stored, seconds since the Unix epoch.
    pub created: u64,
    /// Last pull, seconds since the Unix epoch.
    pub last_pulled: Option<u64>,
    /// Pulls counted.
    pub pull_count: u64,
}

/// A manifest's digest, media type and tags, as the index knows them.
type ManifestTags = (Digest, String, Vec<String>);

impl Store {
    /// Counts a pull of `digest` in `repo` (a manifest GET).
    pub fn record_pull(&self, repo: &RepoName, digest: &Digest) {
        let now = now_secs();
        {
            let mut shard = self.access.shard(repo, digest);
            let a = shard.entry((repo.clone(), digest.clone())).or_default();
            a.last = now;
            a.count += 1;
        }
        let mut journal = self
            .access
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if journal.capacity > 0 {
            if journal.keys.len() < journal.capacity {
                journal.keys.push(pull_key(repo.as_str(), digest));
            } else {
                journal.dropped += 1;
            }
        }
    }

    /// Starts keeping the order of pulls (at most `capacity` between two [`Store::take_pulls`]),
    /// for a replacement policy that needs every access, not only the last one.
    pub fn journal_pulls(&self, capacity: usize) {
        self.access
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity = capacity;
    }

    /// The pulls since the last call, oldest first, as [`pull_key`]s, and how many more there were
    /// than the journal could hold.
    pub fn take_pulls(&self) -> (Vec<u64>, u64) {
        let mut journal = self
            .access
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let keys = std::mem::take(&mut journal.keys);
        (keys, std::mem::take(&mut journal.dropped))
    }

    /// Pull statistics of a manifest.
    pub fn access(&self, repo: &RepoName, digest: &Digest) -> Option<Access> {
        self.access
            .shard(repo, digest)
            .get(&(repo.clone(), digest.clone()))
            .copied()
    }

    /// Writes the statistics of manifests still stored to `access.json`.
    pub async fn flush_access(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut records = Vec::new();
        {
            for shard in &self.access.shards {
                let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
                // Asked of the files when the repository is not loaded: one `stat` each.
                map.retain(|(repo, digest), _| {
                    self.read_index().get(repo).map_or_else(
                        || self.layout.manifest_link(repo, digest).is_file(),
                        |r| r.manifests.contains_key(digest),
                    )
                });
                records.extend(map.iter().map(|((repo, digest), a)| Record {
                    repository: repo.to_string(),
                    digest: digest.clone(),
                    last: a.last,
                    count: a.count,
                }));
            }
        }
        let bytes = serde_json::to_vec(&records).map_err(|e| StoreError::Task(e.to_string()))?;
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || {
            write_atomic(&layout, &layout.root().join("access.json"), &bytes)
        })
        .await
        .map_err(StoreError::join)?
    }

    /// Every image: each tag, and each manifest no tag and no stored index points at.
    pub async fn images(self: &Arc<Self>) -> Result<Vec<ImageInfo>, StoreError> {
        let layout = self.layout.clone();
        let scan = tokio::task::spawn_blocking(move || crate::index::Scan::all(&layout))
            .await
            .map_err(StoreError::join)??;
        self.repo_count.store(
            scan.repos.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let snapshot: Vec<(RepoName, Vec<ManifestTags>)> = {
            scan.repos
                .iter()
                .map(|(repo, r)| {
                    let ms = r
                        .manifests
                        .iter()
                        .map(|(d, e)| {
                            let tags = r.tags.pointing_at(&d);
                            (d, e.media_type.to_string(), tags)
                        })
                        .collect();
                    (repo.clone(), ms)
                })
                .collect()
        };
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (repo, manifests) in snapshot {
                let mut children: HashSet<Digest> = HashSet::new();
                let mut sizes: HashMap<Digest, (u64, Vec<Digest>)> = HashMap::new();
                for (d, mt, _) in &manifests {
                    let path = store.layout.blob(d);
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let own = bytes.len() as u64;
                    let Ok(m) = Manifest::parse_as(bytes, Some(mt), d.algorithm()) else {
                        continue;
                    };
                    let blobs: u64 = m
                        .blob_references()
                        .map(|b| {
                            std::fs::metadata(store.layout.blob(&b.digest))
                                .map(|x| x.len())
                                .unwrap_or(0)
                        })
                        .sum();
                    let kids: Vec<Digest> = m.manifests.iter().map(|c| c.digest.clone()).collect();
                    children.extend(kids.iter().cloned());
                    sizes.insert(d.clone(), (own + blobs, kids));
                }
                for (d, mt, tags) in manifests {
                    let Some((own, kids)) = sizes.get(&d) else {
                        continue;
                    };
                    if tags.is_empty() && children.contains(&d) {
                        continue;
                    }
                    let size = own
                        + kids
                            .iter()
                            .filter_map(|k| sizes.get(k))
                            .map(|(s, _)| s)
                            .sum::<u64>();
                    let created = std::fs::metadata(store.layout.manifest_link(&repo, &d))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |t| t.as_secs());
                    let access = store.access(&repo, &d).unwrap_or_default();
                    let base = ImageInfo {
                        repository: repo.to_string(),
                        tag: None,
                        digest: d.clone(),
                        media_type: mt.clone(),
                        size,
                        created,
                        last_pulled: (access.count > 0).then_some(access.last),
                        pull_count: access.count,
                    };
                    if tags.is_empty() {
                        out.push(base);
                    } else {
                        for t in tags {
                            out.push(ImageInfo {
                                tag: Some(t),
                                ..base.clone()
                            });
                        }
                    }
                }
            }
            out.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
            Ok(out)
        })
        .await
        .map_err(StoreError::join)?
    }
}
