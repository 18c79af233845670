//! Attacks on a running `ferry serve` (issue #10's findings, each reproduced here): what a hostile
//! client can do to what other clients pull, and to the server's memory and connections.

use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo};

use crate::{client, ferry_bin};

/// Pushes `img` as `repo:tag` (monolithic blob uploads, then the manifest); the statuses of every
/// request, in order.
async fn push_statuses(base: &str, repo: &str, tag: &str, img: &Image) -> Vec<u16> {
    let c = client();
    let mut statuses = Vec::new();
    for b in img.blobs() {
        let r = c
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                b.digest
            ))
            .body(b.bytes.clone())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(img.manifest.bytes.clone())
        .send()
        .await
        .unwrap();
    statuses.push(r.status().as_u16());
    statuses
}

/// The digest a GET of `repo:tag` answers with.
async fn manifest_digest(base: &str, repo: &str, tag: &str) -> (u16, Option<Digest>) {
    let r = client()
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, (status == 200).then(|| Digest::sha256(&body)))
}

/// Finding 1 (HIGH): with a default upstream, a push without `ns` to a name the upstream serves
/// replaced the image for every client (Docker's `registry-mirrors` sends no `ns`). Now every name
/// routed to an upstream is read-only, a repository pushed before the upgrade no longer shadows the
/// upstream's, and only configured local namespaces take pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cannot_replace_what_the_default_upstream_serves() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let good = image(1001, 1, 20_000, "amd64");
    let evil = image(1002, 1, 20_000, "amd64");
    skopeo.push_image(
        &good,
        tmp.path(),
        &format!("{}/good/img:v1", upstream.host()),
    );
    let data = tmp.path().join("data");

    // A repository of the same name pushed while ferry was a plain registry.
    {
        let plain = Ferry::start(ferry_bin(), &data, &[]);
        let pushed = push_statuses(&plain.url(), "good/img", "v1", &evil).await;
        assert!(pushed.iter().all(|s| *s == 201), "{pushed:?}");
    }

    let up = format!("http://{}", upstream.host());
    let ferry = Ferry::start(
        ferry_bin(),
        &data,
        &["--upstream", &up, "--local-namespace", "mine"],
    );
    let base = ferry.url();
    assert_eq!(
        manifest_digest(&base, "good/img", "v1").await,
        (200, Some(good.manifest.digest.clone())),
        "the earlier push shadows the upstream's image"
    );
    assert!(
        ferry
            .process
            .log()
            .contains("pushed repositories are not served"),
        "no warning about the shadowed repository: {}",
        ferry.process.log()
    );

    // The attack: push over the upstream's name, and over a name the upstream does not have.
    for repo in ["good/img", "other/new"] {
        let statuses = push_statuses(&base, repo, "v1", &evil).await;
        assert!(
            statuses.iter().all(|s| *s == 405),
            "{repo}: pushes were accepted: {statuses:?}"
        );
    }
    let r = client()
        .post(format!("{base}/v2/good/img/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("local_namespaces"));
    assert_eq!(
        manifest_digest(&base, "good/img", "v1").await,
        (200, Some(good.manifest.digest.clone())),
        "a push replaced the upstream's image"
    );

    // A local namespace is a registry of its own: pushes land, pulls never go upstream.
    let statuses = push_statuses(&base, "mine/app", "v1", &evil).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(
        manifest_digest(&base, "mine/app", "v1").await,
        (200, Some(evil.manifest.digest.clone()))
    );
    assert_eq!(manifest_digest(&base, "mine/nothing", "v1").await.0, 404);
}

/// A local namespace may not overlap an upstream's cache namespace.
#[test]
fn a_local_namespace_inside_a_cache_namespace_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferry_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
            "--local-namespace",
            "127.0.0.1__9/team",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the cache namespace"), "{err}");
}

/// Finding 2: every unknown request method became a metrics series of its own (20,000 unique 4 KB
/// methods: RSS 7.8 → 90.5 MB, an 81 MB `/metrics`). Methods outside the registry's set now count
/// as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_do_not_grow_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = ferry_testkit::peers::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--metrics", &metrics_addr],
    );
    let c = client();
    let scrape = || async {
        c.get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let (rss_before, _) = ferry_testkit::peers::rss(ferry.process.pid()).unwrap();
    const N: usize = 3_000;
    for i in 0..N {
        let method =
            reqwest::Method::from_bytes(format!("X{i:05}{}", "M".repeat(4_000)).as_bytes())
                .unwrap();
        let r = c
            .request(method, format!("{}/v2/a/manifests/v1", ferry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let after = scrape().await;
    let (rss_after, _) = ferry_testkit::peers::rss(ferry.process.pid()).unwrap();
    assert!(
        after.len() < before.len() + 4_096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(&format!(
            "ferry_http_requests_total{{endpoint=\"manifest\",method=\"other\",status=\"405\"}} {N}"
        )),
        "{after}"
    );
    // Each unique series held ~4 KB: the bug cost ≥ 12 MB here.
    assert!(
        rss_after < rss_before + 8 * 1024 * 1024,
        "RSS grew from {rss_before} to {rss_after} bytes"
    );
}
