//! Seeded image content: same seed, same bytes, same digests. Used by `ferry load gen` and by the
//! tests and benchmarks (through testkit).

use std::io::Write;

use ferry_oci::{Digest, MediaType};

/// A small, fast, seeded PRNG (xorshift64*); good enough for generated content, not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included); distinct seeds give distinct streams.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: a bijection, so no two seeds share a state, and never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// A blob and its descriptor fields.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type in the manifest.
    pub media_type: String,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Content.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_owned(),
            digest: Digest::sha256(&bytes),
            bytes,
        }
    }

    /// The descriptor JSON.
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// A single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Config blob.
    pub config: Blob,
    /// Layer blobs (gzip tar).
    pub layers: Vec<Blob>,
    /// The manifest, as a blob of type OCI manifest.
    pub manifest: Blob,
}

impl Image {
    /// Config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

fn gzip_tar(name: &str, content: &[u8]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, content)
        .expect("tar into memory");
    let raw = tar.into_inner().expect("tar into memory");
    let diff_id = Digest::sha256(&raw);
    // mtime 0 in the gzip header keeps output identical across runs.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).expect("gzip into memory");
    (gz.finish().expect("gzip into memory"), diff_id)
}

/// An image with `layers` layers, each holding a file of `layer_size` random bytes, for `arch`.
pub fn image(seed: u64, layers: usize, layer_size: usize, arch: &str) -> Image {
    let mut rng = Rng::new(seed);
    let mut diff_ids = Vec::new();
    let mut layer_blobs = Vec::new();
    for i in 0..layers {
        let (gz, diff) = gzip_tar(&format!("layer-{i}.bin"), &rng.bytes(layer_size));
        diff_ids.push(diff);
        layer_blobs.push(Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gz));
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&config).expect("json"),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        MediaType::OCI_MANIFEST,
        serde_json::to_vec(&manifest).expect("json"),
    );
    Image {
        config,
        layers: layer_blobs,
        manifest,
    }
}

/// An OCI index over `(image, architecture)` pairs, all linux.
pub fn index(children: &[(&Image, &str)]) -> Blob {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(img, arch)| {
            let mut d = img.manifest.descriptor();
            d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": manifests});
    Blob::new(
        MediaType::OCI_INDEX,
        serde_json::to_vec(&idx).expect("json"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let a = image(7, 3, 1000, "amd64");
        let b = image(7, 3, 1000, "amd64");
        assert_eq!(a.manifest.digest, b.manifest.digest);
        assert_ne!(
            image(8, 3, 1000, "amd64").manifest.digest,
            a.manifest.digest
        );
        let m = ferry_oci::Manifest::parse(a.manifest.bytes.clone(), Some(MediaType::OCI_MANIFEST))
            .unwrap();
        assert_eq!(m.layers.len(), 3);
        assert_eq!(m.config.unwrap().digest, a.config.digest);
    }
}
