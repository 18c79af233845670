//! Warmup and replay against a real registry (docker-registry): every replayed GET comes back
//! with the size and digest the map says, a second warmup pushes nothing, runs repeat exactly,
//! and several registries share the objects.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ferry_client::{Registry, RegistryOptions};
use ferry_testkit::peers::DockerRegistry;
use ferry_trace::replay::map::{MapEntry, ObjectKind, WarmupMap, object_of};
use ferry_trace::replay::pace::Pace;
use ferry_trace::replay::run::{RunOptions, run};
use ferry_trace::replay::warmup::{Objects, WarmupOptions, warmup};
use ferry_trace::{Request, Trace, format_timestamp};

/// A `ferry trace gen` trace (300 blob GETs over 40 blobs) with GETs of three manifests (one
/// without a size, one named by digest) woven in, and a HEAD and a ping that are not replayed.
fn write_trace(path: &Path) {
    let o = ferry_trace::generate::GenOptions {
        requests: 300,
        objects: 40,
        seed: 5,
        ..Default::default()
    };
    let mut out = Vec::new();
    ferry_trace::generate::generate(&o, &mut out).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&out).unwrap();
    let start = 1_497_916_800_000_000i64;
    let extra = [
        ("GET", "v2/4715bf52/app/manifests/latest", Some(2100)),
        ("GET", "v2/4715bf52/app/manifests/latest", Some(2100)),
        ("GET", "v2/Odd+Name/manifests/sha256:abcd", Some(900)),
        ("GET", "v2/4715bf52/tool/manifests/v1", None),
        ("HEAD", "v2/4715bf52/app/manifests/latest", Some(0)),
        ("GET", "v2/", Some(2)),
    ];
    for (i, (method, uri, size)) in extra.iter().enumerate() {
        let mut rec = serde_json::json!({
            "http.request.method": method,
            "http.request.uri": uri,
            "http.request.remoteaddr": "c0ffee00",
            "http.response.status": 200,
            "timestamp": format_timestamp(start + i as i64 * 250_000),
        });
        if let Some(s) = size {
            rec["http.response.written"] = serde_json::json!(s);
        }
        writeln!(f, "{rec}").unwrap();
    }
}

fn requests(path: &Path) -> Vec<Request> {
    Trace::open(&[path.to_owned()], None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn registry(r: &DockerRegistry) -> Registry {
    Registry::new(RegistryOptions {
        endpoint: format!("http://{}", r.host()),
        ..RegistryOptions::default()
    })
    .unwrap()
}

fn options(registries: Vec<String>, pace: Pace) -> RunOptions {
    RunOptions {
        registries,
        pace,
        timeout: Duration::from_secs(30),
        label: "test".into(),
        shard: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_and_run_replay_every_get_with_its_size_and_digest() {
    let Some(peer) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    write_trace(&trace);
    let reqs = requests(&trace);
    let mut objects = Objects::default();
    reqs.iter().for_each(|r| objects.add(r));
    let blobs = objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Blob)
        .count() as u64;
    assert_eq!(objects.len() as u64 - blobs, 3, "three manifests");

    let o = WarmupOptions {
        jobs: 4,
        max_blob_size: 64 << 10,
        ..WarmupOptions::default()
    };
    let client = registry(&peer);
    let (mut first, report) = warmup(&client, &objects, &o).await.unwrap();
    assert_eq!((report.blobs, report.manifests), (blobs, 3));
    assert_eq!(report.pushed_manifests, 3);
    assert_eq!(
        report.pushed_blobs,
        blobs + 3 * 3,
        "each manifest: two layers and a config"
    );
    assert_eq!(report.defaulted, 1);
    assert!(report.capped > 0, "the sample's sizes go over 64 KiB");

    // Resumable: everything is there, nothing is pushed, the same digests come out.
    let (mut second, again) = warmup(&client, &objects, &o).await.unwrap();
    assert_eq!(
        (
            again.pushed_blobs,
            again.pushed_manifests,
            again.bytes_pushed
        ),
        (0, 0, 0)
    );
    assert_eq!(again.present, objects.len() as u64);
    first.sort_by(|a, b| a.uri.cmp(&b.uri));
    second.sort_by(|a, b| a.uri.cmp(&b.uri));
    assert_eq!(first, second);
    // Capped blobs share a size, never a digest.
    let capped: Vec<&MapEntry> = first.iter().filter(|e| e.size == 64 << 10).collect();
    assert!(capped.len() >= 2);
    let mut digests: Vec<_> = capped.iter().map(|e| e.digest.clone()).collect();
    digests.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    digests.dedup();
    assert_eq!(digests.len(), capped.len());
    // The odd repository name got a valid one.
    assert!(first.iter().any(|e| e.repository.starts_with("trace/x")));

    let map = WarmupMap::new(first.clone());
    let gets = |kind: ObjectKind| {
        reqs.iter()
            .filter(|r| object_of(r).is_some_and(|(_, k)| k == kind))
            .count() as u64
    };
    let url = format!("http://{}", peer.host());
    let replay = |pace| {
        let (map, reqs, o) = (&map, reqs.clone(), options(vec![url.clone()], pace));
        async move {
            let mut log = Vec::new();
            let r = run(reqs.into_iter(), map, &o, Some(&mut log))
                .await
                .unwrap();
            (r, String::from_utf8(log).unwrap())
        }
    };
    let (results, log) = replay(Pace::Asap { concurrency: 8 }).await;
    let rp = results.replay.as_ref().unwrap();
    assert_eq!(
        results.summary.errors, 0,
        "{:?}",
        results.summary.error_kinds
    );
    assert_eq!(rp.kinds["blob"].requests, gets(ObjectKind::Blob));
    assert_eq!(rp.kinds["manifest"].requests, gets(ObjectKind::Manifest));
    assert_eq!(rp.skipped, 2, "the HEAD and the ping");
    assert!(rp.unmapped.values().all(|&n| n == 0));
    let expected_bytes: u64 = reqs
        .iter()
        .filter_map(|r| object_of(r).and_then(|(k, _)| map.get(&k)))
        .map(|e| e.size)
        .sum();
    assert_eq!(results.summary.bytes, expected_bytes);
    assert_eq!(rp.kinds["blob"].latency_ms.count, gets(ObjectKind::Blob));
    assert_eq!(log.lines().count() as u64, results.summary.requests);

    // A second run sends the same requests in the same order.
    let (_, log2) = replay(Pace::Asap { concurrency: 8 }).await;
    assert_eq!(log, log2);

    // Recorded pace: the trace's 3 s at 100× speed; every request has a lag sample.
    let (timed, log3) = replay(Pace::Recorded {
        speed: 100.0,
        max_in_flight: 64,
    })
    .await;
    assert_eq!(timed.summary.errors, 0);
    assert_eq!(log3, log);
    let rp = timed.replay.as_ref().unwrap();
    assert_eq!(rp.kinds["blob"].lag_ms.count, gets(ObjectKind::Blob));

    // Objects missing from the map are counted and not sent.
    let dropped = first
        .iter()
        .find(|e| e.kind == ObjectKind::Manifest)
        .unwrap();
    let partial = WarmupMap::new(first.iter().filter(|e| e.uri != dropped.uri).cloned());
    let r = run(
        reqs.clone().into_iter(),
        &partial,
        &options(vec![url.clone()], Pace::Asap { concurrency: 4 }),
        None,
    )
    .await
    .unwrap();
    let unmapped = reqs
        .iter()
        .filter(|r| object_of(r).is_some_and(|(k, _)| k == dropped.uri))
        .count() as u64;
    assert_eq!(r.replay.as_ref().unwrap().unmapped["manifest"], unmapped);
    assert_eq!(r.summary.requests, results.summary.requests - unmapped);

    // A map that lies about a digest shows as digest errors of its kind.
    let mut lying = first.clone();
    let blob = lying
        .iter_mut()
        .find(|e| e.kind == ObjectKind::Blob)
        .unwrap();
    blob.digest = ferry_oci::Digest::sha256(b"something else");
    let lied_about = blob.uri.clone();
    let r = run(
        reqs.clone().into_iter(),
        &WarmupMap::new(lying),
        &options(vec![url.clone()], Pace::Asap { concurrency: 4 }),
        None,
    )
    .await
    .unwrap();
    let n = reqs
        .iter()
        .filter(|r| object_of(r).is_some_and(|(k, _)| k == lied_about))
        .count() as u64;
    assert_eq!(
        r.replay.as_ref().unwrap().kinds["blob"].error_kinds["digest"],
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registries_share_the_objects_by_consistent_hashing() {
    let (Some(a), Some(b)) = (DockerRegistry::start(), DockerRegistry::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    write_trace(&trace);
    let reqs = requests(&trace);
    let mut objects = Objects::default();
    reqs.iter().for_each(|r| objects.add(r));
    let o = WarmupOptions {
        max_blob_size: 16 << 10,
        ..WarmupOptions::default()
    };
    // Content is seeded by URI: warming both up gives one map.
    let (mut ma, _) = warmup(&registry(&a), &objects, &o).await.unwrap();
    let (mut mb, _) = warmup(&registry(&b), &objects, &o).await.unwrap();
    ma.sort_by(|x, y| x.uri.cmp(&y.uri));
    mb.sort_by(|x, y| x.uri.cmp(&y.uri));
    assert_eq!(ma, mb);
    let urls = vec![
        format!("http://{}", a.host()),
        format!("http://{}", b.host()),
    ];
    let map = WarmupMap::new(ma);
    let mut log = Vec::new();
    let r = run(
        reqs.into_iter(),
        &map,
        &options(urls.clone(), Pace::Asap { concurrency: 8 }),
        Some(&mut log),
    )
    .await
    .unwrap();
    assert_eq!(r.summary.errors, 0);
    let per = &r.replay.as_ref().unwrap().registries;
    assert!(per[&urls[0]] > 0 && per[&urls[1]] > 0, "{per:?}");
    // Each object always goes to one registry.
    let log = String::from_utf8(log).unwrap();
    let mut owner = std::collections::HashMap::new();
    for line in log.lines() {
        let (reg, path) = line.split_once(' ').unwrap();
        assert_eq!(*owner.entry(path.to_owned()).or_insert(reg), reg, "{path}");
    }
}
