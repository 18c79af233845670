//! `docker save` archives read through their `manifest.json` (the legacy form: a config file and
//! layer tars per image, no registry manifest).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use ferry_oci::{Algorithm, Digest, Manifest, MediaType, Reference};

use super::error::{ArchiveError, ensure};
use super::files::{FileId, Files};
use super::limits::{
    Costs, MAX_IMAGES, MAX_LAYERS, METADATA_LIMITS, MetadataLimits, alloc, string_memory,
};
use super::tar_index::normalize;
use super::{ArchivedImage, ImageContent, distinct_images};

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
pub(super) struct DockerPlan {
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
    pub(super) fn memory(&self) -> usize {
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
pub(super) fn docker_plan(bytes: &[u8]) -> Result<DockerPlan, ArchiveError> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(bytes).map_err(|e| {
        ArchiveError::invalid(format!("manifest.json is not a docker-save manifest: {e}"))
    })?;
    let mut plan = DockerPlan::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut by_files: HashMap<(u32, Vec<u32>), usize> = HashMap::new();
    let mut tags: HashSet<(usize, String)> = HashSet::new();
    // Images an import would make: each name, or one for an image saved without any.
    let mut named = 0usize;
    for e in entries {
        ensure!(
            e.layers.len() <= MAX_LAYERS,
            limit,
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
            limit,
            "manifest.json names more than {MAX_IMAGES} images; split the archive"
        );
    }
    Ok(plan)
}

/// A file of a docker-save archive, hashed.
#[derive(Debug, Clone)]
pub(super) struct Hashed {
    digest: Digest,
    size: u64,
    gzip: bool,
    path: String,
}

fn hash_file(mut f: impl Read, size: u64, path: &str) -> Result<Hashed, ArchiveError> {
    let mut hasher = Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    let mut gzip = false;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| ArchiveError::io(format!("cannot read {path}"), e))?;
        ensure!(n > 0, invalid, "{path} ends early");
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

/// An archive's images and, by digest, the files that hold its blobs.
type DockerImages = (Vec<ArchivedImage>, HashMap<Digest, String>);

pub(super) fn docker_images(files: &Files) -> Result<DockerImages, ArchiveError> {
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
pub(super) fn docker_images_with(
    manifest_json: &[u8],
    mut hash: impl FnMut(&str) -> Result<Hashed, ArchiveError>,
    limits: MetadataLimits,
) -> Result<DockerImages, ArchiveError> {
    let mut costs = Costs::new(limits);
    let plan = docker_plan(manifest_json)?;
    costs.hold(alloc(manifest_json.len()) + plan.memory())?;
    let mut hashed: Vec<Option<Hashed>> = vec![None; plan.paths.len()];
    let mut blob_paths = HashMap::new();
    let mut out = Vec::new();
    for image in plan.images {
        let mut file = |i: u32| -> Result<Hashed, ArchiveError> {
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
            .collect::<Result<Vec<_>, _>>()?;
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
        let mut bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ArchiveError::invalid(format!("image {}: {e}", config.path)))?;
        // Held until the import ends: no spare capacity.
        bytes.shrink_to_fit();
        let mut top =
            Manifest::parse_as(bytes, Some(MediaType::DOCKER_MANIFEST), Algorithm::Sha256)
                .map_err(|e| ArchiveError::invalid(format!("image {}: {e}", config.path)))?;
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
                name: Some(Reference::parse_normalized(&t).map_err(|e| {
                    ArchiveError::invalid(format!("RepoTags entry {t:?} is not a reference: {e}"))
                })?),
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
pub(super) mod tests {
    //! docker-save manifest.json.

    use proptest::prelude::*;

    use super::*;

    /// A stand-in for hashing a file: its digest is the hash of its name.
    pub(in crate::archive) fn fake_hash(path: &str) -> Result<Hashed, ArchiveError> {
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
}
