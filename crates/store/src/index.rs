//! The in-memory index: which blobs, manifests, tags and referrers each repository has.
//! Rebuilt from the files at every start; the files stay the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

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

impl Index {
    pub fn rebuild(layout: &Layout) -> Result<Index, StoreError> {
        let mut index = Index::default();
        visit(layout, &layout.repos(), "", &mut index)?;
        Ok(index)
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

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut out = Vec::new();
            for e in rd {
                let e = e.map_err(StoreError::io(dir))?;
                if let Ok(name) = e.file_name().into_string() {
                    out.push(name);
                }
            }
            Ok(out)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io(dir)(e)),
    }
}

/// Digests stored as `<dir>/<alg>/<hex>` files.
fn digests_under(dir: &Path) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    for alg in read_dir_names(dir)? {
        for hex in read_dir_names(&dir.join(&alg))? {
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

fn visit(layout: &Layout, dir: &Path, rel: &str, index: &mut Index) -> Result<(), StoreError> {
    let names = read_dir_names(dir)?;
    if names.iter().any(|n| n.starts_with('_')) {
        match RepoName::new(rel) {
            Ok(repo) => load_repo(layout, dir, &repo, index)?,
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
        visit(layout, &dir.join(name), &child, index)?;
    }
    Ok(())
}

fn load_repo(
    layout: &Layout,
    dir: &Path,
    repo: &RepoName,
    index: &mut Index,
) -> Result<(), StoreError> {
    for d in digests_under(&dir.join("_blobs"))? {
        index.repos.entry(repo.clone()).or_default().blobs.insert(d);
    }
    for d in digests_under(&dir.join("_manifests"))? {
        let link = dir
            .join("_manifests")
            .join(d.algorithm().as_str())
            .join(d.hex());
        let media_type = fs::read_to_string(&link).map_err(StoreError::io(&link))?;
        let blob = layout.blob(&d);
        let bytes = match fs::read(&blob) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(%repo, digest = %d, "manifest link without content; skipped (run ferry fsck)");
                continue;
            }
            Err(e) => return Err(StoreError::io(&blob)(e)),
        };
        match Manifest::parse_as(bytes, Some(media_type.trim()), d.algorithm()) {
            Ok(m) => index.insert_manifest(repo, &d, ManifestEntry::of(&m, media_type.trim())),
            Err(e) => {
                tracing::warn!(%repo, digest = %d, %e, "unparseable stored manifest; skipped")
            }
        }
    }
    let tags_dir = dir.join("_tags");
    for tag in read_dir_names(&tags_dir)? {
        let p = tags_dir.join(&tag);
        let text = fs::read_to_string(&p).map_err(StoreError::io(&p))?;
        match text.trim().parse::<Digest>() {
            Ok(d)
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
            _ => tracing::warn!(%repo, %tag, "tag points at no stored manifest; skipped"),
        }
    }
    Ok(())
}
