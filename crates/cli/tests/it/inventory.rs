//! Inventory, pruning and the cache budget.

use std::time::Duration;

use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo, wait_until};

use crate::{client, ferry_bin};

async fn push(base: &str, repo: &str, tag: &str, img: &Image) {
    let c = client();
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
        assert_eq!(r.status(), 201);
    }
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(img.manifest.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// `ferry fsck` finds nothing wrong in `data`.
fn assert_fsck_clean(data: &std::path::Path) {
    let out = std::process::Command::new(ferry_bin())
        .args(["fsck", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Pulls `img` as `repo:v1` through the mirror at `base`, checking every digest.
async fn pull_verified(c: &reqwest::Client, base: &str, repo: String, img: &Image) {
    let m = c
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200, "{repo}");
    for b in img.blobs() {
        let r = c
            .get(format!("{base}/v2/{repo}/blobs/{}", b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(
            Digest::sha256(&r.bytes().await.unwrap()),
            b.digest,
            "{repo}"
        );
    }
}

fn ferry_json(args: &[&str], data: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(ferry_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_pulls_and_prune_removes_what_it_selects() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &[]);
    let (keep, old, other) = (
        image(61, 2, 50_000, "amd64"),
        image(62, 2, 50_000, "amd64"),
        image(63, 1, 50_000, "amd64"),
    );
    push(&ferry.url(), "team/keep", "v1", &keep).await;
    push(&ferry.url(), "team/old", "v1", &old).await;
    push(&ferry.url(), "team/old", "v2", &other).await;
    for _ in 0..3 {
        let r = client()
            .get(format!("{}/v2/team/keep/manifests/v1", ferry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Pull statistics reach disk at shutdown (and every minute while running).
    let mut p = ferry.process;
    assert!(p.terminate(Duration::from_secs(30)).unwrap().success());

    let list = ferry_json(&["list"], &data);
    let find = |name: &str, tag: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["repository"] == name && i["tag"] == tag)
            .cloned()
            .unwrap()
    };
    let k = find("team/keep", "v1");
    assert_eq!(k["pull_count"], 3);
    assert!(k["last_pulled"].is_u64());
    let want_size: usize =
        keep.manifest.bytes.len() + keep.blobs().map(|b| b.bytes.len()).sum::<usize>();
    assert_eq!(k["size"], want_size);
    assert_eq!(find("team/old", "v2")["pull_count"], 0);

    let dry = ferry_json(&["prune", "--pattern", "^team/old:", "--dry-run"], &data);
    assert_eq!(
        dry["images"],
        serde_json::json!(["team/old:v1", "team/old:v2"])
    );
    let before = ferry_json(&["list"], &data);
    assert_eq!(
        before.as_array().unwrap().len(),
        3,
        "a dry run changed something"
    );

    let done = ferry_json(&["prune", "--pattern", "^team/old:"], &data);
    let removed = done["blobs_removed"].as_u64().unwrap();
    assert_eq!(
        removed as usize,
        old.blobs().count() + other.blobs().count() + 2,
        "{done}"
    );
    let after = ferry_json(&["list"], &data);
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_fsck_clean(&data);
    // What was kept is intact.
    let ferry = Ferry::start(ferry_bin(), &data, &[]);
    for b in keep.blobs() {
        let r = client()
            .get(format!("{}/v2/team/keep/blobs/{}", ferry.url(), b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), b.digest);
    }
    // Asking for nothing is an error, not "prune everything".
    let out = std::process::Command::new(ferry_bin())
        .args(["prune", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("say what to prune"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_budget_evicts_least_recently_pulled_unpinned_images_only() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<Image> = (0..3).map(|i| image(70 + i, 2, 300_000, "amd64")).collect();
    for (i, img) in imgs.iter().enumerate() {
        skopeo.push_image(img, tmp.path(), &format!("{}/c/img{i}:v1", upstream.host()));
    }
    let prefix = upstream.host().replace(':', "__");
    // Four images of ~600 KB each (three cached, one pushed): a budget of 1900 KiB needs exactly one
    // of them to go, and only the unpinned, least recently pulled cached one may.
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "local_namespaces = [\"mine\"]\n[cache]\nmax_size = \"1900KiB\"\npinned = [\"{prefix}/c/img0:*\"]\nmaintenance_interval_secs = 1\n[[upstream]]\nurl = \"http://{}\"\n",
            upstream.host()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    let local = image(79, 2, 300_000, "amd64");
    push(&ferry.url(), "mine/app", "v1", &local).await;
    let c = client();
    let base = ferry.url();
    let pull = |i: usize| pull_verified(&c, &base, format!("c/img{i}"), &imgs[i]);
    // img0 (pinned) and img1 are pulled before img2; img1 is the least recently pulled unpinned.
    pull(0).await;
    pull(1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // last-pull times have one-second resolution
    pull(2).await;
    let cached = |name: &str| {
        data.join("repos")
            .join(&prefix)
            .join(name)
            .join("_manifests")
            .exists()
            && std::fs::read_dir(
                data.join("repos")
                    .join(&prefix)
                    .join(name)
                    .join("_manifests/sha256"),
            )
            .is_ok_and(|mut d| d.next().is_some())
    };
    assert!(
        wait_until(Duration::from_secs(30), || !cached("c/img1")),
        "img1 was not evicted"
    );
    assert!(cached("c/img0"), "the pinned image was evicted");
    assert!(
        cached("c/img2"),
        "the most recently pulled image was evicted"
    );
    for b in local.blobs() {
        let r = c
            .get(format!("{}/v2/mine/app/blobs/{}", ferry.url(), b.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a pushed image lost a blob to eviction");
    }
    // Evicted content comes back on the next pull.
    pull(1).await;
    assert_fsck_clean(&data);
}

/// `[[cache.prune]]` rules run in the background: cached images they select go, pinned, unselected
/// and pushed images stay, and a rule without an age is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_prune_rules_remove_what_they_select_in_the_background() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<Image> = (0..3).map(|i| image(90 + i, 1, 50_000, "amd64")).collect();
    for (i, img) in imgs.iter().enumerate() {
        skopeo.push_image(img, tmp.path(), &format!("{}/r/img{i}:v1", upstream.host()));
    }
    let prefix = upstream.host().replace(':', "__");
    let write = |body: &str| {
        let config = tmp.path().join("ferry.toml");
        std::fs::write(
            &config,
            format!(
                "local_namespaces = [\"mine\"]\n{body}\n[[upstream]]\nurl = \"http://{}\"\n",
                upstream.host()
            ),
        )
        .unwrap();
        config
    };
    let bad = write("[[cache.prune]]\npattern = \"img\"\n");
    let out = std::process::Command::new(ferry_bin())
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs accessed_before or created_before"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // img0 is pinned, img2 does not match the rule's pattern: only img1 may go.
    let config = write(&format!(
        "[cache]\npinned = [\"{prefix}/r/img0:*\"]\nmaintenance_interval_secs = 1\n[[cache.prune]]\naccessed_before = \"1s\"\npattern = \"/r/img[01]:\"\n"
    ));
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    let local = image(99, 1, 50_000, "amd64");
    push(&ferry.url(), "mine/app", "v1", &local).await;
    let c = client();
    for (i, img) in imgs.iter().enumerate() {
        pull_verified(&c, &ferry.url(), format!("r/img{i}"), img).await;
    }
    let cached = |name: &str| {
        std::fs::read_dir(data.join("repos").join(name).join("_manifests/sha256"))
            .is_ok_and(|mut d| d.next().is_some())
    };
    assert!(
        wait_until(Duration::from_secs(30), || !cached(&format!(
            "{prefix}/r/img1"
        ))),
        "img1 was not pruned"
    );
    assert!(
        cached(&format!("{prefix}/r/img0")),
        "a pinned image was pruned"
    );
    assert!(
        cached(&format!("{prefix}/r/img2")),
        "an unselected image was pruned"
    );
    assert!(cached("mine/app"), "a pushed image was pruned");
    // Its blobs follow (img1's layer is in no other image); content used in the last two seconds
    // waits for a later round.
    let layer = &imgs[1].layers[0].digest;
    let file = data
        .join("blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex());
    assert!(
        wait_until(Duration::from_secs(30), || !file.exists()),
        "the pruned image's layer is still stored"
    );
    assert_fsck_clean(&data);
}

/// Eviction (a budget far below the working set, every second) and admin prunes run while eight
/// clients pull images over and over: every response a client gets is complete and correct — a
/// blob removed while it streams finishes streaming, one removed before it is opened is fetched
/// again — and the pinned image never loses a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_prune_under_concurrent_pulls_never_break_a_pull_or_a_pinned_image() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start_logged() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Arc<Vec<Image>> = Arc::new(
        (0..4)
            .map(|i| image(110 + i, 2, 200_000, "amd64"))
            .collect(),
    );
    for (i, img) in imgs.iter().enumerate() {
        skopeo.push_image(img, tmp.path(), &format!("{}/e/img{i}:v1", upstream.host()));
    }
    let prefix = upstream.host().replace(':', "__");
    let token = "an-admin-token-for-the-prune-storm";
    let token_file = tmp.path().join("token");
    ferry_testkit::write_secret(&token_file, token);
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "admin_token_file = \"{}\"\n[cache]\nmax_size = \"500KiB\"\npinned = [\"{prefix}/e/img0:*\"]\nmaintenance_interval_secs = 1\n[[upstream]]\nurl = \"http://{}\"\n",
            token_file.display(),
            upstream.host()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut pullers = Vec::new();
    for p in 0..8usize {
        let (imgs, stop, base) = (imgs.clone(), stop.clone(), ferry.url());
        pullers.push(tokio::spawn(async move {
            let c = client();
            let mut pulls = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let i = (p + pulls) % imgs.len();
                let m = c
                    .get(format!("{base}/v2/e/img{i}/manifests/v1"))
                    .header("accept", MediaType::ACCEPT_ALL)
                    .send()
                    .await
                    .unwrap();
                let status = m.status();
                let body = m.bytes().await.unwrap();
                assert_eq!(
                    status,
                    200,
                    "manifest of img{i}: {}",
                    String::from_utf8_lossy(&body)
                );
                assert_eq!(body, imgs[i].manifest.bytes);
                for b in imgs[i].blobs() {
                    let r = c
                        .get(format!("{base}/v2/e/img{i}/blobs/{}", b.digest))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let bytes = r.bytes().await.expect("a complete transfer");
                    assert_eq!(
                        status,
                        200,
                        "blob of img{i}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                    assert_eq!(Digest::sha256(&bytes), b.digest, "blob of img{i}");
                }
                pulls += 1;
            }
            pulls
        }));
    }
    let pruner = {
        let (stop, base) = (stop.clone(), ferry.url());
        tokio::spawn(async move {
            let c = client();
            let mut rounds = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(format!("{base}/admin/prune?accessed-before=0s"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.unwrap();
                assert!(
                    !v["images"].to_string().contains("/e/img0:"),
                    "a pinned image was pruned: {v}"
                );
                rounds += 1;
            }
            rounds
        })
    };
    // Run until the cache has been emptied and refilled many times over: the upstream has served
    // each blob of the unpinned images several times.
    let blob_gets = || upstream.count_requests("GET", "/v2/e/");
    let enough = 3 * imgs.iter().map(|i| i.blobs().count()).sum::<usize>();
    let churned = wait_until(Duration::from_secs(90), || blob_gets() >= enough);
    stop.store(true, Ordering::Relaxed);
    let pulls: usize = futures_util::future::join_all(pullers)
        .await
        .into_iter()
        .map(|r| r.expect("a puller failed"))
        .sum();
    let prunes = pruner.await.expect("the pruner failed");
    assert!(
        churned,
        "the cache did not churn: {} upstream GETs",
        blob_gets()
    );
    assert!(pulls > 0 && prunes > 0);
    // The pinned image was pulled first by puller 0 and is whole on disk.
    for b in imgs[0].blobs() {
        let file = data
            .join("blobs/sha256")
            .join(&b.digest.hex()[..2])
            .join(b.digest.hex());
        assert!(file.exists(), "the pinned image lost {}", b.digest);
    }
    assert_fsck_clean(&data);
}
