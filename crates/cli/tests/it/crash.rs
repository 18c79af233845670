//! Crash safety: `kill -9` in the middle of 200 concurrent uploads leaves no blob whose bytes do not
//! hash to its name, and every upload that was acknowledged survives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::Digest;
use ferry_testkit::image::Rng;
use ferry_testkit::peers::Ferry;

use crate::{client, ferry_bin};

const UPLOADS: usize = 200;
const KILL_AFTER: usize = 40;
const SIZE: usize = 512 * 1024;
const CHUNK: usize = 32 * 1024;

/// One upload: monolithic for even `i`, POST + chunked PATCHes + PUT for odd `i`.
async fn upload(base: String, i: usize) -> Result<Digest, String> {
    let bytes = Rng::new(1000 + i as u64).bytes(SIZE);
    let d = Digest::sha256(&bytes);
    let c = client();
    let chunks = |b: &[u8]| -> reqwest::Body {
        let parts: Vec<Result<Bytes, std::io::Error>> = b
            .chunks(CHUNK)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
    };
    let err = |e: reqwest::Error| e.to_string();
    if i.is_multiple_of(2) {
        let r = c
            .post(format!("{base}/v2/crash/blobs/uploads/?digest={d}"))
            .body(chunks(&bytes))
            .send()
            .await
            .map_err(err)?;
        if r.status() != 201 {
            return Err(format!("status {}", r.status()));
        }
    } else {
        let r = c
            .post(format!("{base}/v2/crash/blobs/uploads/"))
            .send()
            .await
            .map_err(err)?;
        let loc = r
            .headers()
            .get("location")
            .ok_or("no location")?
            .to_str()
            .unwrap()
            .to_owned();
        for (n, part) in bytes.chunks(SIZE / 4).enumerate() {
            let start = n * SIZE / 4;
            let r = c
                .patch(format!("{base}{loc}"))
                .header(
                    "content-range",
                    format!("{start}-{}", start + part.len() - 1),
                )
                .body(chunks(part))
                .send()
                .await
                .map_err(err)?;
            if r.status() != 202 {
                return Err(format!("status {}", r.status()));
            }
        }
        let r = c
            .put(format!("{base}{loc}?digest={d}"))
            .send()
            .await
            .map_err(err)?;
        if r.status() != 201 {
            return Err(format!("status {}", r.status()));
        }
    }
    Ok(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_200_concurrent_uploads_leaves_no_corrupt_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut ferry = Ferry::start(ferry_bin(), &data, &[]);
    let base = ferry.url();
    let done: Arc<Mutex<Vec<Digest>>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..UPLOADS {
        let (base, done, enough) = (base.clone(), done.clone(), enough.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(d) = upload(base, i).await {
                let mut v = done.lock().unwrap();
                v.push(d);
                if v.len() == KILL_AFTER {
                    enough.notify_one();
                }
            }
        }));
    }
    // Crash as soon as KILL_AFTER uploads have been acknowledged, with the rest in flight.
    tokio::time::timeout(Duration::from_secs(120), enough.notified())
        .await
        .expect("40 uploads did not complete in time");
    ferry.process.kill9();
    let acknowledged: Vec<Digest> = done.lock().unwrap().clone();
    for t in tasks {
        let _ = t.await;
    }
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < UPLOADS,
        "every upload finished before the kill; the test proved nothing"
    );

    // Every file under blobs/ hashes to its name.
    let out = std::process::Command::new(ferry_bin())
        .args(["fsck", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fsck after kill -9:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("clean"), "{report}");

    // The server restarts on the same directory and serves every acknowledged blob intact.
    let ferry = Ferry::start(ferry_bin(), &data, &[]);
    let c = client();
    for d in &acknowledged {
        let r = c
            .get(format!("{}/v2/crash/blobs/{d}", ferry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{d} lost after the crash");
        assert_eq!(&Digest::sha256(&r.bytes().await.unwrap()), d);
    }
    assert_eq!(
        std::fs::read_dir(data.join("tmp")).unwrap().count(),
        0,
        "temp files survived a restart"
    );
}

/// `kill -9` with 50 pull-throughs in flight (some held mid-transfer by a stalling upstream): the
/// store stays clean, completed blobs are served from the cache after a restart, and interrupted
/// ones are fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_50_pull_throughs_leaves_a_clean_cache() {
    use ferry_testkit::faults::{Fault, FaultProxy, Target};
    use ferry_testkit::image::image;
    use ferry_testkit::peers::{DockerRegistry, Skopeo};

    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(51, 25, 256 * 1024, "amd64");
    skopeo.push_image(&img, tmp.path(), &format!("{}/k/app:v1", upstream.host()));
    let proxy = FaultProxy::start(&upstream.host());
    // Ten of the fills will hang mid-transfer, so the kill certainly lands inside them.
    proxy.inject(Target::Blob, Fault::Stall, 10);
    let data = tmp.path().join("data");
    let up = format!("http://{}", proxy.host());
    let mut ferry = Ferry::start(ferry_bin(), &data, &["--upstream", &up]);
    let base = ferry.url();
    let layers: Vec<_> = img.layers.clone();
    let done: Arc<Mutex<Vec<Digest>>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let layer = layers[i % layers.len()].clone();
        let (base, done, enough) = (base.clone(), done.clone(), enough.clone());
        tasks.push(tokio::spawn(async move {
            let r = client()
                .get(format!("{base}/v2/k/app/blobs/{}", layer.digest))
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == 200
                && let Ok(b) = r.bytes().await
            {
                assert_eq!(
                    Digest::sha256(&b),
                    layer.digest,
                    "a complete response with wrong bytes"
                );
                let mut d = done.lock().unwrap();
                d.push(layer.digest.clone());
                if d.len() == 10 {
                    enough.notify_one();
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), enough.notified())
        .await
        .expect("no pull completed");
    ferry.process.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let completed: std::collections::BTreeSet<Digest> =
        done.lock().unwrap().iter().cloned().collect();
    assert!(
        completed.len() < layers.len(),
        "every fill finished before the kill; the test proved nothing"
    );

    let out = std::process::Command::new(ferry_bin())
        .args(["fsck", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck after kill -9:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The restarted ferry reaches the upstream through a fresh proxy (under the same upstream
    // name, so its cache is the one the crash left) and its requests are counted there: the old
    // proxy may still be forwarding requests the killed process sent, which the upstream's access
    // log would attribute to the restart.
    drop(proxy);
    let fresh = FaultProxy::start(&upstream.host());
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "default_upstream = \"{old}\"\n[[upstream]]\nname = \"{old}\"\nurl = \"http://{new}\"\n",
            old = up.trim_start_matches("http://"),
            new = fresh.host()
        ),
    )
    .unwrap();
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    let mut refetched = 0;
    for layer in &layers {
        let r = client()
            .get(format!("{}/v2/k/app/blobs/{}", ferry.url(), layer.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), layer.digest);
        let fetched = fresh.requests("GET", &format!("/v2/k/app/blobs/{}", layer.digest));
        let story = || {
            let log = ferry.process.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&layer.digest.to_string()))
                .collect();
            lines.join("\n")
        };
        if completed.contains(&layer.digest) {
            assert_eq!(
                fetched,
                0,
                "{} was complete before the crash but was fetched again; ferry's log of it:\n{}",
                layer.digest,
                story()
            );
        } else {
            // Not acknowledged to any client: its fill may still have committed just before the
            // kill (then it is served from the cache) or not (then it is fetched once more).
            assert!(
                fetched <= 1,
                "{} fetched {fetched} times after the restart; ferry's log of it:\n{}",
                layer.digest,
                story()
            );
            refetched += fetched;
        }
    }
    // The stalled fills can never have committed, so some blobs must have been fetched again.
    assert!(refetched > 0, "nothing interrupted was fetched again");
}
