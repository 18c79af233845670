//! OCI image layouts on disk (`oci:DIR[:REF]`): `oci-layout`, `index.json` and
//! `blobs/<alg>/<hex>`. `index.json` is changed under an exclusive lock on the `oci-layout` file,
//! read-modify-written and renamed into place, so concurrent copies into one layout never lose an
//! entry (containers/image#263 style races). The copy engine's `oci:` destination and the archive
//! module's `OciLayoutWriter` both change a layout through [`prepare`] and [`add_entries`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_oci::{Descriptor, Digest, MediaType};

use crate::error::CopyError;
use crate::files::{Durability, create_file_once, replace_file};

/// The annotation that names an image in a layout.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and crane set to the full image name.
pub(crate) const IMAGE_NAME: &str = "io.containerd.image.name";
/// Largest `index.json` read: thousands of entries are a few MiB.
const MAX_INDEX: u64 = 64 << 20;
/// What `oci-layout` holds.
pub(crate) const LAYOUT_FILE: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The path of a blob in the layout at `dir`.
pub(crate) fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

/// The parsed `index.json` (only the part ferry needs; everything else is kept as it was).
#[derive(Debug, serde::Deserialize)]
struct IndexShape {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn read_index_bytes(dir: &Path) -> Result<Option<Vec<u8>>, CopyError> {
    let path = dir.join("index.json");
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CopyError::io(&path, e)),
        Ok(m) if m.len() > MAX_INDEX => {
            return Err(CopyError::malformed(
                path.display().to_string(),
                format!("larger than {MAX_INDEX} bytes"),
            ));
        }
        Ok(_) => {}
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| CopyError::io(&path, e))
}

/// The entries of the layout's `index.json`.
pub(crate) fn entries(dir: &Path) -> Result<Vec<Descriptor>, CopyError> {
    let path = dir.join("index.json");
    let Some(bytes) = read_index_bytes(dir)? else {
        return Err(CopyError::NotFound {
            what: format!("OCI layout {}", dir.display()),
            hint: " (it has no index.json)".to_owned(),
        });
    };
    let shape: IndexShape = serde_json::from_slice(&bytes)
        .map_err(|e| CopyError::malformed(path.display().to_string(), e))?;
    Ok(shape.manifests)
}

/// The entry named `reference` (or the only entry, when no name is given).
pub(crate) fn find(dir: &Path, reference: Option<&str>) -> Result<Descriptor, CopyError> {
    let entries = entries(dir)?;
    let name_of = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let names = || {
        let names: Vec<String> = entries.iter().filter_map(name_of).collect();
        if names.is_empty() {
            "; its images have no names".to_owned()
        } else {
            format!("; the layout names: {}", names.join(", "))
        }
    };
    match reference {
        Some(r) => entries
            .iter()
            .find(|d| name_of(d).as_deref() == Some(r))
            .cloned()
            .ok_or_else(|| CopyError::NotFound {
                what: format!("image {r:?} in OCI layout {}", dir.display()),
                hint: names(),
            }),
        None => match entries.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(CopyError::NotFound {
                what: format!("an image in OCI layout {}", dir.display()),
                hint: " (index.json lists none)".to_owned(),
            }),
            _ => Err(CopyError::NotFound {
                what: format!(
                    "which image of OCI layout {}: it holds {}, name one as oci:DIR:NAME",
                    dir.display(),
                    entries.len()
                ),
                hint: names(),
            }),
        },
    }
}

/// Creates the layout at `dir` if it does not exist yet; refuses a directory that holds something
/// else.
pub(crate) fn prepare(dir: &Path, durability: Durability) -> Result<(), CopyError> {
    std::fs::create_dir_all(dir.join("blobs")).map_err(|e| CopyError::io(dir, e))?;
    let marker = dir.join("oci-layout");
    match std::fs::read(&marker) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| CopyError::malformed(marker.display().to_string(), e))?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                return Err(CopyError::malformed(
                    marker.display().to_string(),
                    "not an OCI image layout of version 1.0.0",
                ));
            }
            Ok(())
        }
        // Created once and never replaced: writers lock its inode.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_file_once(&marker, LAYOUT_FILE.as_bytes(), durability)
        }
        Err(e) => Err(CopyError::io(&marker, e)),
    }
}

/// Adds `added` to the layout's `index.json`, in order, each replacing an entry of the same
/// `ref.name` (or, for an unnamed entry, an unnamed one of the same digest); everything else in
/// the file is kept. The read-modify-write happens under an exclusive lock on `oci-layout`, and
/// the new file is renamed into place, so concurrent writers (other copies, other processes)
/// never lose each other's entries and readers never see half a file.
pub(crate) fn add_entries(
    dir: &Path,
    added: &[Descriptor],
    durability: Durability,
) -> Result<(), CopyError> {
    let marker = dir.join("oci-layout");
    let lock = std::fs::File::open(&marker).map_err(|e| CopyError::io(&marker, e))?;
    lock.lock().map_err(|e| CopyError::io(&marker, e))?;
    let path = dir.join("index.json");
    let mut index: serde_json::Value = match read_index_bytes(dir)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CopyError::malformed(path.display().to_string(), e))?,
        None => new_index(&[]),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| CopyError::malformed(path.display().to_string(), "no manifests array"))?;
    for entry in added {
        let name = entry.annotations.as_ref().and_then(|a| a.get(REF_NAME));
        manifests.retain(|m| {
            let their_name = m
                .get("annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(|n| n.as_str());
            match name {
                Some(n) => their_name != Some(n.as_str()),
                None => {
                    their_name.is_some()
                        || m.get("digest").and_then(|d| d.as_str()) != Some(entry.digest.as_str())
                }
            }
        });
        manifests.push(serde_json::to_value(entry).expect("descriptors serialise"));
    }
    let bytes = serde_json::to_vec(&index).expect("JSON values serialise");
    replace_file(&path, &bytes, durability)
    // The lock is released when `lock` is dropped, after the rename.
}

/// An `index.json` listing `manifests`.
fn new_index(manifests: &[Descriptor]) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": manifests,
    })
}

/// The bytes of an `index.json` listing `manifests` (an archive's, written once).
pub(crate) fn index_json(manifests: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&new_index(manifests)).expect("JSON values serialise")
}

/// A descriptor for the index entry of a manifest.
pub(crate) fn entry(
    media_type: &str,
    digest: &Digest,
    size: u64,
    name: Option<&str>,
    image_name: Option<&str>,
) -> Descriptor {
    let mut annotations = BTreeMap::new();
    if let Some(n) = name {
        annotations.insert(REF_NAME.to_owned(), n.to_owned());
    }
    if let Some(n) = image_name {
        annotations.insert(IMAGE_NAME.to_owned(), n.to_owned());
    }
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        artifact_type: None,
        annotations: (!annotations.is_empty()).then_some(annotations),
        platform: None,
        urls: None,
    }
}
