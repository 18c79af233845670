//! ferry-copy's archives end to end: what the writers write, the reader reads back the same
//! (manifest bytes and blob digests), skopeo reads what ferry writes and ferry what skopeo
//! writes, and a damaged archive is one clear error. One binary for the crate (modules below).

mod layout;
mod peers;
mod recompress;
mod round_trip;
mod store;
mod truncated;
mod writer;

use std::collections::BTreeSet;
use std::path::Path;

use ferry_copy::archive::{Archive, ArchiveEntry, ArchiveLimits, ArchiveWriter, OciLayoutWriter};
use ferry_oci::{Algorithm, Digest, Manifest, MediaType, Reference};

/// A single-platform image of any bytes: an OCI manifest over a config and layers.
#[derive(Debug, Clone)]
pub struct RawImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Manifest,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(Algorithm::Sha256, bytes),
        "size": bytes.len(),
    })
}

impl RawImage {
    pub fn new(config: Vec<u8>, layers: Vec<Vec<u8>>) -> RawImage {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers
                .iter()
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l))
                .collect::<Vec<_>>(),
        });
        let manifest = Manifest::parse(
            serde_json::to_vec_pretty(&manifest).unwrap(),
            Some(MediaType::OCI_MANIFEST),
        )
        .unwrap();
        RawImage {
            config,
            layers,
            manifest,
        }
    }

    /// Every blob: the manifest, the config, the layers (repeats included).
    pub fn blobs(&self) -> Vec<(Digest, &[u8])> {
        std::iter::once(self.manifest.bytes())
            .chain(std::iter::once(self.config.as_slice()))
            .chain(self.layers.iter().map(Vec::as_slice))
            .map(|b| (Digest::sha256(b), b))
            .collect()
    }

    /// Config and layer digests, each once.
    pub fn blob_digests(&self) -> BTreeSet<String> {
        self.blobs()[1..]
            .iter()
            .map(|(d, _)| d.to_string())
            .collect()
    }

    /// Its archive entry, named `name` if given.
    pub fn entry(&self, name: Option<&Reference>) -> ArchiveEntry {
        ArchiveEntry::new(&self.manifest, name)
    }
}

/// `img` as an archive, by [`ArchiveWriter`].
pub fn write_archive(img: &RawImage, name: Option<&Reference>) -> Vec<u8> {
    let mut w = ArchiveWriter::new(Vec::new());
    for (d, b) in img.blobs() {
        w.add_blob(&d, b.len() as u64, b).unwrap();
    }
    w.finish(&[img.entry(name)]).unwrap()
}

/// `img` as a layout at `dir`, by [`OciLayoutWriter`].
pub fn write_layout(dir: &Path, img: &RawImage, name: Option<&Reference>) {
    let mut w = OciLayoutWriter::create(dir).unwrap();
    for (d, b) in img.blobs() {
        w.add_blob(&d, b.len() as u64, b).unwrap();
    }
    w.finish(&[img.entry(name)]).unwrap();
}

/// Opens `path` with every platform and the default limits.
pub fn open(path: &Path) -> Result<Archive, ferry_copy::archive::ArchiveError> {
    Archive::open(path, &[], &ArchiveLimits::default())
}

/// Every blob of `archive`'s images read back: digest → bytes, each checked against its digest.
pub fn read_blobs(archive: &Archive) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for image in &archive.images {
        for d in image.content.blobs() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut archive.open_blob(&archive.blob(d)).unwrap(),
                &mut bytes,
            )
            .unwrap();
            assert_eq!(Digest::of(d.digest.algorithm(), &bytes), d.digest);
            out.insert(d.digest.to_string(), bytes);
        }
    }
    out
}

/// The reference the tests name images by.
pub fn app_v1() -> Reference {
    Reference::parse("127.0.0.1:5000/team/app:v1").unwrap()
}
