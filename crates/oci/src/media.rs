//! Manifest media types ferry understands.

/// The manifest media types a registry stores and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerManifestList,
}

impl MediaType {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &'static str =
        "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &'static str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 1 (refused: unsigned content with no digest-stable form).
    pub const DOCKER_SCHEMA1: &'static str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed Docker schema 1 (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &'static str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// The OCI empty descriptor's media type.
    pub const OCI_EMPTY: &'static str = "application/vnd.oci.empty.v1+json";
    /// The Accept list a pulling client sends, most preferred first.
    pub const ACCEPT_ALL: &'static str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

    /// Recognises a media type string (parameters after `;` ignored).
    pub fn parse(s: &str) -> Option<MediaType> {
        match s.split(';').next().unwrap_or("").trim() {
            Self::OCI_MANIFEST => Some(MediaType::OciManifest),
            Self::OCI_INDEX => Some(MediaType::OciIndex),
            Self::DOCKER_MANIFEST => Some(MediaType::DockerManifest),
            Self::DOCKER_MANIFEST_LIST => Some(MediaType::DockerManifestList),
            _ => None,
        }
    }

    /// Whether `s` is one of the schema 1 types ferry refuses with a clear message.
    pub fn is_schema1(s: &str) -> bool {
        let s = s.split(';').next().unwrap_or("").trim();
        s == Self::DOCKER_SCHEMA1 || s == Self::DOCKER_SCHEMA1_SIGNED || s == "application/json"
    }

    /// The canonical string.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OciManifest => Self::OCI_MANIFEST,
            MediaType::OciIndex => Self::OCI_INDEX,
            MediaType::DockerManifest => Self::DOCKER_MANIFEST,
            MediaType::DockerManifestList => Self::DOCKER_MANIFEST_LIST,
        }
    }

    /// Index-like types list other manifests instead of layers.
    pub fn is_index(self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }
}
