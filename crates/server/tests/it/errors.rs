//! Bad input: every malformed path, name, digest and method gets a 4xx with an OCI error envelope,
//! never a 500. Requests go over raw TCP so that no client library normalises the path first.

use std::io::{Read, Write};
use std::net::TcpStream;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::Registry;

/// Sends one raw HTTP/1.1 request; returns the status and body.
fn raw(addr: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

fn envelope_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_owned)
}

fn addr(reg: &Registry) -> String {
    reg.base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_oci_errors() {
    let reg = Registry::start().await;
    reg.push_blob("a", b"x").await;
    let a = addr(&reg);
    let long_name = "a".repeat(256);
    let long_tag = "t".repeat(300);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/v2/../etc/passwd".into(), 404, "NOT_FOUND"),
        ("GET", "/v2/a/../b/manifests/x".into(), 400, "NAME_INVALID"),
        ("GET", "/v2/%2e%2e/manifests/x".into(), 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/a%2F..%2Fb/manifests/x".into(),
            400,
            "NAME_INVALID",
        ),
        ("GET", "/v2/a//b/manifests/x".into(), 400, "NAME_INVALID"),
        ("GET", "/v2/a%00b/manifests/x".into(), 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/Upper/manifests/latest".into(),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            format!("/v2/{long_name}/manifests/latest"),
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            format!("/v2/a/manifests/{long_tag}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "PUT",
            format!("/v2/a/manifests/{long_tag}"),
            400,
            "TAG_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/sha256:xyz".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".into(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/a/blobs/uploads/..%2F..".into(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/?digest=sha256:zz".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/a/tags/list?n=many".into(), 400, "UNSUPPORTED"),
        ("POST", "/v2/a/manifests/latest".into(), 405, "UNSUPPORTED"),
        ("PATCH", "/v2/a/tags/list".into(), 405, "UNSUPPORTED"),
        ("GET", "/nope".into(), 404, "NOT_FOUND"),
        ("GET", "/v2/a".into(), 404, "NOT_FOUND"),
    ];
    for (method, path, status, code) in cases {
        let a = a.clone();
        let p = path.clone();
        let m = method.to_owned();
        let (got, body) = tokio::task::spawn_blocking(move || raw(&a, &m, &p))
            .await
            .unwrap();
        let short: String = path.chars().take(60).collect();
        assert_eq!(
            got,
            status,
            "{method} {short}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            envelope_code(&body).as_deref(),
            Some(code),
            "{method} {short}"
        );
    }
}

#[test]
fn random_paths_never_get_a_500_or_a_bare_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reg = rt.block_on(Registry::start());
    rt.block_on(reg.push_blob("known/repo", b"content"));
    let a = addr(&reg);
    let segment = "([a-zA-Z0-9._~-]|%2[eEfF]|%00|%41|:){0,12}";
    let path = proptest::collection::vec(
        prop_oneof![
            3 => proptest::string::string_regex(segment).unwrap(),
            1 => Just("manifests".to_owned()),
            1 => Just("blobs".to_owned()),
            1 => Just("uploads".to_owned()),
            1 => Just("tags".to_owned()),
            1 => Just("list".to_owned()),
            1 => Just("..".to_owned()),
            1 => Just("known".to_owned()),
            1 => Just("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned()),
        ],
        0..8,
    );
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("PUT"),
        Just("DELETE"),
        Just("POST"),
        Just("PATCH")
    ];
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(&(method, path), |(method, segs)| {
            let p = format!("/v2/{}", segs.join("/"));
            let (status, body) = raw(&a, method, &p);
            prop_assert!(
                (200..500).contains(&status),
                "{} {} -> {}",
                method,
                p,
                status
            );
            if status >= 400 && method != "HEAD" {
                prop_assert!(
                    envelope_code(&body).is_some(),
                    "{} {} -> {} without an envelope",
                    method,
                    p,
                    status
                );
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(reg.stop());
}

/// A chunk refused before its body is read (416) must not leave a keep-alive client holding a
/// connection the server is about to drop: the response says `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_unread_body_closes_the_connection_explicitly() {
    let reg = Registry::start().await;
    let r = reg
        .send(reqwest::Method::POST, "/v2/keep/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let a = addr(&reg);
    let head = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        let body = vec![7u8; 256 * 1024];
        write!(
            s,
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Range: 22-{}\r\nContent-Length: {}\r\n\r\n",
            22 + body.len() - 1,
            body.len()
        )
        .unwrap();
        let _ = s.write_all(&body);
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    })
    .await
    .unwrap();
    assert!(head.starts_with("http/1.1 416"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // Requests whose body was read keep their connection.
    let r = reg.send(reqwest::Method::GET, "/v2/").await;
    assert!(r.headers().get("connection").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_details_follow_rfc_9110() {
    let reg = Registry::start().await;
    let r = reg
        .send(reqwest::Method::POST, "/v2/a/manifests/latest")
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, PUT, DELETE");
    let r = reg
        .send(reqwest::Method::POST, "/v2/a/blobs/uploads/")
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let a = addr(&reg);
    let head = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        write!(
            s,
            "GET {loc} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_lowercase()
    })
    .await
    .unwrap();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(
        !head.contains("content-length"),
        "a 204 must not carry Content-Length: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ferry_store::Store::open(tmp.path(), Default::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap().to_string();
    let app = std::sync::Arc::new(ferry_server::App {
        store,
        options: Default::default(),
        mirror: None,
        metrics: Default::default(),
    });
    let options = ferry_server::ServeOptions {
        header_read_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferry_server::serve(
        listener,
        ferry_server::router(app),
        options,
        async {
            let _ = rx.await;
        },
    ));
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        // Send nothing: the server must hang up on its own (read returns 0 or an error), not wait forever.
        !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
    })
    .await
    .unwrap();
    assert!(
        closed,
        "an idle connection was kept for 20 s despite a 1 s header timeout"
    );
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
