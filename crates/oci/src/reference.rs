//! Repository names, tags and image references (`registry/repo:tag@digest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry name Docker Hub images normalise to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's `/v2` API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// Longest repository name accepted, as in CNCF Distribution (clients rely on the same bound).
const MAX_REPO_LEN: usize = 255;
/// Longest tag, from the OCI Distribution Spec grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Repository name outside the spec grammar.
    #[error(
        "invalid repository name {0:?}: use lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', at most 255 characters"
    )]
    Repo(String),
    /// Tag outside the spec grammar.
    #[error(
        "invalid tag {0:?}: a tag is 1-128 characters of [A-Za-z0-9_.-] and does not start with '.' or '-'"
    )]
    Tag(String),
    /// Registry host part is not a valid `host[:port]`.
    #[error("invalid registry host {0:?}: expected host[:port]")]
    Registry(String),
    /// Digest part of a reference is invalid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The reference is empty or structurally broken.
    #[error("invalid image reference {0:?}: expected [registry/]repository[:tag][@digest]")]
    Reference(String),
}

/// A validated repository name such as `library/alpine` or `team/app/api`; any depth.
///
/// Every component starts with `[a-z0-9]`, so a name can never contain `..`, a leading `/`, `//`
/// or a component starting with `_`: it is safe to use as a relative path on disk, and ferry's own
/// on-disk directories (`_manifests`, `_tags`, …) can never collide with a component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates a repository name.
    pub fn new(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() || s.len() > MAX_REPO_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::Repo(truncate(s)));
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'; it must be followed by alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

fn truncate(s: &str) -> String {
    // Error messages echo input; keep them bounded so a 1 MB name cannot bloat logs or bodies.
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// Ordered and hashed as its string, so maps keyed by RepoName can be queried with a &str.
impl std::borrow::Borrow<str> for RepoName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<RepoName, NameError> {
        RepoName::new(s)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Safe as a file name (never starts with `.`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Whether `s` is a valid tag (without allocating one).
    pub fn is_valid(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
    }

    /// Validates a tag.
    pub fn new(s: &str) -> Result<Tag, NameError> {
        if Tag::is_valid(s) {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag(truncate(s)))
        }
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Tag, NameError> {
        Tag::new(s)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    /// Mutable name.
    Tag(Tag),
    /// Immutable content address.
    Digest(Digest),
}

impl FromStr for ManifestRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<ManifestRef, NameError> {
        // Tags cannot contain ':', digests always do.
        if s.contains(':') {
            Ok(ManifestRef::Digest(s.parse()?))
        } else {
            Ok(ManifestRef::Tag(Tag::new(s)?))
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => t.fmt(f),
            ManifestRef::Digest(d) => d.fmt(f),
        }
    }
}

/// An image reference: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port), if the reference names one.
    pub registry: Option<String>,
    /// Repository within the registry.
    pub repo: RepoName,
    /// Tag, if given.
    pub tag: Option<Tag>,
    /// Digest, if given; when both are present the digest wins for fetching.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference without normalisation (`alpine` stays `alpine`).
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.is_empty() || s.len() > 1024 {
            return Err(NameError::Reference(truncate(s)));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(Tag::new(&rest[last_slash + i + 1..])?),
            ),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                validate_registry(first)?;
                (Some(first.to_owned()), path)
            }
            _ => (None, name),
        };
        Ok(Reference {
            registry,
            repo: RepoName::new(path)?,
            tag,
            digest,
        })
    }

    /// Parses and normalises like the docker CLI: no registry means `docker.io`, one-component Docker
    /// Hub names get `library/`, and no tag or digest means `:latest`.
    pub fn parse_normalized(s: &str) -> Result<Reference, NameError> {
        let mut r = Reference::parse(s)?;
        let registry = match r.registry.as_deref() {
            None | Some("index.docker.io") => DOCKER_HUB.to_owned(),
            Some(other) => other.to_owned(),
        };
        if registry == DOCKER_HUB && !r.repo.as_str().contains('/') {
            r.repo = RepoName::new(&format!("library/{}", r.repo))?;
        }
        r.registry = Some(registry);
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(Tag("latest".to_owned()));
        }
        Ok(r)
    }

    /// What to fetch: the digest if present, else the tag (`latest` if neither).
    pub fn manifest_ref(&self) -> ManifestRef {
        match (&self.digest, &self.tag) {
            (Some(d), _) => ManifestRef::Digest(d.clone()),
            (None, Some(t)) => ManifestRef::Tag(t.clone()),
            (None, None) => ManifestRef::Tag(Tag("latest".to_owned())),
        }
    }
}

/// The docker rule: a first component is a registry if it has a '.' or ':' or is `localhost`.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn validate_registry(host: &str) -> Result<(), NameError> {
    let bad = || NameError::Registry(truncate(host));
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        // Bracketed IPv6 literal, e.g. [::1]:5000.
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => return Ok(()),
            a => ("x", a.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (host, "1"),
        }
    };
    let host_ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok();
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Reference, NameError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(self.repo.as_str())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repo_names() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c/d/e/f",
            "a.b_c__d---e",
            "x1/y-2/z.3",
        ] {
            assert!(RepoName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "..",
            "a/../b",
            "%2e%2e",
            "a/.b",
            "a_",
            "_a",
            "a___b",
            "a.-b",
            "a\0b",
            "a b",
            "a/_manifests",
        ] {
            assert!(RepoName::new(bad).is_err(), "{bad:?}");
        }
        assert!(RepoName::new(&"a".repeat(255)).is_ok());
        assert!(RepoName::new(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", "a b", &"t".repeat(129)] {
            assert!(Tag::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        let check = |input: &str, normalized: &str| {
            let r = Reference::parse_normalized(input).unwrap();
            assert_eq!(r.to_string(), normalized, "{input}");
        };
        check("alpine", "docker.io/library/alpine:latest");
        check("index.docker.io/alpine:3", "docker.io/library/alpine:3");
        check("user/app", "docker.io/user/app:latest");
        check("localhost/app", "localhost/app:latest");
        check("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1");
        check("[::1]:5000/a:v1", "[::1]:5000/a:v1");
        check("quay.io/org/app", "quay.io/org/app:latest");
        let d = Digest::sha256(b"x");
        check(&format!("a/b@{d}"), &format!("docker.io/a/b@{d}"));
        check(&format!("a/b:t@{d}"), &format!("docker.io/a/b:t@{d}"));
        for bad in [
            "",
            "UPPER/x",
            "a:b:c",
            "a@sha256:x",
            "host:notaport/x",
            ":tag",
            "a/b:",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn repo_never_panics_and_is_path_safe(s in "\\PC{0,300}") {
            if let Ok(r) = RepoName::new(&s) {
                prop_assert!(!r.as_str().split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('_')));
                prop_assert!(r.as_str().len() <= 255);
            }
        }

        #[test]
        fn generated_names_are_accepted(parts in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", 1..6)) {
            let name = parts.join("/");
            prop_assume!(name.len() <= 255);
            prop_assert!(RepoName::new(&name).is_ok(), "{}", name);
        }

        #[test]
        fn tag_never_panics(s in "\\PC{0,200}") {
            if let Ok(t) = Tag::new(&s) {
                prop_assert!(!t.as_str().starts_with('.') && !t.as_str().contains('/'));
            }
        }

        #[test]
        fn reference_roundtrips(s in "([a-z0-9.:-]{1,20}/)?[a-z0-9/._-]{1,40}(:[A-Za-z0-9_.-]{1,20})?") {
            if let Ok(r) = Reference::parse(&s) {
                let again = Reference::parse(&r.to_string()).unwrap();
                prop_assert_eq!(again, r);
            }
        }
    }
}
