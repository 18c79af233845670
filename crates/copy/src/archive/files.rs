//! Where an archive's files are: a directory, or entries of a (decompressed) tar.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{ArchiveError, At, UnpackedBound, UnpackedTooLarge, ensure};
use super::limits::{
    AUTO_UNPACK_FLOOR, AUTO_UNPACK_RATIO, ArchiveLimits, KEEP_FREE_IN_TMP, MAX_METADATA_BYTES,
};
use super::tar_index::{PlainTar, TAR_LIMITS, TarIndex, Unpack, index_tar_ended, read_up_to};

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

/// Where a file's bytes are: the same for two names that link to one file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum FileId {
    Path(PathBuf),
    Offset(u64),
}

/// Where an archive's files are.
pub(super) enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: TarIndex,
        /// The tar stopped between entries, without its end marker: it may be truncated.
        unterminated: bool,
        /// The decompressed copy of a gzip archive, removed on drop.
        _decompressed: Option<tempfile::TempPath>,
    },
}

impl Files {
    pub(super) fn open(path: &Path, limits: &ArchiveLimits) -> Result<Files, ArchiveError> {
        let cannot_open = |e| ArchiveError::io(format!("cannot open {}", path.display()), e);
        let meta = std::fs::metadata(path).map_err(cannot_open)?;
        if meta.is_dir() {
            return Ok(Files::Dir(path.to_owned()));
        }
        ensure!(
            meta.is_file(),
            invalid,
            "{} is {}, not a regular file",
            path.display(),
            file_kind(&meta)
        );
        let mut f = std::fs::File::open(path).map_err(cannot_open)?;
        let mut magic = [0u8; 2];
        let gzip = read_up_to(&mut f, &mut magic) == 2 && magic == [0x1f, 0x8b];
        f.seek(SeekFrom::Start(0)).map_err(cannot_open)?;
        if !gzip {
            let mut tar = PlainTar {
                file: std::io::BufReader::new(f),
                pos: 0,
                len: meta.len(),
            };
            let (entries, ended) = index_tar_ended(&mut tar, &TAR_LIMITS).at(|| path.display())?;
            return Ok(Files::Tar {
                path: path.to_owned(),
                entries,
                unterminated: !ended,
                _decompressed: None,
            });
        }
        let tmp = tempfile::NamedTempFile::new().map_err(|e| {
            ArchiveError::io(
                "cannot create a temporary file to decompress into (set TMPDIR)",
                e,
            )
        })?;
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
            tmp.as_file().try_clone().map_err(|e| {
                ArchiveError::io("cannot use the temporary file to decompress into", e)
            })?,
            limit,
        );
        let indexed = index_tar_ended(&mut tar, &TAR_LIMITS).and_then(|indexed| {
            // The rest of the stream (what follows the end marker, then gzip's checksum) is read
            // too: a damaged byte in what was indexed shows only there.
            let mut rest = [0u8; 8192];
            loop {
                match tar.read(&mut rest) {
                    Ok(0) => return Ok(indexed),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ArchiveError::io("after the end of the tar", e)),
                }
            }
        });
        if tar.exceeded {
            let bound = match limits.max_unpacked {
                _ if limit < configured => UnpackedBound::TempSpace,
                Some(_) => UnpackedBound::Configured,
                None => UnpackedBound::Default,
            };
            let why = match bound {
                UnpackedBound::TempSpace => format!(
                    "the free space in the temporary directory {}, less {} MiB kept free; set TMPDIR to a larger one",
                    std::env::temp_dir().display(),
                    KEEP_FREE_IN_TMP >> 20
                ),
                UnpackedBound::Configured => "the configured limit".to_owned(),
                UnpackedBound::Default => format!(
                    "by default {AUTO_UNPACK_RATIO} times its compressed size, at least {} MiB",
                    AUTO_UNPACK_FLOOR >> 20
                ),
            };
            // How to raise the limit is the command's to say.
            return Err(ArchiveError::unpacked(
                format!(
                    "{}: unpacks to more than {limit} bytes ({why})",
                    path.display()
                ),
                UnpackedTooLarge {
                    limit,
                    compressed: meta.len(),
                    bound,
                },
            ));
        }
        if tar.corrupt {
            // The index stopped at the gzip error, which is the archive's fault.
            let e = indexed
                .err()
                .unwrap_or_else(|| ArchiveError::invalid("corrupt data"));
            return Err(e
                .archive_fault()
                .at(format!("{}: not a valid gzip file", path.display())));
        }
        let (entries, ended) = indexed.at(|| path.display())?;
        tar.out.flush().map_err(|e| {
            ArchiveError::io("cannot write the decompressed archive (is TMPDIR full?)", e)
        })?;
        let p = tmp.into_temp_path();
        Ok(Files::Tar {
            path: p.to_path_buf(),
            entries,
            unterminated: !ended,
            _decompressed: Some(p),
        })
    }

    /// What to add to a message about something missing: that the archive looks truncated, if
    /// it does.
    pub(super) fn truncation_hint(&self) -> &'static str {
        match self {
            Files::Tar {
                unterminated: true, ..
            } => " (the archive ends early: truncated?)",
            _ => "",
        }
    }

    pub(super) fn exists(&self, name: &str) -> bool {
        match self {
            // Metadata only: nothing is opened.
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar { entries, .. } => entries.contains_key(name),
        }
    }

    /// A reader over one file, its size, and where its bytes are.
    pub(super) fn open_file(
        &self,
        name: &str,
    ) -> Result<(std::fs::File, u64, FileId), ArchiveError> {
        let missing = |e| ArchiveError::io(format!("{name} is missing from the archive"), e);
        match self {
            Files::Dir(d) => {
                // A layout's symlinks must not lead out of it (e.g. to /etc/shadow as a "layer").
                let path = d.join(name).canonicalize().map_err(missing)?;
                let root = d
                    .canonicalize()
                    .map_err(|e| ArchiveError::io(format!("cannot open {}", d.display()), e))?;
                ensure!(
                    path.starts_with(&root),
                    invalid,
                    "{name} points outside the archive directory"
                );
                // Regular files only, checked before opening: opening a FIFO waits for a writer
                // forever, and a device reads forever. (Only the archive's owner can swap the file
                // in between.)
                let meta = std::fs::metadata(&path).map_err(missing)?;
                ensure!(
                    meta.is_file(),
                    invalid,
                    "{name} in the archive directory is {}, not a regular file",
                    file_kind(&meta)
                );
                let f = std::fs::File::open(&path).map_err(missing)?;
                let size = f
                    .metadata()
                    .map_err(|e| ArchiveError::io(format!("cannot read {name}"), e))?
                    .len();
                Ok((f, size, FileId::Path(path)))
            }
            Files::Tar { path, entries, .. } => {
                let (offset, size) = *entries.get(name).ok_or_else(|| {
                    ArchiveError::invalid(format!(
                        "{name} is missing from the archive{}",
                        self.truncation_hint()
                    ))
                })?;
                let cannot_read =
                    |e| ArchiveError::io(format!("cannot read {}", path.display()), e);
                let mut f = std::fs::File::open(path).map_err(cannot_read)?;
                f.seek(SeekFrom::Start(offset)).map_err(cannot_read)?;
                Ok((f, size, FileId::Offset(offset)))
            }
        }
    }

    pub(super) fn read_small(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let (f, size, _) = self.open_file(name)?;
        ensure!(
            size <= MAX_METADATA_BYTES,
            limit,
            "{name} is {size} bytes, more than the {MAX_METADATA_BYTES} a manifest may have"
        );
        let mut out = Vec::with_capacity(size as usize);
        f.take(size)
            .read_to_end(&mut out)
            .map_err(|e| ArchiveError::io(format!("cannot read {name}"), e))?;
        Ok(out)
    }
}
