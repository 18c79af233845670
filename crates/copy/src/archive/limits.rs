//! What reading an archive may cost: the bounds, and the running count of what its metadata holds.

use std::collections::HashSet;

use ferry_oci::{Descriptor, Digest, Manifest, Platform, RepoName};

use super::ArchivedImage;
use super::error::{ArchiveError, bail, ensure};

/// Largest manifest, index or `manifest.json` read from an archive.
pub(super) const MAX_METADATA_BYTES: u64 = 4 << 20;
/// Largest GNU long name or long link, or PAX extension block, in a tar: real paths are < 4 KiB
/// and PAX records hold a few attributes, and these are read into memory.
pub(super) const MAX_TAR_EXTENSION: u64 = 64 << 10;
/// Most headers in a tar.
pub(super) const MAX_TAR_ENTRIES: u64 = 1_000_000;
/// Most bytes of file names a tar's index keeps.
pub(super) const MAX_TAR_NAME_BYTES: u64 = 64 << 20;
/// Most images (distinct name → manifest pairs) in one archive.
pub(super) const MAX_IMAGES: usize = 10_000;
/// Most layers in one image manifest.
pub(super) const MAX_LAYERS: usize = 1_000;
/// Most child manifests of one index.
pub(super) const MAX_CHILDREN: usize = 1_000;
/// Most blob links one import makes (each image's blobs, in its repository).
pub(super) const MAX_BLOB_LINKS: usize = 1_000_000;
/// Most memory the metadata of one archive takes while it is imported: `index.json` or
/// `manifest.json` and every manifest read or written, as bytes and parsed. Ten thousand images of
/// ten layers take about 80 MiB.
pub(super) const MAX_METADATA_MEMORY: usize = 128 << 20;
/// Without a configured limit, a gzip archive may unpack to this many times its size…
pub(super) const AUTO_UNPACK_RATIO: u64 = 100;
/// …or to this many bytes, whichever is more (small archives, mostly tar padding, compress well).
pub(super) const AUTO_UNPACK_FLOOR: u64 = 64 << 20;

/// Space left free in the temporary directory when a gzip archive is decompressed there.
pub(super) const KEEP_FREE_IN_TMP: u64 = 256 << 20;

/// What the user bounds about reading archives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveLimits {
    /// Largest decompressed copy of a gzip archive; `None`: 100 times its size, at least 64 MiB
    /// (`AUTO_UNPACK_RATIO`, `AUTO_UNPACK_FLOOR`).
    pub max_unpacked: Option<u64>,
}

impl ArchiveLimits {
    pub(super) fn unpacked(&self, compressed: u64) -> u64 {
        self.max_unpacked.unwrap_or_else(|| {
            compressed
                .saturating_mul(AUTO_UNPACK_RATIO)
                .max(AUTO_UNPACK_FLOOR)
        })
    }
}

/// Bounds on what an archive's metadata makes ferry hold and do (parameters so that tests can reach
/// them cheaply).
#[derive(Debug, Clone, Copy)]
pub(super) struct MetadataLimits {
    /// Most bytes of metadata held, estimated by [`manifest_memory`] and the like.
    pub(super) memory: usize,
    /// Most blob links.
    pub(super) blob_links: usize,
}

pub(super) const METADATA_LIMITS: MetadataLimits = MetadataLimits {
    memory: MAX_METADATA_MEMORY,
    blob_links: MAX_BLOB_LINKS,
};

/// What reading an archive's metadata has cost so far. Each cost is checked as it is added, so an
/// archive past a limit is refused at the manifest that passes it, before more is read or parsed.
pub(super) struct Costs {
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
    pub(super) fn new(limits: MetadataLimits) -> Costs {
        Costs {
            limits,
            memory: 0,
            manifests: 0,
            links: 0,
            linked: HashSet::new(),
        }
    }

    /// Adds `bytes` of metadata held.
    pub(super) fn hold(&mut self, bytes: usize) -> Result<(), ArchiveError> {
        self.memory = self.memory.saturating_add(bytes);
        if self.memory > self.limits.memory {
            let at = match self.manifests {
                0 => "its image list alone".to_owned(),
                n => format!("counted up to manifest {n}"),
            };
            bail!(
                limit,
                "its manifests take more than {} MiB of memory to import (bytes and parsed form, {at}); split the archive into smaller ones",
                self.limits.memory >> 20
            );
        }
        Ok(())
    }

    /// Adds a manifest read or written, its lists first cut to their length: it is held until the
    /// import ends.
    pub(super) fn manifest(&mut self, m: &mut Manifest) -> Result<(), ArchiveError> {
        m.layers.shrink_to_fit();
        m.manifests.shrink_to_fit();
        self.manifests += 1;
        self.hold(manifest_memory(m))
    }

    /// Adds the blob links `image` needs: its blobs in its repository, once per repository and
    /// manifest.
    pub(super) fn image(&mut self, image: &ArchivedImage) -> Result<(), ArchiveError> {
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
                limit,
                "its images need more than {} blob links (each image's blobs in its repository), more than one import makes; split the archive",
                self.limits.blob_links
            );
        }
        Ok(())
    }
}

/// What an allocation of `n` bytes takes from the allocator, header and rounding included (glibc's:
/// 8 bytes of header, 16-byte steps, 32 at least).
pub(super) fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

pub(super) fn string_memory(s: &String) -> usize {
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
pub(super) fn descriptors_memory(ds: &Vec<Descriptor>) -> usize {
    alloc(ds.capacity() * size_of::<Descriptor>()) + ds.iter().map(descriptor_memory).sum::<usize>()
}

/// Memory a manifest read from an archive takes, in its `Arc` and keyed by its digest: its bytes
/// and what was parsed out of them, an estimate on the high side.
pub(super) fn manifest_memory(m: &Manifest) -> usize {
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
pub(super) fn check_layers(m: &Manifest) -> Result<(), ArchiveError> {
    ensure!(
        m.layers.len() <= MAX_LAYERS,
        limit,
        "manifest {} has {} layers, more than the {MAX_LAYERS} an image may have",
        m.digest(),
        m.layers.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What an archive's metadata may cost.

    use std::collections::HashMap;

    use ferry_oci::{Algorithm, MediaType};

    use super::super::blob_path;
    use super::super::docker::{docker_images_with, docker_plan, tests::fake_hash};
    use super::super::oci::{OciIndex, oci_images_with};
    use super::*;

    fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(Algorithm::Sha256, bytes).as_str(),
            "size": bytes.len(),
        })
    }

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
    ) -> (Result<Vec<ArchivedImage>, ArchiveError>, usize) {
        let mut reads = 0;
        let images = oci_images_with(
            index,
            &[],
            |p| {
                reads += 1;
                files
                    .get(p)
                    .cloned()
                    .ok_or_else(|| ArchiveError::invalid("missing"))
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
