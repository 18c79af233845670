//! Secret values that never print, and reading secret files that others cannot read.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A password, token or key held in memory. `Debug` and `Display` print `<redacted>`, it is not
/// `Serialize`, equality takes the same time wherever the first difference is, and the bytes
/// are overwritten (best effort) when it is dropped.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (a hash check, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value's bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Length in bytes (lengths are not secret: they show on the wire).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        // Keeps the compiler from dropping the writes as dead stores.
        std::hint::black_box(&bytes);
    }
}

/// Compares without an early exit, so the time does not tell how long a prefix matched. Only
/// the lengths (public) decide early.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Largest secret file accepted: keys, htpasswd files and JWKS are far smaller.
pub const MAX_SECRET_FILE: u64 = 1024 * 1024;

/// Why a secret file was refused. Messages name the path and the mode, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Nothing at the path.
    #[error("secret file {} does not exist", .path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A directory, device, socket or FIFO.
    #[error("secret file {} is not a regular file", .path.display())]
    NotARegularFile {
        /// The path given.
        path: PathBuf,
    },
    /// Readable or writable by users other than the owner and the group.
    #[error(
        "secret file {path} is accessible to other users (mode {mode:04o}); run `chmod 600 {path}`",
        path = .path.display(), mode = .mode
    )]
    WorldAccessible {
        /// The path given.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// Readable or writable by the group, and not owned by root.
    #[error(
        "secret file {path} is accessible to its group (mode {mode:04o}) and not owned by root; run `chmod 600 {path}`",
        path = .path.display(), mode = .mode
    )]
    GroupAccessible {
        /// The path given.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// Larger than [`MAX_SECRET_FILE`].
    #[error("secret file {} is larger than 1 MiB", .path.display())]
    TooLarge {
        /// The path given.
        path: PathBuf,
    },
    /// Any other I/O error (permission denied, …).
    #[error("secret file {}: {source}", .path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Reads a secret file (a TLS key, an htpasswd file, a token signing key) after checking its
/// permissions.
///
/// Symlinks are followed (Kubernetes mounts Secrets as symlinks into `..data`), and the target's
/// mode is checked: access for others (`mode & 0o007`) is always refused; access for the group
/// (`mode & 0o070`) is refused unless root owns the file, since Kubernetes' `fsGroup` makes
/// root-owned Secret files `0440` (PostgreSQL applies the same rule to its key file).
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let io_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => SecretFileError::NotFound {
            path: path.to_path_buf(),
        },
        _ => SecretFileError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    check_metadata(path, metadata.is_file(), metadata.mode(), metadata.uid())?;
    if metadata.len() > MAX_SECRET_FILE {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let file = std::fs::File::open(path).map_err(io_error)?;
    // Bounded again while reading: the file may have grown since the metadata call.
    let mut content = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut content)
        .map_err(io_error)?;
    if content.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(content)
}

fn check_metadata(path: &Path, is_file: bool, mode: u32, uid: u32) -> Result<(), SecretFileError> {
    let path = path.to_path_buf();
    if !is_file {
        return Err(SecretFileError::NotARegularFile { path });
    }
    let mode = mode & 0o7777;
    if mode & 0o007 != 0 {
        return Err(SecretFileError::WorldAccessible { path, mode });
    }
    if mode & 0o070 != 0 && uid != 0 {
        return Err(SecretFileError::GroupAccessible { path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"s3cr3t-content").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(secret, Secret::new("hunter2"));
        assert_ne!(secret, Secret::new("hunter3"));
        assert_ne!(secret, Secret::new("hunter"));
    }

    #[test]
    fn mode_rules() {
        let p = Path::new("/s");
        assert!(check_metadata(p, true, 0o100600, 1000).is_ok());
        assert!(check_metadata(p, true, 0o100400, 1000).is_ok());
        assert!(check_metadata(p, true, 0o100440, 0).is_ok());
        assert!(matches!(
            check_metadata(p, true, 0o100640, 1000),
            Err(SecretFileError::GroupAccessible { mode: 0o640, .. })
        ));
        assert!(matches!(
            check_metadata(p, true, 0o100644, 0),
            Err(SecretFileError::WorldAccessible { mode: 0o644, .. })
        ));
        assert!(matches!(
            check_metadata(p, true, 0o100602, 0),
            Err(SecretFileError::WorldAccessible { .. })
        ));
        assert!(matches!(
            check_metadata(p, false, 0o40700, 0),
            Err(SecretFileError::NotARegularFile { .. })
        ));
    }

    #[test]
    fn reads_private_files_and_follows_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with_mode(dir.path(), "key", 0o600);
        assert_eq!(read_secret_file(&path).expect("600"), b"s3cr3t-content");
        // The Kubernetes layout: key -> ..data/key.
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        let target = file_with_mode(&dir.path().join("..data"), "token", 0o600);
        let link = dir.path().join("token");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(read_secret_file(&link).expect("link"), b"s3cr3t-content");
    }

    #[test]
    fn refuses_world_readable_with_a_fix_and_without_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with_mode(dir.path(), "key", 0o644);
        let message = read_secret_file(&path).expect_err("644").to_string();
        assert!(message.contains("0644"), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(!message.contains("s3cr3t"), "{message}");
    }

    #[test]
    fn group_readable_depends_on_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with_mode(dir.path(), "key", 0o640);
        // As root (CI), hand the file to nobody so the own-user case is what is tested; as
        // another user the chown fails and the file is the user's own anyway.
        let _ = std::os::unix::fs::chown(&path, Some(65534), None);
        let err = read_secret_file(&path).expect_err("640 not owned by root");
        assert!(matches!(err, SecretFileError::GroupAccessible { .. }));
    }

    #[test]
    fn missing_directory_and_large_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            read_secret_file(&dir.path().join("absent")),
            Err(SecretFileError::NotFound { .. })
        ));
        assert!(matches!(
            read_secret_file(dir.path()),
            Err(SecretFileError::NotARegularFile { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_FILE as usize + 1]).expect("write");
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            read_secret_file(&big),
            Err(SecretFileError::TooLarge { .. })
        ));
    }
}

/// Writes a secret file whole, owner-only (0600), then renames it into place, so a reader never
/// sees half a key and a crash leaves the old file or the new one; the parent directory is made
/// if missing.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn a_written_secret_file_is_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        write_secret_file(&path, b"k1").unwrap();
        write_secret_file(&path, b"k2").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), b"k2");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
