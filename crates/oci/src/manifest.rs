//! The raw-manifest wrapper: keeps the exact bytes (their digest is the manifest's identity) and
//! exposes the parsed descriptors a registry needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::media::MediaType;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (index children and referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform (index children).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// External URLs (foreign / non-distributable layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// Whether the registry is not expected to hold this blob (Docker foreign layers, OCI
    /// non-distributable layers).
    pub fn is_foreign(&self) -> bool {
        self.media_type.contains("foreign") || self.media_type.contains("nondistributable")
    }
}

/// A platform in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows).
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Json(String),
    /// schemaVersion is not 2.
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    /// Docker schema 1 (never accepted).
    #[error(
        "Docker schema 1 manifests are not supported: convert the image to schema 2 or OCI (e.g. skopeo copy --format oci)"
    )]
    Schema1,
    /// The declared media type is not a manifest type ferry stores.
    #[error(
        "unsupported manifest media type {0:?}: expected an OCI image manifest or index, or a Docker schema 2 manifest or manifest list"
    )]
    UnsupportedMediaType(String),
    /// Content-Type and the `mediaType` field disagree.
    #[error("manifest mediaType {field:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch {
        /// The `mediaType` field.
        field: String,
        /// The Content-Type header.
        header: String,
    },
    /// A required field is missing for this media type.
    #[error("manifest of type {0} is missing the {1:?} field")]
    MissingField(&'static str, &'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A manifest as received: exact bytes plus what was parsed out of them.
///
/// Architecture invariant: the bytes are never re-serialised; [`Manifest::digest`] is of
/// [`Manifest::bytes`] exactly as the client sent them.
#[derive(Debug, Clone)]
pub struct Manifest {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: MediaType,
    /// `config` of an image manifest.
    pub config: Option<Descriptor>,
    /// `layers` of an image manifest.
    pub layers: Vec<Descriptor>,
    /// `manifests` of an index.
    pub manifests: Vec<Descriptor>,
    /// `subject`, for referrers.
    pub subject: Option<Descriptor>,
    /// `artifactType` field.
    pub artifact_type: Option<String>,
    /// `annotations` field.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses manifest bytes. `content_type` is the Content-Type the client sent, if any; when absent
    /// the `mediaType` field decides. The manifest is identified by its SHA-256 digest.
    pub fn parse(bytes: Vec<u8>, content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        Manifest::parse_as(bytes, content_type, Algorithm::Sha256)
    }

    /// [`Manifest::parse`], identifying the manifest by a digest of `algorithm` (a client that
    /// pushes by a sha512 digest expects that digest back).
    pub fn parse_as(
        bytes: Vec<u8>,
        content_type: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Manifest, ManifestError> {
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        if header.is_some_and(|h| MediaType::is_schema1(h) && h != "application/json") {
            return Err(ManifestError::Schema1);
        }
        let shape: Shape =
            serde_json::from_slice(&bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if shape.schema_version == Some(1) {
            return Err(ManifestError::Schema1);
        }
        if shape.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let declared = match (header, shape.media_type.as_deref()) {
            // Generic or missing Content-Type: trust the body.
            (None | Some("application/json" | "application/octet-stream"), Some(field)) => field,
            (Some(h), Some(field)) if h != field => {
                return Err(ManifestError::MediaTypeMismatch {
                    field: field.to_owned(),
                    header: h.to_owned(),
                });
            }
            (Some(h), _) => h,
            // OCI allows omitting mediaType; infer from shape.
            (None, None) => {
                if shape.manifests.is_some() {
                    MediaType::OCI_INDEX
                } else {
                    MediaType::OCI_MANIFEST
                }
            }
        };
        let media_type = MediaType::parse(declared)
            .ok_or_else(|| ManifestError::UnsupportedMediaType(declared.to_owned()))?;
        if media_type.is_index() {
            if shape.manifests.is_none() {
                return Err(ManifestError::MissingField(
                    media_type.as_str(),
                    "manifests",
                ));
            }
        } else {
            if shape.config.is_none() {
                return Err(ManifestError::MissingField(media_type.as_str(), "config"));
            }
            if shape.layers.is_none() {
                return Err(ManifestError::MissingField(media_type.as_str(), "layers"));
            }
        }
        let digest = Digest::of(algorithm, &bytes);
        Ok(Manifest {
            bytes,
            digest,
            media_type,
            config: shape.config,
            layers: shape.layers.unwrap_or_default(),
            manifests: shape.manifests.unwrap_or_default(),
            subject: shape.subject,
            artifact_type: shape.artifact_type,
            annotations: shape.annotations,
        })
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the wrapper, returning the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// SHA-256 digest of the bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The manifest's media type.
    pub fn media_type(&self) -> MediaType {
        self.media_type
    }

    /// Blobs this manifest needs in the same repository (config and distributable layers).
    pub fn blob_references(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter())
            .filter(|d| !d.is_foreign())
    }

    /// The artifact type a referrers listing reports: `artifactType`, else the config media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or(self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// The descriptor a referrers response lists for this manifest.
    pub fn referrer_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.as_str().to_owned(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            artifact_type: self.effective_artifact_type().map(str::to_owned),
            annotations: self.annotations.clone(),
            platform: None,
            urls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image(media: &str) -> Vec<u8> {
        let d = Digest::sha256(b"x");
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn keeps_bytes_and_digest() {
        let bytes = image(MediaType::OCI_MANIFEST);
        let m = Manifest::parse(bytes.clone(), Some(MediaType::OCI_MANIFEST)).unwrap();
        assert_eq!(m.bytes(), &bytes[..]);
        assert_eq!(m.digest(), &Digest::sha256(&bytes));
        assert_eq!(m.blob_references().count(), 2);
    }

    #[test]
    fn refusals() {
        let ok = image(MediaType::OCI_MANIFEST);
        let check = |bytes: &[u8], ct: Option<&str>, want: &str| {
            let err = Manifest::parse(bytes.to_vec(), ct).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{err:?}");
        };
        check(b"not json", None, "Json");
        check(br#"{"schemaVersion":1}"#, None, "Schema1");
        check(&ok, Some(MediaType::DOCKER_SCHEMA1_SIGNED), "Schema1");
        check(br#"{"schemaVersion":3}"#, None, "SchemaVersion");
        check(&ok, Some(MediaType::DOCKER_MANIFEST), "MediaTypeMismatch");
        check(&image("text/plain"), None, "UnsupportedMediaType");
        check(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
            None,
            "MissingField",
        );
        check(
            br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:zz","size":1},"layers":[]}"#,
            None,
            "Json",
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), ct in proptest::option::of("\\PC{0,60}")) {
            let _ = Manifest::parse(bytes, ct.as_deref());
        }
    }
}
