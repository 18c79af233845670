//! The in-memory index: which blobs, manifests, tags and referrers each repository has, loaded
//! from the files one repository at a time; the files stay the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use ferry_oci::{Digest, Manifest, RepoName};

use crate::StoreError;
pub(crate) use crate::compact::ManifestEntry;
use crate::compact::{DigestSet, ManifestMap, TagMap};
use crate::layout::Layout;

/// The repositories loaded so far: a bounded cache of the files. A repository is read from disk the
/// first time it is asked for ([`load_repo`]) and dropped again, least recently used first, when the
/// loaded entries pass the budget; nothing walks the whole tree before the server answers.
#[derive(Debug)]
pub(crate) struct Index {
    pub repos: HashMap<RepoName, Repo>,
    /// Blobs, manifests and tags of the loaded repositories, as counted when each was loaded (later
    /// changes are not counted until the next eviction recounts).
    entries: usize,
    budget: usize,
    /// Advanced at each load; a lookup stamps the repository with it (for eviction).
    clock: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Repo {
    pub blobs: DigestSet,
    pub manifests: ManifestMap,
    pub tags: TagMap,
    /// subject digest → digests of manifests in this repo whose `subject` is it.
    pub referrers: HashMap<Digest, BTreeSet<Digest>>,
    used: AtomicU64,
}

impl Repo {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty() && self.tags.is_empty()
    }

    fn entries(&self) -> usize {
        self.blobs.len() + self.manifests.len() + self.tags.len()
    }

    pub fn insert_manifest(&mut self, digest: &Digest, entry: ManifestEntry) {
        if let Some(r) = &entry.referrer {
            self.referrers
                .entry(r.0.clone())
                .or_default()
                .insert(digest.clone());
        }
        self.manifests.insert(digest, entry);
    }

    pub fn remove_manifest(&mut self, digest: &Digest) -> bool {
        let Some(entry) = self.manifests.remove(digest) else {
            return false;
        };
        if let Some(r) = entry.referrer
            && let Some(set) = self.referrers.get_mut(&r.0)
        {
            set.remove(digest);
            if set.is_empty() {
                self.referrers.remove(&r.0);
            }
        }
        self.tags.remove_pointing_at(digest);
        true
    }

    /// Returns the room a repository grew into while it was read.
    fn shrink(&mut self) {
        self.blobs.shrink();
        self.manifests.shrink();
        self.tags.shrink();
    }
}

impl Index {
    pub fn new(budget: usize) -> Index {
        Index {
            repos: HashMap::new(),
            entries: 0,
            budget: budget.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// A loaded repository, stamped as just used.
    pub fn get(&self, repo: &RepoName) -> Option<&Repo> {
        let r = self.repos.get(repo)?;
        r.used.store(self.clock.load(Relaxed), Relaxed);
        Some(r)
    }

    /// Keeps a freshly loaded repository, dropping the least recently used ones if the budget is
    /// passed.
    pub fn insert(&mut self, repo: RepoName, loaded: Repo) -> &Repo {
        let now = self.clock.fetch_add(1, Relaxed) + 1;
        loaded.used.store(now, Relaxed);
        let n = loaded.entries();
        if self.entries + n > self.budget {
            self.evict();
        }
        self.entries += n;
        self.repos.entry(repo).or_insert(loaded)
    }

    /// Drops repositories, least recently used first, until the loaded entries are three quarters
    /// of the budget; a batch at a time, so eviction's scan is paid once per many loads.
    fn evict(&mut self) {
        let mut by_age: Vec<(u64, usize, &RepoName)> = self
            .repos
            .iter()
            .map(|(name, r)| (r.used.load(Relaxed), r.entries(), name))
            .collect();
        let mut total: usize = by_age.iter().map(|(_, n, _)| n).sum();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        let target = self.budget / 4 * 3;
        let mut drop = Vec::new();
        for (_, n, name) in by_age {
            if total <= target {
                break;
            }
            total -= n;
            drop.push(name.clone());
        }
        for name in drop {
            self.repos.remove(&name);
        }
        self.entries = total;
    }

    /// How many repositories are loaded (for tests and metrics).
    pub fn loaded(&self) -> usize {
        self.repos.len()
    }

    /// Their entries, as counted when each was loaded.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

/// What an index rebuild found wrong, and skipped.
#[derive(Debug, Default, Clone)]
pub(crate) struct Problems {
    /// One line each, for `fsck`.
    pub messages: Vec<String>,
    /// Links and tags that point at nothing or say nothing: names only, so removing them loses
    /// no content (what a power loss can leave of a cache's unsynced names).
    pub dangling_names: Vec<PathBuf>,
}

impl Problems {
    fn name(&mut self, message: String, path: PathBuf) {
        self.messages.push(message);
        self.dangling_names.push(path);
    }

    fn content(&mut self, message: String) {
        self.messages.push(message);
    }
}

/// Every repository read from the files: what whole-store operations (gc, fsck, the inventory)
/// work from, built for them and dropped after, never kept.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub repos: BTreeMap<RepoName, Repo>,
    pub problems: Problems,
}

impl Scan {
    /// Walks `repos/` and loads every repository.
    pub fn all(layout: &Layout) -> Result<Scan, StoreError> {
        let mut scan = Scan::default();
        for repo in repo_names(layout)? {
            let dir = layout.repo(&repo);
            let r = read_repo(layout, &dir, &repo, &mut scan.problems, true)?;
            if !r.is_empty() {
                scan.repos.insert(repo, r);
            }
        }
        Ok(scan)
    }
}

/// Reads one repository from its files; `None` if it has no content (or no directory).
pub(crate) fn load_repo(layout: &Layout, repo: &RepoName) -> Result<Option<Repo>, StoreError> {
    let mut problems = Problems::default();
    let r = read_repo(layout, &layout.repo(repo), repo, &mut problems, false)?;
    for m in &problems.messages {
        tracing::debug!(problem = %m, "skipped while loading a repository (ferry fsck reports it)");
    }
    Ok((!r.is_empty()).then_some(r))
}

/// Names of every repository directory under `repos/` (a directory with a `_`-prefixed child), in
/// lexical order of the names.
pub(crate) fn repo_names(layout: &Layout) -> Result<Vec<RepoName>, StoreError> {
    let mut out = Vec::new();
    visit(&layout.repos(), "", &mut out)?;
    out.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

/// Names of the subdirectories (or, with `files`, the regular files) of `dir`. Anything else found
/// there — a stray file, a symlink, a non-UTF-8 name — is skipped with a warning, so that one odd
/// entry cannot stop the server from starting.
fn entries(dir: &Path, files: bool) -> Result<Vec<String>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(StoreError::io(dir))?;
        let ok = e
            .file_type()
            .is_ok_and(|t| if files { t.is_file() } else { t.is_dir() });
        match (ok, e.file_name().into_string()) {
            (true, Ok(name)) => out.push(name),
            _ => {
                tracing::warn!(path = %e.path().display(), "ignoring unexpected entry in the data directory")
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Digests stored as `<dir>/<alg>/<hex>` files.
fn digests_under(dir: &Path) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    for alg in entries(dir, false)? {
        for hex in entries(&dir.join(&alg), true)? {
            match format!("{alg}:{hex}").parse::<Digest>() {
                Ok(d) => out.push(d),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), %e, "ignoring stray file in index scan")
                }
            }
        }
    }
    Ok(out)
}

fn visit(dir: &Path, rel: &str, out: &mut Vec<RepoName>) -> Result<(), StoreError> {
    let names = entries(dir, false)?;
    // Content is a blob or manifest link: a tag alone points at nothing that is stored.
    let has_links = || {
        ["_blobs", "_manifests"].iter().any(|kind| {
            fs::read_dir(dir.join(kind)).is_ok_and(|algs| {
                algs.flatten()
                    .any(|alg| fs::read_dir(alg.path()).is_ok_and(|mut f| f.next().is_some()))
            })
        })
    };
    if names.iter().any(|n| n.starts_with('_')) && has_links() {
        match RepoName::new(rel) {
            Ok(repo) => out.push(repo),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), %e, "ignoring directory with an invalid repository name")
            }
        }
    }
    for name in names.iter().filter(|n| !n.starts_with('_')) {
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        visit(&dir.join(name), &child, out)?;
    }
    Ok(())
}

/// With `verify`, every manifest is parsed and hashed (whole-store checks); without, only those that
/// may name a subject are parsed (serving, which hashes what it reads anyway).
fn read_repo(
    layout: &Layout,
    dir: &Path,
    repo: &RepoName,
    problems: &mut Problems,
    verify: bool,
) -> Result<Repo, StoreError> {
    let mut r = Repo::default();
    for d in digests_under(&dir.join("_blobs"))? {
        if !layout.blob(&d).is_file() {
            problems.name(
                format!("{repo}: blob link {d} has no content"),
                dir.join("_blobs")
                    .join(d.algorithm().as_str())
                    .join(d.hex()),
            );
            continue;
        }
        r.blobs.insert(d);
    }
    for d in digests_under(&dir.join("_manifests"))? {
        let link = dir
            .join("_manifests")
            .join(d.algorithm().as_str())
            .join(d.hex());
        let media_type = match fs::read(&link).map(String::from_utf8) {
            // An empty link is what a power loss can leave of an unsynced (cache) write.
            Ok(Ok(t)) if !t.trim().is_empty() => t,
            _ => {
                problems.name(format!("{repo}: manifest link {d} is unreadable"), link);
                continue;
            }
        };
        let bytes = match fs::read(layout.blob(&d)) {
            Ok(b) => b,
            Err(_) => {
                problems.name(format!("{repo}: manifest {d} has no content"), link);
                continue;
            }
        };
        let media_type = media_type.trim();
        if !verify && !contains(&bytes, b"\"subject\"") {
            // Serving checks the digest on every read (and answers a damaged manifest with an
            // error, never its bytes); only a referrer needs parsing to be indexed.
            r.insert_manifest(&d, ManifestEntry::new(media_type, bytes.len() as u64));
            continue;
        }
        match Manifest::parse_as(bytes, Some(media_type), d.algorithm()) {
            Ok(m) if m.digest() == &d => r.insert_manifest(&d, ManifestEntry::of(&m, media_type)),
            Ok(_) => problems.content(format!(
                "{repo}: manifest {d} content does not hash to its name"
            )),
            Err(e) => problems.content(format!("{repo}: manifest {d} is unparseable: {e}")),
        }
    }
    let tags_dir = dir.join("_tags");
    for tag in entries(&tags_dir, true)? {
        let target = fs::read(tags_dir.join(&tag))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.trim().parse::<Digest>().ok());
        match target {
            Some(d) if r.manifests.contains_key(&d) => {
                r.tags.insert(tag, d);
            }
            Some(d) => problems.name(
                format!("{repo}:{tag} points at {d}, which is not a stored manifest"),
                tags_dir.join(&tag),
            ),
            None => problems.name(format!("{repo}:{tag} is unreadable"), tags_dir.join(&tag)),
        }
    }
    r.shrink();
    Ok(r)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
