//! Authentication and access control: basic credentials from an htpasswd file, client
//! certificates, rules per repository pattern; every refusal is a 401 (with a challenge) or 403
//! envelope, never a 5xx, and the catalog lists only what the caller may pull.

use std::sync::Arc;

use ferry_auth::{AccessPolicy, Htpasswd, Rule};
use ferry_server::RegistryOptions;
use ferry_server::auth::Auth;
use ferry_testkit::image::image;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use reqwest::{Method, StatusCode};

use crate::{Registry, error_code, header};

const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

fn rule(repos: &[&str], users: &[&str], groups: &[&str], anonymous: bool, actions: &str) -> Rule {
    let toml = format!(
        "repositories = {repos:?}\nusers = {users:?}\ngroups = {groups:?}\nanonymous = {anonymous}\nactions = {actions}\n"
    );
    toml::from_str(&toml).unwrap()
}

/// alice pushes to team/*, bob only reads it, carol (group ops) does anything anywhere, and
/// anyone reads public/*.
fn auth() -> Auth {
    let htpasswd: String = USERS
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    let rules = vec![
        rule(&["public/*"], &[], &[], true, r#"["pull"]"#),
        rule(&["team/*"], &["alice"], &[], false, r#"["pull", "push"]"#),
        rule(&["team/*"], &["bob"], &[], false, r#"["pull"]"#),
        rule(&["*"], &[], &["ops"], false, r#"["*"]"#),
    ];
    let groups = [("ops".to_owned(), vec!["carol".to_owned()])].into();
    Auth::new(
        "ferry-test",
        Some(Htpasswd::parse(&htpasswd).unwrap()),
        AccessPolicy::new(rules, groups).unwrap(),
    )
    .unwrap()
}

async fn start() -> (Registry, ferry_testkit::image::Image) {
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(Arc::new(auth())),
        ..RegistryOptions::default()
    })
    .await;
    let img = image(191, 2, 1000, "amd64");
    for repo in ["public/app", "team/app", "secret/app"] {
        for b in img.blobs() {
            let r = as_user(
                &reg,
                Some("carol"),
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={}", b.digest),
            )
            .body(b.bytes.clone())
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let r = as_user(
            &reg,
            Some("carol"),
            Method::PUT,
            &format!("/v2/{repo}/manifests/v1"),
        )
        .header("content-type", &img.manifest.media_type)
        .body(img.manifest.bytes.clone())
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    (reg, img)
}

fn as_user(
    reg: &Registry,
    user: Option<&str>,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let req = reg.req(method, path);
    match user.and_then(|u| USERS.iter().find(|(name, _)| *name == u)) {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_exactly_what_the_rules_grant() {
    let (reg, img) = start().await;
    let m = |repo: &str| format!("/v2/{repo}/manifests/v1");
    let blob = img.layers[0].digest.to_string();
    // (user, method, path) → (status, OCI code or "" for success)
    let table: Vec<(Option<&str>, Method, String, u16, &str)> = vec![
        (None, Method::GET, "/v2/".into(), 401, "UNAUTHORIZED"),
        (Some("bob"), Method::GET, "/v2/".into(), 200, ""),
        (None, Method::GET, m("public/app"), 200, ""),
        (
            None,
            Method::HEAD,
            format!("/v2/public/app/blobs/{blob}"),
            200,
            "",
        ),
        (None, Method::GET, m("team/app"), 401, "UNAUTHORIZED"),
        (
            None,
            Method::POST,
            "/v2/public/app/blobs/uploads/".into(),
            401,
            "UNAUTHORIZED",
        ),
        (Some("bob"), Method::GET, m("team/app"), 200, ""),
        (
            Some("bob"),
            Method::GET,
            "/v2/team/app/tags/list".into(),
            200,
            "",
        ),
        (
            Some("bob"),
            Method::POST,
            "/v2/team/app/blobs/uploads/".into(),
            403,
            "DENIED",
        ),
        (Some("bob"), Method::GET, m("secret/app"), 403, "DENIED"),
        (
            Some("alice"),
            Method::POST,
            "/v2/team/app/blobs/uploads/".into(),
            202,
            "",
        ),
        (
            Some("alice"),
            Method::DELETE,
            format!("/v2/team/app/manifests/{}", img.manifest.digest),
            403,
            "DENIED",
        ),
        (Some("alice"), Method::PUT, m("public/app"), 403, "DENIED"),
        (Some("alice"), Method::GET, m("secret/app"), 403, "DENIED"),
        (Some("carol"), Method::GET, m("secret/app"), 200, ""),
    ];
    for (user, method, path, status, code) in table {
        let r = as_user(&reg, user, method.clone(), &path)
            .send()
            .await
            .unwrap();
        let what = format!("{user:?} {method} {path}");
        assert_eq!(r.status().as_u16(), status, "{what}");
        if status == 401 {
            assert_eq!(
                header(&r, "www-authenticate"),
                Some("Basic realm=\"ferry-test\""),
                "{what}"
            );
        }
        if !code.is_empty() {
            assert_eq!(error_code(r).await, code, "{what}");
        }
    }
    // Credentials that do not check out are refused, not taken as anonymous.
    for (user, password) in [("alice", "wrong"), ("mallory", "alice-pw"), ("", "x")] {
        let r = reg
            .req(Method::GET, &m("public/app"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{user}:{password}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
    }
    // An empty user and password (what skopeo sends after a challenge, without credentials)
    // is anonymous.
    let r = reg
        .req(Method::GET, &m("public/app"))
        .basic_auth("", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_only_what_the_caller_may_pull_page_by_page() {
    let (reg, _) = start().await;
    let list = |user: Option<&'static str>, query: &'static str| {
        let req = as_user(&reg, user, Method::GET, &format!("/v2/_catalog{query}"));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let link = header(&r, "link").map(str::to_owned);
            let v: serde_json::Value = r.json().await.unwrap();
            let names: Vec<String> = v["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (names, link)
        }
    };
    assert_eq!(list(None, "").await.0, ["public/app"]);
    assert_eq!(list(Some("bob"), "").await.0, ["public/app", "team/app"]);
    assert_eq!(
        list(Some("carol"), "").await.0,
        ["public/app", "secret/app", "team/app"]
    );
    // Pages count visible names only.
    let (first, link) = list(Some("bob"), "?n=1").await;
    assert_eq!(first, ["public/app"]);
    assert!(
        link.is_some_and(|l| l.contains("last=public")),
        "a next link"
    );
    let (second, _) = list(Some("bob"), "?n=1&last=public/app").await;
    assert_eq!(second, ["team/app"]);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_from_a_repository_the_caller_cannot_pull_is_an_ordinary_upload() {
    let (reg, img) = start().await;
    let digest = img.layers[0].digest.to_string();
    // alice cannot pull secret/app: the mount does not happen (no 201 telling her the blob is
    // there); the upload session starts as for any blob.
    for query in [
        format!("?mount={digest}&from=secret/app"),
        format!("?mount={digest}"),
    ] {
        let r = as_user(
            &reg,
            Some("alice"),
            Method::POST,
            &format!("/v2/team/new/blobs/uploads/{query}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{query}");
    }
    // From a repository she can pull, the mount happens.
    let r = as_user(
        &reg,
        Some("alice"),
        Method::POST,
        &format!("/v2/team/new/blobs/uploads/?mount={digest}&from=team/app"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authorization_header_is_refused_with_an_envelope_never_a_5xx() {
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(Arc::new(auth())),
        ..RegistryOptions::default()
    })
    .await;
    let header_value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "(Basic|basic|Bearer|BASIC) [A-Za-z0-9+/=:!.~_-]{0,80}".prop_map(String::into_bytes),
        ("[a-z:]{0,12}", ".{0,20}").prop_map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
            .into_bytes()
        }),
    ];
    // A fixed number of cases: each is an HTTP request with a bcrypt check behind it.
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 300,
        ..proptest::test_runner::Config::default()
    });
    let cases: Vec<Vec<u8>> = (0..300)
        .map(|_| header_value.new_tree(&mut runner).unwrap().current())
        .collect();
    for value in cases {
        let Ok(hv) = reqwest::header::HeaderValue::from_bytes(&value) else {
            continue;
        };
        let r = reg
            .req(Method::GET, "/v2/team/app/manifests/v1")
            .header("authorization", hv)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{status} for {:?}",
            String::from_utf8_lossy(&value)
        );
        let code = error_code(r).await;
        assert!(code == "UNAUTHORIZED" || code == "DENIED", "{code}");
    }
    reg.stop().await;
}
