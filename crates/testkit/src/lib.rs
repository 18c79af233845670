//! # ferry-testkit
//!
//! What ferry's tests share, and nothing else (dev-only):
//! - [`image`]: deterministic, seeded images (gzip tar layers, a config with correct `diff_ids`, an
//!   OCI manifest) and indexes, plus OCI image layouts on disk for skopeo.
//! - `inproc` (feature `inproc`): ferry's registry API and a ferry mirror in front of another,
//!   run in this process on 127.0.0.1:0 with no external binaries.
//! - [`peers`]: real processes — the `ferry` binary, `docker-registry`, `containerd` — started on
//!   127.0.0.1 with free ports and stopped by PID when dropped. A missing peer skips the test with a
//!   loud message, except under `CI=true`, where it fails the test.
//!
//! - [`tls`]: a test CA made in the test (rcgen), server and client certificates from it, and a
//!   TCP forwarder that counts connections.
//!
//! Architecture invariant: nothing here talks to any address but loopback.

pub mod faults;
pub mod image;
#[cfg(feature = "inproc")]
pub mod inproc;
pub mod peers;
pub mod tls;

/// Writes a file only its owner can read (0600), as ferry wants its secret files (tokens, keys,
/// htpasswd); it refuses ones that others can read.
pub fn write_secret(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
}
