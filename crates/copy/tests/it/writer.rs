//! What the writers refuse, and what they write exactly.

use std::io::Read;

use ferry_copy::archive::{ArchiveErrorKind, ArchiveWriter, OciLayoutWriter};
use ferry_oci::Digest;

use crate::{RawImage, app_v1, write_archive};

/// A reader that fails if read: a blob already written must not be read again.
struct Unread;

impl Read for Unread {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("a blob already written was read again");
    }
}

#[test]
fn blobs_of_the_wrong_size_or_bytes_are_refused_and_spoil_the_archive() {
    let bytes = b"hello, layer".as_slice();
    let d = Digest::sha256(bytes);
    let n = bytes.len() as u64;
    for (size, data, says) in [
        (n + 1, bytes, "ends after 12 bytes"),
        (n - 1, bytes, "more than its size of 11 bytes"),
        (n, b"hello, LAYER".as_slice(), "hash to"),
    ] {
        let mut w = ArchiveWriter::new(Vec::new());
        let e = w.add_blob(&d, size, data).unwrap_err();
        assert_eq!(e.kind(), ArchiveErrorKind::Content, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        // What was half written is never finished into an archive.
        let e = w.add_blob(&d, n, bytes).unwrap_err();
        assert_eq!(e.kind(), ArchiveErrorKind::Usage, "{e}");
        let e = w.finish(&[]).unwrap_err();
        assert_eq!(e.kind(), ArchiveErrorKind::Usage, "{e}");
    }
    // A layout keeps nothing under a blob's name that failed.
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayoutWriter::create(tmp.path()).unwrap();
    let e = layout
        .add_blob(&d, n, b"hello, LAYER".as_slice())
        .unwrap_err();
    assert_eq!(e.kind(), ArchiveErrorKind::Content, "{e}");
    assert!(!layout.has_blob(&d));
    let blob_dir = tmp.path().join("blobs/sha256");
    assert_eq!(std::fs::read_dir(&blob_dir).unwrap().count(), 0);
    layout.add_blob(&d, n, bytes).unwrap();
    assert_eq!(std::fs::read(blob_dir.join(d.hex())).unwrap(), bytes);
}

#[test]
fn a_blob_is_written_once_and_every_blob_of_an_entry_must_be_there() {
    let img = RawImage::new(b"config".to_vec(), vec![b"layer".to_vec()]);
    let mut w = ArchiveWriter::new(Vec::new());
    for (d, b) in img.blobs() {
        w.add_blob(&d, b.len() as u64, b).unwrap();
    }
    let layer = Digest::sha256(b"layer");
    assert!(w.has_blob(&layer));
    w.add_blob(&layer, 5, Unread).unwrap();
    let e = w.add_blob(&layer, 6, Unread).unwrap_err();
    assert_eq!(e.kind(), ArchiveErrorKind::Usage, "{e}");

    let mut w = ArchiveWriter::new(Vec::new());
    w.add_blob(
        img.manifest.digest(),
        img.manifest.bytes().len() as u64,
        img.manifest.bytes(),
    )
    .unwrap();
    w.add_blob(&Digest::sha256(b"config"), 6, b"config".as_slice())
        .unwrap();
    let e = w.finish(&[img.entry(Some(&app_v1()))]).unwrap_err();
    assert_eq!(e.kind(), ArchiveErrorKind::Usage, "{e}");
    assert!(
        e.to_string().contains(layer.as_str()) && e.to_string().contains(&app_v1().to_string()),
        "{e}"
    );
}

/// The same image makes the same bytes, with headers that say nothing of who wrote them when;
/// docker's files point at the OCI blobs, as Docker 25+ writes them.
#[test]
fn archives_are_deterministic_and_docker_files_point_at_the_blobs() {
    let img = RawImage::new(
        b"config".to_vec(),
        vec![b"layer one".to_vec(), b"layer two".to_vec()],
    );
    let tar = write_archive(&img, Some(&app_v1()));
    assert_eq!(tar, write_archive(&img, Some(&app_v1())));
    let mut files = std::collections::BTreeMap::new();
    for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (
                h.mtime().unwrap(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap()
            ),
            (0, 0o644, 0, 0)
        );
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        let path = e.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        files.insert(path, bytes);
    }
    let path = |b: &[u8]| format!("blobs/sha256/{}", Digest::sha256(b).hex());
    let manifest_json: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(
        manifest_json,
        serde_json::json!([{
            "Config": path(b"config"),
            "RepoTags": ["127.0.0.1:5000/team/app:v1"],
            "Layers": [path(b"layer one"), path(b"layer two")],
        }])
    );
    let repositories: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
    assert_eq!(
        repositories,
        serde_json::json!({"127.0.0.1:5000/team/app": {"v1": Digest::sha256(b"layer two").hex()}})
    );
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let top = &index["manifests"][0];
    assert_eq!(top["digest"], img.manifest.digest().as_str());
    assert_eq!(
        top["annotations"]["io.containerd.image.name"],
        "127.0.0.1:5000/team/app:v1"
    );
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, b) in img.blobs() {
        assert_eq!(files[&format!("blobs/sha256/{}", d.hex())], b);
    }
}

/// A sha512 blob's name does not fit a ustar header: it is carried whole, and read back.
#[test]
fn a_name_longer_than_ustar_holds_is_written_whole() {
    let bytes = b"a sha512 layer".as_slice();
    let d = Digest::of(ferry_oci::Algorithm::Sha512, bytes);
    let mut w = ArchiveWriter::new(Vec::new());
    w.add_blob(&d, bytes.len() as u64, bytes).unwrap();
    let tar = w.finish(&[]).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name.starts_with("blobs/") {
            let mut got = Vec::new();
            e.read_to_end(&mut got).unwrap();
            assert_eq!(got, bytes);
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            format!("blobs/sha512/{}", d.hex()),
            "oci-layout".into(),
            "index.json".into()
        ]
    );

    // ferry's reader finds it too, as an image's layer.
    let config = b"{}".as_slice();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": ferry_oci::MediaType::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256(config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": bytes.len()}],
    }))
    .unwrap();
    let manifest = ferry_oci::Manifest::parse(manifest, None).unwrap();
    let mut w = ArchiveWriter::new(Vec::new());
    for b in [bytes, config, manifest.bytes()] {
        let digest = if b == bytes {
            d.clone()
        } else {
            Digest::sha256(b)
        };
        w.add_blob(&digest, b.len() as u64, b).unwrap();
    }
    let tar = w
        .finish(&[ferry_copy::archive::ArchiveEntry::new(&manifest, None)])
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sha512.tar");
    std::fs::write(&path, tar).unwrap();
    let blobs = crate::read_blobs(&crate::open(&path).unwrap());
    assert_eq!(blobs[d.as_str()], bytes);
}
