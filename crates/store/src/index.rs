//! The in-memory index: which blobs, manifests, tags and referrers each repository has.
//! Rebuilt from the files at every start; the files stay the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ferry_oci::{Descriptor, Digest, Manifest, RepoName};

use crate::StoreError;
use crate::layout::Layout;

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub repos: BTreeMap<RepoName, Repo>,
}

#[derive(Debug, Default)]
pub(crate) struct Repo {
    pub blobs: HashSet<Digest>,
    pub manifests: HashMap<Digest, ManifestEntry>,
    pub tags: BTreeMap<String, Digest>,
    /// subject digest → digests of manifests in this repo whose `subject` is it.
    pub referrers: HashMap<Digest, BTreeSet<Digest>>,
}

impl Repo {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty() && self.tags.is_empty()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ManifestEntry {
    pub media_type: String,
    pub size: u64,
    /// For manifests with a subject: the subject and the descriptor a referrers listing shows.
    pub referrer: Option<(Digest, Descriptor)>,
}

impl ManifestEntry {
    pub fn of(m: &Manifest, media_type: &str) -> ManifestEntry {
        ManifestEntry {
            media_type: media_type.to_owned(),
            size: m.bytes().len() as u64,
            referrer: m
                .subject
                .as_ref()
                .map(|s| (s.digest.clone(), m.referrer_descriptor())),
        }
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

impl Index {
    /// Rebuilds from the files; returns the index and what was found wrong (dangling manifest links,
    /// blob links and tags), which is skipped and reported by `fsck`.
    pub fn rebuild(layout: &Layout) -> Result<(Index, Problems), StoreError> {
        let mut index = Index::default();
        let mut problems = Problems::default();
        visit(layout, &layout.repos(), "", &mut index, &mut problems)?;
        Ok((index, problems))
    }

    pub fn insert_manifest(&mut self, repo: &RepoName, digest: &Digest, entry: ManifestEntry) {
        let r = self.repos.entry(repo.clone()).or_default();
        if let Some((subject, _)) = &entry.referrer {
            r.referrers
                .entry(subject.clone())
                .or_default()
                .insert(digest.clone());
        }
        r.manifests.insert(digest.clone(), entry);
    }

    pub fn remove_manifest(&mut self, repo: &RepoName, digest: &Digest) -> bool {
        let Some(r) = self.repos.get_mut(repo) else {
            return false;
        };
        let Some(entry) = r.manifests.remove(digest) else {
            return false;
        };
        if let Some((subject, _)) = entry.referrer
            && let Some(set) = r.referrers.get_mut(&subject)
        {
            set.remove(digest);
            if set.is_empty() {
                r.referrers.remove(&subject);
            }
        }
        r.tags.retain(|_, d| d != digest);
        self.drop_if_empty(repo);
        true
    }

    pub fn drop_if_empty(&mut self, repo: &RepoName) {
        if self.repos.get(repo).is_some_and(Repo::is_empty) {
            self.repos.remove(repo);
        }
    }
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

fn visit(
    layout: &Layout,
    dir: &Path,
    rel: &str,
    index: &mut Index,
    problems: &mut Problems,
) -> Result<(), StoreError> {
    let names = entries(dir, false)?;
    if names.iter().any(|n| n.starts_with('_')) {
        match RepoName::new(rel) {
            Ok(repo) => load_repo(layout, dir, &repo, index, problems)?,
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
        visit(layout, &dir.join(name), &child, index, problems)?;
    }
    Ok(())
}

fn load_repo(
    layout: &Layout,
    dir: &Path,
    repo: &RepoName,
    index: &mut Index,
    problems: &mut Problems,
) -> Result<(), StoreError> {
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
        index.repos.entry(repo.clone()).or_default().blobs.insert(d);
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
        match Manifest::parse_as(bytes, Some(media_type.trim()), d.algorithm()) {
            Ok(m) if m.digest() == &d => {
                index.insert_manifest(repo, &d, ManifestEntry::of(&m, media_type.trim()))
            }
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
            Some(d)
                if index
                    .repos
                    .get(repo)
                    .is_some_and(|r| r.manifests.contains_key(&d)) =>
            {
                index
                    .repos
                    .entry(repo.clone())
                    .or_default()
                    .tags
                    .insert(tag, d);
            }
            Some(d) => problems.name(
                format!("{repo}:{tag} points at {d}, which is not a stored manifest"),
                tags_dir.join(&tag),
            ),
            None => problems.name(format!("{repo}:{tag} is unreadable"), tags_dir.join(&tag)),
        }
    }
    Ok(())
}
