//! Blob reads, Range, deletes and per-repository visibility.

use ferry_oci::{Algorithm, Digest};
use ferry_testkit::image::Rng;
use reqwest::{Method, StatusCode};

use crate::{Registry, error_code, header};

#[tokio::test]
async fn get_and_head_report_exact_length_and_digest() {
    let reg = Registry::start().await;
    let bytes = Rng::new(1).bytes(100_000);
    let d = reg.push_blob("a/b", &bytes).await;
    let head = reg.send(Method::HEAD, &format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), Some("100000"));
    assert_eq!(header(&head, "docker-content-digest"), Some(d.as_str()));
    let get = reg.send(Method::GET, &format!("/v2/a/b/blobs/{d}")).await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "content-length"), Some("100000"));
    assert_eq!(get.bytes().await.unwrap().as_ref(), &bytes[..]);
    // The empty blob is a blob like any other.
    let e = reg.push_blob("a/b", b"").await;
    let head = reg.send(Method::HEAD, &format!("/v2/a/b/blobs/{e}")).await;
    assert_eq!(header(&head, "content-length"), Some("0"));
}

#[tokio::test]
async fn range_reads_at_start_middle_end_and_unsatisfiable() {
    let reg = Registry::start().await;
    let bytes = Rng::new(2).bytes(2048);
    let d = reg.push_blob("r", &bytes).await;
    let path = format!("/v2/r/blobs/{d}");
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
        ("bytes=2047-2047", 2047, 2047),
    ] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes {start}-{end}/2048").as_str()),
            "{range}"
        );
        assert_eq!(
            header(&r, "content-length"),
            Some((end - start + 1).to_string().as_str())
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &bytes[start..=end],
            "{range}"
        );
    }
    for range in [
        "bytes=5000-10000",
        "bytes=2048-",
        "bytes=500-0",
        "bytes=-0",
        "bytes=abc",
    ] {
        let r = reg
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "content-range"), Some("bytes */2048"), "{range}");
        assert_eq!(error_code(r).await, "RANGE_INVALID");
    }
    // Several ranges: RFC 9110 lets a server send the whole representation instead.
    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 2048);
}

#[tokio::test]
async fn large_blob_streams_intact() {
    let reg = Registry::start().await;
    let bytes = Rng::new(3).bytes(3 * 1024 * 1024 + 17);
    let d = reg.push_blob("big", &bytes).await;
    let got = reg
        .send(Method::GET, &format!("/v2/big/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(Digest::sha256(&got), d);
    let r = reg
        .req(Method::GET, &format!("/v2/big/blobs/{d}"))
        .header("range", "bytes=1048576-2097151")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[1048576..2097152]);
}

#[tokio::test]
async fn blobs_are_per_repository_and_delete_is_immediate() {
    let reg = Registry::start().await;
    let d = reg.push_blob("one", b"shared content").await;
    // Not visible in a repository it was never pushed or mounted to.
    let r = reg.send(Method::GET, &format!("/v2/two/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    reg.push_blob("two", b"shared content").await;
    let r = reg
        .send(Method::DELETE, &format!("/v2/one/blobs/{d}"))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/one/blobs/{d}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/two/blobs/{d}"))
            .await
            .status(),
        StatusCode::OK
    );
    let r = reg
        .send(Method::DELETE, &format!("/v2/one/blobs/{d}"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_can_be_disabled() {
    let reg = Registry::start_with(ferry_server::RegistryOptions {
        delete_enabled: false,
        ..Default::default()
    })
    .await;
    let d = reg.push_blob("x", b"keep me").await;
    let r = reg.send(Method::DELETE, &format!("/v2/x/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/x/blobs/{d}"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn sha512_blobs_round_trip() {
    let reg = Registry::start().await;
    let bytes = Rng::new(4).bytes(5000);
    let d = Digest::of(Algorithm::Sha512, &bytes);
    let r = reg
        .req(Method::POST, &format!("/v2/s/blobs/uploads/?digest={d}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let get = reg.send(Method::GET, &format!("/v2/s/blobs/{d}")).await;
    assert_eq!(header(&get, "docker-content-digest"), Some(d.as_str()));
    assert_eq!(get.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn digest_mismatch_leaves_no_blob_behind() {
    let reg = Registry::start().await;
    let claimed = Digest::sha256(b"what the client claims");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/m/blobs/uploads/?digest={claimed}"),
        )
        .body(b"something else entirely".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/m/blobs/{claimed}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let data = reg.dir.join("data");
    let named = data
        .join("blobs/sha256")
        .join(&claimed.hex()[..2])
        .join(claimed.hex());
    assert!(!named.exists(), "a file named by the claimed digest exists");
    let actual = Digest::sha256(b"something else entirely");
    assert!(
        !data
            .join("blobs/sha256")
            .join(&actual.hex()[..2])
            .join(actual.hex())
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(data.join("tmp")).unwrap().count(),
        0,
        "temp file left behind"
    );
}
