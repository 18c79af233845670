//! HTTP/2 over TLS: docker-registry with a test CA, a counting forwarder in front; concurrent blob
//! reads share one connection.

use std::sync::Arc;

use bytes::Bytes;
use ferry_client::{Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_testkit::peers::DockerRegistry;
use ferry_testkit::tls::{CountingForwarder, TestPki};

use crate::common::content;

#[tokio::test]
async fn blobs_read_concurrently_over_tls_share_one_http2_connection() {
    let pki = TestPki::generate();
    let Some(tls_registry) = DockerRegistry::start_tls(&pki) else {
        return;
    };
    let port = tls_registry.port;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca_pem.clone();
    let client = |port: u16| {
        Registry::new(RegistryOptions {
            endpoint: format!("https://127.0.0.1:{port}"),
            ca_pem: Some(ca.clone()),
            ..Default::default()
        })
        .unwrap()
    };
    let repo = RepoName::new("team/h2").unwrap();
    let blobs: Vec<Vec<u8>> = (0..6)
        .map(|i| content(200_000 + i * 1000, i as u8))
        .collect();
    let direct = client(port);
    for b in &blobs {
        direct
            .push_blob(&repo, &Digest::sha256(b), Bytes::from(b.clone()))
            .await
            .unwrap();
    }

    let forwarder = CountingForwarder::start(port);
    let registry = Arc::new(client(forwarder.port));
    // The first request opens the connection (whose protocol ALPN decides); the rest, all at
    // once, ride on it.
    let first = registry
        .get_blob(&repo, &Digest::sha256(&blobs[0]), 0)
        .await
        .unwrap();
    assert_eq!(first.http_version(), reqwest::Version::HTTP_2);
    drop(first);
    let dir_path = dir.path().to_owned();
    let reads: Vec<_> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (registry, repo, b, path) = (
                registry.clone(),
                repo.clone(),
                b.clone(),
                dir_path.join(format!("blob{i}")),
            );
            tokio::spawn(async move {
                registry
                    .fetch_blob_to(&repo, &Digest::sha256(&b), Some(b.len() as u64), &path)
                    .await
                    .unwrap();
                assert!(std::fs::read(&path).unwrap() == b);
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
    assert_eq!(forwarder.accepted(), 1);
}
