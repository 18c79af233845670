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

/// [`auth`] with ferry issuing tokens for service `ferry-test`.
fn token_auth() -> Auth {
    let (signer, _) = ferry_auth::TokenSigner::generate().unwrap();
    auth().with_tokens(ferry_server::auth::Tokens {
        realm: None,
        service: "ferry-test".into(),
        issuer: "ferry".into(),
        ttl_secs: 300,
        verifier: ferry_auth::TokenVerifier::from_signer(&signer),
        signer: Some(signer),
    })
}

/// `method path` with `token` as a bearer token.
async fn with_token(reg: &Registry, method: Method, path: &str, token: &str) -> reqwest::Response {
    reg.req(method, path)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The token `/token` answers `user` for `scope`.
async fn token(reg: &Registry, user: Option<&str>, scope: &str) -> String {
    let r = as_user(
        reg,
        user,
        Method::GET,
        &format!("/token?service=ferry-test&scope={scope}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{user:?} {scope}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_token_flow_challenge_token_retry() {
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(Arc::new(token_auth())),
        ..RegistryOptions::default()
    })
    .await;
    let img = image(193, 1, 1000, "amd64");
    let carol = token(&reg, Some("carol"), "repository:team/app:pull,push").await;
    reg.push_image_with("team/app", "v1", &img, &carol).await;
    let manifest = "/v2/team/app/manifests/v1";

    // The challenge names the realm, the service and the scope wanted.
    let r = reg.send(Method::GET, manifest).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let realm = format!("{}/token", reg.base);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"{realm}\",service=\"ferry-test\",scope=\"repository:team/app:pull\""
            )
            .as_str()
        )
    );
    let push = reg.send(Method::POST, "/v2/team/app/blobs/uploads/").await;
    assert!(
        header(&push, "www-authenticate")
            .unwrap()
            .contains("scope=\"repository:team/app:pull,push\"")
    );

    // bob's token: pull works; a push asks for more scope; the rules never give him push.
    let bob = token(&reg, Some("bob"), "repository:team/app:pull,push").await;
    let r = with_token(&reg, Method::GET, manifest, &bob).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = with_token(&reg, Method::POST, "/v2/team/app/blobs/uploads/", &bob).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    // alice's pushes.
    let alice = token(&reg, Some("alice"), "repository:team/app:pull,push").await;
    let r = with_token(&reg, Method::POST, "/v2/team/app/blobs/uploads/", &alice).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // A mount from a repository alice may pull: the first challenge asks for both scopes (as
    // Distribution's does); a token that lacks the source's is asked to come back with it; the
    // token that has both mounts.
    let layer = img.layers[0].digest.to_string();
    let mount = format!("/v2/team/copy/blobs/uploads/?mount={layer}&from=team/app");
    let first = reg.send(Method::POST, &mount).await;
    assert_eq!(
        header(&first, "www-authenticate"),
        Some(format!("Bearer realm=\"{realm}\",service=\"ferry-test\",scope=\"repository:team/copy:pull,push repository:team/app:pull\"").as_str())
    );
    let alice_copy = token(&reg, Some("alice"), "repository:team/copy:pull,push").await;
    let r = with_token(&reg, Method::POST, &mount, &alice_copy).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&r, "www-authenticate").unwrap().contains(
            "scope=\"repository:team/copy:pull,push repository:team/app:pull\",error=\"insufficient_scope\""
        ),
        "{:?}",
        header(&r, "www-authenticate")
    );
    let both = token(
        &reg,
        Some("alice"),
        "repository:team/copy:pull,push&scope=repository:team/app:pull",
    )
    .await;
    let r = with_token(&reg, Method::POST, &mount, &both).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Anonymous callers get a token too, granting what anonymous rules give.
    let carol = token(&reg, Some("carol"), "repository:public/app:pull,push").await;
    reg.push_image_with("public/app", "v1", &img, &carol).await;
    let anon = token(&reg, None, "repository:public/app:pull").await;
    let r = with_token(&reg, Method::GET, "/v2/public/app/manifests/v1", &anon).await;
    assert_eq!(r.status(), StatusCode::OK);

    // A token from another key, garbage, or bad credentials at /token: 401.
    let (other, _) = ferry_auth::TokenSigner::generate().unwrap();
    let forged = other
        .sign(&ferry_auth::Claims {
            iss: "ferry".into(),
            sub: "carol".into(),
            aud: ferry_auth::Audience::One("ferry-test".into()),
            exp: u64::MAX / 2,
            nbf: None,
            iat: None,
            jti: None,
            access: vec![],
        })
        .unwrap();
    for t in [forged.as_str(), "not.a.token", "e30.e30."] {
        let r = with_token(&reg, Method::GET, manifest, t).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{t}");
        assert!(
            header(&r, "www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
    }
    let r = reg
        .req(
            Method::GET,
            "/token?service=ferry-test&scope=repository:team/app:pull",
        )
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The OAuth2 form containerd posts first; a refresh grant is declined so it falls back to GET.
    let form = reg
        .req(Method::POST, "/token")
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("service", "ferry-test"),
            ("scope", "repository:team/app:pull"),
            ("client_id", "containerd"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let refresh = reg
        .req(Method::POST, "/token")
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_an_external_issuer_are_accepted_by_its_keys_alone() {
    let (issuer, _) = ferry_auth::TokenSigner::generate().unwrap();
    let jwks = serde_json::to_vec(&issuer.jwks()).unwrap();
    let auth = auth().with_tokens(ferry_server::auth::Tokens {
        realm: Some("https://auth.example/token".into()),
        service: "registry.example".into(),
        issuer: "auth.example".into(),
        ttl_secs: 300,
        signer: None,
        verifier: ferry_auth::TokenVerifier::from_jwks(&jwks).unwrap(),
    });
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(Arc::new(auth)),
        ..RegistryOptions::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64| ferry_auth::Claims {
        iss: "auth.example".into(),
        sub: "dave".into(),
        aud: ferry_auth::Audience::One(aud.into()),
        exp,
        nbf: None,
        iat: None,
        jti: None,
        access: vec![ferry_auth::Access {
            kind: "repository".into(),
            name: "any/thing".into(),
            actions: vec!["pull".into(), "push".into()],
        }],
    };
    let good = issuer.sign(&claims("registry.example", now + 300)).unwrap();
    let r = with_token(&reg, Method::POST, "/v2/any/thing/blobs/uploads/", &good).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "dave is in no rule, but the issuer granted it"
    );
    for bad in [
        issuer.sign(&claims("another.service", now + 300)).unwrap(),
        issuer
            .sign(&claims("registry.example", now - 3600))
            .unwrap(),
    ] {
        let r = with_token(&reg, Method::POST, "/v2/any/thing/blobs/uploads/", &bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            header(&r, "www-authenticate")
                .unwrap()
                .starts_with("Bearer realm=\"https://auth.example/token\"")
        );
    }
    // No token endpoint here.
    assert_eq!(
        reg.send(Method::GET, "/token").await.status(),
        StatusCode::NOT_FOUND
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_has_its_own_request_bucket() {
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(Arc::new(auth())),
        rate: Some(Arc::new(ferry_server::rate::RateLimits::new(0.5, 3.0))),
        ..RegistryOptions::default()
    })
    .await;
    // Three at once, then 429 with the wait; alice's bucket is not bob's, though they share an
    // address; anonymous callers draw from the address's.
    for user in [Some("alice"), Some("bob"), None] {
        for i in 0..3 {
            let r = as_user(&reg, user, Method::GET, "/v2/public/x/tags/list")
                .send()
                .await
                .unwrap();
            assert_ne!(
                r.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{user:?} request {i}"
            );
        }
        let r = as_user(&reg, user, Method::GET, "/v2/public/x/tags/list")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{user:?}");
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    }
    // Health checks are not counted.
    assert_eq!(
        reg.send(Method::GET, "/healthz").await.status(),
        StatusCode::OK
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_namespaces_stay_read_only_whatever_the_rules_grant() {
    use ferry_testkit::inproc::{MirrorSetup, Mirrored};
    let m = Mirrored::start_with(MirrorSetup {
        registry: RegistryOptions {
            auth: Some(Arc::new(auth())),
            ..RegistryOptions::default()
        },
        ..MirrorSetup::default()
    })
    .await;
    let img = image(197, 1, 1000, "amd64");
    m.seed("library/app", "v1", &img).await;
    let base = &m.mirror.base;
    let client = crate::Registry::start().await;
    let (carol, password) = USERS[2];
    // carol (group ops, every action anywhere) pulls through the mirror...
    let r = client
        .client
        .get(format!("{base}/v2/library/app/manifests/v1"))
        .header("accept", &img.manifest.media_type)
        .basic_auth(carol, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // ...but cannot push or delete there: the rules let her, the routing does not.
    for (method, path) in [
        (Method::POST, "/v2/library/app/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/library/app/manifests/v2".to_owned()),
        (
            Method::DELETE,
            format!("/v2/library/app/manifests/{}", img.manifest.digest),
        ),
    ] {
        let r = client
            .client
            .request(method.clone(), format!("{base}{path}"))
            .basic_auth(carol, Some(password))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::METHOD_NOT_ALLOWED || r.status() == StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.status()
        );
    }
    // Anonymous callers are challenged before anything reaches the upstream.
    m.seed("library/other", "v1", &img).await;
    let r = client
        .client
        .get(format!("{base}/v2/library/other/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for method in ["GET", "HEAD"] {
        assert_eq!(
            m.proxy.requests(method, "/v2/library/other/manifests/v1"),
            0
        );
    }
    client.stop().await;
    m.stop().await;
}

/// A keep-alive connection's credentials are remembered (so a check is not paid per request), but
/// never past a change: other credentials on the same connection, and an htpasswd reload, are
/// checked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_credentials_never_outlive_a_change() {
    let auth = Arc::new(auth());
    let reg = Registry::start_with(RegistryOptions {
        auth: Some(auth.clone()),
        ..RegistryOptions::default()
    })
    .await;
    let push = "/v2/team/app/blobs/uploads/";
    let base = |user: &str, password: &str| {
        reg.req(Method::GET, "/v2/")
            .basic_auth(user, Some(password))
            .send()
    };
    // One client, one request at a time: the same pooled connection throughout.
    for _ in 0..3 {
        assert_eq!(base("alice", "alice-pw").await.unwrap().status(), 200);
    }
    assert_eq!(base("alice", "wrong").await.unwrap().status(), 401);
    let r = as_user(&reg, Some("bob"), Method::POST, push)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "bob was taken for alice");
    let r = as_user(&reg, Some("alice"), Method::POST, push)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // alice's password changes: the old one stops working on the same connection at once.
    let htpasswd = format!(
        "alice:{}\nbob:{}\n",
        bcrypt::hash("alice-new", 4).unwrap(),
        bcrypt::hash("bob-pw", 4).unwrap()
    );
    auth.set_htpasswd(Htpasswd::parse(&htpasswd).unwrap());
    assert_eq!(base("alice", "alice-pw").await.unwrap().status(), 401);
    assert_eq!(base("alice", "alice-new").await.unwrap().status(), 200);
}
