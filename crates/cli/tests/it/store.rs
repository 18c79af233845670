//! Filling a stopped mirror's data directory: `ferry preload --data-dir` copies references from
//! their upstream into the store, and `ferry copy SRC ferry-store:DIR` does the same for any
//! source; an offline ferry then serves what was copied, under the upstream's digests.

use std::process::{Command, Output};

use ferry_testkit::image::image;
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo};

use crate::{client, ferry_bin};

fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin()).args(args).output().unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The status of `GET /v2/{path}` on `server`, asking for any manifest type.
async fn status(server: &Ferry, path: &str) -> u16 {
    client()
        .get(format!("{}/v2/{path}", server.url()))
        .header("accept", ferry_oci::MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_into_a_data_dir_copies_references_from_their_upstream() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(mut upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let host = upstream.host();
    let (amd, arm) = (
        image(131, 2, 40_000, "amd64"),
        image(132, 2, 40_000, "arm64"),
    );
    let idx = skopeo.push_index(
        &[(&amd, "amd64"), (&arm, "arm64")],
        tmp.path(),
        &format!("{host}/p/multi:v1"),
    );
    let single = image(133, 1, 40_000, "amd64");
    skopeo.push_image(&single, tmp.path(), &format!("{host}/p/single:v1"));
    let up = format!("http://{host}");
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // A registry that is not an upstream is refused before anything is copied.
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "quay.io/o/app:v1",
    ]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("quay.io") && said(&out).contains(&host),
        "{}",
        said(&out)
    );
    // References go through a running mirror or into a data directory, not both at once.
    let single_ref = format!("{host}/p/single:v1");
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "--mirror",
        "http://127.0.0.1:9",
        &single_ref,
    ]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("not both"), "{}", said(&out));

    let multi_ref = format!("{host}/p/multi:v1");
    let out = ferry(&[
        "preload",
        "--data-dir",
        d,
        "--upstream",
        &up,
        "--platform",
        "linux/arm64",
        &multi_ref,
        &single_ref,
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("preloaded {multi_ref}: 2 manifests, 3 blobs")),
        "the index and its arm64 child, whose config and 2 layers: {stdout}"
    );
    assert!(
        stdout.contains(&format!("preloaded {single_ref}: 1 manifest, 2 blobs")),
        "{stdout}"
    );
    // Again: everything is there, nothing is fetched.
    let out = ferry(&["preload", "--data-dir", d, "--upstream", &up, &single_ref]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(0 bytes new)"),
        "{}",
        said(&out)
    );

    // The upstream goes away; the offline mirror serves what was copied.
    upstream.process.kill9();
    let server = Ferry::start(ferry_bin(), &data, &["--offline", "--upstream", &up]);
    assert_eq!(
        skopeo.raw(&format!("docker://{}/p/multi:v1", server.host())),
        idx.bytes,
        "the tag points at the upstream's index, byte for byte, though one platform was copied"
    );
    assert_eq!(
        status(
            &server,
            &format!("p/multi/manifests/{}", arm.manifest.digest)
        )
        .await,
        200
    );
    for b in arm.blobs() {
        assert_eq!(
            status(&server, &format!("p/multi/blobs/{}", b.digest)).await,
            200
        );
    }
    assert_eq!(
        status(
            &server,
            &format!("p/multi/manifests/{}", amd.manifest.digest)
        )
        .await,
        404,
        "the platform left out is not in the cache"
    );
    assert_eq!(
        status(&server, &format!("p/multi/blobs/{}", amd.layers[0].digest)).await,
        404
    );
    // skopeo copies the single image out of the offline cache, every blob digest-checked.
    let pulled = tmp.path().join("pulled");
    skopeo.copy(
        &format!("docker://{}/p/single:v1", server.host()),
        &format!("oci:{}:v1", pulled.display()),
        &[],
    );
    let fsck = ferry(&["fsck", "--data-dir", d]);
    assert!(fsck.status.success(), "{}", said(&fsck));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_ferry_store_is_served_by_the_mirror_of_that_registry() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(mut upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let host = upstream.host();
    let img = image(134, 2, 30_000, "amd64");
    skopeo.push_image(&img, tmp.path(), &format!("{host}/team/app:v1"));
    let data = tmp.path().join("data");
    let into = format!("ferry-store:{}", data.display());
    let src = format!("registry://{host}/team/app:v1");

    let out = ferry(&["copy", "--quiet", &src, &into]);
    assert!(out.status.success(), "{}", said(&out));

    upstream.process.kill9();
    let up = format!("http://{host}");
    let server = Ferry::start(ferry_bin(), &data, &["--offline", "--upstream", &up]);
    assert_eq!(
        skopeo.raw(&format!("docker://{}/team/app:v1", server.host())),
        img.manifest.bytes,
        "cached under the upstream's name, as a pull through the mirror would have put it"
    );
    for b in img.blobs() {
        assert_eq!(
            status(&server, &format!("team/app/blobs/{}", b.digest)).await,
            200
        );
    }
    // The store is locked while a ferry serves it: a copy into it is refused and says why.
    let layout = tmp.path().join("layout");
    skopeo.copy(
        &format!("docker://{}/team/app:v1", server.host()),
        &format!("oci:{}:v1", layout.display()),
        &[],
    );
    let out = ferry(&[
        "copy",
        "--quiet",
        &format!("oci:{}:v1", layout.display()),
        &into,
    ]);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("stop the ferry serving it first"),
        "{}",
        said(&out)
    );
}
