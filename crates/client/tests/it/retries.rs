//! What is retried and how long the client waits: `Retry-After`, backoff, client errors never
//! retried, the rate limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ferry_client::{ErrorKind, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::peers::DockerRegistry;

use crate::common::{Reply, Scripted, client, content};

/// A docker-registry with one blob, a fault proxy in front, and the blob's path.
async fn blob_behind_proxy() -> Option<(DockerRegistry, FaultProxy, RepoName, Digest)> {
    let registry = DockerRegistry::start()?;
    let repo = RepoName::new("team/app").unwrap();
    let blob = content(20_000, 4);
    let digest = Digest::sha256(&blob);
    client(&format!("http://{}", registry.host()), 3)
        .push_blob(&repo, &digest, Bytes::from(blob))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&registry.host());
    Some((registry, proxy, repo, digest))
}

#[tokio::test]
async fn retry_after_is_waited_for_before_the_next_attempt() {
    let Some((_registry, proxy, repo, digest)) = blob_behind_proxy().await else {
        return;
    };
    let path = format!("/v2/{repo}/blobs/{digest}");
    let c = client(&format!("http://{}", proxy.host()), 3);
    for (i, status) in [429u16, 503].into_iter().enumerate() {
        proxy.inject(Target::Blob, Fault::Status(status, Some(1)), 1);
        let started = Instant::now();
        c.get_blob(&repo, &digest, 0).await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1), "{status}: {waited:?}");
        assert_eq!(proxy.requests("GET", &path), 2 * (i + 1), "{status}");
    }
}

#[tokio::test]
async fn a_retry_after_date_is_waited_for() {
    let answered = Arc::new(Mutex::new(0));
    let count = answered.clone();
    let server = Scripted::start(move |_| {
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n == 1 {
            let at = SystemTime::now() + Duration::from_secs(2);
            Reply::new(503).header("retry-after", httpdate::fmt_http_date(at))
        } else {
            Reply::new(200).body("ok")
        }
    })
    .await;
    let repo = RepoName::new("r").unwrap();
    let started = Instant::now();
    client(&server.url(), 3)
        .get_blob(&repo, &Digest::sha256(b"ok"), 0)
        .await
        .unwrap();
    // The date has whole seconds: two seconds ahead is at least one second away.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(*answered.lock().unwrap(), 2);
}

#[tokio::test]
async fn client_errors_are_never_retried_and_server_errors_are() {
    let Some((_registry, proxy, repo, digest)) = blob_behind_proxy().await else {
        return;
    };
    let path = format!("/v2/{repo}/blobs/{digest}");
    let c = client(&format!("http://{}", proxy.host()), 3);
    let mut seen = 0;
    for status in [400u16, 401, 403, 404] {
        proxy.inject(Target::Blob, Fault::Status(status, None), 3);
        let e = c.get_blob(&repo, &digest, 0).await.unwrap_err();
        assert_eq!(e.status, Some(status), "{e}");
        seen += 1;
        assert_eq!(proxy.requests("GET", &path), seen, "{status} was retried");
        proxy.clear();
    }
    for status in [429u16, 502, 503, 504] {
        proxy.inject(Target::Blob, Fault::Status(status, None), 1);
        c.get_blob(&repo, &digest, 0)
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        seen += 2;
        assert_eq!(
            proxy.requests("GET", &path),
            seen,
            "{status} was not retried"
        );
    }
    // Out of attempts: the last answer is the error.
    proxy.inject(Target::Blob, Fault::Status(503, None), 3);
    let e = c.get_blob(&repo, &digest, 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert_eq!(proxy.requests("GET", &path), seen + 3);
}

#[tokio::test]
async fn a_connection_closed_before_an_answer_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            drop(conn);
        }
    });
    let repo = RepoName::new("r").unwrap();
    let e = client(&format!("http://{addr}"), 3)
        .get_blob(&repo, &Digest::sha256(b"x"), 0)
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e}");
    assert_eq!(*accepted.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_refused_connection_is_tried_again_after_a_backoff() {
    // A port just released: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = RepoName::new("r").unwrap();
    let started = Instant::now();
    let e = client(&format!("http://127.0.0.1:{port}"), 3)
        .get_blob(&repo, &Digest::sha256(b"x"), 0)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connect, "{e}");
    // Two backoffs, of at least 100 ms and 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_every_request_of_a_registry() {
    let server = Scripted::start(|_| Reply::new(200).body("ok")).await;
    let rate = 20.0;
    let registry = Arc::new(
        Registry::new(RegistryOptions {
            endpoint: server.url(),
            rate_limit: Some(rate),
            ..Default::default()
        })
        .unwrap(),
    );
    let n = 11;
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let repo = RepoName::new("r").unwrap();
                registry
                    .get_blob(&repo, &Digest::sha256(b"ok"), 0)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let least = Duration::from_secs_f64((n - 1) as f64 / rate);
    assert!(took >= least, "{n} requests at {rate}/s took {took:?}");
    assert_eq!(server.requests().len(), n);
    assert!(
        Registry::new(RegistryOptions {
            endpoint: server.url(),
            rate_limit: Some(0.0),
            ..Default::default()
        })
        .is_err()
    );
}
