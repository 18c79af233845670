//! `Registry::fetch_blob_to`: resume with `Range`, continue after a cut, verify, start over.

use bytes::Bytes;
use std::time::Duration;

use ferry_client::{ErrorKind, Fetched, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::peers::DockerRegistry;

use crate::common::{Reply, Scripted, client, content};

/// A docker-registry holding one blob of `n` bytes in `repo`, and a fault proxy in front of it.
async fn registry_with_blob(
    n: usize,
) -> Option<(DockerRegistry, FaultProxy, RepoName, Vec<u8>, Digest)> {
    let registry = DockerRegistry::start()?;
    let repo = RepoName::new("team/app").unwrap();
    let blob = content(n, 7);
    let digest = Digest::sha256(&blob);
    client(&format!("http://{}", registry.host()), 3)
        .push_blob(&repo, &digest, Bytes::from(blob.clone()))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&registry.host());
    Some((registry, proxy, repo, blob, digest))
}

#[tokio::test]
async fn a_partial_blob_resumes_with_a_range_from_its_length() {
    let Some((_registry, proxy, repo, blob, digest)) = registry_with_blob(300_000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("blob.partial");
    std::fs::write(&partial, &blob[..100_000]).unwrap();
    let got = client(&format!("http://{}", proxy.host()), 3)
        .fetch_blob_to(&repo, &digest, Some(blob.len() as u64), &partial)
        .await
        .unwrap();
    assert_eq!(
        proxy.ranges("GET", &format!("/v2/{repo}/blobs/{digest}")),
        ["bytes=100000-"]
    );
    assert_eq!(
        got,
        Fetched {
            resumed_from: 100_000,
            downloaded: 200_000
        }
    );
    assert!(std::fs::read(&partial).unwrap() == blob);
}

#[tokio::test]
async fn a_body_cut_off_midway_continues_from_what_is_on_disk() {
    let Some((_registry, proxy, repo, blob, digest)) = registry_with_blob(300_000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/v2/{repo}/blobs/{digest}");
    // A stalled body is cut off by the read timeout.
    let impatient = Registry::new(RegistryOptions {
        endpoint: format!("http://{}", proxy.host()),
        read_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    for (i, fault) in [Fault::ResetMidBody, Fault::TruncateBody, Fault::Stall]
        .into_iter()
        .enumerate()
    {
        proxy.inject(Target::Blob, fault.clone(), 1);
        let partial = dir.path().join(format!("blob{i}"));
        let got = impatient
            .fetch_blob_to(&repo, &digest, Some(blob.len() as u64), &partial)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(std::fs::read(&partial).unwrap() == blob, "{fault:?}");
        assert_eq!(got.resumed_from, 0);
        // Every byte was received once: the second request asked for the rest only.
        assert_eq!(got.downloaded, blob.len() as u64, "{fault:?}");
        let ranges = proxy.ranges("GET", &path);
        let from: u64 = ranges[i]
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            from > 0 && from < blob.len() as u64,
            "{fault:?}: {ranges:?}"
        );
    }
}

#[tokio::test]
async fn a_corrupt_byte_is_an_error_and_leaves_no_file() {
    let Some((_registry, proxy, repo, blob, digest)) = registry_with_blob(100_000).await else {
        return;
    };
    proxy.inject(Target::Blob, Fault::WrongBytes, 1);
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("blob.partial");
    let e = client(&format!("http://{}", proxy.host()), 3)
        .fetch_blob_to(&repo, &digest, Some(blob.len() as u64), &partial)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
    assert!(e.message.contains("hash to"), "{e}");
    assert!(!partial.exists());
}

#[tokio::test]
async fn a_partial_longer_than_the_blob_starts_over() {
    let Some((_registry, proxy, repo, blob, digest)) = registry_with_blob(50_000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("blob.partial");
    std::fs::write(&partial, content(60_000, 1)).unwrap();
    let got = client(&format!("http://{}", proxy.host()), 3)
        .fetch_blob_to(&repo, &digest, Some(blob.len() as u64), &partial)
        .await
        .unwrap();
    assert!(
        proxy
            .ranges("GET", &format!("/v2/{repo}/blobs/{digest}"))
            .is_empty()
    );
    assert_eq!(
        got,
        Fetched {
            resumed_from: 0,
            downloaded: 50_000
        }
    );
    assert!(std::fs::read(&partial).unwrap() == blob);
}

#[tokio::test]
async fn a_registry_that_ignores_range_rewrites_the_file_from_the_start() {
    let blob = content(40_000, 3);
    let digest = Digest::sha256(&blob);
    let served = blob.clone();
    let server = Scripted::start(move |_| Reply::new(200).body(served.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("blob.partial");
    // Wrong bytes in the partial: a registry answering 200 must not be appended after them.
    std::fs::write(&partial, content(10_000, 99)).unwrap();
    let repo = RepoName::new("r").unwrap();
    let got = client(&server.url(), 1)
        .fetch_blob_to(&repo, &digest, None, &partial)
        .await
        .unwrap();
    assert_eq!(server.requests()[0].header("range"), Some("bytes=10000-"));
    assert_eq!(
        got,
        Fetched {
            resumed_from: 0,
            downloaded: 40_000
        }
    );
    assert!(std::fs::read(&partial).unwrap() == blob);
}

#[tokio::test]
async fn a_partial_that_is_already_whole_is_verified_not_fetched() {
    let Some((_registry, proxy, repo, blob, digest)) = registry_with_blob(30_000).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/v2/{repo}/blobs/{digest}");
    let c = client(&format!("http://{}", proxy.host()), 3);
    let whole = Fetched {
        resumed_from: 30_000,
        downloaded: 0,
    };
    // With the size known, no request at all.
    let partial = dir.path().join("known");
    std::fs::write(&partial, &blob).unwrap();
    let got = c
        .fetch_blob_to(&repo, &digest, Some(30_000), &partial)
        .await
        .unwrap();
    assert_eq!(got, whole);
    assert_eq!(proxy.requests("GET", &path), 0);
    // Without it, the registry's 416 for the range after the end says the same.
    let partial = dir.path().join("unknown");
    std::fs::write(&partial, &blob).unwrap();
    let got = c
        .fetch_blob_to(&repo, &digest, None, &partial)
        .await
        .unwrap();
    assert_eq!(got, whole);
    assert_eq!(proxy.ranges("GET", &path), ["bytes=30000-"]);
    assert!(std::fs::read(&partial).unwrap() == blob);
}
