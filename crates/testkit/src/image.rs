//! Seeded image generation (from `ferry_load::image`) and OCI layouts for tests.

use std::path::Path;

use ferry_oci::MediaType;

pub use ferry_load::image::{Blob, Image, Rng, image, index};

/// Writes an OCI image layout at `dir` holding `blobs`, with `index.json` naming each
/// `(tag, top-level manifest or index)`.
pub fn write_layout(dir: &Path, blobs: &[&Blob], tags: &[(&str, &Blob)]) -> std::io::Result<()> {
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir)?;
    for b in blobs.iter().copied().chain(tags.iter().map(|(_, b)| *b)) {
        std::fs::write(blob_dir.join(b.digest.hex()), &b.bytes)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let manifests: Vec<serde_json::Value> = tags
        .iter()
        .map(|(tag, b)| {
            let mut d = b.descriptor();
            d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
            d
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": manifests});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
}
