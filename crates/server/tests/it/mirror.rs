//! The pull-through mirror at the `ferry-server` boundary: an upstream ferry and a ferry mirror in
//! this process (`ferry_testkit::inproc::Mirrored`), a fault proxy between them that counts and
//! breaks upstream requests. The end-to-end versions with real peers are in `crates/cli/tests/it`.

use std::future::Future;
use std::time::Duration;

use ferry_oci::{Digest, MediaType};
use ferry_server::mirror::budget::{CacheBudget, ExpiryRule};
use ferry_testkit::faults::{Fault, Target};
use ferry_testkit::image::{Image, image};
use ferry_testkit::inproc::{MirrorServer, MirrorSetup, Mirrored, UPSTREAM};

/// What a client got.
enum Outcome {
    Complete(Vec<u8>),
    Refused(u16, String),
    Broken,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Complete(b) => write!(f, "Complete({} bytes, {})", b.len(), Digest::sha256(b)),
            Outcome::Refused(status, body) => write!(f, "Refused({status}, {body})"),
            Outcome::Broken => f.write_str("Broken"),
        }
    }
}

async fn get(c: &reqwest::Client, url: &str) -> Outcome {
    let Ok(r) = c
        .get(url)
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
    else {
        return Outcome::Broken;
    };
    let status = r.status().as_u16();
    match (status, r.bytes().await) {
        (200, Ok(b)) => Outcome::Complete(b.to_vec()),
        (_, Err(_)) => Outcome::Broken,
        (s, Ok(b)) => Outcome::Refused(s, String::from_utf8_lossy(&b).into_owned()),
    }
}

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`; whether it came to hold.
async fn wait_for<F: Future<Output = bool>>(limit: Duration, mut cond: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Pull times are kept in whole seconds: waits until the clock has moved into the next one.
async fn next_second() {
    let s = now_secs();
    assert!(wait_for(Duration::from_secs(3), || async { now_secs() > s }).await);
}

/// The value of the series whose line starts with `prefix` in the mirror's metrics.
fn series(m: &MirrorServer, prefix: &str) -> f64 {
    m.app
        .metrics
        .render(&m.app.store)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Pulls `repo:v1` (manifest and every blob) through the mirror, checking every digest.
async fn pull_verified(m: &MirrorServer, repo: &str, img: &Image) {
    match get(&m.client, &m.url(&format!("/v2/{repo}/manifests/v1"))).await {
        Outcome::Complete(b) => assert_eq!(b, img.manifest.bytes, "{repo}"),
        other => panic!("{repo}: manifest {other:?}"),
    }
    for b in img.blobs() {
        match get(&m.client, &m.url(&format!("/v2/{repo}/blobs/{}", b.digest))).await {
            Outcome::Complete(got) => assert_eq!(Digest::sha256(&got), b.digest, "{repo}"),
            other => panic!("{repo}: blob {} {other:?}", b.digest),
        }
    }
}

/// Whether the mirror's store holds a manifest of `repo` (as cached, under the upstream's prefix
/// unless local).
async fn holds(m: &MirrorServer, repo: &str) -> bool {
    m.app
        .store
        .images()
        .await
        .unwrap()
        .iter()
        .any(|i| i.repository == repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_a_cold_blob_fetch_it_upstream_once() {
    let m = Mirrored::start().await;
    let img = image(201, 1, 1024 * 1024, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let layer = img.layers[0].clone();
    let path = format!("/v2/lib/app/blobs/{}", layer.digest);
    // The first upstream fetch waits until every client has either joined it or gone upstream
    // itself, so they all ask while the blob is cold.
    m.proxy.inject(Target::Blob, Fault::Held, 1);
    const N: usize = 20;
    let clients: Vec<_> = (0..N)
        .map(|_| {
            let (c, url) = (m.mirror.client.clone(), m.mirror.url(&path));
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    let joined = "ferry_coalesced_requests_total{endpoint=\"blob\"}";
    assert!(
        wait_for(Duration::from_secs(10), || async {
            series(&m.mirror, joined) as usize + m.proxy.requests("GET", &path) >= N
        })
        .await,
        "not every client asked"
    );
    m.proxy.release();
    for c in clients {
        match tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .unwrap()
            .unwrap()
        {
            Outcome::Complete(b) => assert_eq!(b, layer.bytes),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        m.proxy.requests("GET", &path),
        1,
        "one upstream fetch for {N} clients"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_cut_off_mid_blob_resumes_from_where_it_stopped() {
    let m = Mirrored::start().await;
    let img = image(202, 1, 1024 * 1024, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let layer = &img.layers[0];
    let path = format!("/v2/lib/app/blobs/{}", layer.digest);
    m.proxy.inject(Target::Blob, Fault::ResetMidBody, 1);
    match get(&m.mirror.client, &m.mirror.url(&path)).await {
        Outcome::Complete(b) => assert_eq!(b, layer.bytes),
        other => panic!("{other:?}"),
    }
    let ranges = m.proxy.ranges("GET", &path);
    assert_eq!(ranges.len(), 1, "one resumed request: {ranges:?}");
    let from: u64 = ranges[0]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an open range from an offset: {ranges:?}"));
    assert!(
        from > 0 && from < layer.bytes.len() as u64,
        "resumed from {from}"
    );
    assert_eq!(m.proxy.requests("GET", &path), 2);
    assert!(m.mirror.app.store.has_content_now(&layer.digest));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_from_upstream_never_reach_a_client_whole_nor_the_store() {
    let m = Mirrored::start().await;
    let img = image(203, 1, 1024 * 1024, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let layer = &img.layers[0];
    let path = format!("/v2/lib/app/blobs/{}", layer.digest);
    m.proxy.inject(Target::Blob, Fault::WrongBytes, 1);
    match get(&m.mirror.client, &m.mirror.url(&path)).await {
        Outcome::Broken | Outcome::Refused(502, _) => {}
        Outcome::Complete(b) => panic!(
            "a complete response ({} bytes, {}) for a blob that failed verification",
            b.len(),
            if b == layer.bytes { "right" } else { "wrong" }
        ),
        other => panic!("{other:?}"),
    }
    let store = &m.mirror.app.store;
    assert!(!store.has_content_now(&layer.digest));
    assert!(!store.blob_path(&layer.digest).exists());
    let tmp = m.mirror.dir.join("tmp");
    assert!(
        wait_for(Duration::from_secs(5), || async {
            std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none())
        })
        .await,
        "partial files left in {}",
        tmp.display()
    );
    // The fault is gone: the next pull fills the blob.
    match get(&m.mirror.client, &m.mirror.url(&path)).await {
        Outcome::Complete(b) => assert_eq!(b, layer.bytes),
        other => panic!("after the fault: {other:?}"),
    }
    assert!(store.has_content_now(&layer.digest));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_refused_by_min_free_space_is_a_counted_storage_full_answer() {
    // More free space than any disk has: the fill's pre-check refuses every blob.
    let m = Mirrored::start_with(MirrorSetup {
        options: ferry_server::MirrorOptions {
            min_free_bytes: u64::MAX / 2,
            ..ferry_server::MirrorOptions::default()
        },
        ..MirrorSetup::default()
    })
    .await;
    let img = image(206, 1, 10_000, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let layer = &img.layers[0];
    let url = m.mirror.url(&format!("/v2/lib/app/blobs/{}", layer.digest));
    for pulls in 1..=2 {
        match get(&m.mirror.client, &url).await {
            Outcome::Refused(507, body) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["errors"][0]["code"], "STORAGE_FULL", "{body}");
                let message = v["errors"][0]["message"].as_str().unwrap();
                assert!(message.contains("min_free_space"), "{message}");
            }
            other => panic!("pull {pulls}: {other:?}"),
        }
        assert_eq!(
            series(&m.mirror, "ferry_storage_full_total "),
            pulls as f64,
            "each refused pull is counted"
        );
    }
    assert!(!m.mirror.app.store.has_content_now(&layer.digest));
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_manifest_fetch_outlive_a_leader_that_disconnects() {
    let m = Mirrored::start().await;
    let img = image(204, 1, 10_000, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let path = "/v2/lib/app/manifests/v1";
    let upstream_asked = || m.proxy.requests("GET", path) + m.proxy.requests("HEAD", path);
    m.proxy.inject(Target::Manifest, Fault::Held, 1);
    let leader = {
        let (c, url) = (m.mirror.client.clone(), m.mirror.url(path));
        tokio::spawn(async move { get(&c, &url).await })
    };
    assert!(
        wait_for(Duration::from_secs(10), || async { upstream_asked() == 1 }).await,
        "the leader's fetch did not reach the upstream"
    );
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (m.mirror.client.clone(), m.mirror.url(path));
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    // The leader's client goes away (its connection closes) while the fetch is held upstream.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    m.proxy.release();
    for f in followers {
        match tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .unwrap()
            .unwrap()
        {
            Outcome::Complete(b) => assert_eq!(b, img.manifest.bytes),
            other => panic!("a follower got {other:?}"),
        }
    }
    assert_eq!(
        upstream_asked(),
        1,
        "the followers waited for the one fetch"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_route_by_ns_path_and_default_and_cache_namespaces_are_read_only() {
    let m = Mirrored::start_with(MirrorSetup {
        options: ferry_server::MirrorOptions {
            local_namespaces: vec!["mine".into()],
            min_free_bytes: 0,
            ..ferry_server::MirrorOptions::default()
        },
        ..MirrorSetup::default()
    })
    .await;
    let img = image(205, 1, 10_000, "amd64");
    m.seed("lib/app", "v1", &img).await;
    let c = &m.mirror.client;
    let forms = [
        ("/v2/lib/app/manifests/v1".to_owned(), Some(UPSTREAM)),
        (format!("/v2/lib/app/manifests/v1?ns={UPSTREAM}"), None),
        (format!("/v2/{UPSTREAM}/lib/app/manifests/v1"), None),
        ("/v2/lib/app/manifests/v1".to_owned(), None),
    ];
    for (path, registry) in &forms {
        let mut r = c
            .get(m.mirror.url(path))
            .header("accept", MediaType::ACCEPT_ALL);
        if let Some(name) = registry {
            r = r.header("x-registry", *name);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} {registry:?}");
        assert_eq!(r.bytes().await.unwrap(), img.manifest.bytes, "{path}");
    }
    // Cached under the upstream's prefix, whichever form asked.
    assert!(holds(&m.mirror, &format!("{UPSTREAM}/lib/app")).await);
    match get(c, &m.mirror.url("/v2/lib/app/manifests/v1?ns=nowhere.test")).await {
        Outcome::Refused(404, body) => {
            assert!(body.contains("not a configured upstream"), "{body}")
        }
        other => panic!("an unknown ns: {other:?}"),
    }
    // Names that route to the upstream are never writable; local namespaces are.
    for repo in [format!("{UPSTREAM}/lib/app"), "lib/app".to_owned()] {
        let r = c
            .post(m.mirror.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "a push to {repo}");
    }
    let r = c
        .post(m.mirror.url("/v2/mine/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a push to a local namespace");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_evicts_the_least_recently_pulled_unpinned_image_to_fit_the_budget() {
    let pinned = vec![format!("{UPSTREAM}/c/img0:*")];
    // Four images of ~600 KB (three cached, one pushed): 1900 KiB holds three, so exactly one goes,
    // and only the unpinned, least recently pulled cached one may.
    let m = Mirrored::start_with(MirrorSetup {
        options: ferry_server::MirrorOptions {
            local_namespaces: vec!["mine".into()],
            pinned: pinned.clone(),
            min_free_bytes: 0,
            ..ferry_server::MirrorOptions::default()
        },
        budget: CacheBudget {
            max_bytes: 1900 * 1024,
            pinned,
            ..CacheBudget::default()
        },
        housekeeping_interval: Duration::from_millis(100),
        ..MirrorSetup::default()
    })
    .await;
    let imgs: Vec<Image> = (0..3)
        .map(|i| image(210 + i, 2, 300_000, "amd64"))
        .collect();
    for (i, img) in imgs.iter().enumerate() {
        m.seed(&format!("c/img{i}"), "v1", img).await;
    }
    let local = image(219, 2, 300_000, "amd64");
    m.mirror.push_image("mine/app", "v1", &local).await;
    // img0 (pinned) and img1 are pulled a second before img2: img1 is the least recently pulled
    // unpinned image.
    pull_verified(&m.mirror, "c/img0", &imgs[0]).await;
    pull_verified(&m.mirror, "c/img1", &imgs[1]).await;
    next_second().await;
    pull_verified(&m.mirror, "c/img2", &imgs[2]).await;
    let cached = |i: usize| {
        let (mirror, repo) = (&m.mirror, format!("{UPSTREAM}/c/img{i}"));
        async move { holds(mirror, &repo).await }
    };
    assert!(
        wait_for(Duration::from_secs(10), || async { !cached(1).await }).await,
        "img1 was not evicted"
    );
    assert!(cached(0).await, "the pinned image was evicted");
    assert!(
        cached(2).await,
        "the most recently pulled image was evicted"
    );
    assert!(
        holds(&m.mirror, "mine/app").await,
        "a pushed image was evicted"
    );
    for b in local.blobs() {
        let r = m
            .mirror
            .client
            .get(m.mirror.url(&format!("/v2/mine/app/blobs/{}", b.digest)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a pushed image lost a blob to eviction");
    }
    // Evicted content comes back on the next pull.
    pull_verified(&m.mirror, "c/img1", &imgs[1]).await;
    m.stop().await;
}

/// `[cache] policy = "lfu"`: the budget evicts through ferry-policy's LFU, fed the pulls in order.
/// LRU would evict img0 (pulled first); LFU keeps it (pulled three times) and evicts img1 (pulled
/// once, before img2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_evicts_what_the_configured_policy_chooses() {
    let m = Mirrored::start_with(MirrorSetup {
        options: ferry_server::MirrorOptions {
            local_namespaces: vec!["mine".into()],
            min_free_bytes: 0,
            ..ferry_server::MirrorOptions::default()
        },
        budget: CacheBudget {
            max_bytes: 1900 * 1024,
            policy: "lfu".into(),
            ..CacheBudget::default()
        },
        housekeeping_interval: Duration::from_millis(100),
        ..MirrorSetup::default()
    })
    .await;
    let imgs: Vec<Image> = (0..3)
        .map(|i| image(230 + i, 2, 300_000, "amd64"))
        .collect();
    for (i, img) in imgs.iter().enumerate() {
        m.seed(&format!("f/img{i}"), "v1", img).await;
    }
    // Four images of ~600 KB (one pushed): the budget holds three, so one cached image goes once
    // img2 is pulled, whenever the rounds fall.
    m.mirror
        .push_image("mine/app", "v1", &image(239, 2, 300_000, "amd64"))
        .await;
    for _ in 0..3 {
        pull_verified(&m.mirror, "f/img0", &imgs[0]).await;
    }
    pull_verified(&m.mirror, "f/img1", &imgs[1]).await;
    pull_verified(&m.mirror, "f/img2", &imgs[2]).await;
    let cached = |i: usize| {
        let (mirror, repo) = (&m.mirror, format!("{UPSTREAM}/f/img{i}"));
        async move { holds(mirror, &repo).await }
    };
    assert!(
        wait_for(Duration::from_secs(10), || async { !cached(1).await }).await,
        "img1, the least frequently pulled, was not evicted"
    );
    assert!(cached(0).await, "img0 (pulled thrice) was evicted");
    assert!(cached(2).await, "img2 was evicted");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_prune_rule_removes_the_cached_images_it_selects() {
    let pinned = vec![format!("{UPSTREAM}/r/img0:*")];
    let m = Mirrored::start_with(MirrorSetup {
        options: ferry_server::MirrorOptions {
            local_namespaces: vec!["mine".into()],
            pinned: pinned.clone(),
            min_free_bytes: 0,
            ..ferry_server::MirrorOptions::default()
        },
        ..MirrorSetup::default()
    })
    .await;
    let imgs: Vec<Image> = (0..3).map(|i| image(220 + i, 1, 50_000, "amd64")).collect();
    for (i, img) in imgs.iter().enumerate() {
        m.seed(&format!("r/img{i}"), "v1", img).await;
        pull_verified(&m.mirror, &format!("r/img{i}"), img).await;
    }
    let local = image(229, 1, 50_000, "amd64");
    m.mirror.push_image("mine/img1", "v1", &local).await;
    // Not pulled since before now, named img0 or img1: img0 is pinned, img2 does not match, and the
    // pushed mine/img1 is not cached content, so only the cached img1 may go.
    let budget = CacheBudget {
        max_bytes: 0,
        pinned,
        expiry: vec![ExpiryRule {
            accessed_before: Some(Duration::ZERO),
            created_before: None,
            pattern: Some(regex_lite::Regex::new("/img[01]:").unwrap()),
        }],
        ..CacheBudget::default()
    };
    // Shared with the retrying closure below.
    let state = tokio::sync::Mutex::new(budget.state().unwrap());
    next_second().await;
    let app = &m.mirror.app;
    let mirror = app.mirror.as_ref().unwrap();
    let round = ferry_server::mirror::budget::evict(
        &app.store,
        mirror,
        &app.metrics,
        &budget,
        &mut *state.lock().await,
    )
    .await
    .unwrap();
    assert_eq!(round.images, 1, "{round:?}");
    assert!(
        !holds(&m.mirror, &format!("{UPSTREAM}/r/img1")).await,
        "img1 was not pruned"
    );
    assert!(
        holds(&m.mirror, &format!("{UPSTREAM}/r/img0")).await,
        "a pinned image was pruned"
    );
    assert!(
        holds(&m.mirror, &format!("{UPSTREAM}/r/img2")).await,
        "an unselected image was pruned"
    );
    assert!(
        holds(&m.mirror, "mine/img1").await,
        "a pushed image was pruned"
    );
    // Its layer (in no other image) follows once it has not been used for a moment.
    let layer = app.store.blob_path(&imgs[1].layers[0].digest);
    assert!(
        wait_for(Duration::from_secs(10), || async {
            ferry_server::mirror::budget::evict(
                &app.store,
                mirror,
                &app.metrics,
                &budget,
                &mut *state.lock().await,
            )
            .await
            .unwrap();
            !layer.exists()
        })
        .await,
        "the pruned image's layer is still stored"
    );
    for img in [&imgs[0], &imgs[2]] {
        for b in img.blobs() {
            assert!(app.store.blob_path(&b.digest).exists());
        }
    }
    m.stop().await;
}
