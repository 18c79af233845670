//! Seeded image generation (from `ferry_load::image`) and OCI layouts for tests.

use std::path::Path;

use ferry_copy::archive::{ArchiveEntry, ArchiveError, OciLayoutWriter};
use ferry_oci::Descriptor;

pub use ferry_load::image::{Blob, Image, Rng, image, index};

/// Writes an OCI image layout at `dir` holding `blobs`, with `index.json` naming each
/// `(ref.name, top-level manifest or index)`, through ferry-copy's [`OciLayoutWriter`].
pub fn write_layout(
    dir: &Path,
    blobs: &[&Blob],
    tags: &[(&str, &Blob)],
) -> Result<(), ArchiveError> {
    let mut layout = OciLayoutWriter::create(dir)?;
    for b in blobs.iter().copied().chain(tags.iter().map(|(_, b)| *b)) {
        layout.add_blob(&b.digest, b.bytes.len() as u64, b.bytes.as_slice())?;
    }
    let entries: Vec<ArchiveEntry> = tags
        .iter()
        .map(|(name, b)| ArchiveEntry {
            manifest: Descriptor {
                media_type: b.media_type.clone(),
                digest: b.digest.clone(),
                size: b.bytes.len() as u64,
                artifact_type: None,
                annotations: None,
                platform: None,
                urls: None,
            },
            ref_name: Some((*name).to_owned()),
            image_name: None,
            docker: None,
        })
        .collect();
    layout.finish(&entries)
}
