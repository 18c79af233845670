//! Image archives on disk, read for import into the cache: OCI image layouts (a directory, or a
//! tar of one: `oci-archive`) and `docker save` tarballs (the legacy `manifest.json` form and the
//! OCI form Docker 25+ writes), each plain or gzip-compressed.
//!
//! Archives are read with random access: a tar is indexed once (a gzip one is decompressed to a
//! temporary file as it is indexed), then manifests are read whole (they are small and bounded)
//! and blobs streamed from their offsets. Nothing here trusts the archive: every blob is
//! digest-checked by the store when it is written, and what an archive can make ferry hold, read,
//! write or repeat is bounded (the limits below), each with an error that says which bound it hit.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use ferry_oci::{
    Algorithm, Descriptor, Digest, Manifest, MediaType, Platform, Reference, RepoName, Tag,
};

use crate::preload::PlatformFilter;

/// Largest manifest, index or `manifest.json` read from an archive.
const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Largest GNU long name or long link, or PAX extension block, in a tar: real paths are < 4 KiB
/// and PAX records hold a few attributes, and these are read into memory.
const MAX_TAR_EXTENSION: u64 = 64 << 10;
/// Most headers in a tar.
const MAX_TAR_ENTRIES: u64 = 1_000_000;
/// Most bytes of file names a tar's index keeps.
const MAX_TAR_NAME_BYTES: u64 = 64 << 20;
/// Most images (distinct name → manifest pairs) in one archive.
const MAX_IMAGES: usize = 10_000;
/// Most layers in one image manifest.
const MAX_LAYERS: usize = 1_000;
/// Most child manifests of one index.
const MAX_CHILDREN: usize = 1_000;
/// Most blob links one import makes (each image's blobs, in its repository).
const MAX_BLOB_LINKS: usize = 1_000_000;
/// Most memory the metadata of one archive takes while it is imported: `index.json` or
/// `manifest.json` and every manifest read or written, as bytes and parsed. Ten thousand images of
/// ten layers take about 80 MiB.
const MAX_METADATA_MEMORY: usize = 128 << 20;
/// Without a configured limit, a gzip archive may unpack to this many times its size…
const AUTO_UNPACK_RATIO: u64 = 100;
/// …or to this many bytes, whichever is more (small archives, mostly tar padding, compress well).
const AUTO_UNPACK_FLOOR: u64 = 64 << 20;

/// Space left free in the temporary directory when a gzip archive is decompressed there.
const KEEP_FREE_IN_TMP: u64 = 256 << 20;

/// What the user bounds about reading archives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveLimits {
    /// Largest decompressed copy of a gzip archive; `None`: [`AUTO_UNPACK_RATIO`] times its size,
    /// at least [`AUTO_UNPACK_FLOOR`].
    pub max_unpacked: Option<u64>,
}

impl ArchiveLimits {
    fn unpacked(&self, compressed: u64) -> u64 {
        self.max_unpacked.unwrap_or_else(|| {
            compressed
                .saturating_mul(AUTO_UNPACK_RATIO)
                .max(AUTO_UNPACK_FLOOR)
        })
    }
}

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

/// Bounds on indexing a tar (parameters so that tests can reach them cheaply).
#[derive(Debug, Clone, Copy)]
struct TarLimits {
    /// Largest GNU long name / long link or PAX extension block.
    extension: u64,
    /// Most headers.
    entries: u64,
    /// Most bytes of names kept.
    name_bytes: u64,
}

const TAR_LIMITS: TarLimits = TarLimits {
    extension: MAX_TAR_EXTENSION,
    entries: MAX_TAR_ENTRIES,
    name_bytes: MAX_TAR_NAME_BYTES,
};

/// A tar being indexed, front to back: headers and extension blocks are read, other entries'
/// data passed over.
trait TarStream: Read {
    /// Passes over the next `n` bytes; an error if the archive ends first.
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

fn ends_early() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the archive ends early (truncated?)",
    )
}

/// A plain tar file: data is passed over by seeking.
struct PlainTar {
    file: std::io::BufReader<std::fs::File>,
    pos: u64,
    len: u64,
}

impl Read for PlainTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarStream for PlainTar {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if n > self.len - self.pos.min(self.len) {
            return Err(ends_early());
        }
        self.file.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }
}

/// A gzip tar, decompressed into `out` as it is read, at most `limit` bytes of it.
struct Unpack<R> {
    inner: R,
    out: std::io::BufWriter<std::fs::File>,
    written: u64,
    limit: u64,
    /// The limit was reached.
    exceeded: bool,
    /// The gzip stream itself was bad.
    corrupt: bool,
    buf: Vec<u8>,
}

impl<R: Read> Unpack<R> {
    fn new(inner: R, out: std::fs::File, limit: u64) -> Unpack<R> {
        Unpack {
            inner,
            out: std::io::BufWriter::with_capacity(256 << 10, out),
            written: 0,
            limit,
            exceeded: false,
            corrupt: false,
            buf: Vec::new(),
        }
    }
}

impl<R: Read> Read for Unpack<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.corrupt = true)?;
        if self.written + n as u64 > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("unpack limit reached"));
        }
        self.out.write_all(&buf[..n])?;
        self.written += n as u64;
        Ok(n)
    }
}

impl<R: Read> TarStream for Unpack<R> {
    fn skip(&mut self, mut n: u64) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 << 10, 0);
        let result = (|| {
            while n > 0 {
                let want = n.min(buf.len() as u64) as usize;
                let k = self.read(&mut buf[..want])?;
                if k == 0 {
                    return Err(ends_early());
                }
                n -= k as u64;
            }
            Ok(())
        })();
        self.buf = buf;
        result
    }
}

/// Reads one 512-byte block: `false` at a clean end of the archive.
fn read_block(s: &mut impl Read, block: &mut [u8; 512]) -> std::io::Result<bool> {
    let n = read_up_to_checked(s, block)?;
    match n {
        0 => Ok(false),
        512 => Ok(true),
        _ => Err(ends_early()),
    }
}

/// [`read_up_to`], passing errors on.
fn read_up_to_checked(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The value of `key` in PAX extension records (malformed records are passed over, as the `tar`
/// crate does).
fn pax_value<'a>(records: &'a [u8], key: &str) -> Option<&'a [u8]> {
    tar::PaxExtensions::new(records)
        .filter_map(Result::ok)
        .find(|e| e.key_bytes() == key.as_bytes())
        .map(|e| e.value_bytes())
}

/// Entry name → (offset of its data, size), for regular files and links to them.
type TarIndex = HashMap<String, (u64, u64)>;

/// Indexes a tar by walking its 512-byte headers: nothing but a header, or an extension block
/// within `limits.extension`, is read into memory, so a hostile archive cannot make ferry hold
/// more than its limits whatever it claims.
fn index_tar(s: &mut impl TarStream, limits: &TarLimits) -> anyhow::Result<TarIndex> {
    let mut entries = TarIndex::new();
    let mut links = Vec::new();
    let mut name_bytes = 0u64;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    let mut headers = 0u64;
    let mut pos = 0u64;
    let mut block = [0u8; 512];
    loop {
        let at = pos;
        if !read_block(s, &mut block).with_context(|| format!("the header at byte {at}"))? {
            break;
        }
        // A zero block ends the archive (a second one follows; nothing after them is read).
        if block.iter().all(|b| *b == 0) {
            break;
        }
        headers += 1;
        ensure!(
            headers <= limits.entries,
            "more than {} entries: not an image archive",
            limits.entries
        );
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&block);
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|b| u32::from(*b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        ensure!(
            header.cksum().is_ok_and(|c| c == sum),
            "damaged tar archive: the header at byte {at} has a bad checksum"
        );
        let typeflag = block[156];
        let extension = match typeflag {
            b'L' => Some("GNU long name"),
            b'K' => Some("GNU long link name"),
            b'x' | b'g' => Some("PAX extension header"),
            _ => None,
        };
        let mut size = header.entry_size().ok().with_context(|| {
            format!("damaged tar archive: the header at byte {at} has no valid size")
        })?;
        // A PAX size describes the next member's data, and overrides its header's.
        if extension.is_none()
            && let Some(v) = pax.as_deref().and_then(|p| pax_value(p, "size"))
            && let Some(v) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok())
        {
            size = v;
        }
        let padded = size
            .checked_next_multiple_of(512)
            .with_context(|| format!("damaged tar archive: the entry at byte {at} is too large"))?;
        pos = at
            .checked_add(512)
            .with_context(|| format!("damaged tar archive: the entry at byte {at} is too large"))?;
        let next = pos
            .checked_add(padded)
            .with_context(|| format!("damaged tar archive: the entry at byte {at} is too large"))?;
        if let Some(what) = extension {
            // Checked before a byte of it is read: the `tar` crate would read it whole.
            ensure!(
                size <= limits.extension,
                "{what} of {size} bytes at byte {at}, more than the {} a tar entry may have: not an image archive",
                limits.extension
            );
            let mut data = Vec::with_capacity(size as usize);
            s.by_ref()
                .take(size)
                .read_to_end(&mut data)
                .with_context(|| format!("the {what} at byte {at}"))?;
            ensure!(
                data.len() as u64 == size,
                "the {what} at byte {at}: the archive ends early (truncated?)"
            );
            s.skip(padded - size)
                .with_context(|| format!("the {what} at byte {at}"))?;
            match typeflag {
                b'L' | b'K' => {
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if typeflag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                b'x' => pax = Some(data),
                // Global PAX headers say nothing an index needs.
                _ => {}
            }
            pos = next;
            continue;
        }
        let records = pax.take();
        let name_raw = long_name
            .take()
            .or_else(|| Some(pax_value(records.as_deref()?, "path")?.to_vec()))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link_raw = long_link
            .take()
            .or_else(|| Some(pax_value(records.as_deref()?, "linkpath")?.to_vec()))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let name = normalize(&String::from_utf8_lossy(&name_raw));
        match typeflag {
            b'0' | b'\0' | b'7' => {
                name_bytes += name.len() as u64;
                entries.insert(name, (pos, size));
            }
            b'1' | b'2' => {
                if let Some(target) = link_raw {
                    let target = String::from_utf8_lossy(&target);
                    let resolved = if typeflag == b'2' {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    } else {
                        normalize(&target)
                    };
                    name_bytes += (name.len() + resolved.len()) as u64;
                    links.push((name, resolved));
                }
            }
            _ => {}
        }
        ensure!(
            name_bytes <= limits.name_bytes,
            "more than {} bytes of file names: not an image archive",
            limits.name_bytes
        );
        s.skip(padded).with_context(|| {
            format!(
                "the entry {:?} at byte {at}",
                String::from_utf8_lossy(&name_raw)
            )
        })?;
        pos = next;
    }
    // Docker's legacy format links repeated layers to their first copy.
    for (name, target) in links {
        if let Some(e) = entries.get(&target).copied() {
            entries.insert(name, e);
        }
    }
    Ok(entries)
}

/// Where a file's bytes are: the same for two names that link to one file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileId {
    Path(PathBuf),
    Offset(u64),
}

/// Where an archive's files are.
enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: TarIndex,
        /// The decompressed copy of a gzip archive, removed on drop.
        _decompressed: Option<tempfile::TempPath>,
    },
}

impl Files {
    fn open(path: &Path, limits: &ArchiveLimits) -> anyhow::Result<Files> {
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
        f.seek(SeekFrom::Start(0))?;
        if !gzip {
            let mut tar = PlainTar {
                file: std::io::BufReader::new(f),
                pos: 0,
                len: meta.len(),
            };
            let entries =
                index_tar(&mut tar, &TAR_LIMITS).with_context(|| format!("{}", path.display()))?;
            return Ok(Files::Tar {
                path: path.to_owned(),
                entries,
                _decompressed: None,
            });
        }
        let tmp = tempfile::NamedTempFile::new()
            .context("cannot create a temporary file to decompress into (set TMPDIR)")?;
        // Never fill the temporary directory's filesystem, whatever the limit says.
        let configured = limits.unpacked(meta.len());
        let room = rustix::fs::statvfs(std::env::temp_dir()).ok().map(|st| {
            st.f_bavail
                .saturating_mul(st.f_frsize)
                .saturating_sub(KEEP_FREE_IN_TMP)
        });
        let limit = room.map_or(configured, |r| r.min(configured));
        let mut tar = Unpack::new(
            flate2::read::MultiGzDecoder::new(f),
            tmp.as_file().try_clone()?,
            limit,
        );
        let indexed = index_tar(&mut tar, &TAR_LIMITS);
        if tar.exceeded {
            let why = match limits.max_unpacked {
                _ if limit < configured => format!(
                    "the free space in the temporary directory {}, less {} MiB kept free; set TMPDIR to a larger one",
                    std::env::temp_dir().display(),
                    KEEP_FREE_IN_TMP >> 20
                ),
                Some(_) => "the configured limit".to_owned(),
                None => format!(
                    "by default {AUTO_UNPACK_RATIO} times its compressed size, at least {} MiB",
                    AUTO_UNPACK_FLOOR >> 20
                ),
            };
            bail!(
                "{}: unpacks to more than {limit} bytes ({why}); if the archive is genuine, raise the limit with `ferry preload --max-unpacked SIZE` or `max_unpacked_archive` under [limits] in the config file",
                path.display()
            );
        }
        if tar.corrupt {
            return Err(indexed
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("corrupt data")))
            .with_context(|| format!("{}: not a valid gzip file", path.display()));
        }
        let entries = indexed.with_context(|| format!("{}", path.display()))?;
        tar.out
            .flush()
            .context("cannot write the decompressed archive (is TMPDIR full?)")?;
        let p = tmp.into_temp_path();
        Ok(Files::Tar {
            path: p.to_path_buf(),
            entries,
            _decompressed: Some(p),
        })
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            // Metadata only: nothing is opened.
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar { entries, .. } => entries.contains_key(name),
        }
    }

    /// A reader over one file, its size, and where its bytes are.
    fn open_file(&self, name: &str) -> anyhow::Result<(std::fs::File, u64, FileId)> {
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
                Ok((f, size, FileId::Path(path)))
            }
            Files::Tar { path, entries, .. } => {
                let (offset, size) = *entries
                    .get(name)
                    .with_context(|| format!("{name} is missing from the archive"))?;
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((f, size, FileId::Offset(offset)))
            }
        }
    }

    fn read_small(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let (f, size, _) = self.open_file(name)?;
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

/// The manifests of one image, shared by every name the archive gives it.
#[derive(Debug)]
pub struct ImageContent {
    /// The manifest or index the names point at.
    pub top: Arc<Manifest>,
    /// Children of an index that are imported (the chosen platforms present in the archive).
    pub children: Vec<Arc<Manifest>>,
    /// How many blob references its manifests make (repeats included).
    blob_refs: usize,
}

impl ImageContent {
    fn new(top: Arc<Manifest>, children: Vec<Arc<Manifest>>) -> ImageContent {
        let blob_refs = std::iter::once(&top)
            .chain(&children)
            .map(|m| m.blob_references().count())
            .sum();
        ImageContent {
            top,
            children,
            blob_refs,
        }
    }

    /// Every blob its manifests need, each once.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut seen = HashSet::new();
        std::iter::once(&self.top)
            .chain(&self.children)
            .flat_map(|m| m.blob_references())
            .filter(|d| seen.insert(&d.digest))
            .collect()
    }
}

/// One image found in an archive: a name and what it points at.
#[derive(Debug)]
pub struct ArchivedImage {
    /// The name the archive gives it (`None`: none, or only a tag in `tag_only`).
    pub name: Option<Reference>,
    /// A bare tag the archive gives it (OCI `ref.name` annotations are often just the tag).
    pub tag_only: Option<Tag>,
    /// Its manifests.
    pub content: Arc<ImageContent>,
}

impl ArchivedImage {
    /// How to call this image in messages.
    pub fn label(&self) -> String {
        match (&self.name, &self.tag_only) {
            (Some(r), _) => r.to_string(),
            (None, Some(t)) => format!("(tag {t})"),
            (None, None) => format!("({})", self.content.top.digest()),
        }
    }
}

/// An opened archive and the images in it.
pub struct Archive {
    files: Files,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its images, each distinct name → manifest pair once.
    pub images: Vec<ArchivedImage>,
    /// Files of a docker-save archive by digest (an OCI layout names its blobs by digest).
    blob_paths: HashMap<Digest, String>,
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
    pub fn open(
        path: &Path,
        platforms: &[PlatformFilter],
        limits: &ArchiveLimits,
    ) -> anyhow::Result<Archive> {
        let files = Files::open(path, limits)?;
        let (images, blob_paths) = if files.exists("index.json") {
            oci_images(&files, platforms).map(|i| (i, HashMap::new()))
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
            blob_paths,
        })
    }

    /// Where the blob `d` is in the archive.
    pub fn blob(&self, d: &Descriptor) -> ArchivedBlob {
        ArchivedBlob {
            digest: d.digest.clone(),
            path: self
                .blob_paths
                .get(&d.digest)
                .cloned()
                .unwrap_or_else(|| blob_path(&d.digest)),
            size: d.size,
        }
    }

    /// A reader positioned at `blob`'s bytes, limited to its size.
    pub fn open_blob(&self, blob: &ArchivedBlob) -> anyhow::Result<std::io::Take<std::fs::File>> {
        let (f, size, _) = self.files.open_file(&blob.path)?;
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

/// Keeps the first of each name → manifest pair, and refuses more than [`MAX_IMAGES`] of them.
fn distinct_images(images: Vec<ArchivedImage>) -> anyhow::Result<Vec<ArchivedImage>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for i in images {
        if seen.insert((
            i.name.clone(),
            i.tag_only.clone(),
            i.content.top.digest().clone(),
        )) {
            ensure!(
                out.len() < MAX_IMAGES,
                "more than {MAX_IMAGES} images (name → manifest pairs) in one archive; split it"
            );
            out.push(i);
        }
    }
    Ok(out)
}

/// Bounds on what an archive's metadata makes ferry hold and do (parameters so that tests can reach
/// them cheaply).
#[derive(Debug, Clone, Copy)]
struct MetadataLimits {
    /// Most bytes of metadata held, estimated by [`manifest_memory`] and the like.
    memory: usize,
    /// Most blob links.
    blob_links: usize,
}

const METADATA_LIMITS: MetadataLimits = MetadataLimits {
    memory: MAX_METADATA_MEMORY,
    blob_links: MAX_BLOB_LINKS,
};

/// What reading an archive's metadata has cost so far. Each cost is checked as it is added, so an
/// archive past a limit is refused at the manifest that passes it, before more is read or parsed.
struct Costs {
    limits: MetadataLimits,
    /// Bytes of metadata held.
    memory: usize,
    /// Manifests read or written.
    manifests: usize,
    /// Blob links the images found so far need: each image's blobs in its repository.
    links: usize,
    /// The repository → manifest pairs counted in `links`.
    linked: HashSet<(Option<Repository>, Digest)>,
}

/// A repository: registry (if named) and name.
type Repository = (Option<String>, RepoName);

impl Costs {
    fn new(limits: MetadataLimits) -> Costs {
        Costs {
            limits,
            memory: 0,
            manifests: 0,
            links: 0,
            linked: HashSet::new(),
        }
    }

    /// Adds `bytes` of metadata held.
    fn hold(&mut self, bytes: usize) -> anyhow::Result<()> {
        self.memory = self.memory.saturating_add(bytes);
        if self.memory > self.limits.memory {
            let at = match self.manifests {
                0 => "its image list alone".to_owned(),
                n => format!("counted up to manifest {n}"),
            };
            bail!(
                "its manifests take more than {} MiB of memory to import (bytes and parsed form, {at}); split the archive into smaller ones",
                self.limits.memory >> 20
            );
        }
        Ok(())
    }

    /// Adds a manifest read or written, its lists first cut to their length: it is held until the
    /// import ends.
    fn manifest(&mut self, m: &mut Manifest) -> anyhow::Result<()> {
        m.layers.shrink_to_fit();
        m.manifests.shrink_to_fit();
        self.manifests += 1;
        self.hold(manifest_memory(m))
    }

    /// Adds the blob links `image` needs: its blobs in its repository, once per repository and
    /// manifest.
    fn image(&mut self, image: &ArchivedImage) -> anyhow::Result<()> {
        let repo = image
            .name
            .as_ref()
            .map(|r| (r.registry.clone(), r.repo.clone()));
        if self
            .linked
            .insert((repo, image.content.top.digest().clone()))
        {
            self.links = self.links.saturating_add(image.content.blob_refs);
            ensure!(
                self.links <= self.limits.blob_links,
                "its images need more than {} blob links (each image's blobs in its repository), more than one import makes; split the archive",
                self.limits.blob_links
            );
        }
        Ok(())
    }
}

/// What an allocation of `n` bytes takes from the allocator, header and rounding included (glibc's:
/// 8 bytes of header, 16-byte steps, 32 at least).
fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

fn string_memory(s: &String) -> usize {
    alloc(s.capacity())
}

/// Heap memory of a map of annotations: B-tree nodes of up to 11 entries, each at least 5 full but
/// the root (636 bytes as an internal node), and each key's and value's bytes.
fn annotations_memory(a: &Option<std::collections::BTreeMap<String, String>>) -> usize {
    a.iter()
        .map(|a| {
            alloc(636) * a.len().div_ceil(5)
                + a.iter()
                    .map(|(k, v)| string_memory(k) + string_memory(v))
                    .sum::<usize>()
        })
        .sum()
}

/// Heap memory of a descriptor (the struct itself is counted where it is held). Every field is
/// named, so that a field added to `Descriptor` must be counted here to compile.
fn descriptor_memory(d: &Descriptor) -> usize {
    let Descriptor {
        media_type,
        digest,
        size: _,
        artifact_type,
        annotations,
        platform,
        urls,
    } = d;
    let platform = platform.as_ref().map_or(0, |p| {
        let Platform {
            architecture,
            os,
            variant,
            os_version,
        } = p;
        string_memory(architecture)
            + string_memory(os)
            + variant.as_ref().map_or(0, string_memory)
            + os_version.as_ref().map_or(0, string_memory)
    });
    let urls = urls.as_ref().map_or(0, |u| {
        alloc(u.capacity() * size_of::<String>()) + u.iter().map(string_memory).sum::<usize>()
    });
    string_memory(media_type)
        + alloc(digest.as_str().len())
        + artifact_type.as_ref().map_or(0, string_memory)
        + annotations_memory(annotations)
        + platform
        + urls
}

/// Heap memory of a list of descriptors.
fn descriptors_memory(ds: &Vec<Descriptor>) -> usize {
    alloc(ds.capacity() * size_of::<Descriptor>()) + ds.iter().map(descriptor_memory).sum::<usize>()
}

/// Memory a manifest read from an archive takes, in its `Arc` and keyed by its digest: its bytes
/// and what was parsed out of them, an estimate on the high side.
fn manifest_memory(m: &Manifest) -> usize {
    alloc(size_of::<Manifest>() + 16)
        + alloc(m.bytes().len())
        + 2 * alloc(m.digest().as_str().len())
        + m.config
            .iter()
            .chain(&m.subject)
            .map(descriptor_memory)
            .sum::<usize>()
        + descriptors_memory(&m.layers)
        + descriptors_memory(&m.manifests)
        + m.artifact_type.as_ref().map_or(0, string_memory)
        + annotations_memory(&m.annotations)
}

/// Refuses a manifest with more than [`MAX_LAYERS`] layers.
fn check_layers(m: &Manifest) -> anyhow::Result<()> {
    ensure!(
        m.layers.len() <= MAX_LAYERS,
        "manifest {} has {} layers, more than the {MAX_LAYERS} an image may have",
        m.digest(),
        m.layers.len()
    );
    Ok(())
}

#[derive(serde::Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn oci_images(files: &Files, platforms: &[PlatformFilter]) -> anyhow::Result<Vec<ArchivedImage>> {
    oci_images_with(
        &files.read_small("index.json")?,
        platforms,
        |name| files.read_small(name),
        |name| files.exists(name),
        METADATA_LIMITS,
    )
}

/// The images of an OCI layout whose `index.json` is `index`, reading manifests with `read` (each
/// distinct one once, none after a limit is passed) and asking `exists` whether the layout holds a
/// blob.
fn oci_images_with(
    index_json: &[u8],
    platforms: &[PlatformFilter],
    mut read: impl FnMut(&str) -> anyhow::Result<Vec<u8>>,
    exists: impl Fn(&str) -> bool,
    limits: MetadataLimits,
) -> anyhow::Result<Vec<ArchivedImage>> {
    let mut costs = Costs::new(limits);
    let index: OciIndex =
        serde_json::from_slice(index_json).context("index.json is not an OCI image index")?;
    costs.hold(alloc(index_json.len()) + descriptors_memory(&index.manifests))?;
    let mut manifests: HashMap<Digest, Arc<Manifest>> = HashMap::new();
    let mut read_manifest = |d: &Descriptor, costs: &mut Costs| -> anyhow::Result<Arc<Manifest>> {
        if let Some(m) = manifests.get(&d.digest) {
            return Ok(m.clone());
        }
        let bytes = read(&blob_path(&d.digest))?;
        let mut m = Manifest::parse_as(bytes, Some(&d.media_type), d.digest.algorithm())
            .with_context(|| format!("manifest {}", d.digest))?;
        ensure!(
            m.digest() == &d.digest,
            "manifest {} hashes to {}",
            d.digest,
            m.digest()
        );
        costs.manifest(&mut m)?;
        check_layers(&m)?;
        let m = Arc::new(m);
        manifests.insert(d.digest.clone(), m.clone());
        Ok(m)
    };
    let mut contents: HashMap<Digest, Arc<ImageContent>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in &index.manifests {
        let annotation = |k: &str| d.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let n = annotation("io.containerd.image.name")
            .or_else(|| annotation("org.opencontainers.image.ref.name"));
        // The same name → manifest pair listed again is the same image.
        if !seen.insert((n.clone(), d.digest.clone())) {
            continue;
        }
        ensure!(
            seen.len() <= MAX_IMAGES,
            "index.json lists more than {MAX_IMAGES} images; split the archive"
        );
        let (name, tag_only) = match n {
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
        let content = match contents.get(&d.digest) {
            Some(c) => c.clone(),
            None => {
                let top = read_manifest(d, &mut costs)?;
                let mut children = Vec::new();
                if top.media_type().is_index() {
                    ensure!(
                        top.manifests.len() <= MAX_CHILDREN,
                        "index {} lists {} manifests, more than the {MAX_CHILDREN} an index may have",
                        top.digest(),
                        top.manifests.len()
                    );
                    let mut picked = HashSet::new();
                    for child in &top.manifests {
                        let wanted = PlatformFilter::wanted(platforms, child);
                        // Partial archives (docker save of one platform) keep the whole index.
                        if wanted
                            && picked.insert(&child.digest)
                            && exists(&blob_path(&child.digest))
                        {
                            children.push(read_manifest(child, &mut costs)?);
                        }
                    }
                    ensure!(
                        !children.is_empty(),
                        "index {} has no child manifest in the archive for the requested platforms",
                        top.digest()
                    );
                }
                let c = Arc::new(ImageContent::new(top, children));
                contents.insert(d.digest.clone(), c.clone());
                c
            }
        };
        let image = ArchivedImage {
            name,
            tag_only,
            content,
        };
        costs.image(&image)?;
        out.push(image);
    }
    distinct_images(out)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The distinct images of a docker-save `manifest.json`.
#[derive(Debug, Default)]
struct DockerPlan {
    /// The files they name, each once.
    paths: Vec<String>,
    images: Vec<DockerImage>,
}

/// One distinct image: its files (by their place in [`DockerPlan::paths`]) and the distinct names
/// it was saved under.
#[derive(Debug)]
struct DockerImage {
    config: u32,
    layers: Vec<u32>,
    tags: Vec<String>,
}

impl DockerPlan {
    /// Memory it takes, with what [`docker_images_with`] keeps for each file: its name three times
    /// (here, in its hash and in the blob paths) and its digest twice.
    fn memory(&self) -> usize {
        let per_path = size_of::<String>() + size_of::<Option<Hashed>>() + 2 * alloc(71);
        alloc(self.paths.capacity() * per_path)
            + 3 * self.paths.iter().map(string_memory).sum::<usize>()
            + alloc(self.images.capacity() * size_of::<DockerImage>())
            + self
                .images
                .iter()
                .map(|i| {
                    alloc(i.layers.capacity() * size_of::<u32>())
                        + alloc(i.tags.capacity() * size_of::<String>())
                        + i.tags.iter().map(string_memory).sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// Parses `manifest.json`, merging entries that list the same files and dropping repeated names,
/// so that an archive's work grows with what it holds, not with how often it repeats it; each file
/// name is kept once, however many images list it.
fn docker_plan(bytes: &[u8]) -> anyhow::Result<DockerPlan> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(bytes).context("manifest.json is not a docker-save manifest")?;
    let mut plan = DockerPlan::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut by_files: HashMap<(u32, Vec<u32>), usize> = HashMap::new();
    let mut tags: HashSet<(usize, String)> = HashSet::new();
    // Images an import would make: each name, or one for an image saved without any.
    let mut named = 0usize;
    for e in entries {
        ensure!(
            e.layers.len() <= MAX_LAYERS,
            "manifest.json: image {} has {} layers, more than the {MAX_LAYERS} an image may have",
            e.config,
            e.layers.len()
        );
        // A 4 MiB manifest.json names fewer than 2^32 files.
        let mut id = |p: &str| {
            let p = normalize(p);
            *ids.entry(p).or_insert_with_key(|p| {
                plan.paths.push(p.clone());
                (plan.paths.len() - 1) as u32
            })
        };
        let key = (id(&e.config), e.layers.iter().map(|l| id(l)).collect());
        let i = match by_files.get(&key) {
            Some(i) => *i,
            None => {
                plan.images.push(DockerImage {
                    config: key.0,
                    layers: key.1.clone(),
                    tags: Vec::new(),
                });
                by_files.insert(key, plan.images.len() - 1);
                named += 1;
                plan.images.len() - 1
            }
        };
        for t in e.repo_tags.unwrap_or_default() {
            if tags.insert((i, t.clone())) {
                if !plan.images[i].tags.is_empty() {
                    named += 1;
                }
                plan.images[i].tags.push(t);
            }
        }
        ensure!(
            named <= MAX_IMAGES,
            "manifest.json names more than {MAX_IMAGES} images; split the archive"
        );
    }
    Ok(plan)
}

/// A file of a docker-save archive, hashed.
#[derive(Debug, Clone)]
struct Hashed {
    digest: Digest,
    size: u64,
    gzip: bool,
    path: String,
}

fn hash_file(mut f: impl Read, size: u64, path: &str) -> anyhow::Result<Hashed> {
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
    Ok(Hashed {
        digest: hasher.finish(),
        size,
        gzip,
        path: path.to_owned(),
    })
}

fn docker_images(files: &Files) -> anyhow::Result<(Vec<ArchivedImage>, HashMap<Digest, String>)> {
    // Names that lead to the same bytes (tar links, symlinks in a directory) are hashed once.
    let mut by_id: HashMap<FileId, Hashed> = HashMap::new();
    docker_images_with(
        &files.read_small("manifest.json")?,
        |path| {
            let (f, size, id) = files.open_file(path)?;
            if let Some(h) = by_id.get(&id) {
                return Ok(Hashed {
                    path: path.to_owned(),
                    ..h.clone()
                });
            }
            let h = hash_file(f, size, path)?;
            by_id.insert(id, h.clone());
            Ok(h)
        },
        METADATA_LIMITS,
    )
}

/// Legacy docker-save: a `manifest.json` listing config and layer files, each hashed (by `hash`)
/// once. The registry manifest is gone, so one is written (Docker schema 2, as `docker push`
/// would); its digest differs from the original upstream's, which a later tag revalidation
/// replaces. Manifests are written one image at a time, none after a limit is passed.
fn docker_images_with(
    manifest_json: &[u8],
    mut hash: impl FnMut(&str) -> anyhow::Result<Hashed>,
    limits: MetadataLimits,
) -> anyhow::Result<(Vec<ArchivedImage>, HashMap<Digest, String>)> {
    let mut costs = Costs::new(limits);
    let plan = docker_plan(manifest_json)?;
    costs.hold(alloc(manifest_json.len()) + plan.memory())?;
    let mut hashed: Vec<Option<Hashed>> = vec![None; plan.paths.len()];
    let mut blob_paths = HashMap::new();
    let mut out = Vec::new();
    for image in plan.images {
        let mut file = |i: u32| -> anyhow::Result<Hashed> {
            let i = i as usize;
            if let Some(h) = &hashed[i] {
                return Ok(h.clone());
            }
            let h = hash(&plan.paths[i])?;
            blob_paths
                .entry(h.digest.clone())
                .or_insert_with(|| h.path.clone());
            hashed[i] = Some(h.clone());
            Ok(h)
        };
        let config = file(image.config)?;
        let layers = image
            .layers
            .iter()
            .map(|l| file(*l))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Every layer in order, repeats included: the image is its layer stack.
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.size,
                "digest": config.digest.as_str(),
            },
            "layers": layers.iter().map(|h| serde_json::json!({
                "mediaType": if h.gzip {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                },
                "size": h.size,
                "digest": h.digest.as_str(),
            })).collect::<Vec<_>>(),
        });
        let mut bytes = serde_json::to_vec_pretty(&manifest)?;
        // Held until the import ends: no spare capacity.
        bytes.shrink_to_fit();
        let mut top =
            Manifest::parse_as(bytes, Some(MediaType::DOCKER_MANIFEST), Algorithm::Sha256)?;
        costs.manifest(&mut top)?;
        let content = Arc::new(ImageContent::new(Arc::new(top), Vec::new()));
        if image.tags.is_empty() {
            let image = ArchivedImage {
                name: None,
                tag_only: None,
                content,
            };
            costs.image(&image)?;
            out.push(image);
            continue;
        }
        // One image per name it was saved under; they share the manifest.
        for t in image.tags {
            let image = ArchivedImage {
                name: Some(
                    Reference::parse_normalized(&t)
                        .with_context(|| format!("RepoTags entry {t:?} is not a reference"))?,
                ),
                tag_only: None,
                content: content.clone(),
            };
            costs.image(&image)?;
            out.push(image);
        }
    }
    Ok((distinct_images(out)?, blob_paths))
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

    // ---- tar headers

    /// Small limits, so that cases reach them cheaply.
    const SMALL: TarLimits = TarLimits {
        extension: 1024,
        entries: 6,
        name_bytes: 64,
    };

    /// A tar of any claimed length (up to endless) made of pieces at offsets, zeros between: what
    /// the indexer reads is counted (that is what it can hold in memory), what it skips is not.
    struct Virtual {
        pieces: Vec<(u64, Vec<u8>)>,
        len: u64,
        pos: u64,
        read: u64,
    }

    impl Virtual {
        fn new(pieces: Vec<(u64, Vec<u8>)>, len: u64) -> Virtual {
            Virtual {
                pieces,
                len,
                pos: 0,
                read: 0,
            }
        }
    }

    impl Read for Virtual {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.len - self.pos) as usize;
            let (start, end) = (self.pos, self.pos + n as u64);
            buf[..n].fill(0);
            for (at, bytes) in &self.pieces {
                let (from, to) = ((*at).max(start), (at + bytes.len() as u64).min(end));
                if from < to {
                    buf[(from - start) as usize..(to - start) as usize]
                        .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
                }
            }
            self.pos = end;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl TarStream for Virtual {
        fn skip(&mut self, n: u64) -> std::io::Result<()> {
            if n > self.len - self.pos {
                return Err(ends_early());
            }
            self.pos += n;
            Ok(())
        }
    }

    /// One endless run of the same header block.
    struct Cycle {
        block: Vec<u8>,
        read: u64,
    }

    impl Read for Cycle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            for b in buf.iter_mut() {
                *b = self.block[(self.read % 512) as usize];
                self.read += 1;
            }
            Ok(buf.len())
        }
    }

    impl TarStream for Cycle {
        fn skip(&mut self, n: u64) -> std::io::Result<()> {
            assert_eq!(n, 0, "a zero-size member has no data");
            Ok(())
        }
    }

    fn header(typeflag: u8, name: &[u8], size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        let n = name.len().min(100);
        h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&name[..n]);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn an_endless_long_name_is_refused_after_its_header() {
        for (typeflag, what) in [
            (b'L', "GNU long name"),
            (b'K', "GNU long link name"),
            (b'x', "PAX extension header"),
            (b'g', "PAX extension header"),
        ] {
            let mut s = Virtual::new(
                vec![(0, header(typeflag, b"././@LongLink", 1 << 40))],
                u64::MAX,
            );
            let e = index_tar(&mut s, &TAR_LIMITS).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains(&(1u64 << 40).to_string()),
                "{e}"
            );
            assert_eq!(s.read, 512, "only the header was read");
        }
    }

    #[test]
    fn endless_members_stop_at_the_entry_limit() {
        let mut s = Cycle {
            block: header(b'0', b"a", 0),
            read: 0,
        };
        let limits = TarLimits {
            entries: 1000,
            ..TAR_LIMITS
        };
        let e = index_tar(&mut s, &limits).unwrap_err().to_string();
        assert!(e.contains("more than 1000 entries"), "{e}");
        assert_eq!(s.read, 1001 * 512);
        // Names count as they are kept, repeated or not.
        let mut s = Cycle {
            block: header(b'0', &[b'n'; 100], 0),
            read: 0,
        };
        let limits = TarLimits {
            name_bytes: 10_000,
            ..TAR_LIMITS
        };
        let e = index_tar(&mut s, &limits).unwrap_err().to_string();
        assert!(e.contains("more than 10000 bytes of file names"), "{e}");
        assert_eq!(s.read, 101 * 512);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_unpack_limit() {
        // What an endless gzip of zeros decompresses to: one member claiming 1 TiB, then zeros.
        let inner = std::io::Cursor::new(header(b'0', b"big", 1 << 40)).chain(std::io::repeat(0));
        let tmp = tempfile::tempfile().unwrap();
        let mut s = Unpack::new(inner, tmp, 1 << 20);
        assert!(index_tar(&mut s, &TAR_LIMITS).is_err());
        assert!(s.exceeded);
        assert!(s.written <= 1 << 20, "{}", s.written);
    }

    #[test]
    fn a_truncated_member_is_an_error() {
        let mut s = Virtual::new(vec![(0, header(b'0', b"a", 4096))], 1024);
        let e = format!("{:#}", index_tar(&mut s, &TAR_LIMITS).unwrap_err());
        assert!(e.contains("ends") && e.contains("\"a\""), "{e}");
    }

    /// A tar walked header by header from `(typeflag, claimed size, data, name)` specs: the data
    /// is placed after its header (as much as the claim covers), the rest is zeros.
    fn virtual_tar(specs: &[(u8, u64, Vec<u8>, String)], truncate: Option<u64>) -> Virtual {
        let mut pieces = Vec::new();
        let mut pos = 0u64;
        for (typeflag, size, data, name) in specs {
            pieces.push((pos, header(*typeflag, name.as_bytes(), *size)));
            let keep = data.len().min(usize::try_from(*size).unwrap_or(usize::MAX));
            pieces.push((pos + 512, data[..keep].to_vec()));
            match size
                .checked_next_multiple_of(512)
                .and_then(|p| (pos + 512).checked_add(p))
            {
                Some(next) if next < 1 << 62 => pos = next,
                _ => return Virtual::new(pieces, u64::MAX),
            }
        }
        let len = pos + 1024;
        Virtual::new(pieces, truncate.map_or(len, |t| t.min(len)))
    }

    fn typeflags() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'0'),
            Just(b'\0'),
            Just(b'7'),
            Just(b'5'),
            Just(b'1'),
            Just(b'2'),
            Just(b'L'),
            Just(b'K'),
            Just(b'x'),
            Just(b'g'),
            any::<u8>(),
        ]
    }

    fn sizes() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..1500,
            (SMALL.extension - 2)..(SMALL.extension + 2),
            (1u64 << 20)..(1u64 << 40),
            Just(u64::MAX >> 1),
        ]
    }

    proptest! {
        /// Whatever the headers claim, the indexer reads (so can hold) at most a header and an
        /// allowed extension block per entry, and at most `entries` of them; what it indexes lies
        /// inside the archive.
        #[test]
        fn tar_index_reads_a_bounded_amount(
            specs in prop::collection::vec(
                (typeflags(), sizes(), prop::collection::vec(any::<u8>(), 0..1500), "[a-z./]{0,12}"),
                0..10,
            ),
            truncate in prop::option::of(0u64..20_000),
        ) {
            let mut s = virtual_tar(&specs, truncate);
            let len = s.len;
            let result = index_tar(&mut s, &SMALL);
            // The structural bound: each header, and the extension data within the limit.
            let allowed: u64 = specs
                .iter()
                .map(|(t, size, _, _)| {
                    512 + if matches!(t, b'L' | b'K' | b'x' | b'g') && *size <= SMALL.extension { *size } else { 0 }
                })
                .sum::<u64>()
                + 512;
            prop_assert!(s.read <= allowed, "read {} > {allowed}", s.read);
            prop_assert!(s.read <= (SMALL.entries + 1) * (512 + SMALL.extension));
            if let Ok(entries) = result {
                prop_assert!(entries.len() as u64 <= SMALL.entries);
                prop_assert!(entries.keys().map(|k| k.len() as u64).sum::<u64>() <= SMALL.name_bytes);
                for (offset, size) in entries.values() {
                    prop_assert!(offset + size <= len);
                }
            }
        }

        /// Random bytes are indexed or refused, never a panic, and never read past their end.
        #[test]
        fn tar_index_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            let len = bytes.len() as u64;
            let mut s = Virtual::new(vec![(0, bytes)], len);
            if let Ok(entries) = index_tar(&mut s, &SMALL) {
                for (offset, size) in entries.values() {
                    prop_assert!(offset + size <= len);
                }
            }
            prop_assert!(s.read <= len);
        }

        /// Archives the `tar` crate writes (GNU long names included) index as the `tar` crate
        /// reads them.
        #[test]
        fn tar_index_agrees_with_the_tar_crate(
            files in prop::collection::vec(("[a-z]{1,8}(/[a-z]{1,60}){0,3}", 0usize..1100), 1..6),
        ) {
            let mut b = tar::Builder::new(Vec::new());
            for (name, size) in &files {
                let mut h = tar::Header::new_gnu();
                h.set_size(*size as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, std::io::repeat(7).take(*size as u64)).unwrap();
            }
            let bytes = b.into_inner().unwrap();
            let mut expected = HashMap::new();
            let mut archive = tar::Archive::new(std::io::Cursor::new(&bytes));
            for e in archive.entries().unwrap() {
                let e = e.unwrap();
                expected.insert(
                    normalize(&e.path().unwrap().to_string_lossy()),
                    (e.raw_file_position(), e.size()),
                );
            }
            let len = bytes.len() as u64;
            let got = index_tar(&mut Virtual::new(vec![(0, bytes)], len), &TAR_LIMITS).unwrap();
            prop_assert_eq!(got, expected);
        }
    }

    // ---- docker-save manifest.json

    /// A stand-in for hashing a file: its digest is the hash of its name.
    fn fake_hash(path: &str) -> anyhow::Result<Hashed> {
        Ok(Hashed {
            digest: Digest::of(Algorithm::Sha256, path.as_bytes()),
            size: path.len() as u64,
            gzip: false,
            path: path.to_owned(),
        })
    }

    #[test]
    fn repeated_tags_and_layers_are_hashed_and_listed_once() {
        let n = MAX_LAYERS;
        let json = serde_json::json!([{"Config": "c.json", "RepoTags": vec!["r.io/a:1"; n], "Layers": vec!["./l.tar"; n]}]);
        let mut calls = 0;
        let (images, paths) = docker_images_with(
            &serde_json::to_vec(&json).unwrap(),
            |p| {
                calls += 1;
                fake_hash(p)
            },
            METADATA_LIMITS,
        )
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(images.len(), 1);
        assert_eq!(paths.len(), 2);
        let c = &images[0].content;
        assert_eq!(c.top.layers.len(), n, "the layer stack keeps its repeats");
        assert_eq!(c.blobs().len(), 2);

        let json = serde_json::json!([{"Config": "c.json", "RepoTags": ["r.io/a:1"], "Layers": vec!["l.tar"; n + 1]}]);
        let e = docker_plan(&serde_json::to_vec(&json).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{} layers", n + 1)), "{e}");

        let tags: Vec<String> = (0..=MAX_IMAGES).map(|i| format!("r.io/a:{i}")).collect();
        let json = serde_json::json!([{"Config": "c.json", "RepoTags": tags, "Layers": []}]);
        let e = docker_plan(&serde_json::to_vec(&json).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("more than {MAX_IMAGES} images")), "{e}");
    }

    proptest! {
        #[test]
        fn docker_manifest_json_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = docker_images_with(&bytes, fake_hash, METADATA_LIMITS);
        }

        /// However often entries, tags and layers repeat, each distinct file is hashed once, each
        /// distinct file list makes one manifest, and each name → manifest pair is one image: what
        /// is built (and so held) grows with the distinct inputs, not the repeats.
        #[test]
        fn docker_manifest_json_work_grows_with_distinct_inputs(
            entries in prop::collection::vec(
                (0usize..3, prop::collection::vec(0usize..4, 0..6), prop::collection::vec(0usize..5, 0..6)),
                0..10,
            ),
        ) {
            let json: Vec<serde_json::Value> = entries
                .iter()
                .map(|(c, layers, tags)| serde_json::json!({
                    "Config": format!("./c{c}.json"),
                    "RepoTags": tags.iter().map(|t| format!("r.io/a:t{t}")).collect::<Vec<_>>(),
                    "Layers": layers.iter().map(|l| format!("l{l}/layer.tar")).collect::<Vec<_>>(),
                }))
                .collect();
            let mut calls: Vec<String> = Vec::new();
            let (images, _) = docker_images_with(
                &serde_json::to_vec(&json).unwrap(),
                |p| {
                    calls.push(p.to_owned());
                    fake_hash(p)
                },
                METADATA_LIMITS,
            )
            .unwrap();
            let distinct_paths: HashSet<&String> = calls.iter().collect();
            prop_assert_eq!(distinct_paths.len(), calls.len(), "a file hashed twice");
            prop_assert!(calls.len() <= 3 + 4);
            let lists: HashSet<(usize, &Vec<usize>)> = entries.iter().map(|(c, l, _)| (*c, l)).collect();
            let contents: HashSet<*const ImageContent> = images.iter().map(|i| Arc::as_ptr(&i.content)).collect();
            prop_assert!(contents.len() <= lists.len());
            let pairs: HashSet<(String, Digest)> = images
                .iter()
                .map(|i| (i.label(), i.content.top.digest().clone()))
                .collect();
            prop_assert_eq!(pairs.len(), images.len(), "a name → manifest pair twice");
            prop_assert!(images.len() <= lists.len() * 6);
            for i in &images {
                prop_assert!(i.content.blobs().len() <= 5);
            }
        }
    }

    // ---- OCI index.json

    fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(Algorithm::Sha256, bytes).as_str(),
            "size": bytes.len(),
        })
    }

    /// A layout's manifests: four image manifests of five layers each, then an index of them.
    struct OciPool {
        /// Their bytes.
        manifests: Vec<Vec<u8>>,
        /// By blob path.
        files: HashMap<String, Vec<u8>>,
        /// A descriptor of each.
        descriptors: Vec<serde_json::Value>,
    }

    fn oci_pool() -> &'static OciPool {
        static POOL: std::sync::OnceLock<OciPool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let mut manifests = Vec::new();
            for i in 0..4 {
                let m = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": MediaType::OCI_MANIFEST,
                    "config": descriptor("application/vnd.oci.image.config.v1+json", format!("c{i}").as_bytes()),
                    "layers": (0..5).map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", format!("l{}", l % 3).as_bytes())).collect::<Vec<_>>(),
                });
                manifests.push(serde_json::to_vec(&m).unwrap());
            }
            let children: Vec<serde_json::Value> = manifests
                .iter()
                .map(|m| {
                    let mut d = descriptor(MediaType::OCI_MANIFEST, m);
                    d["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
                    d
                })
                .collect();
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": children});
            manifests.push(serde_json::to_vec(&index).unwrap());
            let files = manifests
                .iter()
                .map(|m| (blob_path(&Digest::of(Algorithm::Sha256, m)), m.clone()))
                .collect();
            let descriptors = manifests
                .iter()
                .enumerate()
                .map(|(i, m)| descriptor(if i == 4 { MediaType::OCI_INDEX } else { MediaType::OCI_MANIFEST }, m))
                .collect();
            OciPool { manifests, files, descriptors }
        })
    }

    proptest! {
        #[test]
        fn oci_index_json_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = oci_images_with(&bytes, &[], |_| anyhow::Ok(Vec::new()), |_| false, METADATA_LIMITS);
        }

        /// However often index.json repeats manifests and names, each manifest is read (and held)
        /// once and each name → manifest pair is one image.
        #[test]
        fn oci_index_json_reads_each_manifest_once(
            refs in prop::collection::vec((0usize..5, prop::option::of(0usize..4)), 0..60),
        ) {
            let OciPool { manifests, files, descriptors } = oci_pool();
            let listed: Vec<serde_json::Value> = refs
                .iter()
                .map(|(m, name)| {
                    let mut d = descriptors[*m].clone();
                    if let Some(n) = name {
                        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": format!("r.io/a:t{n}")});
                    }
                    d
                })
                .collect();
            let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": listed})).unwrap();
            let mut read = Vec::new();
            let mut bytes = 0;
            let images = oci_images_with(
                &index,
                &[],
                |p| {
                    read.push(p.to_owned());
                    let m = files.get(p).cloned().context("missing")?;
                    bytes += m.len();
                    Ok(m)
                },
                |p| files.contains_key(p),
                METADATA_LIMITS,
            )
            .unwrap();
            let distinct: HashSet<&String> = read.iter().collect();
            prop_assert_eq!(distinct.len(), read.len(), "a manifest read twice");
            prop_assert!(bytes <= manifests.iter().map(Vec::len).sum::<usize>());
            let pairs: HashSet<(usize, Option<usize>)> = refs.iter().copied().collect();
            prop_assert_eq!(images.len(), pairs.len());
        }
    }

    // ---- what an archive's metadata may cost

    /// An OCI image manifest of `layers` layers, distinct by `i`, written as registries do.
    fn image_manifest(i: usize, layers: usize) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", format!("config {i}").as_bytes()),
            "layers": (0..layers)
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", format!("layer {i} {l}").as_bytes()))
                .collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// An `index.json` listing `manifests[i]` under `name` for each `(i, name)` of `listed`, and
    /// the manifests by blob path.
    fn layout(
        manifests: &[Vec<u8>],
        listed: &[(usize, String)],
    ) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
        let listed: Vec<serde_json::Value> = listed
            .iter()
            .map(|(i, name)| {
                let mut d = descriptor(MediaType::OCI_MANIFEST, &manifests[*i]);
                d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
                d
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": listed});
        let files = manifests
            .iter()
            .map(|m| (blob_path(&Digest::of(Algorithm::Sha256, m)), m.clone()))
            .collect();
        (serde_json::to_vec(&index).unwrap(), files)
    }

    /// The images of a layout, and how many manifests were read for them.
    fn read_layout(
        index: &[u8],
        files: &HashMap<String, Vec<u8>>,
        limits: MetadataLimits,
    ) -> (anyhow::Result<Vec<ArchivedImage>>, usize) {
        let mut reads = 0;
        let images = oci_images_with(
            index,
            &[],
            |p| {
                reads += 1;
                files.get(p).cloned().context("missing")
            },
            |p| files.contains_key(p),
            limits,
        );
        (images, reads)
    }

    /// How many of `manifests`, held after `first` bytes, pass `limit`: the one that passes it
    /// included.
    fn count_to_limit(first: usize, manifests: &[&Manifest], limit: usize) -> usize {
        let mut held = first;
        for (n, m) in manifests.iter().enumerate() {
            held += manifest_memory(m);
            if held > limit {
                return n + 1;
            }
        }
        panic!("{held} bytes do not pass {limit}");
    }

    fn index_memory(index: &[u8]) -> usize {
        let parsed: OciIndex = serde_json::from_slice(index).unwrap();
        alloc(index.len()) + descriptors_memory(&parsed.manifests)
    }

    #[test]
    fn an_index_is_read_until_its_manifests_pass_the_memory_limit() {
        let manifests: Vec<Vec<u8>> = (0..100).map(|i| image_manifest(i, 50)).collect();
        let listed: Vec<(usize, String)> = (0..100).map(|i| (i, format!("r.io/a:t{i}"))).collect();
        let (index, files) = layout(&manifests, &listed);
        let limits = MetadataLimits {
            memory: 1 << 20,
            ..METADATA_LIMITS
        };
        let parsed: Vec<Manifest> = manifests
            .iter()
            .map(|m| {
                let mut m = Manifest::parse(m.clone(), None).unwrap();
                m.layers.shrink_to_fit();
                m
            })
            .collect();
        let expected = count_to_limit(
            index_memory(&index),
            &parsed.iter().collect::<Vec<_>>(),
            limits.memory,
        );
        assert!(expected < 50, "the limit is passed half way: {expected}");
        let (result, reads) = read_layout(&index, &files, limits);
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("more than 1 MiB of memory")
                && e.contains(&format!("up to manifest {expected})")),
            "{e}"
        );
        assert_eq!(reads, expected, "no manifest is read past the limit");
    }

    #[test]
    fn an_index_is_read_until_its_images_pass_the_link_limit() {
        // Manifests of 51 blobs each: the fourth passes 200 links.
        let manifests: Vec<Vec<u8>> = (0..10).map(|i| image_manifest(i, 50)).collect();
        let limits = MetadataLimits {
            blob_links: 200,
            ..METADATA_LIMITS
        };
        let listed: Vec<(usize, String)> = (0..10).map(|i| (i, format!("r.io/a:t{i}"))).collect();
        let (index, files) = layout(&manifests, &listed);
        let (result, reads) = read_layout(&index, &files, limits);
        let e = result.unwrap_err().to_string();
        assert!(e.contains("more than 200 blob links"), "{e}");
        assert_eq!(reads, 4);
        // One manifest named in many repositories is read once, and linked in each.
        let listed: Vec<(usize, String)> =
            (0..10).map(|r| (0, format!("r.io/repo{r}:v1"))).collect();
        let (index, files) = layout(&manifests, &listed);
        let (result, reads) = read_layout(&index, &files, limits);
        let e = result.unwrap_err().to_string();
        assert!(e.contains("more than 200 blob links"), "{e}");
        assert_eq!(reads, 1);
        // Within the limit, every tag of one repository shares its links.
        let listed: Vec<(usize, String)> = (0..10).map(|t| (0, format!("r.io/a:t{t}"))).collect();
        let (index, files) = layout(&manifests, &listed);
        assert_eq!(read_layout(&index, &files, limits).0.unwrap().len(), 10);
    }

    #[test]
    fn docker_manifests_are_written_until_they_pass_a_limit() {
        // Different orders of two layer files, 100 deep: each entry is an image of its own.
        let entries: Vec<serde_json::Value> = (0..100u32)
            .map(|i| {
                let layers: Vec<&str> = (0..100)
                    .map(|b| if b < 32 && (i >> b) & 1 == 1 { "b.tar" } else { "a.tar" })
                    .collect();
                serde_json::json!({"Config": "c.json", "RepoTags": [format!("r.io/a:t{i}")], "Layers": layers})
            })
            .collect();
        let json = serde_json::to_vec(&entries).unwrap();
        let (images, _) = docker_images_with(&json, fake_hash, METADATA_LIMITS).unwrap();
        let limits = MetadataLimits {
            memory: 1 << 20,
            ..METADATA_LIMITS
        };
        let expected = count_to_limit(
            alloc(json.len()) + docker_plan(&json).unwrap().memory(),
            &images.iter().map(|i| &*i.content.top).collect::<Vec<_>>(),
            limits.memory,
        );
        assert!(expected < 50, "the limit is passed half way: {expected}");
        let e = docker_images_with(&json, fake_hash, limits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("more than 1 MiB of memory")
                && e.contains(&format!("up to manifest {expected})")),
            "{e}"
        );
        // Links: one image of 51 blobs under names in many repositories.
        let json = serde_json::to_vec(&serde_json::json!([{
            "Config": "c.json",
            "RepoTags": (0..10).map(|r| format!("r.io/repo{r}:v1")).collect::<Vec<_>>(),
            "Layers": vec!["a.tar"; 50],
        }]))
        .unwrap();
        let limits = MetadataLimits {
            blob_links: 200,
            ..METADATA_LIMITS
        };
        let e = docker_images_with(&json, fake_hash, limits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 200 blob links"), "{e}");
    }

    #[test]
    fn ten_thousand_images_of_ten_layers_fit_the_metadata_limits() {
        let manifests: Vec<Vec<u8>> = (0..MAX_IMAGES).map(|i| image_manifest(i, 10)).collect();
        let listed: Vec<(usize, String)> = (0..MAX_IMAGES)
            .map(|i| (i, format!("registry.example.com/team/app{i}:v1.2.3")))
            .collect();
        let (index, files) = layout(&manifests, &listed);
        let (result, _) = read_layout(&index, &files, METADATA_LIMITS);
        let images = result.unwrap();
        assert_eq!(images.len(), MAX_IMAGES);
        // With room to spare: the limit is for hostile archives, not large ones.
        let held = index_memory(&index)
            + images
                .iter()
                .map(|i| manifest_memory(&i.content.top))
                .sum::<usize>();
        assert!(held < MAX_METADATA_MEMORY / 4 * 3, "{held}");
    }
}
