//! `--dest-compress`: the copy engine converting layers between gzip, zstd and plain tar, checked
//! on what it writes (each layer still unpacks to the tar its config's `diff_ids` name), on which
//! digests change, and by real peers: skopeo reads the zstd layout, and a `docker-registry` takes
//! the converted image and serves it back.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use ferry_client::{Registry, RegistryOptions};
use ferry_copy::{
    Compression, Copied, Copier, CopyError, CopyOptions, Location, PlatformChoice, Silent,
};
use ferry_oci::{Digest, Manifest, MediaType};
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::image::{Blob, Image, image, index};
use ferry_testkit::peers::{DockerRegistry, Skopeo};

use crate::{open, read_blobs};

const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

fn copier(compression: Compression, platforms: PlatformChoice) -> Copier {
    Copier::new(
        CopyOptions {
            compression,
            platforms,
            ..CopyOptions::default()
        },
        Box::new(|host: &str| {
            Registry::new(RegistryOptions {
                endpoint: format!("http://{host}"),
                ..RegistryOptions::default()
            })
        }),
        Arc::new(Silent),
    )
}

fn layout(dir: &Path, name: &str) -> Location {
    format!("oci:{}:{name}", dir.display()).parse().unwrap()
}

async fn copy(
    compression: Compression,
    from: &Location,
    to: &Location,
) -> Result<Copied, CopyError> {
    copier(compression, PlatformChoice::All)
        .copy(from, to)
        .await
}

/// Writes `blobs` and `top` as the OCI layout `dir`, `top` named `v1`.
fn write(dir: &Path, blobs: &[&Blob], top: &Blob) {
    ferry_testkit::image::write_layout(dir, blobs, &[("v1", top)]).unwrap();
}

/// The layout's only image: its top manifest, its image manifests, and every blob, each
/// checked against its digest.
struct Written {
    top: Manifest,
    images: Vec<Manifest>,
    blobs: std::collections::BTreeMap<String, Vec<u8>>,
}

fn read(dir: &Path) -> Written {
    let archive = open(dir).unwrap();
    assert_eq!(archive.images.len(), 1);
    let content = &archive.images[0].content;
    let top = Manifest::clone(&content.top);
    let images = if top.media_type().is_index() {
        content
            .children
            .iter()
            .map(|c| Manifest::clone(c))
            .collect()
    } else {
        vec![top.clone()]
    };
    Written {
        top,
        images,
        blobs: read_blobs(&archive),
    }
}

/// A layer's tar, unpacked as its media type says.
fn unpack(media_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    match media_type {
        OCI_GZIP | DOCKER_GZIP => {
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut tar)
                .unwrap();
        }
        OCI_ZSTD => {
            zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut tar)
                .unwrap();
        }
        OCI_TAR | DOCKER_TAR => tar = bytes.to_vec(),
        other => panic!("not a layer type: {other}"),
    }
    tar
}

/// Every image of `w`: its config is `config` (same digest), its layers are of `media_type`
/// and unpack to the tars the config's `diff_ids` name.
fn assert_layers(w: &Written, media_type: &str) {
    for m in &w.images {
        let config = m.config.as_ref().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&w.blobs[config.digest.as_str()]).unwrap();
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), m.layers.len());
        for (layer, diff_id) in m.layers.iter().zip(diff_ids) {
            assert_eq!(layer.media_type, media_type);
            let bytes = &w.blobs[layer.digest.as_str()];
            assert_eq!(bytes.len() as u64, layer.size);
            assert_eq!(
                Digest::sha256(&unpack(media_type, bytes)).as_str(),
                diff_id.as_str().unwrap(),
                "layer {} does not unpack to its diff_id",
                layer.digest
            );
        }
    }
}

fn layer_digests(w: &Written) -> Vec<Digest> {
    w.images
        .iter()
        .flat_map(|m| m.layers.iter().map(|l| l.digest.clone()))
        .collect()
}

fn config_digests(w: &Written) -> Vec<Digest> {
    w.images
        .iter()
        .map(|m| m.config.as_ref().unwrap().digest.clone())
        .collect()
}

/// `img`'s first layer as zstd, the rest as they are: an image of mixed compression.
fn mixed(img: &Image) -> Image {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(img.layers[0].bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&tar).unwrap();
    let mut layers = img.layers.clone();
    layers[0] = Blob::new(OCI_ZSTD, z.finish().unwrap());
    rebuild(img, layers, MediaType::OCI_MANIFEST, &img.config.media_type)
}

/// `img` with other layers, under a manifest of `media_type` whose config is `config_type`.
fn rebuild(img: &Image, layers: Vec<Blob>, media_type: &str, config_type: &str) -> Image {
    let config = Blob::new(config_type, img.config.bytes.clone());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    Image {
        config,
        layers,
        manifest: Blob::new(media_type, serde_json::to_vec(&manifest).unwrap()),
    }
}

fn write_image(dir: &Path, img: &Image) {
    write(dir, &img.blobs().collect::<Vec<_>>(), &img.manifest);
}

#[tokio::test]
async fn gzip_to_zstd_and_back_keeps_every_layers_tar_and_changes_digests_only_when_converting() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(21, 3, 100_000, "amd64");
    let a = tmp.path().join("a");
    write_image(&a, &img);
    let original = read(&a);

    // keep: every digest as it was.
    let kept = tmp.path().join("kept");
    let c = copy(Compression::Keep, &layout(&a, "v1"), &layout(&kept, "v1"))
        .await
        .unwrap();
    assert_eq!(c.digest, img.manifest.digest);
    assert_eq!(c.blobs_recompressed, 0);
    assert_eq!(read(&kept).top.bytes(), original.top.bytes());

    // gzip → zstd: new layers, same config, a new manifest digest.
    let z = tmp.path().join("z");
    let c = copy(Compression::Zstd, &layout(&a, "v1"), &layout(&z, "v1"))
        .await
        .unwrap();
    let zstd = read(&z);
    assert_eq!(c.digest, *zstd.top.digest());
    assert_eq!(c.blobs_recompressed, 3);
    assert_eq!(c.blobs_copied, 4);
    assert_ne!(c.digest, img.manifest.digest);
    assert_layers(&zstd, OCI_ZSTD);
    assert_eq!(config_digests(&zstd), config_digests(&original));
    for d in layer_digests(&zstd) {
        assert!(!layer_digests(&original).contains(&d));
    }
    // Nothing but the new blobs, the config and the manifest; no partial left.
    assert_eq!(zstd.blobs.len(), 4);
    assert!(!z.join(".ferry-partial").exists());

    // zstd → zstd: nothing to convert, every digest kept.
    let zz = tmp.path().join("zz");
    let c = copy(Compression::Zstd, &layout(&z, "v1"), &layout(&zz, "v1"))
        .await
        .unwrap();
    assert_eq!(c.blobs_recompressed, 0);
    assert_eq!(&c.digest, zstd.top.digest());

    // zstd → gzip: the tars again, a manifest digest other than the zstd one.
    let g = tmp.path().join("g");
    let c = copy(Compression::Gzip, &layout(&z, "v1"), &layout(&g, "v1"))
        .await
        .unwrap();
    let gzip = read(&g);
    assert_eq!(c.blobs_recompressed, 3);
    assert_ne!(&c.digest, zstd.top.digest());
    assert_layers(&gzip, OCI_GZIP);
    assert_eq!(config_digests(&gzip), config_digests(&original));

    // A conversion depends on the content alone: the same layers converted again are the same
    // blobs, so converting into a destination that has them finds them there.
    let c = copy(Compression::Zstd, &layout(&g, "v1"), &layout(&z, "v1"))
        .await
        .unwrap();
    assert_eq!(&c.digest, zstd.top.digest());
    assert_eq!((c.blobs_copied, c.blobs_present), (0, 4));
}

#[tokio::test]
async fn a_layer_already_in_the_wanted_compression_is_not_recompressed() {
    let tmp = tempfile::tempdir().unwrap();
    let img = mixed(&image(22, 3, 50_000, "amd64"));
    let src = tmp.path().join("src");
    write_image(&src, &img);
    let dst = tmp.path().join("dst");
    let c = copy(Compression::Zstd, &layout(&src, "v1"), &layout(&dst, "v1"))
        .await
        .unwrap();
    assert_eq!(c.blobs_recompressed, 2);
    let w = read(&dst);
    assert_layers(&w, OCI_ZSTD);
    let layers = layer_digests(&w);
    assert_eq!(layers[0], img.layers[0].digest, "the zstd layer was kept");
    assert_ne!(layers[1], img.layers[1].digest);
    assert_ne!(layers[2], img.layers[2].digest);
}

#[tokio::test]
async fn an_index_of_two_platforms_is_rewritten_over_its_rewritten_children() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = (image(23, 2, 20_000, "amd64"), image(24, 2, 20_000, "arm64"));
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let src = tmp.path().join("src");
    let blobs: Vec<&Blob> = amd
        .blobs()
        .chain(arm.blobs())
        .chain([&amd.manifest, &arm.manifest])
        .collect();
    write(&src, &blobs, &idx);
    let dst = tmp.path().join("dst");
    let c = copy(Compression::Zstd, &layout(&src, "v1"), &layout(&dst, "v1"))
        .await
        .unwrap();
    assert_eq!(c.blobs_recompressed, 4);
    let w = read(&dst);
    assert_eq!(w.top.media_type(), ferry_oci::MediaType::OciIndex);
    assert_eq!(&c.digest, w.top.digest());
    assert_ne!(w.top.digest(), &idx.digest);
    assert_layers(&w, OCI_ZSTD);
    // Each child descriptor names the rewritten manifest, with the platform it had.
    assert_eq!(w.top.manifests.len(), 2);
    for (d, (old, arch)) in w
        .top
        .manifests
        .iter()
        .zip([(&amd, "amd64"), (&arm, "arm64")])
    {
        let child = w.images.iter().find(|m| m.digest() == &d.digest).unwrap();
        assert_eq!(d.size, child.bytes().len() as u64);
        assert_eq!(d.media_type, MediaType::OCI_MANIFEST);
        assert_eq!(d.platform.as_ref().unwrap().architecture, arch);
        assert_ne!(d.digest, old.manifest.digest);
    }
    // One platform of it: that child, converted, is what the destination is named with.
    let one = tmp.path().join("one");
    let c = copier(
        Compression::Zstd,
        PlatformChoice::Only(vec!["linux/arm64".parse().unwrap()]),
    )
    .copy(&layout(&src, "v1"), &layout(&one, "v1"))
    .await
    .unwrap();
    assert_eq!(c.digest, w.top.manifests[1].digest);
    assert_eq!(read(&one).top.bytes(), w.images[1].bytes());
}

#[tokio::test]
async fn a_docker_image_becomes_oci_for_zstd_and_stays_docker_for_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let base = image(25, 2, 30_000, "amd64");
    let mut layers: Vec<Blob> = base
        .layers
        .iter()
        .map(|l| Blob::new(DOCKER_GZIP, l.bytes.clone()))
        .collect();
    // One uncompressed layer, as `docker save` archives hold them.
    let tar = unpack(DOCKER_GZIP, &layers[1].bytes);
    layers[1] = Blob::new(DOCKER_TAR, tar);
    let docker = rebuild(&base, layers, MediaType::DOCKER_MANIFEST, DOCKER_CONFIG);
    let src = tmp.path().join("src");
    write_image(&src, &docker);

    // gzip: the tar layer is compressed, the gzip one kept, the manifest stays Docker's.
    let g = tmp.path().join("g");
    let c = copy(Compression::Gzip, &layout(&src, "v1"), &layout(&g, "v1"))
        .await
        .unwrap();
    assert_eq!(c.blobs_recompressed, 1);
    let w = read(&g);
    assert_eq!(w.top.media_type(), MediaType::DockerManifest);
    assert_layers(&w, DOCKER_GZIP);
    assert_eq!(layer_digests(&w)[0], docker.layers[0].digest);

    // zstd: an OCI image over the same config bytes.
    let z = tmp.path().join("z");
    copy(Compression::Zstd, &layout(&src, "v1"), &layout(&z, "v1"))
        .await
        .unwrap();
    let w = read(&z);
    assert_eq!(w.top.media_type(), MediaType::OciManifest);
    let config = w.top.config.as_ref().unwrap();
    assert_eq!(
        config.media_type,
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(config.digest, docker.config.digest);
    assert_layers(&w, OCI_ZSTD);
}

/// Files under `dir/blobs` (every one checked against its name).
fn blob_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("blobs/sha256")) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(
            Digest::sha256(&std::fs::read(e.path()).unwrap()).hex(),
            name,
            "a blob file that is not its digest"
        );
        out.push(name);
    }
    out
}

#[tokio::test]
async fn a_corrupt_source_layer_fails_the_copy_and_leaves_no_blob_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(26, 1, 200_000, "amd64");
    let src = tmp.path().join("src");
    write_image(&src, &img);
    // Flip a byte in the middle of the layer: same size, another digest.
    let file = src.join("blobs/sha256").join(img.layers[0].digest.hex());
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    for to in [Compression::Zstd, Compression::Gzip] {
        let dst = tmp.path().join(format!("dst-{to}"));
        let from = if to == Compression::Gzip {
            // A gzip layer is not converted to gzip: make it a plain tar that is corrupt.
            let tar_src = tmp.path().join("tar-src");
            let mut tar = unpack(OCI_GZIP, &img.layers[0].bytes);
            let layer = Blob::new(OCI_TAR, tar.clone());
            let plain = rebuild(
                &img,
                vec![layer.clone()],
                MediaType::OCI_MANIFEST,
                &img.config.media_type,
            );
            write_image(&tar_src, &plain);
            tar[1000] ^= 0x55;
            std::fs::write(tar_src.join("blobs/sha256").join(layer.digest.hex()), tar).unwrap();
            tar_src
        } else {
            src.clone()
        };
        let e = copy(to, &layout(&from, "v1"), &layout(&dst, "v1"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CopyError::Integrity { .. } | CopyError::Malformed { .. }),
            "{e}"
        );
        // At most the config, which is whole; no layer, no manifest, no index entry.
        let blobs = blob_files(&dst);
        assert!(
            blobs.iter().all(|b| b == img.config.digest.hex()),
            "{to}: {blobs:?}"
        );
        let partials: Vec<_> = std::fs::read_dir(dst.join(".ferry-partial"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            partials
                .iter()
                .all(|p| !p.to_string_lossy().contains(".to-")),
            "{partials:?}"
        );
        if let Ok(index) = std::fs::read(dst.join("index.json")) {
            let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
            assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
        }
    }
    // Right digest, wrong content: a "gzip" layer that is no gzip is refused by name.
    let liar = tmp.path().join("liar");
    let layer = Blob::new(OCI_GZIP, b"not gzip at all".repeat(100));
    write_image(
        &liar,
        &rebuild(
            &img,
            vec![layer],
            MediaType::OCI_MANIFEST,
            &img.config.media_type,
        ),
    );
    let e = copy(
        Compression::Zstd,
        &layout(&liar, "v1"),
        &layout(&tmp.path().join("liar-dst"), "v1"),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not a valid gzip stream"), "{e}");
}

#[tokio::test]
async fn skopeo_reads_the_zstd_layout_ferry_writes() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(27, 3, 100_000, "amd64");
    let src = tmp.path().join("src");
    write_image(&src, &img);
    let z = tmp.path().join("z");
    copy(Compression::Zstd, &layout(&src, "v1"), &layout(&z, "v1"))
        .await
        .unwrap();
    let inspected: serde_json::Value =
        serde_json::from_str(&skopeo.run(&["inspect", &format!("oci:{}:v1", z.display())]))
            .unwrap();
    // skopeo 1.9 reads the manifest and the config: the zstd layers, the platform.
    let layers: Vec<String> = layer_digests(&read(&z))
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        inspected["Layers"],
        serde_json::json!(layers),
        "{inspected}"
    );
    assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
    // skopeo 1.9 tells compressions apart by their bytes, not by media type (which the other
    // tests check): what it proves is that the blobs are zstd streams of the right tars.
    // skopeo unpacks each zstd layer: dir: with --dest-decompress names them by the digests of
    // their tars, which are the config's diff_ids.
    let out = tmp.path().join("skopeo-dir");
    skopeo.run(&[
        "copy",
        "--dest-decompress",
        &format!("oci:{}:v1", z.display()),
        &format!("dir:{}", out.display()),
    ]);
    let config: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
    for diff_id in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let d: Digest = diff_id.as_str().unwrap().parse().unwrap();
        let tar = std::fs::read(out.join(d.hex())).unwrap();
        assert_eq!(Digest::sha256(&tar), d);
    }
}

#[tokio::test]
async fn a_registry_takes_the_converted_image_and_serves_it_back() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(28, 3, 100_000, "amd64");
    let src = tmp.path().join("src");
    write_image(&src, &img);
    let host = registry.host();
    let remote =
        |repo: &str| -> Location { format!("registry://{host}/{repo}:v1").parse().unwrap() };

    // Layout → registry as zstd, pulled back as it is: the same manifest a layout gets.
    let z = tmp.path().join("z");
    let in_layout = copy(Compression::Zstd, &layout(&src, "v1"), &layout(&z, "v1"))
        .await
        .unwrap();
    let pushed = copy(Compression::Zstd, &layout(&src, "v1"), &remote("team/z"))
        .await
        .unwrap();
    assert_eq!(pushed.digest, in_layout.digest);
    assert_eq!(pushed.blobs_recompressed, 3);
    let back = tmp.path().join("back");
    let pulled = copy(Compression::Keep, &remote("team/z"), &layout(&back, "v1"))
        .await
        .unwrap();
    assert_eq!(pulled.digest, pushed.digest);
    let w = read(&back);
    assert_layers(&w, OCI_ZSTD);

    // Registry → registry and registry → layout, converting the registry's stream back to gzip.
    let g = copy(Compression::Gzip, &remote("team/z"), &remote("team/g"))
        .await
        .unwrap();
    assert_eq!(g.blobs_recompressed, 3);
    let gl = tmp.path().join("gl");
    let c = copy(Compression::Gzip, &remote("team/z"), &layout(&gl, "v1"))
        .await
        .unwrap();
    assert_eq!(c.digest, g.digest);
    assert_layers(&read(&gl), OCI_GZIP);
    assert_ne!(g.digest, pushed.digest);
}

#[tokio::test]
async fn a_registry_layer_cut_off_midway_is_converted_again_and_a_wrong_one_is_refused() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(29, 3, 200_000, "amd64");
    let src = tmp.path().join("src");
    write_image(&src, &img);
    let pushed: Location = format!("registry://{}/team/app:v1", registry.host())
        .parse()
        .unwrap();
    copy(Compression::Keep, &layout(&src, "v1"), &pushed)
        .await
        .unwrap();
    let proxy = FaultProxy::start(&registry.host());
    let through: Location = format!("registry://{}/team/app:v1", proxy.host())
        .parse()
        .unwrap();
    // The destination has the config already, so only the conversions fetch blobs.
    let dst = tmp.path().join("dst");
    copy(Compression::Keep, &through, &layout(&dst, "v1"))
        .await
        .unwrap();
    let layer_gets = || -> usize {
        img.layers
            .iter()
            .map(|l| proxy.requests("GET", &format!("/v2/team/app/blobs/{}", l.digest)))
            .sum()
    };
    let before = layer_gets();
    let blobs_before = blob_files(&dst);

    // One body served wrong: that layer's digest does not check out and nothing of it is
    // placed (the other layers, converted meanwhile, are whole zstd blobs of their tars).
    proxy.inject(Target::Blob, Fault::WrongBytes, 1);
    let e = copy(Compression::Zstd, &through, &layout(&dst, "v1"))
        .await
        .unwrap_err();
    assert!(matches!(e, CopyError::Integrity { .. }), "{e}");
    let config: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let new: Vec<String> = blob_files(&dst)
        .into_iter()
        .filter(|b| !blobs_before.contains(b))
        .collect();
    assert!(new.len() < img.layers.len(), "{new:?}");
    for b in &new {
        let tar = unpack(
            OCI_ZSTD,
            &std::fs::read(dst.join("blobs/sha256").join(b)).unwrap(),
        );
        assert!(diff_ids.contains(&Digest::sha256(&tar).as_str().into()));
    }

    // One body reset half way: that layer is fetched and converted again, the copy succeeds.
    proxy.clear();
    let before_reset = layer_gets();
    proxy.inject(Target::Blob, Fault::ResetMidBody, 1);
    let c = copy(Compression::Zstd, &through, &layout(&dst, "v1"))
        .await
        .unwrap();
    assert_eq!(c.blobs_recompressed, 3);
    assert_eq!(layer_gets() - before_reset, 4, "three layers and one again");
    assert!(before_reset > before);
    let w = read(&dst);
    assert_layers(&w, OCI_ZSTD);
    assert_eq!(&c.digest, w.top.digest());
}

#[tokio::test]
async fn a_store_destination_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(30, 2, 10_000, "amd64");
    let src = tmp.path().join("src");
    write_image(&src, &img);
    let data = tmp.path().join("data");
    let store = ferry_store::Store::open(&data, ferry_store::StoreOptions::default())
        .await
        .unwrap();
    let target = ferry_copy::StoreTarget {
        store: store.clone(),
        naming: Box::new(|_| {
            Ok(ferry_copy::StoreName {
                repo: ferry_oci::RepoName::new("cached/app").unwrap(),
                tags: vec![ferry_oci::Tag::new("v1").unwrap()],
            })
        }),
    };
    let copier = copier(Compression::Zstd, PlatformChoice::All).with_store(data.clone(), target);
    let e = copier
        .copy(
            &layout(&src, "v1"),
            &Location::FerryStore { data_dir: data },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CopyError::Destination { .. }), "{e}");
    assert!(e.to_string().contains("--dest-compress keep"), "{e}");
    for b in img.blobs() {
        assert!(
            !store.has_content_now(&b.digest),
            "{} was written",
            b.digest
        );
    }
}
