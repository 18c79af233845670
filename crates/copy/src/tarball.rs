//! Archive destinations (`oci-archive:FILE`, `docker-archive:FILE`): images are first copied into
//! a staging OCI layout next to the file (`FILE.ferry-partial/`, on the same file system, so an
//! interrupted copy resumes like a layout does), then written as one tar by
//! [`ArchiveWriter`](crate::archive::ArchiveWriter) to a temporary name, synced and renamed: the
//! file is either absent or whole.

use std::path::{Path, PathBuf};

use ferry_oci::{Manifest, Reference};

use crate::archive::{ArchiveEntry, ArchiveWriter};
use crate::error::CopyError;
use crate::layout;

/// The staging layout of the archive `file`.
pub(crate) fn staging(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".ferry-partial");
    file.with_file_name(name)
}

fn read_manifest(dir: &Path, d: &ferry_oci::Descriptor) -> Result<Manifest, CopyError> {
    let path = layout::blob_path(dir, &d.digest);
    let bytes = std::fs::read(&path).map_err(|e| CopyError::io(&path, e))?;
    Manifest::parse(bytes, Some(&d.media_type))
        .map_err(|e| CopyError::malformed(path.display().to_string(), e))
}

/// Writes the archive `file` from its staging layout, then removes the staging layout.
pub(crate) fn finish(file: &Path) -> Result<(), CopyError> {
    let dir = staging(file);
    let entries = layout::entries(&dir)?;
    let tmp = {
        let mut name = file.file_name().unwrap_or_default().to_owned();
        name.push(".ferry-tmp");
        file.with_file_name(name)
    };
    let out = std::fs::File::create(&tmp).map_err(|e| CopyError::io(&tmp, e))?;
    // Unbuffered, so blobs go file to file in the kernel; headers are few.
    let mut writer = ArchiveWriter::new(out);
    let archive_error =
        |e: crate::archive::ArchiveError| CopyError::malformed(tmp.display().to_string(), e);
    let mut images = Vec::new();
    let add = |writer: &mut ArchiveWriter<_>, d: &ferry_oci::Descriptor| -> Result<(), CopyError> {
        if writer.has_blob(&d.digest) {
            return Ok(());
        }
        let path = layout::blob_path(&dir, &d.digest);
        let f = std::fs::File::open(&path).map_err(|e| CopyError::io(&path, e))?;
        writer
            .add_verified_file(&d.digest, d.size, f)
            .map_err(archive_error)
    };
    for entry in &entries {
        let top = read_manifest(&dir, entry)?;
        let mut manifests = vec![top.clone()];
        for child in &top.manifests {
            manifests.push(read_manifest(&dir, child)?);
            add(&mut writer, child)?;
        }
        add(&mut writer, entry)?;
        for m in &manifests {
            for b in m.blob_references().filter(|b| !b.is_foreign()) {
                add(&mut writer, b)?;
            }
        }
        let annotation = |key: &str| entry.annotations.as_ref().and_then(|a| a.get(key)).cloned();
        let name = annotation(layout::IMAGE_NAME).and_then(|n| Reference::parse(&n).ok());
        let mut image = ArchiveEntry::new(&top, name.as_ref());
        if let Some(r) = annotation(layout::REF_NAME) {
            image.ref_name = Some(r);
        }
        images.push(image);
    }
    let out = writer.finish(&images).map_err(archive_error)?;
    out.sync_all().map_err(|e| CopyError::io(&tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| CopyError::io(file, e))?;
    // The rename is durable once the directory is.
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| CopyError::io(parent, e))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
