//! Image locations: `TRANSPORT:WHERE`, as `ferry copy SRC DST` takes them.
//!
//! The syntax follows skopeo's (containers/image) transports, so a command line written for
//! skopeo means the same thing here:
//!
//! | spelling | meaning |
//! |---|---|
//! | `registry://REF`, `docker://REF` | an image in a registry; `REF` is normalised like the docker CLI (`alpine` is `docker.io/library/alpine:latest`) |
//! | `oci:DIR[:REF]` | an OCI image layout directory, optionally the image whose `org.opencontainers.image.ref.name` is `REF` |
//! | `oci-archive:FILE[:REF]` | the same, as a tar file |
//! | `docker-archive:FILE[:NAME[:TAG]]`, `docker-archive:FILE:@INDEX` | a `docker save` tar; a name (normalised, `:latest` added) or the index of an image in its manifest |
//! | `dir:DIR`, `dir:DIR?unique_names=true` | one image as plain files; with `unique_names`, many images sharing one store of layers |
//! | `ferry-store:DATA_DIR` | the data directory of a `ferry serve` (destination only) |
//! | `registry://HOST/NS/PAT[:TAGPAT]` | (source only) every image whose repository and tag match shell-style patterns: see [`ImagePattern`] |
//! | `quay://[HOST/]NAMESPACE/PAT[:TAGPAT]` | (source only) images of a Quay namespace, listed through Quay's REST API; `HOST` defaults to `quay.io` |
//!
//! The path of `oci:`, `oci-archive:` and `docker-archive:` ends at the FIRST `:`, as in
//! containers/image (`oci/internal.SplitPathAndImage` and `docker/archive.ParseReference`): the
//! reference part may itself contain `:` (`oci:/tmp/l:docker.io/library/alpine:3.20` names the
//! image `docker.io/library/alpine:3.20` in `/tmp/l`), so such paths cannot contain `:`. The
//! query of `dir:` starts at the first `?`. `dir:` and `ferry-store:` take the rest verbatim.
//!
//! Wildcards (`*`, `?`) are read only after `registry://`/`docker://` and `quay://`: a registry
//! location without one parses exactly as before, into [`Location::Registry`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ferry_oci::{NameError, Reference, RepoName, Tag};
use ferry_policy::{has_wildcard, wildcard_match};

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An image in a registry: `registry://host[:port]/repo[:tag|@digest]` (alias `docker://`).
    /// Always normalised: `registry://alpine` is `docker.io/library/alpine:latest`, as skopeo's
    /// `docker://alpine` is.
    Registry {
        /// The normalised reference (registry, repository, tag and/or digest).
        reference: Reference,
    },
    /// An OCI image layout directory: `oci:DIR[:REF]`.
    OciLayout {
        /// The layout's directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` of the image, if one is named.
        reference: Option<String>,
    },
    /// An OCI image layout in a tar file: `oci-archive:FILE[:REF]`.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// The `org.opencontainers.image.ref.name` of the image, if one is named.
        reference: Option<String>,
    },
    /// A `docker save` tar file: `docker-archive:FILE[:NAME[:TAG]|:@INDEX]`.
    DockerArchive {
        /// The tar file.
        file: PathBuf,
        /// Which image of the archive (source) or the name to record (destination), if given.
        image: Option<ArchiveImage>,
    },
    /// One image as plain files in a directory: `dir:DIR`; with `?unique_names=true` many images
    /// whose layers are stored once.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Whether the directory holds many images with shared, uniquely named layers.
        unique_names: bool,
    },
    /// The data directory of a `ferry serve`: `ferry-store:DATA_DIR`. Destination only: reading a
    /// store's images goes through the server's registry API (`registry://`).
    FerryStore {
        /// The server's data directory.
        data_dir: PathBuf,
    },
    /// Images in a registry named by wildcards: `registry://host/ns/*:latest` (alias
    /// `docker://`). Source only; resolved over the registry's `_catalog` and tag lists. A
    /// `registry://` location without a wildcard is [`Location::Registry`].
    RegistryPattern {
        /// The pattern, normalised like a reference (`docker.io`, `library/`).
        pattern: ImagePattern,
    },
    /// Images in a Quay namespace: `quay://[host/]namespace/repo[:tag]`, wildcards allowed in
    /// the repository's last component and the tag. Source only; resolved over Quay's REST API.
    Quay {
        /// The pattern; its registry is `quay.io` unless one is named.
        pattern: ImagePattern,
    },
}

/// Images named by shell-style wildcards: `*` matches any run of characters, `?` one character.
///
/// A wildcard may appear in the repository's LAST component and in the tag, nowhere else: the
/// components before it are literal (a Quay namespace, or a prefix of catalog names), and `*`
/// never matches across `/` (`team/*` matches `team/app`, not `team/app/api`). So at most one
/// repository component is a pattern, and resolving one needs one listing, never a walk over a
/// tree. A pattern never names a digest; without a tag it means `latest`, as a reference does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePattern {
    registry: String,
    repository: String,
    tag: String,
}

impl ImagePattern {
    /// The registry host (with port).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository pattern (`ns/app*`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag pattern (`latest`, `v1.*`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The literal components before the last one (`team/sub` of `team/sub/app*`; empty for a
    /// one-component pattern). For `quay://` the first of them is the namespace.
    pub fn parent(&self) -> &str {
        self.repository.rsplit_once('/').map_or("", |(p, _)| p)
    }

    /// Whether the repository part has a wildcard.
    pub fn repository_has_wildcard(&self) -> bool {
        has_wildcard(&self.repository)
    }

    /// Whether the tag part has a wildcard.
    pub fn tag_has_wildcard(&self) -> bool {
        has_wildcard(&self.tag)
    }

    /// Whether the pattern has any wildcard (without one it names exactly one image).
    pub fn has_wildcard(&self) -> bool {
        self.repository_has_wildcard() || self.tag_has_wildcard()
    }

    /// Whether the repository `name` (`team/app`) matches: as many components, the leading ones
    /// equal, the last one matching the pattern's last.
    pub fn matches_repository(&self, name: &str) -> bool {
        let (parent, last) = match name.rsplit_once('/') {
            Some((p, l)) => (p, l),
            None => ("", name),
        };
        let pattern_last = self
            .repository
            .rsplit_once('/')
            .map_or(self.repository.as_str(), |(_, l)| l);
        parent == self.parent() && wildcard_match(pattern_last, last)
    }

    /// Whether `tag` matches the tag pattern.
    pub fn matches_tag(&self, tag: &str) -> bool {
        wildcard_match(&self.tag, tag)
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// Which image of a `docker-archive:` is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveImage {
    /// A name in the archive's `RepoTags`, normalised and always tagged (`alpine` is
    /// `docker.io/library/alpine:latest`), as containers/image does; never a digest.
    Named(Reference),
    /// The position of the image in the archive's `manifest.json` (`@0` is the first); sources only.
    Index(usize),
}

/// The kinds of location, one per transport (aliases share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `registry://` (alias `docker://`).
    Registry,
    /// `oci:`.
    OciLayout,
    /// `oci-archive:`.
    OciArchive,
    /// `docker-archive:`.
    DockerArchive,
    /// `dir:`.
    Dir,
    /// `ferry-store:`.
    FerryStore,
    /// `quay://`.
    Quay,
}

impl Transport {
    /// The transport's prefix as written in a location (the canonical spelling).
    pub fn prefix(self) -> &'static str {
        match self {
            Transport::Registry => "registry://",
            Transport::OciLayout => "oci:",
            Transport::OciArchive => "oci-archive:",
            Transport::DockerArchive => "docker-archive:",
            Transport::Dir => "dir:",
            Transport::FerryStore => "ferry-store:",
            Transport::Quay => "quay://",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// Every accepted prefix, aliases included. No prefix starts another (`oci:` is not a prefix of
/// `oci-archive:`), so the order does not matter for matching.
const PREFIXES: [(&str, Transport); 8] = [
    ("registry://", Transport::Registry),
    ("docker://", Transport::Registry),
    ("oci:", Transport::OciLayout),
    ("oci-archive:", Transport::OciArchive),
    ("docker-archive:", Transport::DockerArchive),
    ("dir:", Transport::Dir),
    ("ferry-store:", Transport::FerryStore),
    ("quay://", Transport::Quay),
];

/// The known transports, as the error message lists them.
const KNOWN: &str =
    "registry:// (or docker://), oci:, oci-archive:, docker-archive:, dir:, ferry-store:, quay://";

/// Why a location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// The input starts with no known transport.
    #[error(
        "{input:?} names no known transport: write one of {KNOWN} before the location{}",
        suggestion_text(.suggestion)
    )]
    UnknownTransport {
        /// The input, as given.
        input: String,
        /// `registry://INPUT` when the input reads as a bare image reference.
        suggestion: Option<String>,
    },
    /// Nothing after the transport where a path is needed.
    #[error("{transport} needs a path after it, e.g. {transport}/var/lib/images")]
    EmptyPath {
        /// The transport missing its path.
        transport: Transport,
    },
    /// The image reference of a `registry://` or `docker-archive:` location is invalid.
    #[error(
        "invalid image reference {reference:?} after {transport}: write [host[:port]/]repository[:tag][@digest]"
    )]
    BadReference {
        /// The transport whose reference was refused.
        transport: Transport,
        /// The reference, as given.
        reference: String,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// The `REF` of an `oci:` or `oci-archive:` location is not an OCI ref name.
    #[error(
        "invalid OCI ref name {reference:?} after the {transport} path: a ref name is components of [A-Za-z0-9] joined by one of - . _ : @ + or by --, separated by '/'; the path ends at the first ':', so a path containing ':' cannot be used here"
    )]
    BadLayoutRef {
        /// `oci:` or `oci-archive:`.
        transport: Transport,
        /// The text after the path's `:`.
        reference: String,
    },
    /// A `docker-archive:` names an image by digest, which docker archives do not record.
    #[error(
        "docker-archive: cannot name an image by digest ({reference:?}): use NAME:TAG or @INDEX"
    )]
    ArchiveDigest {
        /// The reference, as given.
        reference: String,
    },
    /// A `docker-archive:FILE:@INDEX` whose index is not a non-negative integer.
    #[error(
        "invalid image index {index:?} in a docker-archive: location: write @N with N a non-negative integer (@0 is the first image)"
    )]
    BadArchiveIndex {
        /// The text after `@`.
        index: String,
    },
    /// The query of a `dir:` location names keys it does not have.
    #[error("unknown query key(s) {keys:?} in a dir: location: the only key is unique_names")]
    UnknownQueryKeys {
        /// The unknown keys, in the order given.
        keys: Vec<String>,
    },
    /// A query value is not one the key accepts.
    #[error("invalid value {value:?} for {key} in a dir: location: write true or false")]
    BadQueryValue {
        /// The key.
        key: String,
        /// The value, as given.
        value: String,
    },
    /// A wildcard location (`registry://…*…`, `quay://…`) is not a valid pattern.
    #[error("invalid image pattern {pattern:?} after {transport}: {reason}")]
    BadPattern {
        /// `registry://` or `quay://`.
        transport: Transport,
        /// The pattern, as given.
        pattern: String,
        /// What is wrong with it.
        reason: PatternProblem,
    },
}

/// What is wrong with an image pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    /// A wildcard in a component other than the repository's last, or in the host.
    #[error(
        "a wildcard (* or ?) may appear only in the repository's last component and in the tag, e.g. host/team/app-*:v1.*"
    )]
    WildcardPlace,
    /// A digest in a pattern.
    #[error("a pattern names tags, not a digest; drop the @digest")]
    Digest,
    /// The host part is not `host[:port]`.
    #[error("the registry host is not host[:port]")]
    Host,
    /// A repository component outside the name grammar (wildcards aside).
    #[error(
        "repository components are lowercase [a-z0-9] joined by '.', '_', '__' or '-' (plus * and ? in the last one)"
    )]
    Repository,
    /// A tag outside the tag grammar (wildcards aside).
    #[error(
        "a tag is 1-128 characters of [A-Za-z0-9_.-] (plus * and ?) and does not start with '.' or '-'"
    )]
    Tag,
    /// `quay://` needs `namespace/repository`.
    #[error("quay:// needs namespace/repository, e.g. quay://org/*:latest")]
    QuayNamespace,
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (an image in a registry? write {s:?})"),
        None => String::new(),
    }
}

impl Location {
    /// The location's transport.
    pub fn transport(&self) -> Transport {
        match self {
            Location::Registry { .. } => Transport::Registry,
            Location::OciLayout { .. } => Transport::OciLayout,
            Location::OciArchive { .. } => Transport::OciArchive,
            Location::DockerArchive { .. } => Transport::DockerArchive,
            Location::Dir { .. } => Transport::Dir,
            Location::FerryStore { .. } => Transport::FerryStore,
            Location::RegistryPattern { .. } => Transport::Registry,
            Location::Quay { .. } => Transport::Quay,
        }
    }

    /// Whether images can be read from here.
    pub fn can_be_source(&self) -> bool {
        !matches!(self, Location::FerryStore { .. })
    }

    /// The pattern, for a location that names images by pattern (`quay://` always does, even
    /// without a wildcard).
    pub fn pattern(&self) -> Option<&ImagePattern> {
        match self {
            Location::RegistryPattern { pattern } | Location::Quay { pattern } => Some(pattern),
            _ => None,
        }
    }

    /// Whether images can be written here. A `docker-archive:` naming an image by index cannot:
    /// an index only selects among images already in an archive; nor can a pattern.
    pub fn can_be_destination(&self) -> bool {
        !matches!(
            self,
            Location::DockerArchive {
                image: Some(ArchiveImage::Index(_)),
                ..
            } | Location::RegistryPattern { .. }
                | Location::Quay { .. }
        )
    }
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(input: &str) -> Result<Location, LocationError> {
        let Some((transport, rest)) = PREFIXES
            .iter()
            .find_map(|&(p, t)| input.strip_prefix(p).map(|rest| (t, rest)))
        else {
            return Err(unknown_transport(input));
        };
        match transport {
            Transport::Registry if has_wildcard(rest) => Ok(Location::RegistryPattern {
                pattern: parse_pattern(transport, rest)?,
            }),
            Transport::Registry => Ok(Location::Registry {
                reference: parse_reference(transport, rest)?,
            }),
            Transport::Quay => Ok(Location::Quay {
                pattern: parse_pattern(transport, rest)?,
            }),
            Transport::OciLayout | Transport::OciArchive => {
                let (path, reference) = split_path(transport, rest)?;
                let reference = match reference {
                    Some(r) if is_layout_ref_name(r) => Some(r.to_owned()),
                    Some(r) => {
                        return Err(LocationError::BadLayoutRef {
                            transport,
                            reference: r.to_owned(),
                        });
                    }
                    None => None,
                };
                Ok(if transport == Transport::OciLayout {
                    Location::OciLayout {
                        dir: path,
                        reference,
                    }
                } else {
                    Location::OciArchive {
                        file: path,
                        reference,
                    }
                })
            }
            Transport::DockerArchive => {
                let (file, image) = split_path(transport, rest)?;
                let image = image.map(parse_archive_image).transpose()?;
                Ok(Location::DockerArchive { file, image })
            }
            Transport::Dir => {
                let (dir, query) = match rest.split_once('?') {
                    Some((d, q)) => (d, Some(q)),
                    None => (rest, None),
                };
                Ok(Location::Dir {
                    dir: non_empty_path(transport, dir)?,
                    unique_names: query.map(parse_dir_query).transpose()?.unwrap_or(false),
                })
            }
            Transport::FerryStore => Ok(Location::FerryStore {
                data_dir: non_empty_path(transport, rest)?,
            }),
        }
    }
}

fn unknown_transport(input: &str) -> LocationError {
    // `alpine:3.20` or `host:5000/repo` would otherwise read as transports `alpine:` or `host:`.
    let suggestion = Reference::parse(input)
        .is_ok()
        .then(|| format!("registry://{input}"));
    LocationError::UnknownTransport {
        input: input.to_owned(),
        suggestion,
    }
}

fn parse_reference(transport: Transport, s: &str) -> Result<Reference, LocationError> {
    Reference::parse_normalized(s).map_err(|source| LocationError::BadReference {
        transport,
        reference: s.to_owned(),
        source,
    })
}

/// `[host/]repository[:tag]` with wildcards in the repository's last component and the tag.
/// The host is the first component when it looks like one (a `.` or `:`, or `localhost`), as in
/// a docker reference; without one, `registry://` means Docker Hub (normalised like a reference)
/// and `quay://` means `quay.io`.
fn parse_pattern(transport: Transport, s: &str) -> Result<ImagePattern, LocationError> {
    let bad = |reason| LocationError::BadPattern {
        transport,
        pattern: s.to_owned(),
        reason,
    };
    if s.contains('@') {
        return Err(bad(PatternProblem::Digest));
    }
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match s[last_slash..].rfind(':') {
        Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
        None => (s, "latest"),
    };
    let (host, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if let Some(h) = host {
        if has_wildcard(h) {
            return Err(bad(PatternProblem::WildcardPlace));
        }
        // The reference parser owns the host grammar; ask it about a name on that host.
        if Reference::parse(&format!("{h}/x")).is_err() {
            return Err(bad(PatternProblem::Host));
        }
    }
    let components: Vec<&str> = path.split('/').collect();
    let (last, leading) = components.split_last().expect("split yields one at least");
    if leading.iter().any(|c| has_wildcard(c)) {
        return Err(bad(PatternProblem::WildcardPlace));
    }
    if leading.iter().any(|c| RepoName::new(c).is_err()) || !is_name_pattern(last) {
        return Err(bad(PatternProblem::Repository));
    }
    if !is_tag_pattern(tag) {
        return Err(bad(PatternProblem::Tag));
    }
    let (registry, repository) = match (transport, host) {
        (Transport::Quay, _) if components.len() < 2 => {
            return Err(bad(PatternProblem::QuayNamespace));
        }
        (Transport::Quay, h) => (h.unwrap_or("quay.io").to_owned(), path.to_owned()),
        (_, Some(h)) if h != "docker.io" && h != "index.docker.io" => {
            (h.to_owned(), path.to_owned())
        }
        // Docker Hub, as a reference normalises it: one-component names are library/.
        (_, _) if components.len() == 1 => ("docker.io".to_owned(), format!("library/{path}")),
        (_, _) => ("docker.io".to_owned(), path.to_owned()),
    };
    if repository.len() > 255 {
        return Err(bad(PatternProblem::Repository));
    }
    Ok(ImagePattern {
        registry,
        repository,
        tag: tag.to_owned(),
    })
}

/// A repository component with `*`/`?` allowed: what remains once every wildcard is read as one
/// letter is a valid component, so anything it matches can be a name.
fn is_name_pattern(c: &str) -> bool {
    !c.is_empty() && RepoName::new(&c.replace(['*', '?'], "a")).is_ok()
}

/// A tag with `*`/`?` allowed, read the same way.
fn is_tag_pattern(t: &str) -> bool {
    Tag::is_valid(&t.replace(['*', '?'], "a"))
}

/// `PATH[:REF]`, split at the first `:` as containers/image does.
fn split_path(transport: Transport, s: &str) -> Result<(PathBuf, Option<&str>), LocationError> {
    let (path, reference) = match s.split_once(':') {
        Some((p, r)) => (p, Some(r)),
        None => (s, None),
    };
    // containers/image treats an empty REF as none; so do we, so `oci:DIR:` is `oci:DIR`.
    Ok((
        non_empty_path(transport, path)?,
        reference.filter(|r| !r.is_empty()),
    ))
}

fn non_empty_path(transport: Transport, s: &str) -> Result<PathBuf, LocationError> {
    if s.is_empty() {
        Err(LocationError::EmptyPath { transport })
    } else {
        Ok(PathBuf::from(s))
    }
}

/// The `org.opencontainers.image.ref.name` grammar of the OCI image spec's annotations:
/// `component ("/" component)*`, `component = alphanum (separator alphanum)*`,
/// `separator = [-._:@+] | "--"`.
fn is_layout_ref_name(s: &str) -> bool {
    s.split('/').all(|component| {
        let b = component.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        // Every run of non-alphanumerics between two alphanumerics must be one separator.
        component
            .split(|c: char| c.is_ascii_alphanumeric())
            .all(|run| run.is_empty() || run == "--" || (run.len() == 1 && "-._:@+".contains(run)))
    })
}

fn parse_archive_image(s: &str) -> Result<ArchiveImage, LocationError> {
    if let Some(index) = s.strip_prefix('@') {
        // Digits only: `@+1` or `@-0` would not display back the same.
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LocationError::BadArchiveIndex {
                index: index.to_owned(),
            });
        }
        return index.parse().map(ArchiveImage::Index).map_err(|_| {
            LocationError::BadArchiveIndex {
                index: index.to_owned(),
            }
        });
    }
    let reference = parse_reference(Transport::DockerArchive, s)?;
    if reference.digest.is_some() {
        return Err(LocationError::ArchiveDigest {
            reference: s.to_owned(),
        });
    }
    Ok(ArchiveImage::Named(reference))
}

fn parse_dir_query(query: &str) -> Result<bool, LocationError> {
    let mut unique_names = false;
    let mut unknown = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "unique_names" {
            unknown.push(key.to_owned());
            continue;
        }
        unique_names = match value {
            "true" => true,
            "false" => false,
            _ => {
                return Err(LocationError::BadQueryValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
        };
    }
    if unknown.is_empty() {
        Ok(unique_names)
    } else {
        Err(LocationError::UnknownQueryKeys { keys: unknown })
    }
}

impl fmt::Display for ArchiveImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveImage::Named(r) => r.fmt(f),
            ArchiveImage::Index(i) => write!(f, "@{i}"),
        }
    }
}

/// The canonical spelling (`registry://` for `docker://`, references normalised), which parses
/// back to the same location.
/// (A location built by hand rather than parsed, e.g. an `oci:` path containing `:`, may not
/// parse back: the fields are not re-validated here.)
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.transport().prefix())?;
        match self {
            Location::Registry { reference } => reference.fmt(f),
            Location::OciLayout {
                dir: path,
                reference,
            }
            | Location::OciArchive {
                file: path,
                reference,
            } => {
                write!(f, "{}", path.display())?;
                match reference {
                    Some(r) => write!(f, ":{r}"),
                    None => Ok(()),
                }
            }
            Location::DockerArchive { file, image } => {
                write!(f, "{}", file.display())?;
                match image {
                    Some(i) => write!(f, ":{i}"),
                    None => Ok(()),
                }
            }
            Location::Dir { dir, unique_names } => {
                write!(f, "{}", dir.display())?;
                if *unique_names {
                    f.write_str("?unique_names=true")?;
                }
                Ok(())
            }
            Location::FerryStore { data_dir } => write!(f, "{}", data_dir.display()),
            Location::RegistryPattern { pattern } | Location::Quay { pattern } => pattern.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::error::Error as _;

    fn parse(s: &str) -> Location {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn refused(s: &str) -> LocationError {
        match s.parse::<Location>() {
            Ok(l) => panic!("{s:?} should be refused, parsed as {l:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_transport_and_alias() {
        let table: Vec<(&str, Location)> = vec![
            (
                "registry://localhost:5000/team/app:v1",
                Location::Registry {
                    reference: reference("localhost:5000/team/app:v1"),
                },
            ),
            (
                "docker://localhost:5000/team/app:v1",
                Location::Registry {
                    reference: reference("localhost:5000/team/app:v1"),
                },
            ),
            // skopeo's examples: docker://alpine means Docker Hub's library/alpine:latest.
            (
                "docker://alpine",
                Location::Registry {
                    reference: reference("docker.io/library/alpine:latest"),
                },
            ),
            (
                "docker://quay.io/skopeo/stable:latest",
                Location::Registry {
                    reference: reference("quay.io/skopeo/stable:latest"),
                },
            ),
            (
                "registry://example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                Location::Registry {
                    reference: reference(
                        "example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    ),
                },
            ),
            (
                "oci:/tmp/layout",
                Location::OciLayout {
                    dir: "/tmp/layout".into(),
                    reference: None,
                },
            ),
            (
                "oci:busybox_ocilayout:latest",
                Location::OciLayout {
                    dir: "busybox_ocilayout".into(),
                    reference: Some("latest".into()),
                },
            ),
            // The ref name may contain ':'; the path ends at the first one.
            (
                "oci:/tmp/l:docker.io/library/alpine:3.20",
                Location::OciLayout {
                    dir: "/tmp/l".into(),
                    reference: Some("docker.io/library/alpine:3.20".into()),
                },
            ),
            (
                "oci:/tmp/l:",
                Location::OciLayout {
                    dir: "/tmp/l".into(),
                    reference: None,
                },
            ),
            (
                "oci-archive:/tmp/img.tar:v1.0",
                Location::OciArchive {
                    file: "/tmp/img.tar".into(),
                    reference: Some("v1.0".into()),
                },
            ),
            (
                "docker-archive:/tmp/alpine.tar",
                Location::DockerArchive {
                    file: "/tmp/alpine.tar".into(),
                    image: None,
                },
            ),
            (
                "docker-archive:/tmp/alpine.tar:alpine",
                Location::DockerArchive {
                    file: "/tmp/alpine.tar".into(),
                    image: Some(ArchiveImage::Named(reference(
                        "docker.io/library/alpine:latest",
                    ))),
                },
            ),
            (
                "docker-archive:/tmp/a.tar:localhost:5000/app:v2",
                Location::DockerArchive {
                    file: "/tmp/a.tar".into(),
                    image: Some(ArchiveImage::Named(reference("localhost:5000/app:v2"))),
                },
            ),
            (
                "docker-archive:/tmp/a.tar:@1",
                Location::DockerArchive {
                    file: "/tmp/a.tar".into(),
                    image: Some(ArchiveImage::Index(1)),
                },
            ),
            (
                "dir:/tmp/one",
                Location::Dir {
                    dir: "/tmp/one".into(),
                    unique_names: false,
                },
            ),
            (
                "dir:/tmp/many?unique_names=true",
                Location::Dir {
                    dir: "/tmp/many".into(),
                    unique_names: true,
                },
            ),
            (
                "dir:/tmp/one?unique_names=false",
                Location::Dir {
                    dir: "/tmp/one".into(),
                    unique_names: false,
                },
            ),
            // dir: takes colons verbatim, as containers/image's dir transport does.
            (
                "dir:/tmp/a:b",
                Location::Dir {
                    dir: "/tmp/a:b".into(),
                    unique_names: false,
                },
            ),
            (
                "ferry-store:/var/lib/ferry",
                Location::FerryStore {
                    data_dir: "/var/lib/ferry".into(),
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse(input), want, "{input}");
        }
    }

    #[test]
    fn canonical_spelling() {
        for (input, want) in [
            (
                "docker://alpine",
                "registry://docker.io/library/alpine:latest",
            ),
            ("oci:/tmp/l:", "oci:/tmp/l"),
            ("dir:/d?unique_names=false", "dir:/d"),
            (
                "docker-archive:a.tar:team/app",
                "docker-archive:a.tar:docker.io/team/app:latest",
            ),
        ] {
            assert_eq!(parse(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn roles() {
        let store = parse("ferry-store:/data");
        assert!(!store.can_be_source());
        assert!(store.can_be_destination());
        let by_index = parse("docker-archive:a.tar:@0");
        assert!(by_index.can_be_source());
        assert!(!by_index.can_be_destination());
        for both in [
            "registry://a.io/b:c",
            "oci:d",
            "oci-archive:f",
            "docker-archive:f:x:y",
            "dir:d",
        ] {
            let l = parse(both);
            assert!(l.can_be_source() && l.can_be_destination(), "{both}");
        }
    }

    #[test]
    fn unknown_transport_lists_the_known_ones_and_suggests_registry() {
        for (input, suggestion) in [
            ("alpine:3.20", Some("registry://alpine:3.20")),
            ("host:5000/repo", Some("registry://host:5000/repo")),
            ("ftp://x/y", None),
            ("", None),
        ] {
            let e = refused(input);
            assert_eq!(
                e,
                LocationError::UnknownTransport {
                    input: input.into(),
                    suggestion: suggestion.map(String::from),
                }
            );
            let message = e.to_string();
            assert!(message.contains("oci-archive:"), "{message}");
            assert!(message.contains("docker://"), "{message}");
            match suggestion {
                Some(s) => assert!(message.contains(s), "{message}"),
                None => assert!(!message.contains("an image in a registry?"), "{message}"),
            }
        }
    }

    #[test]
    fn empty_paths() {
        for (input, transport) in [
            ("oci:", Transport::OciLayout),
            ("oci::latest", Transport::OciLayout),
            ("oci-archive:", Transport::OciArchive),
            ("docker-archive::a:b", Transport::DockerArchive),
            ("dir:", Transport::Dir),
            ("dir:?unique_names=true", Transport::Dir),
            ("ferry-store:", Transport::FerryStore),
        ] {
            assert_eq!(
                refused(input),
                LocationError::EmptyPath { transport },
                "{input}"
            );
        }
    }

    #[test]
    fn bad_references_carry_the_cause_once() {
        for (input, transport, reference) in [
            ("registry://", Transport::Registry, ""),
            ("docker://Upper/Case", Transport::Registry, "Upper/Case"),
            (
                "docker-archive:a.tar:bad tag",
                Transport::DockerArchive,
                "bad tag",
            ),
        ] {
            let e = refused(input);
            let LocationError::BadReference {
                transport: t,
                reference: r,
                ..
            } = &e
            else {
                panic!("{input}: {e:?}");
            };
            assert_eq!((*t, r.as_str()), (transport, reference), "{input}");
            let cause = e.source().expect("the oci error is the source").to_string();
            assert!(!e.to_string().contains(&cause), "cause repeated in {e}");
        }
    }

    #[test]
    fn other_refusals() {
        assert_eq!(
            refused("oci:/tmp/l:-bad"),
            LocationError::BadLayoutRef {
                transport: Transport::OciLayout,
                reference: "-bad".into()
            }
        );
        assert_eq!(
            refused("oci-archive:f.tar:a//b"),
            LocationError::BadLayoutRef {
                transport: Transport::OciArchive,
                reference: "a//b".into()
            }
        );
        assert_eq!(
            refused(
                "docker-archive:a.tar:app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            LocationError::ArchiveDigest {
                reference:
                    "app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
                        .into()
            }
        );
        for index in ["", "x", "-1", "+1", "99999999999999999999999"] {
            assert_eq!(
                refused(&format!("docker-archive:a.tar:@{index}")),
                LocationError::BadArchiveIndex {
                    index: index.into()
                }
            );
        }
        assert_eq!(
            refused("dir:/d?unique_names=true&shared=1&x"),
            LocationError::UnknownQueryKeys {
                keys: vec!["shared".into(), "x".into()]
            }
        );
        assert!(
            refused("dir:/d?shared=1")
                .to_string()
                .contains("\"shared\"")
        );
        assert_eq!(
            refused("dir:/d?unique_names=yes"),
            LocationError::BadQueryValue {
                key: "unique_names".into(),
                value: "yes".into()
            }
        );
    }

    fn pattern(s: &str) -> ImagePattern {
        parse(s).pattern().cloned().expect("a pattern")
    }

    #[test]
    fn patterns_parse_normalise_and_print_back() {
        for (input, registry, repository, tag, shown) in [
            (
                "registry://127.0.0.1:5000/team/*:latest",
                "127.0.0.1:5000",
                "team/*",
                "latest",
                "registry://127.0.0.1:5000/team/*:latest",
            ),
            (
                "docker://localhost/team/app-?:v1.*",
                "localhost",
                "team/app-?",
                "v1.*",
                "registry://localhost/team/app-?:v1.*",
            ),
            // A tag pattern alone is a pattern too; no tag means latest.
            (
                "registry://example.com/a/b:*",
                "example.com",
                "a/b",
                "*",
                "registry://example.com/a/b:*",
            ),
            (
                "registry://example.com:5000/*",
                "example.com:5000",
                "*",
                "latest",
                "registry://example.com:5000/*:latest",
            ),
            // Docker Hub, normalised as a reference is.
            (
                "registry://alp*",
                "docker.io",
                "library/alp*",
                "latest",
                "registry://docker.io/library/alp*:latest",
            ),
            (
                "registry://index.docker.io/org/*:3",
                "docker.io",
                "org/*",
                "3",
                "registry://docker.io/org/*:3",
            ),
            (
                "quay://org/*:latest",
                "quay.io",
                "org/*",
                "latest",
                "quay://quay.io/org/*:latest",
            ),
            (
                "quay://127.0.0.1:8080/org/app",
                "127.0.0.1:8080",
                "org/app",
                "latest",
                "quay://127.0.0.1:8080/org/app:latest",
            ),
        ] {
            let p = pattern(input);
            assert_eq!(
                (p.registry(), p.repository(), p.tag()),
                (registry, repository, tag),
                "{input}"
            );
            assert_eq!(parse(input).to_string(), shown, "{input}");
            assert!(!parse(input).can_be_destination(), "{input}");
            assert!(parse(input).can_be_source(), "{input}");
        }
        assert_eq!(parse("quay://org/*").transport(), Transport::Quay);
        assert_eq!(
            parse("registry://h.io/o/*").transport(),
            Transport::Registry
        );
        assert!(!pattern("quay://org/app:v1").has_wildcard());
    }

    #[test]
    fn pattern_refusals_say_what_is_wrong() {
        for (input, transport, problem) in [
            (
                "registry://h.io/*/app",
                Transport::Registry,
                PatternProblem::WildcardPlace,
            ),
            (
                "registry://h*.io/app/*",
                Transport::Registry,
                PatternProblem::WildcardPlace,
            ),
            (
                "quay://*/app",
                Transport::Quay,
                PatternProblem::WildcardPlace,
            ),
            (
                "registry://h.io/app*@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                Transport::Registry,
                PatternProblem::Digest,
            ),
            (
                "registry://h.io/App*",
                Transport::Registry,
                PatternProblem::Repository,
            ),
            (
                "registry://h.io/a//b*",
                Transport::Registry,
                PatternProblem::Repository,
            ),
            (
                "registry://h.io/a*:-x",
                Transport::Registry,
                PatternProblem::Tag,
            ),
            (
                "registry://h.io/a*:",
                Transport::Registry,
                PatternProblem::Tag,
            ),
            (
                "registry://h_x.io/a*",
                Transport::Registry,
                PatternProblem::Host,
            ),
            ("quay://org", Transport::Quay, PatternProblem::QuayNamespace),
            (
                "quay://quay.io/app*",
                Transport::Quay,
                PatternProblem::QuayNamespace,
            ),
            ("quay://", Transport::Quay, PatternProblem::Repository),
        ] {
            let e = refused(input);
            let LocationError::BadPattern {
                transport: t,
                reason,
                ..
            } = &e
            else {
                panic!("{input}: {e:?}");
            };
            assert_eq!((*t, *reason), (transport, problem), "{input}");
            assert!(e.to_string().contains(&problem.to_string()), "{e}");
        }
    }

    #[test]
    fn patterns_match_names_in_their_last_component_and_tags() {
        let p = pattern("registry://h.io/team/app-*:v1.?");
        assert!(p.matches_repository("team/app-a"));
        assert!(p.matches_repository("team/app-"));
        assert!(!p.matches_repository("team/app"));
        assert!(!p.matches_repository("team/app-a/b"), "* does not cross /");
        assert!(!p.matches_repository("other/app-a"));
        assert!(!p.matches_repository("app-a"));
        assert!(p.matches_tag("v1.2"));
        assert!(!p.matches_tag("v1.23"));
        assert_eq!(p.parent(), "team");
        let top = pattern("registry://h.io/*");
        assert!(top.matches_repository("anything"));
        assert!(!top.matches_repository("a/b"));
        assert_eq!(top.parent(), "");
    }

    #[test]
    fn layout_ref_names() {
        for ok in [
            "latest",
            "v1.0",
            "a--b",
            "example.com/app:v1",
            "a@b+c",
            "A_1",
        ] {
            assert!(is_layout_ref_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a---b", "a-.b", "a//b", "/a", "a b", "ä"] {
            assert!(!is_layout_ref_name(bad), "{bad}");
        }
    }

    // Generators: path components without the characters the syntax gives a meaning to.
    fn path_component() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-][A-Za-z0-9._ -]{0,8}"
    }

    fn plain_path() -> impl Strategy<Value = String> {
        (any::<bool>(), prop::collection::vec(path_component(), 1..4))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn layout_ref() -> impl Strategy<Value = String> {
        prop::collection::vec(
            "[A-Za-z0-9]{1,4}([-._:@+]|--)[A-Za-z0-9]{1,4}|[A-Za-z0-9]{1,6}",
            1..4,
        )
        .prop_map(|c| c.join("/"))
    }

    fn registry_reference() -> impl Strategy<Value = Reference> {
        (
            prop::option::of("[a-z]{1,6}\\.(io|com)(:[1-9][0-9]{0,3})?"),
            "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            prop::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,10}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_filter_map("a valid reference", |(host, repo, tag, digest)| {
                let mut s = match host {
                    Some(h) => format!("{h}/{repo}"),
                    None => repo,
                };
                if let Some(t) = tag {
                    s.push(':');
                    s.push_str(&t);
                }
                if let Some(d) = digest {
                    s.push_str("@sha256:");
                    s.push_str(&d);
                }
                Reference::parse_normalized(&s).ok()
            })
    }

    /// A pattern as written: an optional host, literal leading components, a last component and
    /// a tag each with or without wildcards.
    fn pattern_text() -> impl Strategy<Value = String> {
        (
            prop::option::of("[a-z]{1,6}\\.(io|com)(:[1-9][0-9]{0,3})?|localhost|quay\\.io"),
            prop::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,3})?", 0..3),
            "[a-z0-9*?]{0,3}[*?]?[a-z0-9*?]{0,3}",
            prop::option::of("[A-Za-z0-9_*?][A-Za-z0-9._*?-]{0,8}"),
        )
            .prop_map(|(host, leading, last, tag)| {
                let mut s = host.map(|h| format!("{h}/")).unwrap_or_default();
                for c in leading {
                    s.push_str(&c);
                    s.push('/');
                }
                s.push_str(&last);
                if let Some(t) = tag {
                    s.push(':');
                    s.push_str(&t);
                }
                s
            })
    }

    fn location() -> impl Strategy<Value = Location> {
        prop_oneof![
            pattern_text().prop_filter_map("a wildcard pattern", |p| {
                format!("registry://{p}")
                    .parse::<Location>()
                    .ok()
                    .filter(|l| matches!(l, Location::RegistryPattern { .. }))
            }),
            pattern_text().prop_filter_map("a quay pattern", |p| {
                format!("quay://{p}").parse::<Location>().ok()
            }),
            registry_reference().prop_map(|reference| Location::Registry { reference }),
            (plain_path(), prop::option::of(layout_ref())).prop_map(|(d, reference)| {
                Location::OciLayout {
                    dir: d.into(),
                    reference,
                }
            }),
            (plain_path(), prop::option::of(layout_ref())).prop_map(|(f, reference)| {
                Location::OciArchive {
                    file: f.into(),
                    reference,
                }
            }),
            (
                plain_path(),
                prop::option::of(prop_oneof![
                    registry_reference().prop_filter_map("no digest", |mut r| {
                        r.digest = None;
                        r.tag.is_some().then_some(ArchiveImage::Named(r))
                    }),
                    any::<usize>().prop_map(ArchiveImage::Index),
                ])
            )
                .prop_map(|(f, image)| Location::DockerArchive {
                    file: f.into(),
                    image
                }),
            // dir: and ferry-store: take the rest verbatim, colons included.
            (plain_path(), ":?[a-z:]{0,4}", any::<bool>()).prop_map(|(d, tail, unique_names)| {
                Location::Dir {
                    dir: format!("{d}{tail}").into(),
                    unique_names,
                }
            }),
            (plain_path(), "[a-z:?]{0,4}").prop_map(|(d, tail)| Location::FerryStore {
                data_dir: format!("{d}{tail}").into()
            }),
        ]
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_location(l in location()) {
            let shown = l.to_string();
            prop_assert_eq!(shown.parse::<Location>(), Ok(l), "{}", shown);
        }

        /// Without a wildcard, a registry location is exactly the normalised reference, as it was
        /// before patterns existed; with one, it is a pattern, never a reference.
        #[test]
        fn wildcard_free_registry_locations_parse_as_references(r in registry_reference(), docker in any::<bool>()) {
            let text = r.to_string();
            let prefix = if docker { "docker://" } else { "registry://" };
            prop_assert_eq!(
                format!("{prefix}{text}").parse::<Location>(),
                Ok(Location::Registry { reference: Reference::parse_normalized(&text).unwrap() })
            );
        }

        #[test]
        fn registry_patterns_with_a_wildcard_are_patterns(p in pattern_text()) {
            let input = format!("registry://{p}");
            let direct = parse_pattern(Transport::Registry, &p);
            match input.parse::<Location>() {
                Ok(Location::RegistryPattern { pattern }) => {
                    prop_assert!(has_wildcard(&p));
                    prop_assert_eq!(Ok(pattern), direct);
                }
                Ok(Location::Registry { .. }) => prop_assert!(!has_wildcard(&p)),
                Ok(other) => prop_assert!(false, "{} parsed as {:?}", input, other),
                // Refused: a plain reference that is invalid, or a pattern that is.
                Err(_) => prop_assert!(!has_wildcard(&p) || direct.is_err(), "{}", input),
            }
        }

        /// Replacing every wildcard with a letter gives a name and tag the pattern matches.
        #[test]
        fn a_pattern_matches_its_own_instances(p in pattern_text()) {
            if let Ok(Location::Quay { pattern } | Location::RegistryPattern { pattern }) =
                format!("quay://{p}").parse::<Location>()
            {
                let name = pattern.repository().replace(['*', '?'], "x");
                prop_assert!(pattern.matches_repository(&name), "{} {}", pattern, name);
                let tag = pattern.tag().replace(['*', '?'], "x");
                prop_assert!(pattern.matches_tag(&tag), "{} {}", pattern, tag);
            }
        }

        #[test]
        fn parsing_anything_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Location>();
        }

        #[test]
        fn parsing_anything_after_a_prefix_never_panics(
            prefix in prop::sample::select(PREFIXES.iter().map(|p| p.0).collect::<Vec<_>>()),
            s in "[a-zA-Z0-9:/@?=&._+*-]{0,30}",
        ) {
            let _ = format!("{prefix}{s}").parse::<Location>();
        }

        /// A path with ':' in it: the first ':' ends the path, whatever follows.
        #[test]
        fn oci_path_ends_at_the_first_colon(
            head in plain_path(),
            tail in "[A-Za-z0-9/:._@+-]{0,12}",
        ) {
            let input = format!("oci:{head}:{tail}");
            match input.parse::<Location>() {
                Ok(Location::OciLayout { dir, reference }) => {
                    prop_assert_eq!(dir, PathBuf::from(&head));
                    prop_assert_eq!(reference.as_deref(), Some(tail.as_str()).filter(|t| !t.is_empty()));
                    prop_assert!(tail.is_empty() || is_layout_ref_name(&tail));
                }
                Ok(other) => prop_assert!(false, "{} parsed as {:?}", input, other),
                Err(e) => prop_assert_eq!(
                    e,
                    LocationError::BadLayoutRef { transport: Transport::OciLayout, reference: tail.clone() }
                ),
            }
        }

        #[test]
        fn oci_path_with_a_valid_ref_splits_there(head in plain_path(), r in layout_ref()) {
            let input = format!("oci:{head}:{r}");
            prop_assert_eq!(
                input.parse::<Location>(),
                Ok(Location::OciLayout { dir: head.into(), reference: Some(r) })
            );
        }
    }
}
