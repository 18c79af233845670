//! Upload sessions: chunked (with the spec's 416 rules), streamed, resumed after a restart,
//! cancelled, and cross-repository mounts.

use ferry_oci::{Algorithm, Digest};
use ferry_testkit::image::Rng;
use reqwest::{Method, StatusCode};

use crate::{Registry, error_code, header};

async fn start_session(reg: &Registry, repo: &str) -> String {
    let r = reg
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-0"));
    let loc = header(&r, "location").unwrap().to_owned();
    assert!(
        loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{loc}"
    );
    loc
}

async fn patch(reg: &Registry, loc: &str, range: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut req = reg
        .req(Method::PATCH, loc)
        .header("content-type", "application/octet-stream")
        .body(body.to_vec());
    if let Some(r) = range {
        req = req.header("content-range", r);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn chunked_upload_follows_the_spec_416_rules() {
    let reg = Registry::start().await;
    let blob = Rng::new(10).bytes(42);
    let d = Digest::sha256(&blob);
    let loc = start_session(&reg, "c/d").await;

    // Out of order: skipping ahead is refused and changes nothing.
    let r = patch(&reg, &loc, Some("22-41"), &blob[22..]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), Some("0-0"));
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");

    let r = patch(&reg, &loc, Some("0-21"), &blob[..22]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-21"));
    assert_eq!(header(&r, "location"), Some(loc.as_str()));

    // Re-sending a chunk already received is also out of order, and the session survives it.
    let r = patch(&reg, &loc, Some("0-21"), &blob[..22]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let r = reg.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-21"));
    assert_eq!(header(&r, "location"), Some(loc.as_str()));

    // A Content-Length that disagrees with the Content-Range span is refused.
    let r = patch(&reg, &loc, Some("22-50"), &blob[22..]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "SIZE_INVALID");

    // An out-of-order final chunk in the PUT is a 416 too, and still leaves the session usable.
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "30-41")
        .body(blob[30..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let r = patch(&reg, &loc, Some("22-41"), &blob[22..]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-41"));

    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/c/d/blobs/{d}").as_str())
    );
    assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
    let got = reg
        .send(Method::GET, &format!("/v2/c/d/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), &blob[..]);
    // The session is gone once complete.
    let r = reg.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_patch_without_length_then_put() {
    let reg = Registry::start().await;
    let blob = Rng::new(11).bytes(300_000);
    let d = Digest::sha256(&blob);
    let loc = start_session(&reg, "s").await;
    // A chunked-transfer body (no Content-Length, no Content-Range), as Go clients stream.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        blob.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let r = reg
        .req(Method::PATCH, &loc)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-299999"));
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        reg.send(Method::GET, &format!("/v2/s/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        &blob[..]
    );
}

#[tokio::test]
async fn put_with_final_chunk_and_sha512() {
    let reg = Registry::start().await;
    let blob = Rng::new(12).bytes(3067);
    let d = Digest::of(Algorithm::Sha512, &blob);
    let loc = start_session(&reg, "p").await;
    assert_eq!(
        patch(&reg, &loc, Some("0-1023"), &blob[..1024])
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "1024-3066")
        .body(blob[1024..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let head = reg.send(Method::HEAD, &format!("/v2/p/blobs/{d}")).await;
    assert_eq!(header(&head, "content-length"), Some("3067"));
}

#[tokio::test]
async fn wrong_digest_on_completion_is_refused_and_leaves_nothing() {
    let reg = Registry::start().await;
    let loc = start_session(&reg, "w").await;
    assert_eq!(
        patch(&reg, &loc, None, b"actual bytes").await.status(),
        StatusCode::ACCEPTED
    );
    let wrong = Digest::sha256(b"other bytes");
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={wrong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/w/blobs/{wrong}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        std::fs::read_dir(reg.dir.join("data/uploads"))
            .unwrap()
            .count(),
        0
    );
    // No digest at all is a client error too.
    let loc = start_session(&reg, "w").await;
    let r = reg.send(Method::PUT, &loc).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn sessions_belong_to_their_repository_and_can_be_cancelled() {
    let reg = Registry::start().await;
    let loc = start_session(&reg, "mine").await;
    let id = loc.rsplit('/').next().unwrap();
    let r = reg
        .send(Method::GET, &format!("/v2/theirs/blobs/uploads/{id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        reg.send(Method::DELETE, &loc).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        reg.send(Method::GET, &loc).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = reg
        .send(Method::GET, "/v2/mine/blobs/uploads/no-such-session")
        .await;
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let blob = Rng::new(13).bytes(200_000);
    let d = Digest::sha256(&blob);
    let reg = Registry::start_in(tmp.path(), Default::default()).await;
    let loc = start_session(&reg, "resume/me").await;
    let r = patch(&reg, &loc, Some("0-99999"), &blob[..100_000]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    reg.stop().await;

    let reg = Registry::start_in(tmp.path(), Default::default()).await;
    let r = reg.send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-99999"));
    let r = patch(&reg, &loc, Some("100000-199999"), &blob[100_000..]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let got = reg
        .send(Method::GET, &format!("/v2/resume/me/blobs/{d}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(Digest::sha256(&got), d);
    reg.stop().await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = Registry::start().await;
    let d = reg.push_blob("src/repo", b"mount me").await;
    // From a repository that has it: 201 with the blob's exact location.
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src%2Frepo"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/dst/blobs/{d}").as_str())
    );
    assert_eq!(
        reg.send(Method::GET, &format!("/v2/dst/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"mount me"
    );
    // A digest the source lacks: fall back to an upload session (202), never 404.
    let missing = Digest::sha256(b"never pushed");
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/dst2/blobs/uploads/?mount={missing}&from=src/repo"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(
        header(&r, "location")
            .unwrap()
            .starts_with("/v2/dst2/blobs/uploads/")
    );
    // Without `from`, content already in the store is mounted automatically; unknown content is not.
    let r = reg
        .send(Method::POST, &format!("/v2/dst3/blobs/uploads/?mount={d}"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/dst3/blobs/uploads/?mount={missing}"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Deleting the mounted copy leaves the source alone.
    assert_eq!(
        reg.send(Method::DELETE, &format!("/v2/dst/blobs/{d}"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.send(Method::HEAD, &format!("/v2/src/repo/blobs/{d}"))
            .await
            .status(),
        StatusCode::OK
    );
    // Bad parameters are client errors.
    let r = reg
        .send(
            Method::POST,
            "/v2/dst/blobs/uploads/?mount=sha256:nope&from=src/repo",
        )
        .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .send(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=Bad..Name"),
        )
        .await;
    assert_eq!(error_code(r).await, "NAME_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_patch_against_completion_never_stores_wrong_bytes() {
    let reg = Registry::start().await;
    let blob = Rng::new(20).bytes(2 * 1024 * 1024);
    let d = Digest::sha256(&blob);
    for round in 0..10 {
        let repo = format!("race{round}");
        let loc = start_session(&reg, &repo).await;
        assert_eq!(
            patch(&reg, &loc, None, &blob).await.status(),
            StatusCode::ACCEPTED
        );
        let put = reg.req(Method::PUT, &format!("{loc}?digest={d}")).send();
        let junk = patch(
            &reg,
            &loc,
            None,
            b"junk appended while the upload completes",
        );
        let (put, junk) = tokio::join!(put, junk);
        let put = put.unwrap();
        // Either order is fine, as long as the outcome is consistent and nothing is a 5xx.
        assert!(
            put.status() == StatusCode::CREATED || put.status() == StatusCode::BAD_REQUEST,
            "{}",
            put.status()
        );
        assert!(!junk.status().is_server_error(), "{}", junk.status());
        let got = reg
            .send(Method::GET, &format!("/v2/{repo}/blobs/{d}"))
            .await;
        if got.status() == StatusCode::OK {
            assert_eq!(
                Digest::sha256(&got.bytes().await.unwrap()),
                d,
                "round {round}: stored bytes do not hash to their name"
            );
        }
    }
}

#[tokio::test]
async fn upload_ids_are_only_ferrys_own() {
    let reg = Registry::start().await;
    let loc = start_session(&reg, "ids").await;
    let upper = {
        let (base, id) = loc.rsplit_once('/').unwrap();
        format!("{base}/{}", id.to_uppercase())
    };
    let r = reg.send(Method::GET, &upper).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        reg.send(Method::GET, &loc).await.status(),
        StatusCode::NO_CONTENT
    );
}
