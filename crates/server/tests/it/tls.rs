//! Serving over TLS: ALPN picks HTTP/2 or HTTP/1.1, the handshake is timed, plaintext is refused,
//! and HTTP/2 keeps the connection bounds (idle connections go away, a stream whose client stops
//! reading closes its connection, drain lets streams finish).

use std::sync::Arc;
use std::time::Duration;

use ferry_server::{RateFloor, ServeOptions};
use ferry_testkit::image::image;
use ferry_testkit::tls::TestPki;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Registry;

/// Bounds short enough for a test to see them act.
fn short_bounds() -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        min_send: RateFloor {
            bytes_per_sec: 4 << 20,
            window: Duration::from_millis(500),
        },
        ..ServeOptions::default()
    }
}

/// A TLS connection to `reg` offering `alpn`, trusting the test CA.
async fn tls_connect(
    reg: &Registry,
    pki: &TestPki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pki.ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr(reg)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

fn addr(reg: &Registry) -> String {
    reg.base.trim_start_matches("https://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_offering_http2_get_it_and_http1_clients_keep_http1() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, ServeOptions::default()).await;
    let image = image(151, 3, 100_000, "amd64");
    reg.push_image("team/app", "v1", &image).await;

    let r = reg
        .req(Method::GET, "/v2/team/app/manifests/v1")
        .header("accept", &image.manifest.media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap(), image.manifest.bytes);

    let http1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .build()
        .unwrap();
    for b in image.blobs() {
        let r = http1
            .get(reg.url(&format!("/v2/team/app/blobs/{}", b.digest)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_handshake_is_closed_after_the_header_timeout() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, short_bounds()).await;
    let mut silent = tokio::net::TcpStream::connect(addr(&reg)).await.unwrap();
    let mut buf = [0u8; 64];
    // Send nothing: the server must hang up on its own, well within the test's bound.
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection without a handshake was kept open: {read:?}"
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, ServeOptions::default()).await;
    let mut plain = tokio::net::TcpStream::connect(addr(&reg)).await.unwrap();
    plain
        .write_all(b"GET /v2/ HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes a plaintext connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext was answered in plaintext: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // And the port still serves TLS.
    assert_eq!(reg.send(Method::GET, "/v2/").await.status(), StatusCode::OK);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_requests_is_told_to_go_away() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, short_bounds()).await;
    let tls = tls_connect(&reg, &pki, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (_send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tls))
        .await
        .unwrap();
    // The connection future ends when the server sends GOAWAY and closes.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was kept open");
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_client_stops_reading_closes_its_connection() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, short_bounds()).await;
    let blob = vec![7u8; 32 << 20];
    let digest = reg.push_blob("team/big", &blob).await;

    // A client with a small window that reads the headers, then never takes a byte more.
    let tls = tls_connect(&reg, &pki, &[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("{}/v2/team/big/blobs/{digest}", reg.base))
        .body(http_body_util::Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(
        ended.is_ok(),
        "a stream stalled by its client's window kept its connection for 20 s"
    );
    drop(res);

    // A client that reads gets the whole blob over the same kind of connection.
    let r = reg
        .send(Method::GET, &format!("/v2/team/big/blobs/{digest}"))
        .await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_over_http2_finishes_while_the_server_drains() {
    let pki = TestPki::generate();
    let reg = Registry::start_tls(&pki, ServeOptions::default()).await;
    let blob = vec![3u8; 8 << 20];
    let digest = reg.push_blob("team/big", &blob).await;
    let tls = tls_connect(&reg, &pki, &[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("{}/v2/team/big/blobs/{digest}", reg.base))
        .body(http_body_util::Empty::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // Drain starts with the download in flight: GOAWAY, and the stream still runs to its end.
    let stopping = tokio::spawn(reg.stop());
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(first.len() + rest.len(), blob.len());
    stopping.await.unwrap();
}
