//! OCI image layouts (`index.json`, `blobs/ALG/HEX`): a directory, an `oci-archive` tar, or the OCI
//! side of a Docker 25+ `docker save`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_oci::{Descriptor, Digest, Manifest, Reference, Tag};

use super::error::{ArchiveError, ensure};
use super::files::Files;
use super::limits::{
    Costs, MAX_CHILDREN, MAX_IMAGES, METADATA_LIMITS, MetadataLimits, alloc, check_layers,
    descriptors_memory,
};
use super::{ArchivedImage, ImageContent, blob_path, distinct_images};
use crate::Platform;

#[derive(serde::Deserialize)]
pub(super) struct OciIndex {
    #[serde(default)]
    pub(super) manifests: Vec<Descriptor>,
}

pub(super) fn oci_images(
    files: &Files,
    platforms: &[Platform],
) -> Result<Vec<ArchivedImage>, ArchiveError> {
    oci_images_with(
        &files.read_small("index.json")?,
        platforms,
        |name| files.read_small(name),
        |name| files.exists(name),
        METADATA_LIMITS,
    )
}

/// The images of an OCI layout whose `index.json` is `index`, reading manifests with `read` (each
/// distinct one once, none after a limit is passed) and asking `exists` whether the layout holds a
/// blob.
pub(super) fn oci_images_with(
    index_json: &[u8],
    platforms: &[Platform],
    mut read: impl FnMut(&str) -> Result<Vec<u8>, ArchiveError>,
    exists: impl Fn(&str) -> bool,
    limits: MetadataLimits,
) -> Result<Vec<ArchivedImage>, ArchiveError> {
    let mut costs = Costs::new(limits);
    let index: OciIndex = serde_json::from_slice(index_json)
        .map_err(|e| ArchiveError::invalid(format!("index.json is not an OCI image index: {e}")))?;
    costs.hold(alloc(index_json.len()) + descriptors_memory(&index.manifests))?;
    let mut manifests: HashMap<Digest, Arc<Manifest>> = HashMap::new();
    let mut read_manifest =
        |d: &Descriptor, costs: &mut Costs| -> Result<Arc<Manifest>, ArchiveError> {
            if let Some(m) = manifests.get(&d.digest) {
                return Ok(m.clone());
            }
            let bytes = read(&blob_path(&d.digest))?;
            let mut m = Manifest::parse_as(bytes, Some(&d.media_type), d.digest.algorithm())
                .map_err(|e| ArchiveError::invalid(format!("manifest {}: {e}", d.digest)))?;
            ensure!(
                m.digest() == &d.digest,
                invalid,
                "manifest {} hashes to {}",
                d.digest,
                m.digest()
            );
            costs.manifest(&mut m)?;
            check_layers(&m)?;
            let m = Arc::new(m);
            manifests.insert(d.digest.clone(), m.clone());
            Ok(m)
        };
    let mut contents: HashMap<Digest, Arc<ImageContent>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in &index.manifests {
        let annotation = |k: &str| d.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let n = annotation("io.containerd.image.name")
            .or_else(|| annotation("org.opencontainers.image.ref.name"));
        // The same name → manifest pair listed again is the same image.
        if !seen.insert((n.clone(), d.digest.clone())) {
            continue;
        }
        ensure!(
            seen.len() <= MAX_IMAGES,
            limit,
            "index.json lists more than {MAX_IMAGES} images; split the archive"
        );
        let (name, tag_only) = match n {
            // A ref.name may be a whole reference or, as skopeo and Docker write it, only a tag.
            Some(n) if n.contains('/') || n.contains(':') || n.contains('@') => (
                Some(Reference::parse_normalized(&n).map_err(|e| {
                    ArchiveError::invalid(format!("image name {n:?} is not a reference: {e}"))
                })?),
                None,
            ),
            Some(t) => (
                None,
                Some(Tag::new(&t).map_err(|e| {
                    ArchiveError::invalid(format!("image tag {t:?} is not a tag: {e}"))
                })?),
            ),
            None => (None, None),
        };
        let content = match contents.get(&d.digest) {
            Some(c) => c.clone(),
            None => {
                let top = read_manifest(d, &mut costs)?;
                let mut children = Vec::new();
                if top.media_type().is_index() {
                    ensure!(
                        top.manifests.len() <= MAX_CHILDREN,
                        limit,
                        "index {} lists {} manifests, more than the {MAX_CHILDREN} an index may have",
                        top.digest(),
                        top.manifests.len()
                    );
                    let mut picked = HashSet::new();
                    for child in &top.manifests {
                        let wanted = Platform::wanted(platforms, child);
                        // Partial archives (docker save of one platform) keep the whole index.
                        if wanted
                            && picked.insert(&child.digest)
                            && exists(&blob_path(&child.digest))
                        {
                            children.push(read_manifest(child, &mut costs)?);
                        }
                    }
                    ensure!(
                        !children.is_empty(),
                        invalid,
                        "index {} has no child manifest in the archive for the requested platforms",
                        top.digest()
                    );
                }
                let c = Arc::new(ImageContent::new(top, children));
                contents.insert(d.digest.clone(), c.clone());
                c
            }
        };
        let image = ArchivedImage {
            name,
            tag_only,
            content,
        };
        costs.image(&image)?;
        out.push(image);
    }
    distinct_images(out)
}

#[cfg(test)]
mod tests {
    //! OCI index.json.

    use proptest::prelude::*;

    use ferry_oci::{Algorithm, MediaType};

    use super::*;

    fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::of(Algorithm::Sha256, bytes).as_str(),
            "size": bytes.len(),
        })
    }

    /// A layout's manifests: four image manifests of five layers each, then an index of them.
    struct OciPool {
        /// Their bytes.
        manifests: Vec<Vec<u8>>,
        /// By blob path.
        files: HashMap<String, Vec<u8>>,
        /// A descriptor of each.
        descriptors: Vec<serde_json::Value>,
    }

    fn oci_pool() -> &'static OciPool {
        static POOL: std::sync::OnceLock<OciPool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let mut manifests = Vec::new();
            for i in 0..4 {
                let m = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": MediaType::OCI_MANIFEST,
                    "config": descriptor("application/vnd.oci.image.config.v1+json", format!("c{i}").as_bytes()),
                    "layers": (0..5).map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", format!("l{}", l % 3).as_bytes())).collect::<Vec<_>>(),
                });
                manifests.push(serde_json::to_vec(&m).unwrap());
            }
            let children: Vec<serde_json::Value> = manifests
                .iter()
                .map(|m| {
                    let mut d = descriptor(MediaType::OCI_MANIFEST, m);
                    d["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
                    d
                })
                .collect();
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": children});
            manifests.push(serde_json::to_vec(&index).unwrap());
            let files = manifests
                .iter()
                .map(|m| (blob_path(&Digest::of(Algorithm::Sha256, m)), m.clone()))
                .collect();
            let descriptors = manifests
                .iter()
                .enumerate()
                .map(|(i, m)| descriptor(if i == 4 { MediaType::OCI_INDEX } else { MediaType::OCI_MANIFEST }, m))
                .collect();
            OciPool { manifests, files, descriptors }
        })
    }

    proptest! {
        #[test]
        fn oci_index_json_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = oci_images_with(&bytes, &[], |_| Ok(Vec::new()), |_| false, METADATA_LIMITS);
        }

        /// However often index.json repeats manifests and names, each manifest is read (and held)
        /// once and each name → manifest pair is one image.
        #[test]
        fn oci_index_json_reads_each_manifest_once(
            refs in prop::collection::vec((0usize..5, prop::option::of(0usize..4)), 0..60),
        ) {
            let OciPool { manifests, files, descriptors } = oci_pool();
            let listed: Vec<serde_json::Value> = refs
                .iter()
                .map(|(m, name)| {
                    let mut d = descriptors[*m].clone();
                    if let Some(n) = name {
                        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": format!("r.io/a:t{n}")});
                    }
                    d
                })
                .collect();
            let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": listed})).unwrap();
            let mut read = Vec::new();
            let mut bytes = 0;
            let images = oci_images_with(
                &index,
                &[],
                |p| {
                    read.push(p.to_owned());
                    let m = files
                        .get(p)
                        .cloned()
                        .ok_or_else(|| ArchiveError::invalid("missing"))?;
                    bytes += m.len();
                    Ok(m)
                },
                |p| files.contains_key(p),
                METADATA_LIMITS,
            )
            .unwrap();
            let distinct: HashSet<&String> = read.iter().collect();
            prop_assert_eq!(distinct.len(), read.len(), "a manifest read twice");
            prop_assert!(bytes <= manifests.iter().map(Vec::len).sum::<usize>());
            let pairs: HashSet<(usize, Option<usize>)> = refs.iter().copied().collect();
            prop_assert_eq!(images.len(), pairs.len());
        }
    }
}
