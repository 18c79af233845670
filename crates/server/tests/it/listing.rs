//! Tag listing, the catalog, referrers, and the index surviving a restart.

use ferry_oci::MediaType;
use ferry_testkit::image::{Blob, image};
use reqwest::{Method, StatusCode};

use crate::manifests::artifact;
use crate::{Registry, error_code, header};

async fn tags(reg: &Registry, query: &str) -> (Vec<String>, Option<String>) {
    let r = reg
        .send(Method::GET, &format!("/v2/t/tags/list{query}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    let link = header(&r, "link").map(str::to_owned);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["name"], "t");
    let t = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (t, link)
}

#[tokio::test]
async fn tags_list_is_sorted_and_paginates() {
    let reg = Registry::start().await;
    let img = image(20, 1, 10, "amd64");
    reg.push_image("t", "test0", &img).await;
    for tag in ["test1", "TEST0", "TEST1", "tagtest0", "b", "a_b", "1.0"] {
        let r = reg
            .put_manifest("t", tag, MediaType::OCI_MANIFEST, &img.manifest.bytes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let all = [
        "1.0", "TEST0", "TEST1", "a_b", "b", "tagtest0", "test0", "test1",
    ];
    assert_eq!(tags(&reg, "").await, (all.map(String::from).to_vec(), None));
    let (page, link) = tags(&reg, "?n=3").await;
    assert_eq!(page, ["1.0", "TEST0", "TEST1"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/t/tags/list?n=3&last=TEST1>; rel=\"next\"")
    );
    assert_eq!(
        tags(&reg, "?n=3&last=TEST1").await.0,
        ["a_b", "b", "tagtest0"]
    );
    // `last` without `n` returns everything after it; `n=0` returns nothing and no link.
    assert_eq!(tags(&reg, "?last=tagtest0").await.0, ["test0", "test1"]);
    assert_eq!(tags(&reg, "?n=0").await, (vec![], None));
    assert_eq!(tags(&reg, "?n=100").await.0.len(), 8);
    let r = reg.send(Method::GET, "/v2/t/tags/list?n=-1").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reg.send(Method::GET, "/v2/nothing/here/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates() {
    let reg = Registry::start().await;
    for repo in ["c", "a/b", "a", "b/c/d/e/f"] {
        reg.push_blob(repo, repo.as_bytes()).await;
    }
    let get = |q: &'static str| {
        let reg = &reg;
        async move {
            let r = reg.send(Method::GET, &format!("/v2/_catalog{q}")).await;
            let link = header(&r, "link").map(str::to_owned);
            let v: serde_json::Value = r.json().await.unwrap();
            (v["repositories"].clone(), link)
        }
    };
    assert_eq!(
        get("").await.0,
        serde_json::json!(["a", "a/b", "b/c/d/e/f", "c"])
    );
    let (page, link) = get("?n=2").await;
    assert_eq!(page, serde_json::json!(["a", "a/b"]));
    assert_eq!(
        link.as_deref(),
        Some("</v2/_catalog?n=2&last=a%2Fb>; rel=\"next\"")
    );
    assert_eq!(
        get("?n=2&last=a%2Fb").await.0,
        serde_json::json!(["b/c/d/e/f", "c"])
    );
}

async fn referrers(
    reg: &Registry,
    repo: &str,
    subject: &str,
    query: &str,
) -> (serde_json::Value, Option<String>) {
    let r = reg
        .send(
            Method::GET,
            &format!("/v2/{repo}/referrers/{subject}{query}"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), Some(MediaType::OCI_INDEX));
    let filters = header(&r, "oci-filters-applied").map(str::to_owned);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], MediaType::OCI_INDEX);
    (v["manifests"].clone(), filters)
}

fn digests(list: &serde_json::Value) -> Vec<String> {
    let mut d: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    d.sort();
    d
}

#[tokio::test]
async fn referrers_list_filter_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start_in(tmp.path(), Default::default()).await;
    let subject = image(21, 1, 10, "amd64");
    reg.push_blob("ref", b"{}").await;
    // Referrers may arrive before their subject.
    let sig = artifact(
        &subject.manifest,
        Some("application/vnd.example.sig"),
        MediaType::OCI_EMPTY,
        Some("sig"),
    );
    let sbom = artifact(
        &subject.manifest,
        None,
        "application/vnd.example.sbom.config",
        Some("sbom"),
    );
    for a in [&sig, &sbom] {
        let r = reg
            .put_manifest("ref", a.digest.as_str(), MediaType::OCI_MANIFEST, &a.bytes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            header(&r, "oci-subject"),
            Some(subject.manifest.digest.as_str())
        );
    }
    reg.push_image("ref", "v1", &subject).await;
    // An index can refer to a subject too.
    let idx = serde_json::json!({
        "schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "artifactType": "application/vnd.example.bundle",
        "manifests": [sig.descriptor()], "subject": subject.manifest.descriptor(),
        "annotations": {"org.example.note": "bundle"},
    });
    let idx = Blob::new(MediaType::OCI_INDEX, serde_json::to_vec(&idx).unwrap());
    let r = reg
        .put_manifest("ref", idx.digest.as_str(), MediaType::OCI_INDEX, &idx.bytes)
        .await;
    assert_eq!(
        header(&r, "oci-subject"),
        Some(subject.manifest.digest.as_str())
    );

    let s = subject.manifest.digest.as_str();
    let (list, filters) = referrers(&reg, "ref", s, "").await;
    assert_eq!(filters, None);
    let mut want = vec![
        sig.digest.to_string(),
        sbom.digest.to_string(),
        idx.digest.to_string(),
    ];
    want.sort();
    assert_eq!(digests(&list), want);
    for m in list.as_array().unwrap() {
        let (artifact_type, note, media_type, size) = if m["digest"] == sig.digest.as_str() {
            (
                "application/vnd.example.sig",
                "sig",
                MediaType::OCI_MANIFEST,
                sig.bytes.len(),
            )
        } else if m["digest"] == sbom.digest.as_str() {
            (
                "application/vnd.example.sbom.config",
                "sbom",
                MediaType::OCI_MANIFEST,
                sbom.bytes.len(),
            )
        } else {
            (
                "application/vnd.example.bundle",
                "bundle",
                MediaType::OCI_INDEX,
                idx.bytes.len(),
            )
        };
        assert_eq!(m["artifactType"], artifact_type);
        assert_eq!(
            m["annotations"],
            serde_json::json!({"org.example.note": note})
        );
        assert_eq!(m["mediaType"], media_type);
        assert_eq!(m["size"], size);
    }
    let (list, filters) = referrers(
        &reg,
        "ref",
        s,
        "?artifactType=application%2Fvnd.example.sig",
    )
    .await;
    assert_eq!(filters.as_deref(), Some("artifactType"));
    assert_eq!(digests(&list), [sig.digest.to_string()]);

    // Unknown subjects and unknown repositories: an empty index, not a 404.
    let none = ferry_oci::Digest::sha256(b"nothing refers to me");
    assert_eq!(
        referrers(&reg, "ref", none.as_str(), "").await.0,
        serde_json::json!([])
    );
    assert_eq!(
        referrers(&reg, "no/such/repo", s, "").await.0,
        serde_json::json!([])
    );
    let r = reg
        .send(Method::GET, "/v2/ref/referrers/sha256:short")
        .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // Deleting a referrer removes it from the listing.
    reg.send(
        Method::DELETE,
        &format!("/v2/ref/manifests/{}", sbom.digest),
    )
    .await;
    assert_eq!(digests(&referrers(&reg, "ref", s, "").await.0).len(), 2);

    // The index is rebuilt from the files: same tags, manifests and referrers after a restart.
    reg.stop().await;
    let reg = Registry::start_in(tmp.path(), Default::default()).await;
    let mut want = vec![sig.digest.to_string(), idx.digest.to_string()];
    want.sort();
    assert_eq!(digests(&referrers(&reg, "ref", s, "").await.0), want);
    let g = reg.send(Method::GET, "/v2/ref/manifests/v1").await;
    assert_eq!(
        g.bytes().await.unwrap().as_ref(),
        &subject.manifest.bytes[..]
    );
    reg.stop().await;
}
