//! What can go wrong in a copy, and whose fault it is.

use std::path::PathBuf;

use ferry_client::ClientError;
use ferry_oci::Digest;

use crate::archive::ArchiveError;

/// Why a copy failed. Every variant names what it was working on, so one line tells the user
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A registry request failed (connection, authorisation, not found, …).
    #[error("{what}: {source}")]
    Registry {
        /// What was being done, e.g. `manifest of 127.0.0.1:5000/app:v1`.
        what: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Content does not hash to the digest it was asked for: the source is corrupt or lying.
    #[error("{what}: expected {expected}, got {actual}")]
    Integrity {
        /// Which content.
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content arrived with another length than its descriptor says.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Size {
        /// Which content.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// The source has no such image.
    #[error("{what}: not found{hint}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// What exists instead, e.g. `; the layout names: v1, v2`.
        hint: String,
    },
    /// An index has no image for the platform asked for.
    #[error("{image} has no platform {wanted}; available: {available}")]
    Platform {
        /// The index.
        image: String,
        /// The platform asked for.
        wanted: String,
        /// The index's platforms, comma-separated.
        available: String,
    },
    /// A manifest, `index.json` or other metadata is malformed.
    #[error("{what}: {why}")]
    Malformed {
        /// Which file or manifest.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// An archive source cannot be read: damaged, truncated, not an archive, or past a limit
    /// ([`ArchiveError::unpacked_too_large`] says which, for a front end to say how to raise it).
    #[error("{}: {error}", .file.display())]
    Archive {
        /// The archive.
        file: PathBuf,
        /// What is wrong with it.
        error: ArchiveError,
    },
    /// The combination asked for is not supported, e.g. reading from a `ferry-store:`.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The destination cannot hold what the source has.
    #[error("{destination}: {why}")]
    Destination {
        /// The destination location.
        destination: String,
        /// Why not.
        why: String,
    },
}

impl CopyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CopyError {
        CopyError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn registry(what: impl Into<String>, source: ClientError) -> CopyError {
        CopyError::Registry {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, why: impl std::fmt::Display) -> CopyError {
        CopyError::Malformed {
            what: what.into(),
            why: why.to_string(),
        }
    }
}
