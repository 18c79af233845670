//! What can go wrong reading or writing an archive, and whose fault it is.

use std::fmt::Display;

/// Whose fault an [`ArchiveError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveErrorKind {
    /// The archive is not one ferry reads, or it is damaged, truncated or contradicts itself: the
    /// archive's fault.
    Invalid,
    /// The archive passes a bound on what reading one may cost (entries, names, images, layers,
    /// memory, unpacked size): the archive's fault, or a limit to raise for a genuine one.
    Limit,
    /// The operating system refused: a missing file, permissions, a full disk. The cause is the
    /// error's `source()`.
    Io,
    /// Bytes handed to a writer are not what their digest and size say: the source's fault.
    Content,
    /// A writer was used wrongly: an image whose blobs were not added, a blob added again with
    /// another size. The caller's fault.
    Usage,
}

/// A gzip archive that unpacks to more than ferry may write for it
/// ([`ArchiveError::unpacked_too_large`]): a front end says how to raise the limit in its own
/// terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackedTooLarge {
    /// The bound it passed, in bytes.
    pub limit: u64,
    /// The archive's own (compressed) size, in bytes.
    pub compressed: u64,
    /// Where the bound came from.
    pub bound: UnpackedBound,
}

/// Which bound a gzip archive's decompressed copy passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnpackedBound {
    /// [`ArchiveLimits::max_unpacked`](super::ArchiveLimits::max_unpacked), as the caller set it.
    Configured,
    /// The default for an unset limit: 100 times the archive's size, at least 64 MiB.
    Default,
    /// The free space of the temporary directory, less what is kept free: a larger limit does
    /// not help, a larger `TMPDIR` does.
    TempSpace,
}

impl UnpackedTooLarge {
    /// Whether a larger limit lets the archive be read (not when the temporary directory is what
    /// is too small).
    pub fn limit_can_be_raised(&self) -> bool {
        self.bound != UnpackedBound::TempSpace
    }
}

/// Why an archive could not be read or written. The message says what happened, prefixed with
/// where (the archive's path, the entry); an operating-system cause is in `source()`, never also
/// in the message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    kind: ArchiveErrorKind,
    message: String,
    #[source]
    source: Option<std::io::Error>,
    unpacked: Option<UnpackedTooLarge>,
}

impl ArchiveError {
    /// Whose fault it is.
    pub fn kind(&self) -> ArchiveErrorKind {
        self.kind
    }

    /// What passed the unpacked-size limit, when that is what went wrong (kind
    /// [`ArchiveErrorKind::Limit`]).
    pub fn unpacked_too_large(&self) -> Option<&UnpackedTooLarge> {
        self.unpacked.as_ref()
    }

    pub(crate) fn new(kind: ArchiveErrorKind, message: impl Into<String>) -> ArchiveError {
        ArchiveError {
            kind,
            message: message.into(),
            source: None,
            unpacked: None,
        }
    }

    /// `message`, about a gzip archive that unpacks past `too_large`.
    pub(crate) fn unpacked(
        message: impl Into<String>,
        too_large: UnpackedTooLarge,
    ) -> ArchiveError {
        ArchiveError {
            unpacked: Some(too_large),
            ..ArchiveError::limit(message)
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ArchiveError {
        ArchiveError::new(ArchiveErrorKind::Invalid, message)
    }

    pub(crate) fn limit(message: impl Into<String>) -> ArchiveError {
        ArchiveError::new(ArchiveErrorKind::Limit, message)
    }

    pub(crate) fn content(message: impl Into<String>) -> ArchiveError {
        ArchiveError::new(ArchiveErrorKind::Content, message)
    }

    pub(crate) fn usage(message: impl Into<String>) -> ArchiveError {
        ArchiveError::new(ArchiveErrorKind::Usage, message)
    }

    /// `what` failed because of `source`. An early end of input is the archive's (truncated), not
    /// the operating system's, and is said in the message.
    pub(crate) fn io(what: impl Display, source: std::io::Error) -> ArchiveError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return ArchiveError::invalid(format!("{what}: {source}"));
        }
        ArchiveError {
            kind: ArchiveErrorKind::Io,
            message: what.to_string(),
            source: Some(source),
            unpacked: None,
        }
    }

    /// The same error as the archive's fault (a read error that was bad data, not the OS's).
    pub(crate) fn archive_fault(self) -> ArchiveError {
        let message = match &self.source {
            Some(cause) => format!("{}: {cause}", self.message),
            None => self.message,
        };
        ArchiveError::invalid(message)
    }

    /// The same error, said to have happened in `place` (`PLACE: MESSAGE`).
    pub(crate) fn at(mut self, place: impl Display) -> ArchiveError {
        self.message = format!("{place}: {}", self.message);
        self
    }
}

/// [`ArchiveError::at`] over results.
pub(crate) trait At<T> {
    fn at<D: Display>(self, place: impl FnOnce() -> D) -> Result<T, ArchiveError>;
}

impl<T> At<T> for Result<T, ArchiveError> {
    fn at<D: Display>(self, place: impl FnOnce() -> D) -> Result<T, ArchiveError> {
        self.map_err(|e| e.at(place()))
    }
}

/// Returns an [`ArchiveError`] of the given constructor (`invalid`, `limit`) unless `cond`.
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($message:tt)+) => {
        if !$cond {
            return Err($crate::archive::ArchiveError::$kind(format!($($message)+)));
        }
    };
}
pub(crate) use ensure;

/// Returns an [`ArchiveError`] of the given constructor (`invalid`, `limit`).
macro_rules! bail {
    ($kind:ident, $($message:tt)+) => {
        return Err($crate::archive::ArchiveError::$kind(format!($($message)+)))
    };
}
pub(crate) use bail;

#[cfg(test)]
/// The message with every cause, as the binary prints it (`{:#}` of an `anyhow` error).
pub(crate) fn chain(e: &ArchiveError) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}
