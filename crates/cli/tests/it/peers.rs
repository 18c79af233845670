//! ferry with the tools it must interoperate with: skopeo, CNCF Distribution, containerd.

use ferry_oci::Digest;
use ferry_testkit::image::{image, write_layout};
use ferry_testkit::peers::{Containerd, DockerRegistry, Ferry, Skopeo};

use crate::ferry_bin;

async fn blob_digest(base: &str, repo: &str, d: &Digest) -> Digest {
    let r = crate::client()
        .get(format!("{base}/v2/{repo}/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{base} {repo} {d}");
    Digest::sha256(&r.bytes().await.unwrap())
}

#[tokio::test]
async fn skopeo_copies_distribution_to_ferry_to_distribution_unchanged() {
    let (Some(skopeo), Some(upstream), Some(downstream)) = (
        Skopeo::new(),
        DockerRegistry::start(),
        DockerRegistry::start(),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(42, 3, 64 * 1024, "amd64");
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &img.blobs().collect::<Vec<_>>(),
        &[("v1", &img.manifest)],
    )
    .unwrap();
    let ferry = Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);

    let hops = [
        format!("docker://{}/src/app:v1", upstream.host()),
        format!("docker://{}/mirror/team/app:v1", ferry.host()),
        format!("docker://{}/dst/app:v1", downstream.host()),
    ];
    skopeo.copy(&format!("oci:{}:v1", layout.display()), &hops[0], &[]);
    skopeo.copy(&hops[0], &hops[1], &[]);
    skopeo.copy(&hops[1], &hops[2], &[]);
    for hop in &hops {
        assert_eq!(
            Digest::sha256(&skopeo.raw(hop)),
            img.manifest.digest,
            "manifest changed at {hop}"
        );
    }
    let bases = [
        (format!("http://{}", upstream.host()), "src/app"),
        (ferry.url(), "mirror/team/app"),
        (format!("http://{}", downstream.host()), "dst/app"),
    ];
    for b in img.blobs() {
        for (base, repo) in &bases {
            assert_eq!(
                &blob_digest(base, repo, &b.digest).await,
                &b.digest,
                "blob changed at {base}"
            );
        }
    }
}

#[tokio::test]
async fn skopeo_pushes_a_multi_arch_index_and_pulls_each_platform() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let amd = image(1, 2, 10_000, "amd64");
    let arm = image(2, 2, 10_000, "arm64");
    let ferry = Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    let remote = format!("docker://{}/multi/arch:latest", ferry.host());
    let idx = skopeo.push_index(
        &[(&amd, "amd64"), (&arm, "arm64")],
        tmp.path(),
        &format!("{}/multi/arch:latest", ferry.host()),
    );
    assert_eq!(Digest::sha256(&skopeo.raw(&remote)), idx.digest);
    for (img, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let out = tmp.path().join(format!("out-{arch}"));
        skopeo.copy(
            &remote,
            &format!("oci:{}:{arch}", out.display()),
            &["--override-arch", arch],
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            img.manifest.digest.as_str(),
            "{arch}"
        );
        for b in img.blobs() {
            let got = std::fs::read(out.join("blobs/sha256").join(b.digest.hex())).unwrap();
            assert_eq!(Digest::sha256(&got), b.digest);
        }
    }
}

#[tokio::test]
async fn containerd_pulls_from_ferry_and_the_image_is_complete() {
    let (Some(skopeo), Some(containerd)) = (Skopeo::new(), Containerd::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(7, 3, 100_000, "amd64");
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &img.blobs().collect::<Vec<_>>(),
        &[("v1", &img.manifest)],
    )
    .unwrap();
    let ferry = Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    let reference = format!("{}/team/app:v1", ferry.host());
    skopeo.copy(
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{reference}"),
        &[],
    );

    let pull = containerd.ctr(&["images", "pull", "--plain-http", &reference]);
    assert!(
        pull.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let check = containerd.ctr(&["images", "check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "ctr images check: {text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("complete (4/4)"), "{line}");
    // The content containerd stored is byte-identical.
    for b in img.blobs() {
        let got = containerd.ctr(&["content", "get", b.digest.as_str()]);
        assert_eq!(Digest::sha256(&got.stdout), b.digest);
    }
}
