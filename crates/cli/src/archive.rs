//! Image archives on disk, read for import into the cache: OCI image layouts (a directory, or a
//! tar of one: `oci-archive`) and `docker save` tarballs (the legacy `manifest.json` form and the
//! OCI form Docker 25+ writes), each plain or gzip-compressed.
//!
//! Archives are read with random access: a tar is indexed once (a gzip one is first decompressed to
//! a temporary file), then manifests are read whole (they are small and bounded) and blobs streamed
//! from their offsets. Nothing here trusts the archive: every blob is digest-checked by the store
//! when it is written.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use ferry_oci::{Algorithm, Digest, Manifest, MediaType, Reference, Tag};

use crate::preload::PlatformFilter;

/// Largest manifest, index or `manifest.json` read from an archive.
const MAX_METADATA_BYTES: u64 = 4 << 20;

/// "a FIFO", "a directory", …: what a path that is not a regular file is, for messages.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// Whether `path` looks like an image archive (rather than a list of references).
pub fn is_archive(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.is_dir() {
        return path.join("oci-layout").is_file() || path.join("manifest.json").is_file();
    }
    // Only a regular file is opened to look inside: opening a FIFO waits for a writer.
    if !meta.is_file() {
        return false;
    }
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = read_up_to(&mut f, &mut head);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar")
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Where an archive's files are.
enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        /// Entry name → (offset of its data, size).
        entries: HashMap<String, (u64, u64)>,
        /// The decompressed copy of a gzip archive, removed on drop.
        _decompressed: Option<tempfile::TempPath>,
    },
}

impl Files {
    fn open(path: &Path) -> anyhow::Result<Files> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if meta.is_dir() {
            return Ok(Files::Dir(path.to_owned()));
        }
        ensure!(
            meta.is_file(),
            "{} is {}, not a regular file",
            path.display(),
            file_kind(&meta)
        );
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut magic = [0u8; 2];
        let gzip = read_up_to(&mut f, &mut magic) == 2 && magic == [0x1f, 0x8b];
        let (tar_path, decompressed) = if gzip {
            f.seek(SeekFrom::Start(0))?;
            let mut tmp = tempfile::NamedTempFile::new()
                .context("cannot create a temporary file to decompress into (set TMPDIR)")?;
            std::io::copy(&mut flate2::read::MultiGzDecoder::new(f), tmp.as_file_mut())
                .with_context(|| format!("{}: not a valid gzip file", path.display()))?;
            let p = tmp.into_temp_path();
            (p.to_path_buf(), Some(p))
        } else {
            (path.to_owned(), None)
        };
        let file = std::fs::File::open(&tar_path)?;
        let mut entries = HashMap::new();
        let mut links = Vec::new();
        let mut archive = tar::Archive::new(file);
        for entry in archive
            .entries()
            .with_context(|| format!("{}: not a tar archive", path.display()))?
        {
            let entry =
                entry.with_context(|| format!("{}: damaged tar archive", path.display()))?;
            let name = normalize(&entry.path()?.to_string_lossy());
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    entries.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name()? {
                        let target = target.to_string_lossy().into_owned();
                        let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            normalize(&format!("{dir}/{target}"))
                        } else {
                            normalize(&target)
                        };
                        links.push((name, resolved));
                    }
                }
                _ => {}
            }
        }
        // Docker's legacy format links repeated layers to their first copy.
        for (name, target) in links {
            if let Some(e) = entries.get(&target).copied() {
                entries.insert(name, e);
            }
        }
        Ok(Files::Tar {
            path: tar_path,
            entries,
            _decompressed: decompressed,
        })
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            // Metadata only: nothing is opened.
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar { entries, .. } => entries.contains_key(name),
        }
    }

    /// A reader over one file and its size.
    fn open_file(&self, name: &str) -> anyhow::Result<(std::fs::File, u64)> {
        match self {
            Files::Dir(d) => {
                // A layout's symlinks must not lead out of it (e.g. to /etc/shadow as a "layer").
                let path = d
                    .join(name)
                    .canonicalize()
                    .with_context(|| format!("{name} is missing from the archive"))?;
                let root = d.canonicalize()?;
                ensure!(
                    path.starts_with(&root),
                    "{name} points outside the archive directory"
                );
                // Regular files only, checked before opening: opening a FIFO waits for a writer
                // forever, and a device reads forever. (Only the archive's owner can swap the file
                // in between.)
                let meta = std::fs::metadata(&path)
                    .with_context(|| format!("{name} is missing from the archive"))?;
                ensure!(
                    meta.is_file(),
                    "{name} in the archive directory is {}, not a regular file",
                    file_kind(&meta)
                );
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("{name} is missing from the archive"))?;
                let size = f.metadata()?.len();
                Ok((f, size))
            }
            Files::Tar { path, entries, .. } => {
                let (offset, size) = *entries
                    .get(name)
                    .with_context(|| format!("{name} is missing from the archive"))?;
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((f, size))
            }
        }
    }

    fn read_small(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let (f, size) = self.open_file(name)?;
        ensure!(
            size <= MAX_METADATA_BYTES,
            "{name} is {size} bytes, more than the {MAX_METADATA_BYTES} a manifest may have"
        );
        let mut out = Vec::with_capacity(size as usize);
        f.take(size).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// `./a//b/../c` → `a/c`.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// A blob to copy out of the archive.
#[derive(Debug, Clone)]
pub struct ArchivedBlob {
    /// Its digest (checked again when it is stored).
    pub digest: Digest,
    /// File name inside the archive.
    path: String,
    /// Its size.
    pub size: u64,
}

/// One image found in an archive.
#[derive(Debug)]
pub struct ArchivedImage {
    /// The name the archive gives it (`None`: none, or only a tag in `tag_only`).
    pub name: Option<Reference>,
    /// A bare tag the archive gives it (OCI `ref.name` annotations are often just the tag).
    pub tag_only: Option<Tag>,
    /// The manifest or index the name points at.
    pub top: Manifest,
    /// Children of an index that are imported (the chosen platforms present in the archive).
    pub children: Vec<Manifest>,
    /// Every blob those manifests need.
    pub blobs: Vec<ArchivedBlob>,
}

impl ArchivedImage {
    /// How to call this image in messages.
    pub fn label(&self) -> String {
        match (&self.name, &self.tag_only) {
            (Some(r), _) => r.to_string(),
            (None, Some(t)) => format!("(tag {t})"),
            (None, None) => format!("({})", self.top.digest()),
        }
    }
}

/// An opened archive and the images in it.
pub struct Archive {
    files: Files,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its images.
    pub images: Vec<ArchivedImage>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("path", &self.path)
            .field("images", &self.images)
            .finish()
    }
}

impl Archive {
    /// Opens `path` and lists its images, keeping only `platforms` of multi-platform ones (all when
    /// empty).
    pub fn open(path: &Path, platforms: &[PlatformFilter]) -> anyhow::Result<Archive> {
        let files = Files::open(path)?;
        let images = if files.exists("index.json") {
            oci_images(&files, platforms)
        } else if files.exists("manifest.json") {
            docker_images(&files)
        } else {
            bail!("neither an OCI layout (index.json) nor a docker-save archive (manifest.json)")
        }
        .with_context(|| format!("{}", path.display()))?;
        ensure!(
            !images.is_empty(),
            "{}: the archive holds no images",
            path.display()
        );
        Ok(Archive {
            files,
            path: path.to_owned(),
            images,
        })
    }

    /// A reader positioned at `blob`'s bytes, limited to its size.
    pub fn open_blob(&self, blob: &ArchivedBlob) -> anyhow::Result<std::io::Take<std::fs::File>> {
        let (f, size) = self.files.open_file(&blob.path)?;
        ensure!(
            size == blob.size,
            "{}: {} is {size} bytes, but its manifest says {}",
            self.path.display(),
            blob.path,
            blob.size
        );
        Ok(f.take(size))
    }
}

#[derive(serde::Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<ferry_oci::Descriptor>,
}

fn oci_images(files: &Files, platforms: &[PlatformFilter]) -> anyhow::Result<Vec<ArchivedImage>> {
    let index: OciIndex = serde_json::from_slice(&files.read_small("index.json")?)
        .context("index.json is not an OCI image index")?;
    let read_manifest = |d: &ferry_oci::Descriptor| -> anyhow::Result<Manifest> {
        let bytes = files.read_small(&blob_path(&d.digest))?;
        let m = Manifest::parse_as(bytes, Some(&d.media_type), d.digest.algorithm())
            .with_context(|| format!("manifest {}", d.digest))?;
        ensure!(
            m.digest() == &d.digest,
            "manifest {} hashes to {}",
            d.digest,
            m.digest()
        );
        Ok(m)
    };
    let mut out = Vec::new();
    for d in &index.manifests {
        let annotation = |k: &str| d.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let (name, tag_only) = match annotation("io.containerd.image.name")
            .or_else(|| annotation("org.opencontainers.image.ref.name"))
        {
            // A ref.name may be a whole reference or, as skopeo and Docker write it, only a tag.
            Some(n) if n.contains('/') || n.contains(':') || n.contains('@') => (
                Some(
                    Reference::parse_normalized(&n)
                        .with_context(|| format!("image name {n:?} is not a reference"))?,
                ),
                None,
            ),
            Some(t) => (
                None,
                Some(Tag::new(&t).with_context(|| format!("image tag {t:?} is not a tag"))?),
            ),
            None => (None, None),
        };
        let top = read_manifest(d)?;
        let mut children = Vec::new();
        if top.media_type().is_index() {
            for child in &top.manifests {
                let wanted = platforms.is_empty()
                    || child
                        .platform
                        .as_ref()
                        .is_some_and(|p| platforms.iter().any(|f| f.matches(p)));
                // Partial archives (docker save of one platform) keep the whole index.
                if wanted && files.exists(&blob_path(&child.digest)) {
                    children.push(read_manifest(child)?);
                }
            }
            ensure!(
                !children.is_empty(),
                "index {} has no child manifest in the archive for the requested platforms",
                top.digest()
            );
        }
        let mut blobs: Vec<ArchivedBlob> = Vec::new();
        for m in std::iter::once(&top).chain(&children) {
            for b in m.blob_references() {
                if !blobs.iter().any(|x| x.digest == b.digest) {
                    blobs.push(ArchivedBlob {
                        digest: b.digest.clone(),
                        path: blob_path(&b.digest),
                        size: b.size,
                    });
                }
            }
        }
        out.push(ArchivedImage {
            name,
            tag_only,
            top,
            children,
            blobs,
        });
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Legacy docker-save: a `manifest.json` listing config and layer files. The registry manifest is
/// gone, so one is written (Docker schema 2, as `docker push` would); its digest differs from the
/// original upstream's, which a later tag revalidation replaces.
fn docker_images(files: &Files) -> anyhow::Result<Vec<ArchivedImage>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&files.read_small("manifest.json")?)
        .context("manifest.json is not a docker-save manifest")?;
    let mut out = Vec::new();
    for e in entries {
        let blob = |path: &str| -> anyhow::Result<(ArchivedBlob, bool)> {
            let path = normalize(path);
            let (mut f, size) = files.open_file(&path)?;
            let mut hasher = Algorithm::Sha256.hasher();
            let mut buf = vec![0u8; 256 * 1024];
            let mut left = size;
            let mut gzip = false;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = f.read(&mut buf[..want])?;
                ensure!(n > 0, "{path} ends early");
                if left == size {
                    gzip = n >= 2 && buf[..2] == [0x1f, 0x8b];
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            Ok((
                ArchivedBlob {
                    digest: hasher.finish(),
                    path,
                    size,
                },
                gzip,
            ))
        };
        let (config, _) = blob(&e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            layers.push(blob(l)?);
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.size,
                "digest": config.digest.as_str(),
            },
            "layers": layers.iter().map(|(b, gzip)| serde_json::json!({
                "mediaType": if *gzip {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                },
                "size": b.size,
                "digest": b.digest.as_str(),
            })).collect::<Vec<_>>(),
        });
        let top = Manifest::parse_as(
            serde_json::to_vec_pretty(&manifest)?,
            Some(MediaType::DOCKER_MANIFEST),
            Algorithm::Sha256,
        )?;
        let blobs = std::iter::once(config)
            .chain(layers.into_iter().map(|(b, _)| b))
            .collect();
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            out.push(ArchivedImage {
                name: None,
                tag_only: None,
                top,
                children: Vec::new(),
                blobs,
            });
            continue;
        }
        // One image per name it was saved under; they share blobs and manifest.
        for t in tags {
            out.push(ArchivedImage {
                name: Some(
                    Reference::parse_normalized(&t)
                        .with_context(|| format!("RepoTags entry {t:?} is not a reference"))?,
                ),
                tag_only: None,
                top: top.clone(),
                children: Vec::new(),
                blobs: blobs.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes_archive_paths() {
        assert_eq!(normalize("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(normalize("a/../b//c/."), "b/c");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
    }

    proptest! {
        #[test]
        fn normalized_paths_never_climb(p in "[a-z./]{0,40}") {
            let n = normalize(&p);
            prop_assert!(!n.split('/').any(|c| c == ".." || c == "." ));
            prop_assert!(!n.starts_with('/'));
        }
    }
}
