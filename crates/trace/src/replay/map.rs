//! The warmup map: what `ferry trace warmup` pushed for each object of a trace, and what
//! `ferry trace run` reads to replay it. JSON lines, one object a line, sorted by `uri`:
//!
//! ```json
//! {"uri":"v2/4715bf52/437c49db/blobs/93054319","kind":"blob","repository":"trace/4715bf52/437c49db","reference":"sha256:…","digest":"sha256:…","size":72626}
//! {"uri":"v2/4715bf52/app/manifests/latest","kind":"manifest","repository":"trace/4715bf52/app","reference":"latest","digest":"sha256:…","size":2048,"recorded_size":2100}
//! ```
//!
//! `uri` is the object's key (the trace URI without a leading `/` or a query); `reference` is
//! what a GET names (a blob's digest, a manifest's tag); `digest` and `size` are what the GET
//! must return; `recorded_size` is the trace's size when the pushed one differs (capped, or
//! the trace had none).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use ferry_oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use super::content::hash64;
use crate::request::{Kind, Method, Request};

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A blob, fetched by digest.
    Blob,
    /// A manifest, fetched by tag.
    Manifest,
}

impl ObjectKind {
    /// As results name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blob",
            ObjectKind::Manifest => "manifest",
        }
    }
}

/// One line of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    /// The object's key: its trace URI, no leading `/`, no query.
    pub uri: String,
    /// Blob or manifest.
    pub kind: ObjectKind,
    /// The repository it was pushed to.
    pub repository: String,
    /// What a GET names: the digest of a blob, the tag of a manifest.
    pub reference: String,
    /// The digest a GET must return.
    pub digest: Digest,
    /// The bytes a GET must return.
    pub size: u64,
    /// The trace's size, when the pushed one differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_size: Option<u64>,
}

impl MapEntry {
    /// The path a GET of it asks for.
    pub fn path(&self) -> String {
        let what = match self.kind {
            ObjectKind::Blob => "blobs",
            ObjectKind::Manifest => "manifests",
        };
        format!("/v2/{}/{what}/{}", self.repository, self.reference)
    }
}

/// The object a request GETs: its key and kind, for GETs of a blob or manifest only.
pub fn object_of(r: &Request) -> Option<(String, ObjectKind)> {
    if r.method != Method::Get {
        return None;
    }
    let kind = match r.kind {
        Kind::Blob => ObjectKind::Blob,
        Kind::Manifest => ObjectKind::Manifest,
        _ => return None,
    };
    let (repo, reference) = (r.repo.as_deref()?, r.reference.as_deref()?);
    Some((
        format!(
            "v2/{repo}/{}/{reference}",
            if kind == ObjectKind::Blob {
                "blobs"
            } else {
                "manifests"
            }
        ),
        kind,
    ))
}

/// The repository an object of the trace's repository `trace_repo` is pushed to: under
/// `trace/`, the name itself when it is a valid OCI name, else `trace/x` and 16 hex digits of
/// its hash (anonymized names may be anything). Deterministic.
pub fn repository_name(trace_repo: &str) -> RepoName {
    let kept = format!("trace/{trace_repo}");
    RepoName::new(&kept).unwrap_or_else(|_| {
        RepoName::new(&format!("trace/x{:016x}", hash64(trace_repo)))
            .expect("a lowercase hex name is a valid repository name")
    })
}

/// The tag a manifest of the trace's reference `reference` (in `repo`) is pushed under: the
/// reference itself when it is a valid tag, else `t` and 16 hex digits of the key's hash.
pub fn tag_name(key: &str, reference: &str) -> String {
    if Tag::is_valid(reference) {
        reference.to_owned()
    } else {
        format!("t{:016x}", hash64(key))
    }
}

/// Why a map cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a map entry.
    #[error("{}: line {line}: not a warmup map entry ({why}); write the map with `ferry trace warmup`", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: u64,
        /// What is wrong.
        why: String,
    },
}

/// A map read back: entries by key.
#[derive(Debug, Default, Clone)]
pub struct WarmupMap {
    entries: HashMap<String, MapEntry>,
}

impl WarmupMap {
    /// A map of `entries`.
    pub fn new(entries: impl IntoIterator<Item = MapEntry>) -> WarmupMap {
        WarmupMap {
            entries: entries.into_iter().map(|e| (e.uri.clone(), e)).collect(),
        }
    }

    /// The entry of the object `key`.
    pub fn get(&self, key: &str) -> Option<&MapEntry> {
        self.entries.get(key)
    }

    /// Objects.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no object.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads a map file (JSON lines; blank lines are skipped).
    pub fn read(path: &Path) -> Result<WarmupMap, MapError> {
        let io = |source| MapError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut entries = HashMap::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: String| MapError::Line {
                path: path.to_owned(),
                line: i as u64 + 1,
                why,
            };
            let e: MapEntry = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            RepoName::new(&e.repository).map_err(|e| bad(format!("repository: {e}")))?;
            entries.insert(e.uri.clone(), e);
        }
        Ok(WarmupMap { entries })
    }
}

/// Writes `entries` (sorted by key) as a map file, through a temporary file renamed into place
/// so a reader never sees half a map.
pub fn write_map(path: &Path, entries: &mut [MapEntry]) -> Result<(), MapError> {
    let io = |source| MapError::Io {
        path: path.to_owned(),
        source,
    };
    entries.sort_by(|a, b| a.uri.cmp(&b.uri));
    let tmp = path.with_extension("partial");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for e in entries.iter() {
        serde_json::to_writer(&mut out, e).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_deterministic() {
        assert_eq!(
            repository_name("4715bf52/437c49db").as_str(),
            "trace/4715bf52/437c49db"
        );
        let odd = repository_name("Ab+C/..//x");
        assert!(odd.as_str().starts_with("trace/x"), "{odd}");
        assert_eq!(odd, repository_name("Ab+C/..//x"));
        assert_eq!(tag_name("k", "latest"), "latest");
        assert!(tag_name("k", "sha256:ab").starts_with('t'));
    }

    #[test]
    fn objects_are_gets_of_blobs_and_manifests() {
        let get = Request::new(Method::Get, "/v2/a/b/blobs/xy?ns=1".into());
        assert_eq!(
            object_of(&get),
            Some(("v2/a/b/blobs/xy".into(), ObjectKind::Blob))
        );
        let m = Request::new(Method::Get, "v2/a/manifests/v1".into());
        assert_eq!(
            object_of(&m),
            Some(("v2/a/manifests/v1".into(), ObjectKind::Manifest))
        );
        assert_eq!(
            object_of(&Request::new(Method::Head, "v2/a/blobs/x".into())),
            None
        );
        assert_eq!(object_of(&Request::new(Method::Get, "v2/".into())), None);
    }
}
