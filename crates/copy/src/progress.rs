//! What a copy reports while it runs. The engine only emits events; drawing bars or printing lines
//! is the binary's business.

use ferry_oci::Digest;

/// How a blob reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Transferred; `resumed_from` bytes were already there from an interrupted copy.
    Copied {
        /// Bytes of a partial download that were kept.
        resumed_from: u64,
    },
    /// The destination already had it.
    Present,
    /// The destination registry linked it from another repository (cross-repository mount).
    Mounted,
    /// Taken from the local layer cache (`--layer-cache`) instead of the source.
    Cached,
}

/// One thing that happened in a copy. `image` is the source location as the user wrote it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// An image's manifests are resolved; `blobs` blobs of `bytes` in total will be looked at.
    ImageStarted {
        /// The image.
        image: &'a str,
        /// Distinct blobs (configs and layers).
        blobs: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A blob transfer starts.
    BlobStarted {
        /// The image.
        image: &'a str,
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        size: u64,
    },
    /// More bytes of a blob arrived.
    BlobProgress {
        /// The image.
        image: &'a str,
        /// The blob.
        digest: &'a Digest,
        /// Bytes since the last event.
        bytes: u64,
    },
    /// A blob is at the destination.
    BlobDone {
        /// The image.
        image: &'a str,
        /// The blob.
        digest: &'a Digest,
        /// Its size.
        size: u64,
        /// How it got there.
        outcome: BlobOutcome,
    },
    /// A transfer failed and is tried again.
    Retrying {
        /// The image.
        image: &'a str,
        /// What failed.
        what: &'a str,
        /// The error.
        error: &'a str,
    },
    /// An image is complete at the destination, its top manifest being `digest`.
    ImageDone {
        /// The image.
        image: &'a str,
        /// The digest of the manifest written at the destination.
        digest: &'a Digest,
    },
}

/// Receives a copy's events. Called from many tasks at once; keep it cheap.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: Event<'_>);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}
