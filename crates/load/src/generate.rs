//! The images `ferry load gen` makes: `count` images in `batches` batches, named like ociregistry's
//! load test (`<rand10>-<rand10>-<NNNN>:v<ddd>.<ddd>`, `NNNN` the batch key), each a valid image
//! (config whose `rootfs.diff_ids` match its gzip tar layers) or, with several platforms, an index
//! over one such image per platform. Everything follows from the seed; image `i` can be made
//! without making the others, so nothing holds all of them in memory.

use std::io::Write;

use bytes::Bytes;
use ferry_client::{ClientError, Registry};
use ferry_copy::archive::{ArchiveEntry, ArchiveError, ArchiveWriter, DockerSaveEntry};
use ferry_oci::{Descriptor, MediaType, Reference, RepoName};
use futures_util::StreamExt;

use crate::image::{Blob, Rng, image, index};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Images.
    pub count: usize,
    /// Batches they are split into (contiguous, sizes differing by at most one).
    pub batches: usize,
    /// Layers per image (per platform).
    pub layers: usize,
    /// Bytes of random content per layer (before tar and gzip).
    pub layer_size: usize,
    /// Seed: same seed, same names and bytes.
    pub seed: u64,
    /// Architectures (all `linux`); more than one makes every image an index.
    pub architectures: Vec<String>,
}

impl Default for GenOptions {
    fn default() -> GenOptions {
        GenOptions {
            count: 1500,
            batches: 10,
            layers: 5,
            layer_size: 1024,
            seed: 1,
            architectures: vec!["amd64".into()],
        }
    }
}

/// A [`GenOptions`] setting that cannot make valid images: the caller's to fix. Messages name
/// the `ferry load gen` flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGenOptions {
    /// No images asked for.
    #[error("--count must be at least 1")]
    Count,
    /// Batches outside 1..=min(count, 9999).
    #[error("--batches must be between 1 and the image count ({count}), and at most 9999")]
    Batches {
        /// The image count.
        count: usize,
    },
    /// Layers outside 1..=100.
    #[error("--blobs must be between 1 and 100")]
    Layers,
    /// A layer over 1 GiB.
    #[error("--blob-size must be at most 1GiB")]
    LayerSize,
    /// No architecture.
    #[error("give at least one platform")]
    NoPlatform,
    /// An architecture that is not a plain name (ASCII letters and digits).
    #[error("invalid architecture {0:?}")]
    Architecture(String),
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Repository name, e.g. `qwhdkeiruf-pldkrtyqmz-0003`.
    pub repo: String,
    /// Tag, e.g. `v012.345`.
    pub tag: String,
    /// Its batch, from 1.
    pub batch: usize,
    /// The manifest, or the index of a multi-platform image.
    pub top: Blob,
    /// The platforms' manifests of an index (empty for a single-platform image).
    pub children: Vec<Blob>,
    /// Configs and layers of every platform.
    pub blobs: Vec<Blob>,
}

impl GeneratedImage {
    /// `repo:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }

    /// Media type of [`GeneratedImage::top`].
    pub fn top_media_type(&self) -> &'static str {
        if self.children.is_empty() {
            MediaType::OCI_MANIFEST
        } else {
            MediaType::OCI_INDEX
        }
    }
}

/// The batch key of batch `b` as it appears in names and `--patterns`: `-0001`.
pub fn batch_key(b: usize) -> String {
    format!("-{b:04}")
}

impl GenOptions {
    /// Refuses settings that cannot make valid images.
    pub fn validate(&self) -> Result<(), InvalidGenOptions> {
        if self.count == 0 {
            return Err(InvalidGenOptions::Count);
        }
        if self.batches == 0 || self.batches > self.count || self.batches > 9999 {
            return Err(InvalidGenOptions::Batches { count: self.count });
        }
        if self.layers == 0 || self.layers > 100 {
            return Err(InvalidGenOptions::Layers);
        }
        if self.layer_size > 1 << 30 {
            return Err(InvalidGenOptions::LayerSize);
        }
        if self.architectures.is_empty() {
            return Err(InvalidGenOptions::NoPlatform);
        }
        for a in &self.architectures {
            if a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(InvalidGenOptions::Architecture(a.clone()));
            }
        }
        Ok(())
    }

    /// Batch of image `i` (from 1).
    pub fn batch_of(&self, i: usize) -> usize {
        i * self.batches / self.count + 1
    }

    fn rng(&self, i: usize, salt: u64) -> Rng {
        Rng::new(
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((i as u64) << 8 | salt),
        )
    }

    /// Name and tag of image `i`.
    pub fn name(&self, i: usize) -> (String, String) {
        let mut rng = self.rng(i, 0);
        let mut word = || {
            (0..10)
                .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
                .collect::<String>()
        };
        let (a, b) = (word(), word());
        let repo = format!("{a}-{b}{}", batch_key(self.batch_of(i)));
        let tag = format!("v{:03}.{:03}", rng.next_u64() % 1000, rng.next_u64() % 1000);
        (repo, tag)
    }

    /// Image `i` (0-based), content and all.
    pub fn generate(&self, i: usize) -> GeneratedImage {
        let (repo, tag) = self.name(i);
        let mut images = Vec::new();
        for (k, arch) in self.architectures.iter().enumerate() {
            let seed = self.rng(i, 1 + k as u64).next_u64();
            images.push(image(seed, self.layers, self.layer_size, arch));
        }
        let blobs: Vec<Blob> = images.iter().flat_map(|m| m.blobs().cloned()).collect();
        let (top, children) = if images.len() == 1 {
            (images[0].manifest.clone(), Vec::new())
        } else {
            let pairs: Vec<_> = images
                .iter()
                .zip(&self.architectures)
                .map(|(m, a)| (m, a.as_str()))
                .collect();
            (
                index(&pairs),
                images.iter().map(|m| m.manifest.clone()).collect(),
            )
        };
        GeneratedImage {
            repo,
            tag,
            batch: self.batch_of(i),
            top,
            children,
            blobs,
        }
    }
}

/// Pushes `img` to `registry`: blobs it lacks (`jobs` at a time), platform manifests by digest,
/// then the top manifest by tag.
pub async fn push(
    registry: &Registry,
    img: &GeneratedImage,
    jobs: usize,
) -> Result<(), ClientError> {
    let repo = RepoName::new(&img.repo)
        .map_err(|e| ClientError::new(ferry_client::ErrorKind::Request, e.to_string()))?;
    let results: Vec<Result<(), ClientError>> = futures_util::stream::iter(&img.blobs)
        .map(|b| {
            let repo = &repo;
            async move {
                if registry.blob_exists(repo, &b.digest).await? {
                    return Ok(());
                }
                registry
                    .push_blob(repo, &b.digest, Bytes::from(b.bytes.clone()))
                    .await
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    for c in &img.children {
        registry
            .put_manifest(
                &repo,
                c.digest.as_str(),
                MediaType::OCI_MANIFEST,
                Bytes::from(c.bytes.clone()),
            )
            .await?;
    }
    registry
        .put_manifest(
            &repo,
            &img.tag,
            img.top_media_type(),
            Bytes::from(img.top.bytes.clone()),
        )
        .await?;
    Ok(())
}

/// Writes `img` as one tar that is both an OCI image layout (`oci-archive`) and a `docker save`
/// archive (`manifest.json`, as Docker 25+ writes them), named `name` (e.g.
/// `127.0.0.1:5000/repo:tag`), with [`ArchiveWriter`]. Multi-platform images get no
/// `manifest.json` (docker save lists one platform; OCI tools read the index).
pub fn write_archive<W: Write>(
    out: W,
    img: &GeneratedImage,
    name: &Reference,
) -> Result<W, ArchiveError> {
    let mut w = ArchiveWriter::new(out);
    for b in std::iter::once(&img.top)
        .chain(&img.children)
        .chain(&img.blobs)
    {
        w.add_blob(&b.digest, b.bytes.len() as u64, b.bytes.as_slice())?;
    }
    // A single-platform image's blobs are its config, then its layers.
    let docker = match img.blobs.split_first() {
        Some((config, layers)) if img.children.is_empty() => Some(DockerSaveEntry {
            config: config.digest.clone(),
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            repo_tags: vec![name.to_string()],
        }),
        _ => None,
    };
    let entry = ArchiveEntry {
        manifest: Descriptor {
            media_type: img.top.media_type.clone(),
            digest: img.top.digest.clone(),
            size: img.top.bytes.len() as u64,
            artifact_type: None,
            annotations: None,
            platform: None,
            urls: None,
        },
        ref_name: Some(img.tag.clone()),
        image_name: Some(name.clone()),
        docker,
    };
    w.finish(&[entry])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_the_ociregistry_pattern_and_batches_partition() {
        let o = GenOptions {
            count: 25,
            batches: 4,
            layer_size: 10,
            ..GenOptions::default()
        };
        let mut per_batch = [0usize; 5];
        for i in 0..o.count {
            let (repo, tag) = o.name(i);
            let (words, key) = repo.split_at(21);
            assert!(words.chars().enumerate().all(|(k, c)| if k == 10 {
                c == '-'
            } else {
                c.is_ascii_lowercase()
            }));
            assert_eq!(key, batch_key(o.batch_of(i)));
            assert!(
                tag.len() == 8 && tag.starts_with('v') && &tag[4..5] == ".",
                "{tag}"
            );
            per_batch[o.batch_of(i)] += 1;
        }
        assert_eq!(&per_batch[1..], &[7, 6, 6, 6]);
        assert_eq!(o.generate(3).top.digest, o.generate(3).top.digest);
        assert_ne!(o.generate(3).top.digest, o.generate(4).top.digest);
    }

    #[test]
    fn several_platforms_make_an_index() {
        let o = GenOptions {
            count: 1,
            batches: 1,
            layers: 2,
            layer_size: 10,
            architectures: vec!["amd64".into(), "arm64".into()],
            ..GenOptions::default()
        };
        let img = o.generate(0);
        assert_eq!(img.children.len(), 2);
        assert_eq!(img.blobs.len(), 6);
        let m =
            ferry_oci::Manifest::parse(img.top.bytes.clone(), Some(MediaType::OCI_INDEX)).unwrap();
        assert_eq!(m.manifests.len(), 2);
    }

    proptest! {
        #[test]
        fn every_image_lands_in_a_batch(
            (count, batches, i) in (1usize..5000).prop_flat_map(|c| (Just(c), 1..=c.min(9999), 0..c))
        ) {
            let o = GenOptions { count, batches, ..GenOptions::default() };
            let b = o.batch_of(i);
            prop_assert!((1..=batches).contains(&b));
        }
    }
}
