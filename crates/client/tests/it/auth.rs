//! Tokens: cached per repository and scope, a mount's token may pull from its source, a given
//! bearer token is sent as is.

use std::sync::{Arc, Mutex};

use ferry_client::{Credentials, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};

use crate::common::{Reply, Scripted};

fn decode(s: &str) -> String {
    s.replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2C", ",")
        .replace("%20", " ")
        .replace('+', " ")
}

/// A registry with its own token realm: a token is the list of scopes it was issued for, and a
/// request passes with a token holding the scopes it needs. The challenge names only the
/// request's repository (as registries do), never a mount's source.
async fn token_registry(port_slot: Arc<Mutex<u16>>) -> Scripted {
    Scripted::start(move |rq| {
        let port = *port_slot.lock().unwrap();
        if let Some(query) = rq.target.strip_prefix("/token?") {
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(decode)
                .collect();
            return Reply::new(200).body(format!(
                r#"{{"token":"{}","expires_in":300}}"#,
                scopes.join("|")
            ));
        }
        let path = rq.target.split('?').next().unwrap_or("");
        let repo = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split("/blobs/").next())
            .unwrap_or("")
            .to_owned();
        let mut needs = vec![if rq.method == "POST" {
            format!("repository:{repo}:pull,push")
        } else {
            format!("repository:{repo}:pull")
        }];
        if let Some(from) = rq.target.split("from=").nth(1) {
            needs.push(format!("repository:{}:pull", decode(from)));
        }
        let token = rq
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let held: Vec<&str> = token.split('|').collect();
        if token != "given" && !needs.iter().all(|n| held.contains(&n.as_str())) {
            return Reply::new(401).header(
                "www-authenticate",
                format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="s",scope="{}""#,
                    needs[0]
                ),
            );
        }
        match rq.method.as_str() {
            "POST" => Reply::new(201),
            _ => Reply::new(200).body("blob"),
        }
    })
    .await
}

#[tokio::test]
async fn tokens_are_cached_per_repository_and_a_mount_may_pull_from_its_source() {
    let port = Arc::new(Mutex::new(0));
    let server = token_registry(port.clone()).await;
    *port.lock().unwrap() = server.addr.port();
    let client = Registry::new(RegistryOptions {
        endpoint: server.url(),
        ..Default::default()
    })
    .unwrap();
    let (a, b) = (
        RepoName::new("team/a").unwrap(),
        RepoName::new("team/b").unwrap(),
    );
    let d = Digest::sha256(b"blob");
    for repo in [&a, &b, &a, &b] {
        client.get_blob(repo, &d, 0).await.unwrap();
    }
    let tokens = |server: &Scripted| {
        server
            .requests()
            .into_iter()
            .filter(|r| r.target.starts_with("/token"))
            .map(|r| decode(&r.target))
            .collect::<Vec<_>>()
    };
    // One token per repository, reused for its second pull.
    assert_eq!(tokens(&server).len(), 2, "{:?}", tokens(&server));
    assert!(client.mount_blob(&b, &d, &a).await.unwrap());
    let asked = tokens(&server);
    assert_eq!(asked.len(), 3);
    assert!(
        asked[2].contains("scope=repository:team/b:pull,push")
            && asked[2].contains("scope=repository:team/a:pull"),
        "{}",
        asked[2]
    );
}

#[tokio::test]
async fn a_given_bearer_token_is_sent_as_is() {
    let port = Arc::new(Mutex::new(0));
    let server = token_registry(port.clone()).await;
    *port.lock().unwrap() = server.addr.port();
    let client = Registry::new(RegistryOptions {
        endpoint: server.url(),
        credentials: Credentials::Bearer {
            token: "given".into(),
        },
        ..Default::default()
    })
    .unwrap();
    let repo = RepoName::new("team/a").unwrap();
    client
        .get_blob(&repo, &Digest::sha256(b"blob"), 0)
        .await
        .unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer given"));
}
