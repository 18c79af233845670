//! Manifest push, pull, validation and delete.

use ferry_oci::{Algorithm, Digest, MediaType};
use ferry_testkit::image::{Blob, image, index};
use reqwest::{Method, StatusCode};

use crate::{Registry, error_code, header};

#[tokio::test]
async fn push_by_tag_then_pull_by_tag_and_digest() {
    let reg = Registry::start().await;
    let img = image(1, 2, 500, "amd64");
    for b in img.blobs() {
        reg.push_blob("team/app", &b.bytes).await;
    }
    let r = reg
        .put_manifest(
            "team/app",
            "v1",
            MediaType::OCI_MANIFEST,
            &img.manifest.bytes,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let d = &img.manifest.digest;
    assert_eq!(
        header(&r, "location"),
        Some(format!("/v2/team/app/manifests/{d}").as_str())
    );
    assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
    assert_eq!(header(&r, "oci-subject"), None);
    for reference in ["v1", d.as_str()] {
        let r = reg
            .req(Method::GET, &format!("/v2/team/app/manifests/{reference}"))
            .header("accept", MediaType::ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), Some(MediaType::OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest"), Some(d.as_str()));
        let len = img.manifest.bytes.len().to_string();
        assert_eq!(header(&r, "content-length"), Some(len.as_str()));
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &img.manifest.bytes[..],
            "bytes served exactly as pushed"
        );
        let h = reg
            .send(Method::HEAD, &format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(h.status(), StatusCode::OK);
        assert_eq!(header(&h, "content-length"), Some(len.as_str()));
        assert_eq!(header(&h, "docker-content-digest"), Some(d.as_str()));
        assert!(h.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn push_by_digest_verifies_with_the_named_algorithm() {
    let reg = Registry::start().await;
    let img = image(2, 1, 100, "amd64");
    for b in img.blobs() {
        reg.push_blob("d", &b.bytes).await;
    }
    // Same bytes plus two spaces, under the original digest: refused.
    let mut tampered = img.manifest.bytes.clone();
    tampered.extend_from_slice(b"  ");
    let r = reg
        .put_manifest(
            "d",
            img.manifest.digest.as_str(),
            MediaType::OCI_MANIFEST,
            &tampered,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // By a sha512 digest: stored and served under that digest.
    let d512 = Digest::of(Algorithm::Sha512, &img.manifest.bytes);
    let r = reg
        .put_manifest(
            "d",
            d512.as_str(),
            MediaType::OCI_MANIFEST,
            &img.manifest.bytes,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), Some(d512.as_str()));
    let g = reg
        .send(Method::GET, &format!("/v2/d/manifests/{d512}"))
        .await;
    assert_eq!(g.status(), StatusCode::OK);
    assert_eq!(header(&g, "docker-content-digest"), Some(d512.as_str()));
    assert_eq!(g.bytes().await.unwrap().as_ref(), &img.manifest.bytes[..]);
    // A chunked-transfer body (no Content-Length) is fine.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = img
        .manifest
        .bytes
        .chunks(50)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = reg
        .req(Method::PUT, "/v2/d/manifests/streamed")
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_manifests_get_the_right_error() {
    let reg = Registry::start().await;
    let img = image(3, 1, 100, "amd64");
    let put = |ct: &'static str, body: Vec<u8>| {
        let reg = &reg;
        async move { reg.put_manifest("v", "t", ct, &body).await }
    };
    // The blobs are not pushed yet.
    let r = put(MediaType::OCI_MANIFEST, img.manifest.bytes.clone()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    for (ct, body, status, code) in [
        (MediaType::OCI_MANIFEST, b"{not json".to_vec(), 400, "MANIFEST_INVALID"),
        (MediaType::OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"text/plain","config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#.to_vec(), 400, "MANIFEST_INVALID"),
        ("text/plain", br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#.to_vec(), 400, "MANIFEST_INVALID"),
        (MediaType::DOCKER_SCHEMA1_SIGNED, br#"{"schemaVersion":1,"name":"x","tag":"t","fsLayers":[]}"#.to_vec(), 400, "MANIFEST_INVALID"),
        (MediaType::OCI_INDEX, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":2}]}"#.to_vec(), 400, "MANIFEST_BLOB_UNKNOWN"),
        (MediaType::OCI_MANIFEST, vec![b' '; 4 * 1024 * 1024 + 1], 413, "SIZE_INVALID"),
    ] {
        let r = put(ct, body).await;
        assert_eq!(r.status().as_u16(), status, "{ct}");
        assert_eq!(error_code(r).await, code, "{ct}");
    }
    assert_eq!(
        reg.send(Method::GET, "/v2/v/manifests/t").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn lenient_where_the_spec_is() {
    let reg = Registry::start().await;
    let config = reg
        .push_blob("l", b"not even json: configs are opaque")
        .await;
    // No mediaType field, no layers, unknown fields and nulls, a non-distributable layer never pushed,
    // and a subject that does not exist: all accepted, bytes kept exactly.
    let body = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":33,"newUnspecifiedField":null}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{}","size":10,"urls":["https://example.invalid/l"]}}],"org.custom":{{"x":1}}}}"#,
        Digest::sha256(b"foreign")
    );
    let r = reg
        .put_manifest("l", "lenient", MediaType::OCI_MANIFEST, body.as_bytes())
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let got = reg.send(Method::GET, "/v2/l/manifests/lenient").await;
    assert_eq!(header(&got, "content-type"), Some(MediaType::OCI_MANIFEST));
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_bytes());
    // With reference checks relaxed, missing blobs are accepted too.
    let relaxed = Registry::start_with(ferry_server::RegistryOptions {
        check_manifest_references: false,
        ..Default::default()
    })
    .await;
    let img = image(4, 1, 10, "amd64");
    let r = relaxed
        .put_manifest("x", "t", MediaType::OCI_MANIFEST, &img.manifest.bytes)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn multi_arch_index_with_children() {
    let reg = Registry::start().await;
    let amd = image(5, 1, 100, "amd64");
    let arm = image(6, 1, 100, "arm64");
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    // Children first, by digest, as skopeo and crane push.
    for img in [&amd, &arm] {
        for b in img.blobs() {
            reg.push_blob("multi", &b.bytes).await;
        }
        let r = reg
            .put_manifest(
                "multi",
                img.manifest.digest.as_str(),
                MediaType::OCI_MANIFEST,
                &img.manifest.bytes,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = reg
        .put_manifest("multi", "latest", MediaType::OCI_INDEX, &idx.bytes)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let g = reg.send(Method::GET, "/v2/multi/manifests/latest").await;
    assert_eq!(header(&g, "content-type"), Some(MediaType::OCI_INDEX));
    assert_eq!(g.bytes().await.unwrap().as_ref(), &idx.bytes[..]);
}

#[tokio::test]
async fn tags_and_deletes() {
    let reg = Registry::start().await;
    let img = image(7, 1, 100, "amd64");
    reg.push_image("del", "a", &img).await;
    reg.put_manifest("del", "b", MediaType::OCI_MANIFEST, &img.manifest.bytes)
        .await;
    // `?tag=` pushes several tags at once and echoes them in OCI-Tag.
    let r = reg
        .req(
            Method::PUT,
            &format!("/v2/del/manifests/{}?tag=c&tag=d", img.manifest.digest),
        )
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(img.manifest.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let tags: Vec<&str> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(tags, ["c", "d"]);
    // Deleting a tag keeps the manifest and the other tags.
    assert_eq!(
        reg.send(Method::DELETE, "/v2/del/manifests/a")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.send(Method::GET, "/v2/del/manifests/a").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.send(Method::GET, "/v2/del/manifests/b").await.status(),
        StatusCode::OK
    );
    // Deleting by digest removes every tag pointing at it.
    let d = &img.manifest.digest;
    assert_eq!(
        reg.send(Method::DELETE, &format!("/v2/del/manifests/{d}"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    for reference in ["b", "c", "d", d.as_str()] {
        let r = reg
            .send(Method::GET, &format!("/v2/del/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
    }
    let r = reg.send(Method::GET, "/v2/del/tags/list").await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!([]));
    let r = reg
        .send(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn unknown_and_invalid_references() {
    let reg = Registry::start().await;
    let r = reg.send(Method::GET, "/v2/nobody/manifests/latest").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    reg.push_image("some", "v1", &image(8, 1, 10, "amd64"))
        .await;
    let r = reg.send(Method::GET, "/v2/some/manifests/v2").await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // An invalid tag names nothing: 404 on reads (as the conformance suite expects), 400 on writes.
    for m in [Method::GET, Method::HEAD] {
        let r = reg
            .send(m.clone(), "/v2/some/manifests/.INVALID_MANIFEST_NAME")
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{m}");
    }
    let r = reg
        .send(
            Method::GET,
            &format!("/v2/some/manifests/{}", "t".repeat(300)),
        )
        .await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .put_manifest("some", ".bad", MediaType::OCI_MANIFEST, b"{}")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    let r = reg
        .send(Method::GET, "/v2/some/manifests/sha256:totallywrong")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .put_manifest(
            "some",
            "sha256:baddigeststring",
            MediaType::OCI_MANIFEST,
            b"{}",
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

/// A referrer artifact: empty config, one layer, the given subject.
pub fn artifact(
    subject: &Blob,
    artifact_type: Option<&str>,
    config_type: &str,
    note: Option<&str>,
) -> Blob {
    let empty = Digest::sha256(b"{}");
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": subject.descriptor(),
    });
    if let Some(a) = artifact_type {
        m["artifactType"] = serde_json::json!(a);
    }
    if let Some(n) = note {
        m["annotations"] = serde_json::json!({"org.example.note": n});
    }
    Blob::new(MediaType::OCI_MANIFEST, serde_json::to_vec(&m).unwrap())
}

#[tokio::test]
async fn a_damaged_manifest_is_never_served() {
    let reg = Registry::start().await;
    let img = image(9, 1, 10, "amd64");
    reg.push_image("dmg", "v1", &img).await;
    let d = &img.manifest.digest;
    let path = reg
        .dir
        .join("data/blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let r = reg.send(Method::GET, "/v2/dmg/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(r).await, "INTERNAL_ERROR");
}
