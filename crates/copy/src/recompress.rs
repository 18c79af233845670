//! `--dest-compress`: layers converted to another compression on their way to the destination,
//! and the manifests that list them rewritten.
//!
//! By default ([`Compression::Keep`]) nothing here runs and every digest is kept. Converting is
//! explicit: a layer blob whose media type says another compression (gzip, zstd or a plain tar)
//! is decompressed as it is read — its size and digest checked on the compressed bytes as they
//! arrive — and compressed again into a file at the destination (its partial directory for a
//! directory or archive destination, a temporary file for a registry), hashed while it is
//! written; only then is it renamed to its new digest or pushed. Nothing holds a whole layer in
//! memory. Layers already in the wanted compression, foreign and non-distributable layers and
//! config blobs are copied as they are: the config's `rootfs.diff_ids` are digests of the
//! uncompressed tars, which a conversion does not change.
//!
//! A manifest that lists a converted layer is rewritten (the layer descriptor's `mediaType`,
//! `digest` and `size`; everything else kept), so it gets a new digest, and so does an index
//! over it. Docker schema 2 has no zstd layer type: a Docker image converted to zstd becomes an
//! OCI image (manifest, config and layer media types; the config's bytes are kept), as skopeo
//! converts it, and a Docker manifest list over it an OCI index.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::{Buf, Bytes};
use ferry_client::ClientError;
use ferry_oci::{Algorithm, Descriptor, Digest, Hasher, Manifest, MediaType};
use futures_util::StreamExt;

use crate::dest::Dest;
use crate::error::CopyError;
use crate::files::{self, Reporter};
use crate::location::Location;
use crate::progress::BlobOutcome;
use crate::source::{BlobReader, Source};

/// The compression of the layers a copy writes (`--dest-compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Layers as the source has them: every digest is kept.
    #[default]
    Keep,
    /// gzip layers (`application/vnd.oci.image.layer.v1.tar+gzip`, or Docker's `…tar.gzip`).
    Gzip,
    /// zstd layers (`application/vnd.oci.image.layer.v1.tar+zstd`); Docker images become OCI.
    Zstd,
}

impl Compression {
    /// The name `--dest-compress` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Keep => "keep",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn format(self) -> Option<Format> {
        match self {
            Compression::Keep => None,
            Compression::Gzip => Some(Format::Gzip),
            Compression::Zstd => Some(Format::Zstd),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--dest-compress` value that is not `keep`, `gzip` or `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected keep, gzip or zstd")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Compression, UnknownCompression> {
        match s {
            "keep" => Ok(Compression::Keep),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}

/// How a layer's tar is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    Tar,
    Gzip,
    Zstd,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
        }
    }
}

/// Which spec a media type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Oci,
    Docker,
}

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The layer media types a conversion reads; anything else (foreign and non-distributable
/// layers, artifacts, configs) is copied as it is.
fn layer_format(media_type: &str) -> Option<(Family, Format)> {
    match media_type {
        OCI_LAYER_TAR => Some((Family::Oci, Format::Tar)),
        OCI_LAYER_GZIP => Some((Family::Oci, Format::Gzip)),
        OCI_LAYER_ZSTD => Some((Family::Oci, Format::Zstd)),
        DOCKER_LAYER_TAR => Some((Family::Docker, Format::Tar)),
        DOCKER_LAYER_GZIP => Some((Family::Docker, Format::Gzip)),
        _ => None,
    }
}

/// The media type of a layer of `family` stored as `format`.
fn layer_media_type(family: Family, format: Format) -> &'static str {
    match (family, format) {
        (Family::Oci, Format::Tar) => OCI_LAYER_TAR,
        (Family::Oci, Format::Gzip) => OCI_LAYER_GZIP,
        (Family::Oci, Format::Zstd) => OCI_LAYER_ZSTD,
        (Family::Docker, Format::Tar) => DOCKER_LAYER_TAR,
        (Family::Docker, Format::Gzip) => DOCKER_LAYER_GZIP,
        (Family::Docker, Format::Zstd) => unreachable!("Docker images converted to zstd are OCI"),
    }
}

/// The OCI media type of a Docker blob's, for a Docker image converted to OCI (as skopeo maps
/// them); `None` when it has no Docker-specific type.
fn oci_media_type(docker: &str) -> Option<&'static str> {
    Some(match docker {
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_TAR => OCI_LAYER_TAR,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.foreign.diff.tar" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar"
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        _ => return None,
    })
}

/// What a copy does to one source layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conversion {
    pub from: Format,
    pub to: Format,
}

/// The layers of `images` that `target` converts, by digest: those whose media type says
/// another compression. Empty for [`Compression::Keep`].
pub(crate) fn plan(target: Compression, images: &[Manifest]) -> HashMap<Digest, Conversion> {
    let Some(to) = target.format() else {
        return HashMap::new();
    };
    let mut plan = HashMap::new();
    for layer in images.iter().flat_map(|m| m.layers.iter()) {
        if let Some((_, from)) = layer_format(&layer.media_type)
            && from != to
        {
            plan.entry(layer.digest.clone())
                .or_insert(Conversion { from, to });
        }
    }
    plan
}

/// A converted layer: the blob written at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewBlob {
    pub digest: Digest,
    pub size: u64,
    pub format: Format,
}

fn json_error(what: &str, e: impl fmt::Display) -> CopyError {
    CopyError::malformed(what, e)
}

/// `m` with its converted layers' descriptors replaced (and Docker types made OCI where a layer
/// became zstd); `None` when none of its layers was converted.
fn rewrite_image(
    m: &Manifest,
    converted: &HashMap<Digest, NewBlob>,
    image: &str,
) -> Result<Option<Manifest>, CopyError> {
    let changed: Vec<&NewBlob> = m
        .layers
        .iter()
        .filter_map(|l| converted.get(&l.digest))
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    let to_oci = m.media_type() == MediaType::DockerManifest
        && changed.iter().any(|n| n.format == Format::Zstd);
    let family = if m.media_type() == MediaType::DockerManifest && !to_oci {
        Family::Docker
    } else {
        Family::Oci
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(m.bytes()).map_err(|e| json_error(image, e))?;
    let layers = value
        .get_mut("layers")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| json_error(image, "a manifest without layers"))?;
    for layer in layers {
        let digest: Option<Digest> = layer
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok());
        if let Some(new) = digest.as_ref().and_then(|d| converted.get(d)) {
            layer["mediaType"] = layer_media_type(family, new.format).into();
            layer["digest"] = new.digest.as_str().into();
            layer["size"] = new.size.into();
        } else if to_oci
            && let Some(oci) = layer
                .get("mediaType")
                .and_then(|t| t.as_str())
                .and_then(oci_media_type)
        {
            layer["mediaType"] = oci.into();
        }
    }
    let media_type = if to_oci {
        value["mediaType"] = MediaType::OCI_MANIFEST.into();
        if let Some(oci) = value["config"]
            .get("mediaType")
            .and_then(|t| t.as_str())
            .and_then(oci_media_type)
        {
            value["config"]["mediaType"] = oci.into();
        }
        MediaType::OCI_MANIFEST
    } else {
        m.media_type().as_str()
    };
    let bytes = serde_json::to_vec(&value).map_err(|e| json_error(image, e))?;
    Manifest::parse(bytes, Some(media_type))
        .map(Some)
        .map_err(|e| json_error(image, e))
}

/// `index` with the descriptors of its changed children replaced (a Docker manifest list over
/// children that became OCI turns into an OCI index).
fn rewrite_index(
    index: &Manifest,
    changed: &HashMap<Digest, Manifest>,
    image: &str,
) -> Result<Manifest, CopyError> {
    if !index
        .manifests
        .iter()
        .any(|d| changed.contains_key(&d.digest))
    {
        return Ok(index.clone());
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(index.bytes()).map_err(|e| json_error(image, e))?;
    let children = value
        .get_mut("manifests")
        .and_then(|l| l.as_array_mut())
        .ok_or_else(|| json_error(image, "an index without manifests"))?;
    let mut oci_child = false;
    for child in children {
        let digest: Option<Digest> = child
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse().ok());
        if let Some(new) = digest.as_ref().and_then(|d| changed.get(d)) {
            child["mediaType"] = new.media_type().as_str().into();
            child["digest"] = new.digest().as_str().into();
            child["size"] = (new.bytes().len() as u64).into();
            oci_child |= new.media_type() == MediaType::OciManifest;
        }
    }
    let media_type = if index.media_type() == MediaType::DockerManifestList && oci_child {
        value["mediaType"] = MediaType::OCI_INDEX.into();
        MediaType::OCI_INDEX
    } else {
        index.media_type().as_str()
    };
    let bytes = serde_json::to_vec(&value).map_err(|e| json_error(image, e))?;
    Manifest::parse(bytes, Some(media_type)).map_err(|e| json_error(image, e))
}

/// The manifests to write once layers were `converted`: `top` (an image manifest, or an index
/// over `images`) and `images`, each rewritten where a layer of it changed.
pub(crate) fn rewrite(
    top: &Manifest,
    images: &[Manifest],
    converted: &HashMap<Digest, NewBlob>,
    image: &str,
) -> Result<(Manifest, Vec<Manifest>), CopyError> {
    let mut changed = HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    for m in images {
        match rewrite_image(m, converted, image)? {
            Some(new) => {
                changed.insert(m.digest().clone(), new.clone());
                out.push(new);
            }
            None => out.push(m.clone()),
        }
    }
    let top = if top.media_type().is_index() {
        rewrite_index(top, &changed, image)?
    } else {
        changed
            .get(top.digest())
            .cloned()
            .unwrap_or_else(|| top.clone())
    };
    Ok((top, out))
}

/// Reads a source blob, checking its size and digest on the bytes as they come.
struct Verifying<'a, R> {
    inner: R,
    hasher: Hasher,
    len: u64,
    limit: u64,
    on_bytes: &'a (dyn Fn(u64) + Sync),
    /// Set when the source itself failed (not its content): that error is the one to report.
    source_failed: bool,
}

impl<R: Read> Read for Verifying<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .inspect_err(|_| self.source_failed = true)?;
        self.len += n as u64;
        if self.len > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "longer than its descriptor says",
            ));
        }
        self.hasher.update(&buf[..n]);
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// Writes the new blob to its file, hashing it.
struct Hashing<W> {
    inner: W,
    hasher: Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// gzip at level 6, the default of gzip itself and of Go's compress/gzip, which docker and
/// containerd use for the layers they push: the size registries' users expect. It is the slow
/// end of a conversion (level 1 would be faster and larger); `-j` spreads layers over cores,
/// and converting is asked for explicitly, where size usually matters more. mtime 0 and no
/// file name make the output depend on the content alone, so a conversion run twice (or by two
/// copies) gives the same digest.
const GZIP_LEVEL: u32 = 6;
/// zstd at level 3, zstd's own default and what containerd, buildkit and podman write: smaller
/// than gzip -6 and several times faster to compress and to decompress.
const ZSTD_LEVEL: i32 = 3;

enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(format: Format, out: W) -> io::Result<Encoder<W>> {
        Ok(match format {
            Format::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Format::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                // A checksum in the frame, so a reader notices a damaged layer even without
                // its digest.
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
            Format::Tar => unreachable!("layers are converted to gzip or zstd only"),
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Why decoding stopped.
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// Decodes `src` (`from`) into `encoder`.
fn transcode<R: Read, W: Write>(
    src: R,
    from: Format,
    encoder: &mut Encoder<W>,
) -> Result<(), Failed> {
    let mut decoded: Box<dyn Read + '_> = match from {
        Format::Tar => Box::new(src),
        // Multi-member: pigz and concatenated streams are valid gzip layers.
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(src)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(src).map_err(Failed::Read)?),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failed::Read(e)),
        };
        encoder.write_all(&buf[..n]).map_err(Failed::Write)?;
    }
}

/// Reads the blob `desc` (stored as `conversion.from`) from `src`, checking its size and digest,
/// and writes it stored as `conversion.to` to the file `out`; returns the new blob.
fn recompress_blocking(
    src: BlobReader,
    desc: &Descriptor,
    conversion: Conversion,
    out: &Path,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<NewBlob, CopyError> {
    let what = format!("blob {}", desc.digest);
    let file = std::fs::File::create(out).map_err(|e| CopyError::io(out, e))?;
    let mut encoder = Encoder::new(
        conversion.to,
        Hashing {
            inner: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Algorithm::Sha256.hasher(),
            len: 0,
        },
    )
    .map_err(|e| CopyError::io(out, e))?;
    let mut source = Verifying {
        inner: src,
        hasher: desc.digest.algorithm().hasher(),
        len: 0,
        limit: desc.size,
        on_bytes,
        source_failed: false,
    };
    let decoded = transcode(&mut source, conversion.from, &mut encoder);
    if let Err(Failed::Write(e)) = decoded {
        return Err(CopyError::io(out, e));
    }
    // Whatever follows the compressed stream is part of the blob and of its digest.
    let drained = io::copy(&mut source, &mut io::sink());
    if source.source_failed {
        let e = match (decoded, drained) {
            (Err(Failed::Read(e)), _) | (_, Err(e)) => e,
            _ => io::Error::other("the source failed"),
        };
        return Err(source_error(&what, e));
    }
    if source.len != desc.size {
        return Err(CopyError::Size {
            what,
            expected: desc.size,
            actual: source.len,
        });
    }
    let actual = source.hasher.finish();
    if actual != desc.digest {
        return Err(CopyError::Integrity {
            what,
            expected: desc.digest.clone(),
            actual,
        });
    }
    if let Err(Failed::Read(e)) = decoded {
        return Err(CopyError::malformed(
            what,
            format!(
                "its digest is right but it is not a valid {} stream: {e}",
                conversion.from.name()
            ),
        ));
    }
    let hashing = encoder.finish().map_err(|e| CopyError::io(out, e))?;
    let mut writer = hashing.inner;
    writer.flush().map_err(|e| CopyError::io(out, e))?;
    Ok(NewBlob {
        digest: hashing.hasher.finish(),
        size: hashing.len,
        format: conversion.to,
    })
}

/// A failed read of a source blob: a registry's error keeps its kind (so a retry can be
/// decided), anything else names the blob.
fn source_error(what: &str, e: io::Error) -> CopyError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<ClientError>() {
            Ok(client) => CopyError::registry(what, *client),
            Err(other) => CopyError::malformed(what, other),
        },
        None => CopyError::malformed(what, "reading it failed"),
    }
}

/// A registry blob's body, read on a blocking thread: chunks arrive through a small channel,
/// so at most a few are held at once.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, ClientError>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// Where a conversion writes before it knows the new digest: the destination's partial
/// directory (the same file system as the final names, so a rename places it), or a temporary
/// file for a registry.
enum Scratch {
    Partial {
        path: PathBuf,
        _lock: files::PartialLock,
    },
    Temp(tempfile::TempPath),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Partial { path, .. } => path,
            Scratch::Temp(t) => t,
        }
    }
}

/// Refuses, before anything is written, a destination conversions cannot write to: one that
/// is neither a directory nor a registry (ferry's store keeps blobs as they are pulled).
pub(crate) fn check_destination(dst: &Dest, destination: &Location) -> Result<(), CopyError> {
    if dst.root().is_some() || matches!(dst, Dest::Registry { .. }) {
        return Ok(());
    }
    Err(CopyError::Destination {
        destination: destination.to_string(),
        why: "takes layers as they are; copy with --dest-compress keep".to_owned(),
    })
}

async fn scratch(dst: &Dest, desc: &Descriptor, to: Format) -> Result<Scratch, CopyError> {
    match dst.root() {
        Some(root) => {
            let partial = files::partial_path(root, &desc.digest);
            let mut name = partial.file_name().unwrap_or_default().to_owned();
            name.push(format!(".to-{}", to.name()));
            let path = partial.with_file_name(name);
            let lock = files::lock_partial(path.clone()).await?;
            Ok(Scratch::Partial { path, _lock: lock })
        }
        None if !matches!(dst, Dest::Registry { .. }) => Err(CopyError::Unsupported(
            "--dest-compress gzip|zstd does not write to this destination; copy with keep",
        )),
        None => tokio::task::spawn_blocking(|| {
            tempfile::Builder::new()
                .prefix("ferry-recompress-")
                .tempfile()
                .map(|f| Scratch::Temp(f.into_temp_path()))
                .map_err(|e| CopyError::io(std::env::temp_dir(), e))
        })
        .await
        .expect("temp file task panicked"),
    }
}

/// Converts one layer into `scratch`: read from `src` (or from the layer cache when it has
/// the blob), checked, recompressed. A body cut off midway is fetched again, up to `attempts`.
async fn convert_into(
    src: &Source,
    desc: &Descriptor,
    conversion: Conversion,
    out: &Path,
    attempts: u32,
    reporter: &Reporter,
) -> Result<NewBlob, CopyError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = convert_once(src, desc, conversion, out, reporter).await;
        match result {
            Err(CopyError::Registry { source, what })
                if source.retryable() && attempt < attempts.max(1) =>
            {
                reporter.retrying(&what, &source.to_string());
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5))).await;
            }
            other => return other,
        }
    }
}

async fn convert_once(
    src: &Source,
    desc: &Descriptor,
    conversion: Conversion,
    out: &Path,
    reporter: &Reporter,
) -> Result<NewBlob, CopyError> {
    let run = |open: crate::source::BlobOpener| {
        let (desc, out, reporter) = (desc.clone(), out.to_owned(), reporter.clone());
        tokio::task::spawn_blocking(move || {
            let on_bytes = |n: u64| reporter.bytes(&desc.digest, n);
            recompress_blocking(open()?, &desc, conversion, &out, &on_bytes)
        })
    };
    let Source::Registry {
        registry,
        reference,
    } = src
    else {
        let open = src
            .blob_opener(desc)
            .expect("sources other than registries are files");
        return run(open).await.expect("recompress task panicked");
    };
    let what = format!("blob {} of {reference}", desc.digest);
    let body = registry
        .get_blob(&reference.repo, &desc.digest, 0)
        .await
        .map_err(|e| CopyError::registry(&what, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let pump = async move {
        let mut stream = body.into_stream();
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            // The reader stopped (it failed or had enough): nothing more to send.
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    };
    let converting = run(Box::new(move || {
        Ok(Box::new(ChannelReader {
            rx,
            chunk: Bytes::new(),
        }) as BlobReader)
    }));
    let ((), converted) = tokio::join!(pump, converting);
    converted.expect("recompress task panicked")
}

/// Converts the layer `desc` of `src` and puts the result at `dst`: renamed to its new digest
/// in a directory, pushed to a registry unless it has it. Nothing is left under a final name
/// unless it verified.
pub(crate) async fn put_converted(
    src: &Source,
    dst: &Dest,
    desc: &Descriptor,
    conversion: Conversion,
    attempts: u32,
    reporter: &Reporter,
) -> Result<(NewBlob, BlobOutcome), CopyError> {
    let scratch = scratch(dst, desc, conversion.to).await?;
    let converted = convert_into(src, desc, conversion, scratch.path(), attempts, reporter).await;
    let new = match converted {
        Ok(new) => new,
        Err(e) => {
            if let Scratch::Partial { path, .. } = &scratch {
                let _ = tokio::fs::remove_file(path).await;
            }
            return Err(e);
        }
    };
    let outcome = match (&scratch, dst) {
        (Scratch::Partial { path, .. }, _) => {
            let target = dst
                .blob_file(&new.digest)
                .expect("directory destinations hold blob files");
            if files::present(&target, new.size).await {
                let _ = tokio::fs::remove_file(path).await;
                BlobOutcome::Present
            } else {
                files::commit(path, &target).await?;
                BlobOutcome::Copied { resumed_from: 0 }
            }
        }
        (
            Scratch::Temp(path),
            Dest::Registry {
                registry,
                reference,
            },
        ) => {
            let what = format!("blob {} (from {}) to {reference}", new.digest, desc.digest);
            let repo = &reference.repo;
            if registry
                .blob_exists(repo, &new.digest)
                .await
                .map_err(|e| CopyError::registry(&what, e))?
            {
                BlobOutcome::Present
            } else {
                registry
                    .push_blob_file(repo, &new.digest, new.size, path)
                    .await
                    .map_err(|e| CopyError::registry(&what, e))?;
                BlobOutcome::Copied { resumed_from: 0 }
            }
        }
        (Scratch::Temp(_), _) => {
            return Err(CopyError::Unsupported(
                "--dest-compress gzip|zstd does not write to this destination; copy with keep",
            ));
        }
    };
    Ok((new, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses_its_three_names_and_nothing_else() {
        for c in [Compression::Keep, Compression::Gzip, Compression::Zstd] {
            assert_eq!(c.as_str().parse::<Compression>(), Ok(c));
        }
        let e = "zip".parse::<Compression>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown compression \"zip\": expected keep, gzip or zstd"
        );
        assert!("GZIP".parse::<Compression>().is_err());
        assert_eq!(Compression::default(), Compression::Keep);
    }

    #[test]
    fn only_layers_in_another_compression_are_planned() {
        let layer = |media_type: &str, n: u8| serde_json::json!({"mediaType": media_type, "digest": Digest::sha256(&[n]), "size": 1});
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::sha256(b"c"), "size": 1},
            "layers": [
                layer(OCI_LAYER_GZIP, 1),
                layer(OCI_LAYER_ZSTD, 2),
                layer(OCI_LAYER_TAR, 3),
                layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 4),
                layer("application/vnd.example.artifact", 5),
            ],
        });
        let m = Manifest::parse(serde_json::to_vec(&m).unwrap(), None).unwrap();
        let images = std::slice::from_ref(&m);
        assert!(plan(Compression::Keep, images).is_empty());
        let zstd = plan(Compression::Zstd, images);
        assert_eq!(zstd.len(), 2);
        assert_eq!(zstd[&Digest::sha256(&[1])].from, Format::Gzip);
        assert_eq!(zstd[&Digest::sha256(&[3])].from, Format::Tar);
        let gzip = plan(Compression::Gzip, images);
        assert_eq!(gzip.len(), 2);
        assert_eq!(gzip[&Digest::sha256(&[2])].from, Format::Zstd);
        assert!(gzip.contains_key(&Digest::sha256(&[3])));
    }
}
