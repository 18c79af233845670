//! skopeo reads what ferry writes, and ferry reads what skopeo writes.

use std::path::Path;

use ferry_copy::archive::{ArchiveEntry, ArchiveWriter, OciLayoutWriter};
use ferry_oci::{Manifest, MediaType};
use ferry_testkit::image::{Blob, Image, image, index};
use ferry_testkit::peers::Skopeo;

use crate::{app_v1, open, read_blobs};

fn manifest(b: &Blob) -> Manifest {
    Manifest::parse(b.bytes.clone(), Some(&b.media_type)).unwrap()
}

/// The uncompressed digests of `img`'s layers, from its config.
fn diff_ids(img: &Image) -> Vec<String> {
    let config: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// Writes `blobs` and `entries` as an archive at `path`.
fn write(path: &Path, blobs: &[&Blob], entries: &[ArchiveEntry]) {
    let mut w = ArchiveWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ));
    for b in blobs {
        w.add_blob(&b.digest, b.bytes.len() as u64, b.bytes.as_slice())
            .unwrap();
    }
    w.finish(entries).unwrap();
}

/// The manifest skopeo wrote into the layout at `dir` (its only image).
fn layout_manifest(dir: &Path) -> Manifest {
    let archive = open(dir).unwrap();
    assert_eq!(archive.images.len(), 1);
    read_blobs(&archive);
    Manifest::clone(&archive.images[0].content.top)
}

#[test]
fn skopeo_reads_what_the_writer_writes_as_oci_and_docker_archives() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(7, 3, 3000, "amd64");
    let top = manifest(&img.manifest);
    let out = tmp.path().join("out.tar");
    let blobs: Vec<&Blob> = std::iter::once(&img.manifest).chain(img.blobs()).collect();
    write(&out, &blobs, &[ArchiveEntry::new(&top, Some(&app_v1()))]);

    // As an OCI archive: the same manifest, byte for byte.
    let oci = tmp.path().join("from-oci");
    skopeo.run(&[
        "copy",
        "--preserve-digests",
        &format!("oci-archive:{}", out.display()),
        &format!("oci:{}:x", oci.display()),
    ]);
    assert_eq!(layout_manifest(&oci).bytes(), img.manifest.bytes.as_slice());

    // As a docker archive: skopeo loads the same config, and layers that are its diff_ids
    // (docker-archive sources hand out layers uncompressed). `dir:` keeps both as skopeo read
    // them, each file named by the hex of its digest.
    let docker = tmp.path().join("from-docker");
    skopeo.run(&[
        "copy",
        &format!("docker-archive:{}", out.display()),
        &format!("dir:{}", docker.display()),
    ]);
    let loaded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(loaded["config"]["digest"], img.config.digest.as_str());
    let layers: Vec<String> = loaded["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers, diff_ids(&img));
    for d in layers
        .iter()
        .chain(std::iter::once(&img.config.digest.to_string()))
    {
        let d: ferry_oci::Digest = d.parse().unwrap();
        let bytes = std::fs::read(docker.join(d.hex())).unwrap();
        assert_eq!(ferry_oci::Digest::sha256(&bytes), d);
    }
    // The name it was saved under is what skopeo finds it by.
    skopeo.run(&[
        "copy",
        &format!("docker-archive:{}:{}", out.display(), app_v1()),
        &format!("dir:{}", tmp.path().join("by-name").display()),
    ]);
}

#[test]
fn skopeo_reads_a_multi_platform_archive_whole() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = (image(1, 2, 1000, "amd64"), image(2, 2, 1000, "arm64"));
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let out = tmp.path().join("multi.tar");
    let blobs: Vec<&Blob> = std::iter::once(&idx)
        .chain([&amd.manifest, &arm.manifest])
        .chain(amd.blobs())
        .chain(arm.blobs())
        .collect();
    let entry = ArchiveEntry::new(&manifest(&idx), Some(&app_v1()));
    assert!(
        entry.docker.is_none(),
        "docker save lists one platform: an index is not listed"
    );
    write(&out, &blobs, &[entry]);
    let oci = tmp.path().join("from-oci");
    skopeo.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        &format!("oci-archive:{}", out.display()),
        &format!("oci:{}:x", oci.display()),
    ]);
    let archive = open(&oci).unwrap();
    let content = &archive.images[0].content;
    assert_eq!(content.top.bytes(), idx.bytes.as_slice());
    assert_eq!(content.children.len(), 2);
    read_blobs(&archive);
}

#[test]
fn the_reader_reads_what_skopeo_writes() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(3, 3, 2000, "amd64");
    let top = manifest(&img.manifest);
    let layout = tmp.path().join("layout");
    let mut w = OciLayoutWriter::create(&layout).unwrap();
    for b in std::iter::once(&img.manifest).chain(img.blobs()) {
        w.add_blob(&b.digest, b.bytes.len() as u64, b.bytes.as_slice())
            .unwrap();
    }
    w.finish(&[ArchiveEntry::new(&top, Some(&app_v1()))])
        .unwrap();

    // docker-archive: skopeo writes the legacy form (uncompressed layers named by file), which
    // the reader turns into a Docker manifest over the same config.
    let docker = tmp.path().join("skopeo-docker.tar");
    skopeo.run(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:{}", docker.display(), app_v1()),
    ]);
    let archive = open(&docker).unwrap();
    assert_eq!(archive.images.len(), 1);
    let image = &archive.images[0];
    assert_eq!(image.name.as_ref(), Some(&app_v1()));
    let top = &image.content.top;
    assert_eq!(top.media_type().as_str(), MediaType::DOCKER_MANIFEST);
    assert_eq!(top.config.as_ref().unwrap().digest, img.config.digest);
    let layers: Vec<String> = top.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(layers, diff_ids(&img));
    let blobs = read_blobs(&archive);
    assert_eq!(blobs[img.config.digest.as_str()], img.config.bytes);

    // oci-archive: the same manifest, byte for byte, under the name skopeo was given.
    let oci = tmp.path().join("skopeo-oci.tar");
    skopeo.run(&[
        "copy",
        "--preserve-digests",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci-archive:{}:v1", oci.display()),
    ]);
    let archive = open(&oci).unwrap();
    let image = &archive.images[0];
    assert_eq!(image.tag_only.as_ref().map(|t| t.as_str()), Some("v1"));
    assert_eq!(image.content.top.bytes(), img.manifest.bytes.as_slice());
    let blobs = read_blobs(&archive);
    for b in img.blobs() {
        assert_eq!(blobs[b.digest.as_str()], b.bytes);
    }
}
