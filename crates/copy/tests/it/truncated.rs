//! A truncated or unreadable archive is one clear error, never a panic, never a wrong blob.

use std::io::Write;

use ferry_copy::archive::{
    Archive, ArchiveErrorKind, ArchiveLimits, UnpackedBound, UnpackedTooLarge,
};

use crate::{RawImage, app_v1, open, read_blobs, write_archive};

fn small_image() -> RawImage {
    RawImage::new(
        br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
        vec![vec![1u8; 700], vec![2u8; 1024], vec![3u8; 5]],
    )
}

/// Cut at every 512-byte block boundary, an archive is either refused as truncated (one error
/// saying so, the archive's fault) or, when only what follows the image was cut (the metadata
/// after `index.json`, the end marker), read whole with every blob intact.
#[test]
fn an_archive_cut_at_any_block_is_refused_as_truncated_or_read_whole() {
    let img = small_image();
    let tar = write_archive(&img, Some(&app_v1()));
    assert_eq!(tar.len() % 512, 0);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.tar");
    let mut whole = 0;
    for cut in (0..tar.len()).step_by(512) {
        std::fs::write(&path, &tar[..cut]).unwrap();
        match open(&path) {
            Ok(archive) => {
                whole += 1;
                assert_eq!(archive.images[0].content.top.bytes(), img.manifest.bytes());
                assert_eq!(read_blobs(&archive).len(), 4, "cut at {cut}");
            }
            Err(e) => {
                let msg = e.to_string();
                assert_eq!(e.kind(), ArchiveErrorKind::Invalid, "cut at {cut}: {msg}");
                assert!(
                    msg.starts_with(&path.display().to_string()) && msg.contains("truncated?"),
                    "cut at {cut}: {msg}"
                );
                assert!(std::error::Error::source(&e).is_none(), "{msg}");
            }
        }
    }
    // The cuts after index.json: before manifest.json, repositories, and within the end marker.
    assert!((2..=8).contains(&whole), "{whole} cuts read whole");
}

/// Cut anywhere inside a blob, it is refused as truncated too.
#[test]
fn an_archive_cut_inside_an_entry_says_which_entry() {
    let img = small_image();
    let tar = write_archive(&img, None);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.tar");
    // Inside the first blob's data (the manifest's, right after the first header).
    std::fs::write(&path, &tar[..600]).unwrap();
    let msg = open(&path).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("blobs/sha256/{}", img.manifest.digest().hex()))
            && msg.contains("ends early (truncated?)"),
        "{msg}"
    );
}

/// A gzip archive cut anywhere, or with a damaged byte, is one error, never a panic.
#[test]
fn a_cut_or_damaged_gzip_archive_is_one_error() {
    let img = small_image();
    let tar = write_archive(&img, Some(&app_v1()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cut.tar.gz");
    for cut in (2..gz.len()).step_by(7) {
        std::fs::write(&path, &gz[..cut]).unwrap();
        let e = match open(&path) {
            Ok(_) => panic!("cut at {cut} of {} was read", gz.len()),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ArchiveErrorKind::Invalid, "cut at {cut}: {e}");
    }
    let mut damaged = gz.clone();
    damaged[gz.len() / 2] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    // Either the deflate stream or its checksum gives it away, wherever the byte is.
    let e = match open(&path) {
        Ok(_) => panic!("a damaged gzip archive was read"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ArchiveErrorKind::Invalid, "{e}");
}

/// A gzip archive that unpacks past the configured limit is a limit error that says what passed
/// which bound, typed for the front end to phrase its own advice; the message names no command.
#[test]
fn a_gzip_archive_past_the_unpacked_limit_is_a_typed_limit_error() {
    let img = RawImage::new(b"config".to_vec(), vec![vec![0u8; 64 << 10]]);
    let tar = write_archive(&img, Some(&app_v1()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("app.tar.gz");
    std::fs::write(&path, &gz).unwrap();

    let limits = ArchiveLimits {
        max_unpacked: Some(16 << 10),
    };
    let e = Archive::open(&path, &[], &limits).unwrap_err();
    assert_eq!(e.kind(), ArchiveErrorKind::Limit, "{e}");
    let too_large = e.unpacked_too_large().expect("the unpacked-size limit");
    assert_eq!(
        *too_large,
        UnpackedTooLarge {
            limit: 16 << 10,
            compressed: gz.len() as u64,
            bound: UnpackedBound::Configured,
        }
    );
    assert!(too_large.limit_can_be_raised());
    let msg = e.to_string();
    assert!(msg.contains("unpacks to more than 16384 bytes"), "{msg}");
    assert!(!msg.contains("ferry"), "{msg}");
    // Under the limit, and by default, it reads.
    let limits = ArchiveLimits {
        max_unpacked: Some(tar.len() as u64),
    };
    assert!(Archive::open(&path, &[], &limits).is_ok());
    assert!(open(&path).is_ok());
}
