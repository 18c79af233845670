//! Redirects: credentials follow them only to the registry's own origin.

use std::net::SocketAddr;

use ferry_client::{Credentials, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};

use crate::common::{Reply, Scripted, content};

/// The registry on 127.0.0.1:P, asking for basic auth, and blob storage on 127.0.0.2:P (the
/// same port, so only the host differs). The registry redirects `far`'s blob to the storage and
/// `near`'s to another path of its own.
async fn registry_and_storage(far: Vec<u8>, near: Vec<u8>) -> (Scripted, Scripted) {
    let (far_path, near_path) = (
        format!("/v2/r/blobs/{}", Digest::sha256(&far)),
        format!("/v2/r/blobs/{}", Digest::sha256(&near)),
    );
    loop {
        let (far_path, near_path, near) = (far_path.clone(), near_path.clone(), near.clone());
        let registry = Scripted::start(move |rq| {
            if rq.header("authorization").is_none() {
                return Reply::new(401).header("www-authenticate", "Basic realm=\"r\"");
            }
            let port = rq
                .header("host")
                .and_then(|h| h.rsplit(':').next())
                .unwrap_or("")
                .to_owned();
            match rq.target.as_str() {
                t if t == far_path => Reply::new(307).header(
                    "location",
                    format!("http://127.0.0.2:{port}/storage/blob?sig=s"),
                ),
                t if t == near_path => Reply::new(307).header("location", "/elsewhere/blob"),
                "/elsewhere/blob" => Reply::new(200).body(near.clone()),
                _ => Reply::new(404),
            }
        })
        .await;
        let other: SocketAddr = format!("127.0.0.2:{}", registry.addr.port())
            .parse()
            .unwrap();
        let Ok(taken) = std::net::TcpListener::bind(other) else {
            // That port is in use on 127.0.0.2: try another.
            continue;
        };
        drop(taken);
        let far = far.clone();
        let storage = Scripted::start_on(other, move |_| Reply::new(200).body(far.clone())).await;
        return (registry, storage);
    }
}

#[tokio::test]
async fn a_redirect_to_another_host_carries_no_authorization_and_the_same_host_keeps_it() {
    let (far, near) = (content(30_000, 8), content(20_000, 9));
    let (registry, storage) = registry_and_storage(far.clone(), near.clone()).await;
    let client = Registry::new(RegistryOptions {
        endpoint: registry.url(),
        credentials: Credentials::Basic {
            username: "u".into(),
            password: "secret".into(),
        },
        ..Default::default()
    })
    .unwrap();
    let repo = RepoName::new("r").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, blob) in [("far", &far), ("near", &near)] {
        let path = dir.path().join(name);
        client
            .fetch_blob_to(&repo, &Digest::sha256(blob), Some(blob.len() as u64), &path)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(std::fs::read(&path).unwrap() == *blob, "{name}");
    }
    let at_storage = storage.requests();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].target, "/storage/blob?sig=s");
    assert_eq!(at_storage[0].header("authorization"), None);
    let same_host: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.target == "/elsewhere/blob")
        .collect();
    assert_eq!(same_host.len(), 1);
    assert!(
        same_host[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "{:?}",
        same_host[0]
    );
}
