//! The pull-through mirror with real parts: Distribution as the upstream, containerd and skopeo as
//! clients.

use std::time::Duration;

use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{Containerd, DockerRegistry, Ferry, Skopeo};

use crate::{client, ferry_bin};

/// An upstream Distribution holding `img` as `repo:v1`, seeded with skopeo.
fn seeded_upstream(
    skopeo: &Skopeo,
    tmp: &std::path::Path,
    img: &Image,
    repo: &str,
    logged: bool,
) -> Option<DockerRegistry> {
    let upstream = if logged {
        DockerRegistry::start_logged()?
    } else {
        DockerRegistry::start()?
    };
    skopeo.push_image(img, tmp, &format!("{}/{repo}:v1", upstream.host()));
    Some(upstream)
}

fn write_config(tmp: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = tmp.join("ferry.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_ferry_then_from_cache_when_the_upstream_is_gone() {
    let (Some(skopeo), Some(containerd)) = (Skopeo::new(), Containerd::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(31, 3, 200_000, "amd64");
    let Some(mut upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "team/app", false) else {
        return;
    };
    // tag_ttl 0: every pull revalidates, so the second pull meets the dead upstream and must be
    // served stale from the cache.
    let config = write_config(
        tmp.path(),
        &format!(
            "[[upstream]]\nurl = \"http://{}\"\ntag_ttl_secs = 0\n",
            upstream.host()
        ),
    );
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );

    // containerd's mirror configuration, written by ferry itself: requests for the upstream go to
    // ferry with ?ns=<upstream>.
    let out = std::process::Command::new(ferry_bin())
        .args([
            "containerd-config",
            "--mirror",
            &ferry.url(),
            "--registries",
            &upstream.host(),
            "--config",
            config.to_str().unwrap(),
            "--dir",
        ])
        .arg(containerd.hosts_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The generated fallback is the upstream itself, over the plain HTTP it is configured with;
    // point it at a closed port so the pull after the upstream dies can only come from ferry.
    let hosts_file = containerd
        .hosts_dir()
        .join(upstream.host())
        .join("hosts.toml");
    let generated = std::fs::read_to_string(&hosts_file).unwrap();
    let fallback = format!("server = \"http://{}\"", upstream.host());
    assert!(generated.contains(&fallback), "{generated}");
    std::fs::write(
        &hosts_file,
        generated.replace(&fallback, "server = \"http://127.0.0.1:9\""),
    )
    .unwrap();
    let reference = format!("{}/team/app:v1", upstream.host());
    let pull = |ns: &str| containerd.pull(ns, &reference);
    let out = pull("first");
    assert!(
        out.status.success(),
        "pull through ferry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = containerd.ctr(&["-n", "first", "images", "check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("complete (4/4)"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    upstream.process.kill9();
    let out = pull("second");
    assert!(
        out.status.success(),
        "pull from cache with the upstream down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for b in img.blobs() {
        let got = containerd.ctr(&["-n", "second", "content", "get", b.digest.as_str()]);
        assert_eq!(Digest::sha256(&got.stdout), b.digest);
    }
    // What ferry cached shows in its catalog under the upstream's name.
    let cached = format!("{}/team/app", upstream.host().replace(':', "__"));
    assert_eq!(crate::catalog(&ferry.url()).await, [cached]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routing_form_reaches_the_upstream() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(32, 2, 50_000, "amd64");
    let Some(upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "lib/app", false) else {
        return;
    };
    let config = write_config(
        tmp.path(),
        &format!(
            "default_upstream = \"upstream.test\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"http://{}\"\n",
            upstream.host()
        ),
    );
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let c = client();
    let base = ferry.url();
    let get_manifest = |url: String, header: Option<(&'static str, &'static str)>| {
        let mut r = c.get(url).header("accept", MediaType::ACCEPT_ALL);
        if let Some((k, v)) = header {
            r = r.header(k, v);
        }
        r.send()
    };
    let forms = [
        (
            format!("{base}/v2/lib/app/manifests/v1"),
            Some(("x-registry", "upstream.test")),
        ),
        (
            format!("{base}/v2/lib/app/manifests/v1?ns=upstream.test"),
            None,
        ),
        (
            format!("{base}/v2/upstream.test/lib/app/manifests/v1"),
            None,
        ),
        (format!("{base}/v2/lib/app/manifests/v1"), None),
    ];
    for (url, header) in forms {
        let r = get_manifest(url.clone(), header).await.unwrap();
        assert_eq!(r.status(), 200, "{url} {header:?}");
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &img.manifest.bytes[..],
            "{url}"
        );
    }
    // skopeo through the in-path and default forms, checking every blob.
    for path in ["upstream.test/lib/app:v1", "lib/app:v1"] {
        let out = tmp
            .path()
            .join(format!("out-{}", path.replace(['/', ':', '.'], "-")));
        skopeo.copy(
            &format!("docker://{}/{path}", ferry.host()),
            &format!("oci:{}:v1", out.display()),
            &[],
        );
        for b in img.blobs() {
            let got = std::fs::read(out.join("blobs/sha256").join(b.digest.hex())).unwrap();
            assert_eq!(Digest::sha256(&got), b.digest);
        }
    }
    // Names that route nowhere are clear errors; the mirrored namespace is read-only.
    let r = get_manifest(
        format!("{base}/v2/lib/app/manifests/v1?ns=nowhere.test"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("not a configured upstream")
    );
    let r = c
        .post(format!("{base}/v2/upstream.test/lib/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = get_manifest(format!("{base}/v2/lib/app/manifests/nope"), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("MANIFEST_UNKNOWN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_herd_of_100_clients_fetches_each_blob_upstream_once() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(33, 5, 2 * 1024 * 1024, "amd64");
    let Some(upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "herd/app", true) else {
        return;
    };
    let before = upstream.count_requests("GET", "/v2/herd/app/blobs/");
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--upstream", &format!("http://{}", upstream.host())],
    );
    let base = ferry.url();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (base, img) = (base.clone(), img.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            let m = c
                .get(format!("{base}/v2/herd/app/manifests/v1"))
                .header("accept", MediaType::ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(m.status(), 200);
            assert_eq!(m.bytes().await.unwrap().as_ref(), &img.manifest.bytes[..]);
            for b in img.blobs() {
                let r = c
                    .get(format!("{base}/v2/herd/app/blobs/{}", b.digest))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), b.digest);
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("client timed out")
            .unwrap();
    }
    for b in img.blobs() {
        let n = upstream.count_requests("GET", &format!("/v2/herd/app/blobs/{}", b.digest));
        assert_eq!(n, 1, "blob {} fetched upstream {n} times", b.digest);
    }
    let total = upstream.count_requests("GET", "/v2/herd/app/blobs/") - before;
    assert_eq!(total, img.blobs().count());
    assert!(upstream.count_requests("GET", "/v2/herd/app/manifests/") <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_serves_the_cache_and_refuses_misses_at_once() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(34, 1, 10_000, "amd64");
    let Some(upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "off/app", false) else {
        return;
    };
    let data = tmp.path().join("data");
    let up = format!("http://{}", upstream.host());
    let ferry = Ferry::start(ferry_bin(), &data, &["--upstream", &up]);
    let c = client();
    let url = format!("{}/v2/off/app/manifests/v1", ferry.url());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    drop(ferry);
    let ferry = Ferry::start(ferry_bin(), &data, &["--upstream", &up, "--offline"]);
    let r = c
        .get(format!("{}/v2/off/app/manifests/v1", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/v2/off/app/manifests/other", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("offline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_named_in_the_answer_and_warned_about_once() {
    // A port just released: nothing listens there, so connecting is refused.
    let dead = ferry_testkit::peers::free_port();
    let tmp = tempfile::tempdir().unwrap();
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--upstream", &format!("http://127.0.0.1:{dead}")],
    );
    let c = client();
    for path in [
        "dead/app/manifests/v1".to_owned(),
        format!("dead/app/blobs/sha256:{}", "ab".repeat(32)),
    ] {
        let r = c
            .get(format!("{}/v2/{path}", ferry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
        assert!(
            message.to_lowercase().contains("connection refused"),
            "the cause is missing from {message:?}"
        );
    }
    // The default log level (info) shows the failure, once for both requests.
    let log = ferry.process.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upstream request failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{dead}"))
            && warnings[0].to_lowercase().contains("connection refused"),
        "{}",
        warnings[0]
    );
}

/// The value of the first series whose line starts with `prefix` (name plus labels).
fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_cached_and_upstream_pulls() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(35, 2, 100_000, "amd64");
    let Some(upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "m/app", false) else {
        return;
    };
    let metrics_port = ferry_testkit::peers::free_port();
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &[
            "--upstream",
            &format!("http://{}", upstream.host()),
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let c = client();
    for _ in 0..2 {
        for b in img.blobs() {
            let r = c
                .get(format!("{}/v2/m/app/blobs/{}", ferry.url(), b.digest))
                .send()
                .await
                .unwrap();
            assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), b.digest);
        }
    }
    let r = c
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    let ns = upstream.host();
    let upstream_pulls = series(
        &text,
        &format!("ferry_pulls_total{{namespace=\"{ns}\",kind=\"blob\",source=\"upstream\"}}"),
    );
    let cached_pulls = series(
        &text,
        &format!("ferry_pulls_total{{namespace=\"{ns}\",kind=\"blob\",source=\"cached\"}}"),
    );
    assert_eq!(upstream_pulls, Some(3.0), "{text}");
    assert_eq!(cached_pulls, Some(3.0), "{text}");
    let fetched = series(
        &text,
        &format!("ferry_upstream_fetched_bytes_total{{upstream=\"{ns}\"}}"),
    )
    .unwrap();
    let sizes: usize = img.blobs().map(|b| b.bytes.len()).sum();
    assert_eq!(fetched as usize, sizes);
    assert_eq!(
        series(
            &text,
            "ferry_http_requests_total{endpoint=\"blob\",method=\"GET\",status=\"200\"}"
        ),
        Some(6.0)
    );
    assert!(series(&text, "ferry_cache_blobs").unwrap() >= 3.0);
    assert!(text.contains("ferry_http_request_duration_seconds_bucket"));
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_warms_the_cache_for_chosen_platforms() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(mut upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = (image(91, 2, 50_000, "amd64"), image(92, 2, 50_000, "arm64"));
    skopeo.push_index(
        &[(&amd, "amd64"), (&arm, "arm64")],
        tmp.path(),
        &format!("{}/p/multi:v1", upstream.host()),
    );
    let single = image(93, 1, 50_000, "amd64");
    skopeo.push_image(
        &single,
        tmp.path(),
        &format!("{}/p/single:v1", upstream.host()),
    );

    let up = format!("http://{}", upstream.host());
    let list = tmp.path().join("images.txt");
    std::fs::write(
        &list,
        format!("# warm these\n{}/p/multi:v1\n", upstream.host()),
    )
    .unwrap();
    let serve_list = tmp.path().join("serve-images.txt");
    std::fs::write(&serve_list, format!("{}/p/single:v1\n", upstream.host())).unwrap();
    let metrics_port = ferry_testkit::peers::free_port();
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &[
            "--upstream",
            &up,
            "--preload",
            serve_list.to_str().unwrap(),
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let out = std::process::Command::new(ferry_bin())
        .args([
            "preload",
            "--mirror",
            &ferry.url(),
            "--platform",
            "linux/arm64",
        ])
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 manifests, 3 blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // serve --preload finishes on its own: wait for its blob pulls to show in the metrics.
    let ns = upstream.host();
    let want =
        format!("ferry_pulls_total{{namespace=\"{ns}\",kind=\"blob\",source=\"upstream\"}} ");
    let scrape = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        std::io::Write::write_all(
            &mut s,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut t = String::new();
        std::io::Read::read_to_string(&mut s, &mut t).unwrap();
        t
    };
    assert!(
        ferry_testkit::peers::wait_until(Duration::from_secs(30), || scrape()
            .lines()
            .any(|l| l.starts_with(&want) && l.ends_with(" 5"))),
        "serve --preload did not fetch the single image's blobs:\n{}",
        scrape()
    );

    upstream.process.kill9();
    let c = client();
    let base = ferry.url();
    let get = |path: String| {
        let (c, base) = (&c, &base);
        async move {
            c.get(format!("{base}{path}"))
                .header("accept", MediaType::ACCEPT_ALL)
                .send()
                .await
                .unwrap()
        }
    };
    for b in arm.blobs().chain(single.blobs()) {
        let repo = if single.blobs().any(|s| s.digest == b.digest) {
            "p/single"
        } else {
            "p/multi"
        };
        let r = get(format!("/v2/{repo}/blobs/{}", b.digest)).await;
        assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), b.digest);
    }
    assert_eq!(
        get(format!("/v2/p/multi/manifests/{}", arm.manifest.digest))
            .await
            .status(),
        200
    );
    // The platform that was not asked for was not fetched.
    let r = get(format!("/v2/p/multi/blobs/{}", amd.layers[0].digest)).await;
    assert_ne!(r.status(), 200);
}

/// A mirrored repository's tag list is the upstream's, page for page, even for tags never pulled;
/// with the upstream gone it falls back to the tags cached so far, marked stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_lists_come_from_the_upstream_then_from_the_cache() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(35, 1, 10_000, "amd64");
    let Some(mut upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "t/app", false) else {
        return;
    };
    for tag in ["v2", "v3"] {
        skopeo.copy(
            &format!("docker://{}/t/app:v1", upstream.host()),
            &format!("docker://{}/t/app:{tag}", upstream.host()),
            &[],
        );
    }
    let data = tmp.path().join("data");
    let ferry = Ferry::start(
        ferry_bin(),
        &data,
        &["--upstream", &format!("http://{}", upstream.host())],
    );
    let c = client();
    let list = |query: &'static str| {
        let c = c.clone();
        let url = format!("{}/v2/t/app/tags/list{query}", ferry.url());
        async move { c.get(url).send().await.unwrap() }
    };
    let tags = |r: reqwest::Response| async move {
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["name"], "t/app");
        v["tags"].clone()
    };
    let r = list("").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("warning").is_none());
    assert_eq!(tags(r).await, serde_json::json!(["v1", "v2", "v3"]));
    let r = list("?n=2").await;
    let link = r
        .headers()
        .get("link")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(link, "</v2/t/app/tags/list?n=2&last=v2>; rel=\"next\"");
    assert_eq!(tags(r).await, serde_json::json!(["v1", "v2"]));
    let r = list("?n=2&last=v2").await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(tags(r).await, serde_json::json!(["v3"]));
    let r = c
        .get(format!("{}/v2/t/nothing/tags/list", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(body.contains("NAME_UNKNOWN"), "{body}");

    // Pull v2 through, then lose the upstream: the cached tags are listed, marked stale.
    let r = c
        .get(format!("{}/v2/t/app/manifests/v2", ferry.url()))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    upstream.process.terminate(Duration::from_secs(5));
    let r = list("").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("warning").is_some());
    assert_eq!(tags(r).await, serde_json::json!(["v2"]));
}

/// With `prefetch_blobs_on_manifest`, fetching a manifest starts fetching its blobs: they reach the
/// cache without any client asking, each fetched upstream once, and later pulls are cache hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_fetches_an_images_blobs_once_with_its_manifest() {
    let Some(skopeo) = Skopeo::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(36, 12, 100_000, "amd64");
    let Some(upstream) = seeded_upstream(&skopeo, tmp.path(), &img, "pf/app", true) else {
        return;
    };
    let config = write_config(
        tmp.path(),
        &format!(
            "[[upstream]]\nurl = \"http://{}\"\nprefetch_blobs_on_manifest = true\n",
            upstream.host()
        ),
    );
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    let c = client();
    let blob_gets = || upstream.count_requests("GET", "/v2/pf/app/blobs/");
    let before = blob_gets();
    let r = c
        .get(format!("{}/v2/pf/app/manifests/v1", ferry.url()))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let blobs: Vec<_> = img.blobs().collect();
    let stored = |d: &Digest| {
        data.join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .exists()
    };
    assert!(
        ferry_testkit::peers::wait_until(Duration::from_secs(30), || blobs
            .iter()
            .all(|b| stored(&b.digest))),
        "the blobs were not prefetched"
    );
    assert_eq!(
        blob_gets() - before,
        blobs.len(),
        "one upstream GET per blob"
    );
    for b in &blobs {
        let r = c
            .get(format!("{}/v2/pf/app/blobs/{}", ferry.url(), b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), b.digest);
    }
    assert_eq!(
        blob_gets() - before,
        blobs.len(),
        "pulls after the prefetch are cache hits"
    );
}
