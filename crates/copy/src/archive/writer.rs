//! Writing archives: one tar that is at once an OCI image layout (`oci-archive`) and a `docker
//! save` archive (`docker-archive`), and OCI image layout directories (`oci:`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ferry_oci::{Descriptor, Digest, Manifest, Reference};

use super::blob_path;
use super::error::{ArchiveError, ensure};
use crate::error::CopyError;
use crate::files::Durability;
use crate::layout::{self, IMAGE_NAME, LAYOUT_FILE, REF_NAME};

/// How much of a blob is copied at a time.
const COPY_BUFFER: usize = 256 << 10;

/// One image written into an archive or layout: what `index.json` (and `manifest.json`) list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    /// The top manifest (image manifest or index) as `index.json` lists it: media type, digest,
    /// size; any annotations and platform it has are kept, the name annotations added.
    pub manifest: Descriptor,
    /// `org.opencontainers.image.ref.name`: the name `oci:DIR:REF` finds the image by (skopeo
    /// writes REF as given, Docker 25+ the tag).
    pub ref_name: Option<String>,
    /// `io.containerd.image.name`: the image's whole name, as Docker 25+ and containerd write it.
    pub image_name: Option<Reference>,
    /// The image's entry in docker's `manifest.json`; `None` for an index (docker save lists one
    /// platform per image; OCI tools read the index).
    pub docker: Option<DockerSaveEntry>,
}

/// One image in a `docker save` `manifest.json`: its files are the OCI layout's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSaveEntry {
    /// The config blob.
    pub config: Digest,
    /// The layer blobs, base first, kept as they are (compressed or not).
    pub layers: Vec<Digest>,
    /// Names `docker load` gives the image (`repo:tag`, as `docker save` writes them).
    pub repo_tags: Vec<String>,
}

impl ArchiveEntry {
    /// `manifest`, named `name` (if any) as Docker 25+ `docker save` names an image: the whole
    /// reference as `io.containerd.image.name` and in `RepoTags`, the tag as
    /// `org.opencontainers.image.ref.name`; listed in `manifest.json` when it is an image
    /// manifest.
    pub fn new(manifest: &Manifest, name: Option<&Reference>) -> ArchiveEntry {
        let docker = match (&manifest.config, manifest.media_type().is_index()) {
            (Some(config), false) => Some(DockerSaveEntry {
                config: config.digest.clone(),
                layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
                repo_tags: name
                    .filter(|n| n.tag.is_some())
                    .map(|n| {
                        let mut tagged = n.clone();
                        tagged.digest = None;
                        tagged.to_string()
                    })
                    .into_iter()
                    .collect(),
            }),
            _ => None,
        };
        ArchiveEntry {
            manifest: Descriptor {
                media_type: manifest.media_type().as_str().to_owned(),
                digest: manifest.digest().clone(),
                size: manifest.bytes().len() as u64,
                artifact_type: None,
                annotations: None,
                platform: None,
                urls: None,
            },
            ref_name: name.and_then(|n| n.tag.as_ref()).map(|t| t.to_string()),
            image_name: name.cloned(),
            docker,
        }
    }

    /// How to call it in messages.
    fn label(&self) -> String {
        match (&self.image_name, &self.ref_name) {
            (Some(n), _) => n.to_string(),
            (None, Some(r)) => r.clone(),
            (None, None) => self.manifest.digest.to_string(),
        }
    }

    /// Its descriptor in `index.json`: the name annotations added to those it has.
    fn index_descriptor(&self) -> Descriptor {
        let mut d = self.manifest.clone();
        let mut names = BTreeMap::new();
        if let Some(n) = &self.image_name {
            names.insert(IMAGE_NAME.to_owned(), n.to_string());
        }
        if let Some(r) = &self.ref_name {
            names.insert(REF_NAME.to_owned(), r.clone());
        }
        if !names.is_empty() {
            d.annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(names);
        }
        d
    }

    /// Every blob it needs written first.
    fn needs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.manifest.digest).chain(
            self.docker
                .iter()
                .flat_map(|d| std::iter::once(&d.config).chain(&d.layers)),
        )
    }
}

/// Copies exactly `size` bytes of `r` into `out`, checking that `r` ends there and that they hash
/// to `digest`.
fn copy_blob(
    digest: &Digest,
    size: u64,
    mut r: impl Read,
    out: &mut impl Write,
    write_error: impl Fn(std::io::Error) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let mut hasher = digest.algorithm().hasher();
    let mut buf = vec![0u8; COPY_BUFFER.min(usize::try_from(size).unwrap_or(usize::MAX).max(1))];
    let mut left = size;
    let read_error = |e| ArchiveError::io(format!("cannot read blob {digest}"), e);
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(ArchiveError::content(format!(
                    "blob {digest} ends after {} bytes, but its size is {size}",
                    size - left
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(&write_error)?;
        left -= n as u64;
    }
    let mut more = [0u8; 1];
    let extra = loop {
        match r.read(&mut more) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => break other.map_err(read_error)?,
        }
    };
    ensure!(
        extra == 0,
        content,
        "blob {digest} has more than its size of {size} bytes"
    );
    let got = hasher.finish();
    ensure!(
        &got == digest,
        content,
        "blob {digest}: its {size} bytes hash to {got}"
    );
    Ok(())
}

/// Writes a tar that is at once an OCI image layout (`oci-layout`, `index.json`,
/// `blobs/ALG/HEX`: what `oci-archive:` reads) and, for its single-platform images, a `docker
/// save` archive (`manifest.json` whose `Config` and `Layers` are the same `blobs/…` files, as
/// Docker 25+ writes it, and a `repositories` file), which `docker load` and `podman load` read.
///
/// Blobs are streamed in as they come ([`ArchiveWriter::add_blob`]), each once, checked against
/// their size and digest; layers are kept as they are (no recompression). [`ArchiveWriter::finish`]
/// writes the metadata that lists the images. Headers are deterministic (mtime 0, mode 0644, uid
/// and gid 0), so the same images make the same bytes. After an error the tar is incomplete: the
/// writer refuses further use, and the output is to be discarded.
#[derive(Debug)]
pub struct ArchiveWriter<W: Write> {
    out: W,
    /// Blobs written, with their sizes.
    blobs: HashMap<Digest, u64>,
    /// An entry was left half written.
    broken: bool,
}

impl<W: Write> ArchiveWriter<W> {
    /// A writer of an archive into `out` (buffer it: headers are written in 512-byte pieces).
    pub fn new(out: W) -> ArchiveWriter<W> {
        ArchiveWriter {
            out,
            blobs: HashMap::new(),
            broken: false,
        }
    }

    /// Whether blob `digest` has been written.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    /// Writes blob `digest` of `size` bytes, read from `r`: an error if `r` has fewer or more
    /// bytes, or bytes that hash otherwise. A blob already written is not written again (`r` is
    /// not read), if its size is the same.
    pub fn add_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        r: impl Read,
    ) -> Result<(), ArchiveError> {
        if self.written(digest, size)? {
            return Ok(());
        }
        self.broken = true;
        self.entry_header(&blob_path(digest), size)?;
        copy_blob(digest, size, r, &mut self.out, write_error)?;
        self.padding(size)?;
        self.broken = false;
        self.blobs.insert(digest.clone(), size);
        Ok(())
    }

    /// Writes what lists `images` (`oci-layout`, `index.json`, and, when some are single-platform
    /// images, `manifest.json` and `repositories`), ends the tar and returns the output, flushed.
    /// Every blob an entry names (its manifest, config and layers) must have been added: an error
    /// otherwise. Index children and other blobs the manifests name are the caller's to add.
    pub fn finish(mut self, images: &[ArchiveEntry]) -> Result<W, ArchiveError> {
        self.usable()?;
        for image in images {
            for d in image.needs() {
                ensure!(
                    self.blobs.contains_key(d),
                    usage,
                    "image {}: blob {d} was not added to the archive",
                    image.label()
                );
            }
        }
        self.broken = true;
        self.file("oci-layout", LAYOUT_FILE.as_bytes())?;
        self.file(
            "index.json",
            &layout::index_json(
                &images
                    .iter()
                    .map(ArchiveEntry::index_descriptor)
                    .collect::<Vec<_>>(),
            ),
        )?;
        let docker: Vec<&DockerSaveEntry> =
            images.iter().filter_map(|i| i.docker.as_ref()).collect();
        if !docker.is_empty() {
            self.file("manifest.json", &docker_manifest_json(&docker))?;
            if let Some(repositories) = repositories_json(&docker) {
                self.file("repositories", &repositories)?;
            }
        }
        // The end of a tar: two zero blocks.
        self.out.write_all(&[0u8; 1024]).map_err(write_error)?;
        self.out.flush().map_err(write_error)?;
        Ok(self.out)
    }

    fn usable(&self) -> Result<(), ArchiveError> {
        ensure!(
            !self.broken,
            usage,
            "the archive is incomplete after an earlier error; discard it"
        );
        Ok(())
    }

    /// Whether blob `digest` is in the archive already (an error if with another size, or if
    /// the writer is unusable).
    fn written(&self, digest: &Digest, size: u64) -> Result<bool, ArchiveError> {
        self.usable()?;
        if let Some(had) = self.blobs.get(digest) {
            ensure!(
                *had == size,
                usage,
                "blob {digest} was added with {had} bytes, and again with {size}"
            );
            return Ok(true);
        }
        Ok(false)
    }

    fn entry_header(&mut self, path: &str, size: u64) -> Result<(), ArchiveError> {
        let mut h = header(size, tar::EntryType::Regular);
        if h.set_path(path).is_err() {
            // Longer than ustar holds (a sha512 blob's name is 128 characters): a PAX record
            // carries the name, and the header keeps its end.
            let record = pax_record("path", path);
            let mut x = header(record.len() as u64, tar::EntryType::XHeader);
            x.set_path("PaxHeader")
                .and_then(|()| h.set_path(&path[path.len().saturating_sub(100)..]))
                .map_err(|e| ArchiveError::io(format!("cannot name {path} in a tar"), e))?;
            x.set_cksum();
            self.out.write_all(x.as_bytes()).map_err(write_error)?;
            self.out.write_all(&record).map_err(write_error)?;
            self.padding(record.len() as u64)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(write_error)
    }

    fn padding(&mut self, size: u64) -> Result<(), ArchiveError> {
        let pad = (512 - size % 512) % 512;
        self.out
            .write_all(&[0u8; 512][..pad as usize])
            .map_err(write_error)
    }

    fn file(&mut self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.entry_header(path, bytes.len() as u64)?;
        self.out.write_all(bytes).map_err(write_error)?;
        self.padding(bytes.len() as u64)
    }
}

impl ArchiveWriter<std::fs::File> {
    /// Writes blob `digest` of `size` bytes from `file`, which the caller has verified holds
    /// exactly that blob (a layout's blob under its final name): the kernel copies the bytes
    /// (`copy_file_range`, a reflink where the file system can) instead of this process reading,
    /// hashing and writing them again.
    pub fn add_verified_file(
        &mut self,
        digest: &Digest,
        size: u64,
        file: std::fs::File,
    ) -> Result<(), ArchiveError> {
        if self.written(digest, size)? {
            return Ok(());
        }
        self.broken = true;
        self.entry_header(&blob_path(digest), size)?;
        let copied = std::io::copy(&mut file.take(size), &mut self.out).map_err(write_error)?;
        ensure!(
            copied == size,
            content,
            "blob {digest}: the file has {copied} bytes, not {size}"
        );
        self.padding(size)?;
        self.broken = false;
        self.blobs.insert(digest.clone(), size);
        Ok(())
    }
}

/// A ustar header of an entry of `size` bytes, deterministic (mtime 0, mode 0644, uid and gid
/// 0); its name and checksum are the caller's to set.
fn header(size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

/// `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

fn write_error(e: std::io::Error) -> ArchiveError {
    ArchiveError::io("cannot write the archive", e)
}

/// `manifest.json` of `docker save`.
fn docker_manifest_json(images: &[&DockerSaveEntry]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "Config": blob_path(&i.config),
                "RepoTags": i.repo_tags,
                "Layers": i.layers.iter().map(blob_path).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_vec(&entries).expect("a JSON value serialises")
}

/// `repositories` of `docker save`: repository → tag → the image's top layer; `None` when no image
/// has a tag and a layer.
fn repositories_json(images: &[&DockerSaveEntry]) -> Option<Vec<u8>> {
    let mut repositories: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for i in images {
        let Some(top) = i.layers.last() else { continue };
        // A name by digest has no tag to list.
        for t in i.repo_tags.iter().filter(|t| !t.contains('@')) {
            // The tag follows the last `:` after the last `/` (a registry's port comes before).
            let name_end = t.rfind('/').map_or(0, |s| s + 1);
            if let Some(colon) = t[name_end..].rfind(':') {
                let (repo, tag) = (&t[..name_end + colon], &t[name_end + colon + 1..]);
                repositories.entry(repo).or_default().insert(tag, top.hex());
            }
        }
    }
    (!repositories.is_empty())
        .then(|| serde_json::to_vec(&repositories).expect("a JSON value serialises"))
}

/// Writes an OCI image layout directory (`oci:DIR`): blobs under `blobs/ALG/HEX`, each written to
/// a temporary file, checked against its size and digest, synced and renamed into place, so a
/// blob's final name never holds other bytes; `index.json` replaced the same way, its entries
/// merged with those already there under a lock on `oci-layout`.
#[derive(Debug)]
pub struct OciLayoutWriter {
    dir: PathBuf,
    /// Blobs written or found.
    blobs: HashMap<Digest, u64>,
}

impl OciLayoutWriter {
    /// Opens the layout at `dir`, creating it (and `oci-layout`) if needed; a directory whose
    /// `oci-layout` says something else is refused.
    pub fn create(dir: &Path) -> Result<OciLayoutWriter, ArchiveError> {
        layout::prepare(dir, Durability::BeforeRename).map_err(layout_error)?;
        Ok(OciLayoutWriter {
            dir: dir.to_owned(),
            blobs: HashMap::new(),
        })
    }

    /// Where blob `digest` is.
    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(blob_path(digest))
    }

    /// Whether the layout has blob `digest` (written now, or there before).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest) || self.path(digest).is_file()
    }

    /// Writes blob `digest` of `size` bytes, read from `r`: an error if `r` has fewer or more
    /// bytes, or bytes that hash otherwise, and then nothing is left under the blob's name. A blob
    /// the layout already has (of that size) is kept, and `r` not read.
    pub fn add_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        r: impl Read,
    ) -> Result<(), ArchiveError> {
        let path = self.path(digest);
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.is_file()
            && meta.len() == size
        {
            self.blobs.insert(digest.clone(), size);
            return Ok(());
        }
        let dir = path.parent().expect("a blob path has a directory");
        std::fs::create_dir_all(dir)
            .map_err(|e| ArchiveError::io(format!("cannot create {}", dir.display()), e))?;
        let write_error = |e| ArchiveError::io(format!("cannot write {}", path.display()), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(write_error)?;
        {
            let mut out = std::io::BufWriter::with_capacity(COPY_BUFFER, tmp.as_file_mut());
            copy_blob(digest, size, r, &mut out, write_error)?;
            out.flush().map_err(write_error)?;
        }
        publish(tmp, &path).map_err(write_error)?;
        self.blobs.insert(digest.clone(), size);
        Ok(())
    }

    /// Lists `images` in `index.json`: an entry there before with the same `ref.name` (or, for an
    /// unnamed image, the same digest and no name) is replaced, other entries are kept. Every
    /// blob an entry names must be in the layout: an error otherwise.
    pub fn finish(self, images: &[ArchiveEntry]) -> Result<(), ArchiveError> {
        for image in images {
            for d in image.needs() {
                ensure!(
                    self.has_blob(d),
                    usage,
                    "image {}: blob {d} was not added to the layout",
                    image.label()
                );
            }
        }
        let listed: Vec<Descriptor> = images.iter().map(ArchiveEntry::index_descriptor).collect();
        layout::add_entries(&self.dir, &listed, Durability::BeforeRename).map_err(layout_error)?;
        // Every blob's rename, and index.json's, outlive a crash.
        let mut dirs: Vec<PathBuf> = self
            .blobs
            .keys()
            .map(|d| {
                self.path(d)
                    .parent()
                    .expect("a blob path has a directory")
                    .to_owned()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs.push(self.dir.clone());
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(())
    }
}

/// A failure of the layout's shared metadata code, as the writer reports errors.
fn layout_error(e: CopyError) -> ArchiveError {
    match e {
        CopyError::Io { path, source } => ArchiveError::io(path.display(), source),
        // The layout's `oci-layout` or `index.json` is not what a layout holds.
        other => ArchiveError::invalid(other.to_string()),
    }
}

/// Gives a written temporary file its final name: readable by all, as layouts are shared (a
/// temporary file is the owner's only), and synced first, so the name never holds a part.
fn publish(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ArchiveError::io(format!("cannot sync {}", dir.display()), e))
}
