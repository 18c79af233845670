//! What the writers write, the reader reads back: the same manifest bytes, blobs and name.

use std::io::{Read, Write};

use ferry_oci::MediaType;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use crate::{RawImage, app_v1, open, read_blobs, write_archive, write_layout};

/// The tar `archive` without its entry `drop`: what a reader that only knows docker save (or
/// only OCI) sees.
fn without(archive: &[u8], drop: &str) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut input = tar::Archive::new(archive);
    for e in input.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(drop) {
            continue;
        }
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.append_data(&mut h, e.path().unwrap(), data.as_slice())
            .unwrap();
    }
    out.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Most cases of the round trip. Each case writes an archive three ways and an fsynced layout
/// (~20 ms on a disk), so `PROPTEST_CASES` (10,000 under `cargo xtask test`, for the pure parsers;
/// 3 minutes here) may lower the count but not raise it past this. Tar edge cases byte by byte
/// have their own pure property tests (`archive::tar_index`).
const MAX_CASES: u32 = 48;

/// An image of random bytes (0 to 4 layers, sizes around the 512-byte blocks), named or not,
/// written as an archive (plain and gzip) and as a layout, reads back with the same manifest
/// bytes, the same blobs and the name; its docker-save side, read alone, names the same config
/// and layers in order.
#[test]
fn written_images_read_back_the_same() {
    let config = ProptestConfig::default();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: config.cases.min(MAX_CASES),
        source_file: Some(file!()),
        test_name: Some(concat!(
            module_path!(),
            "::written_images_read_back_the_same"
        )),
        ..config
    });
    let images = (
        prop::collection::vec(any::<u8>(), 0..700),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1100), 0..5),
        any::<bool>(),
    );
    let result = runner.run(&images, |(config, layers, named)| {
        round_trip(config, layers, named)
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}

fn round_trip(config: Vec<u8>, layers: Vec<Vec<u8>>, named: bool) -> Result<(), TestCaseError> {
    let img = RawImage::new(config, layers);
    let name = named.then(app_v1);
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let tar = write_archive(&img, name.as_ref());

    let layout = tmp.join("layout");
    write_layout(&layout, &img, name.as_ref());
    for (what, bytes) in [
        ("plain", Some(tar.clone())),
        ("gzip", Some(gzip(&tar))),
        ("layout", None),
    ] {
        let path = match bytes {
            Some(b) => {
                let p = tmp.join(format!("{what}.tar"));
                std::fs::write(&p, b).unwrap();
                p
            }
            None => layout.clone(),
        };
        let archive = open(&path).unwrap();
        prop_assert_eq!(archive.images.len(), 1, "{}", what);
        let image = &archive.images[0];
        prop_assert_eq!(image.content.top.bytes(), img.manifest.bytes(), "{}", what);
        match &name {
            // The whole name comes back (io.containerd.image.name).
            Some(n) => prop_assert_eq!(image.name.as_ref(), Some(n), "{}", what),
            None => prop_assert!(image.name.is_none() && image.tag_only.is_none(), "{}", what),
        }
        let blobs = read_blobs(&archive);
        prop_assert_eq!(
            blobs
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            img.blob_digests(),
            "{}",
            what
        );
        for (d, b) in img.blobs() {
            if d != *img.manifest.digest() {
                prop_assert_eq!(blobs[d.as_str()].as_slice(), b, "{}", what);
            }
        }
    }

    // The docker-save side alone: manifest.json's files are the same blobs, in order.
    let docker = tmp.join("docker.tar");
    std::fs::write(&docker, without(&tar, "index.json")).unwrap();
    let archive = open(&docker).unwrap();
    prop_assert_eq!(archive.images.len(), 1);
    let top = &archive.images[0].content.top;
    prop_assert_eq!(top.media_type().as_str(), MediaType::DOCKER_MANIFEST);
    prop_assert_eq!(
        top.config.as_ref().map(|c| &c.digest),
        img.manifest.config.as_ref().map(|c| &c.digest)
    );
    let layers: Vec<_> = top.layers.iter().map(|l| (&l.digest, l.size)).collect();
    let expected: Vec<_> = img
        .manifest
        .layers
        .iter()
        .map(|l| (&l.digest, l.size))
        .collect();
    prop_assert_eq!(layers, expected);
    prop_assert_eq!(archive.images[0].name.as_ref(), name.as_ref());
    read_blobs(&archive);
    Ok(())
}

/// A layout written again keeps its other images and replaces the one of the same name.
#[test]
fn a_layout_keeps_other_images_and_replaces_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let a = RawImage::new(b"config a".to_vec(), vec![b"layer a".to_vec()]);
    let b = RawImage::new(b"config b".to_vec(), vec![b"layer b".to_vec()]);
    let c = RawImage::new(b"config c".to_vec(), vec![]);
    let other = ferry_oci::Reference::parse("127.0.0.1:5000/team/other:v2").unwrap();
    write_layout(tmp.path(), &a, Some(&app_v1()));
    write_layout(tmp.path(), &b, Some(&other));
    write_layout(tmp.path(), &c, Some(&app_v1()));
    let archive = open(tmp.path()).unwrap();
    let mut got: Vec<(String, String)> = archive
        .images
        .iter()
        .map(|i| (i.label(), i.content.top.digest().to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (app_v1().to_string(), c.manifest.digest().to_string()),
            (other.to_string(), b.manifest.digest().to_string()),
        ]
    );
    // No temporary file is left behind.
    let mut names: Vec<String> = walk(tmp.path());
    names.retain(|n| {
        n.rsplit('/')
            .next()
            .is_some_and(|f| f.starts_with(".tmp") || f.ends_with(".tmp"))
    });
    assert!(names.is_empty(), "{names:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}
