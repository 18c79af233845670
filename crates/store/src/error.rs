use std::path::PathBuf;

use ferry_oci::{Digest, RepoName};

/// Whose fault an error is; decides the HTTP status class and whether retrying may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong or asked for something absent (4xx).
    Client,
    /// Our disk or our bug (5xx).
    Internal,
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob is not part of the repository.
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    /// No manifest under that tag or digest.
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(String),
    /// The repository has no content.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// No such upload session (in this repository).
    #[error("upload session {0} is not known (it may have completed, been cancelled or expired)")]
    UploadUnknown(String),
    /// Content does not hash to the digest the client named.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes are.
        actual: Digest,
    },
    /// Content length differs from what the client declared.
    #[error("size mismatch: declared {expected} bytes, received {actual}")]
    SizeMismatch {
        /// Declared.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// A chunk does not start where the upload currently ends.
    #[error("chunk starts at byte {got} but the upload holds {offset} bytes; resume from {offset}")]
    OutOfOrder {
        /// Current size of the upload.
        offset: u64,
        /// Where the chunk claimed to start.
        got: u64,
    },
    /// A manifest names a blob or child manifest the repository lacks.
    #[error("manifest references {0}, which is not in this repository: push it first")]
    ManifestBlobUnknown(Digest),
    /// Content larger than allowed.
    #[error("content exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// Another process owns the data directory.
    #[error(
        "data directory {0} is in use by another ferry process (stop `ferry serve` first, or use another --data-dir)"
    )]
    Locked(PathBuf),
    /// Too many upload sessions are open.
    #[error("too many upload sessions are open ({0}); finish or cancel some, or retry later")]
    TooManyUploads(usize),
    /// One client holds too many upload sessions.
    #[error(
        "this client holds {0} open upload sessions, the most one client may; finish or cancel some, or retry later"
    )]
    TooManyUploadsFromClient(usize),
    /// The directory is not a ferry data directory.
    #[error("{0} is not a ferry data directory (no blobs/ inside); check --data-dir")]
    NotAStore(PathBuf),
    /// The filesystem folds case, which would merge tags such as `v1` and `V1`.
    #[error(
        "the filesystem at {0} is case-insensitive; ferry needs a case-sensitive one (tags such as v1 and V1 are different)"
    )]
    CaseInsensitive(PathBuf),
    /// Reading the client's body failed (disconnect, timeout).
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    /// A filesystem operation failed.
    // The OS error is in the text and deliberately not a `source()`: a chain printer (anyhow's
    // `{:#}`) would print it twice.
    #[error("storage I/O failed at {path}: {error}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A write failed because the filesystem (or the quota) is full.
    #[error("storage is full at {path}: {error}")]
    Full {
        /// Where.
        path: PathBuf,
        /// The OS's word for it (ENOSPC, EDQUOT).
        error: std::io::Error,
    },
    /// A background task died (a bug).
    #[error("internal task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Io { .. }
            | StoreError::Full { .. }
            | StoreError::Task(_)
            | StoreError::Locked(_)
            | StoreError::NotAStore(_)
            | StoreError::CaseInsensitive(_) => Fault::Internal,
            _ => Fault::Client,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |error| {
            if is_full(&error) {
                StoreError::Full { path, error }
            } else {
                StoreError::Io { path, error }
            }
        }
    }

    pub(crate) fn join(e: tokio::task::JoinError) -> StoreError {
        StoreError::Task(e.to_string())
    }
}

/// Whether `e` says the disk or the quota is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_quota_is_told_apart_from_other_io_errors() {
        let io = |e: std::io::Error| StoreError::io("/data/blobs/x")(e);
        for errno in [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT] {
            let e = io(std::io::Error::from_raw_os_error(errno.raw_os_error()));
            assert!(matches!(e, StoreError::Full { .. }), "{e:?}");
            assert_eq!(e.fault(), Fault::Internal);
        }
        let e = io(std::io::Error::from_raw_os_error(
            rustix::io::Errno::IO.raw_os_error(),
        ));
        assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    }
}
