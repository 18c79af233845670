//! The admin API: off without a token, 401 without the right one, and what it does with it.

use ferry_testkit::image::image;
use reqwest::{Method, StatusCode};

use crate::{Registry, error_code};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn admin(
    reg: &Registry,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut r = reg.req(method, path);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn off_without_a_token() {
    let reg = Registry::start().await;
    let r = admin(&reg, Method::GET, "/admin/images", Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("admin API is off"));
}

#[tokio::test]
async fn token_list_prune_and_bad_parameters() {
    let reg = Registry::start_with(ferry_server::RegistryOptions {
        admin_token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    reg.push_image("team/a", "v1", &image(81, 1, 1000, "amd64"))
        .await;
    reg.push_image("team/b", "v1", &image(82, 1, 1000, "amd64"))
        .await;

    for token in [None, Some("wrong-token-wrong-token-wrong-to"), Some("")] {
        let r = admin(&reg, Method::GET, "/admin/images", token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"ferry-admin\""
        );
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
    }
    let r = admin(&reg, Method::GET, "/admin/images", Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    let r = admin(
        &reg,
        Method::POST,
        "/admin/prune?repository=team/b&dry-run=true",
        Some(TOKEN),
    )
    .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["images"], serde_json::json!(["team/b:v1"]));
    assert_eq!(
        reg.send(Method::GET, "/v2/team/b/manifests/v1")
            .await
            .status(),
        StatusCode::OK
    );
    let r = admin(
        &reg,
        Method::POST,
        "/admin/prune?pattern=%5Eteam%2Fb%3A",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        reg.send(Method::GET, "/v2/team/b/manifests/v1")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.send(Method::GET, "/v2/team/a/manifests/v1")
            .await
            .status(),
        StatusCode::OK
    );

    // Bad parameters are 400s with an OCI body, never a traversal or a 500.
    for (path, code) in [
        ("/admin/images?repository=..%2F..%2Fetc", "NAME_INVALID"),
        ("/admin/prune?repository=a%2F..%2Fb", "NAME_INVALID"),
        ("/admin/prune?accessed-before=yesterday", "UNSUPPORTED"),
        ("/admin/prune?pattern=%28unclosed", "UNSUPPORTED"),
        ("/admin/prune", "UNSUPPORTED"),
    ] {
        let m = if path.starts_with("/admin/images") {
            Method::GET
        } else {
            Method::POST
        };
        let r = admin(&reg, m, path, Some(TOKEN)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(r).await, code, "{path}");
    }
    let r = admin(&reg, Method::POST, "/admin/fsck", Some(TOKEN)).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["corrupt"].as_array().unwrap().is_empty());
    let r = admin(&reg, Method::GET, "/admin/stats", Some(TOKEN)).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["blobs"].as_u64().unwrap() >= 2);
    assert_eq!(
        admin(&reg, Method::GET, "/admin/nope", Some(TOKEN))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
