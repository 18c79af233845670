//! `ferry catalog` and `ferry info` against a real CNCF Distribution (`docker-registry`), and
//! `ferry info quay://…` against an in-process server of Quay's REST shapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_client::{Registry, RegistryOptions};
use ferry_oci::{MediaType, RepoName};
use ferry_testkit::image::{Blob, Image, image, index};
use ferry_testkit::peers::{DockerRegistry, free_port};

use crate::inspect::{failure, ferry, json, stdout_ok};

/// Pushes `img` to `repo:tag` with ferry's own client (much faster than a skopeo per image).
pub(crate) async fn push(registry: &Registry, repo: &str, tag: &str, img: &Image) {
    let repo = RepoName::new(repo).unwrap();
    for b in img.blobs() {
        registry
            .push_blob(&repo, &b.digest, Bytes::from(b.bytes.clone()))
            .await
            .unwrap();
    }
    registry
        .put_manifest(
            &repo,
            tag,
            MediaType::OCI_MANIFEST,
            Bytes::from(img.manifest.bytes.clone()),
        )
        .await
        .unwrap();
}

/// Twelve `team/app-NN:latest` images (amd64 for even NN, arm64 for odd), `v1` tags on the
/// first three, and names a `team/app-*` pattern must not match: `team/app`, `team/app-03/sub`,
/// `other/app-00`; plus `team/multi:v1`, an index of two platforms.
struct Seeded {
    registry: DockerRegistry,
    apps: BTreeMap<String, Image>,
    multi: (Blob, Image, Image),
    every_repository: Vec<String>,
}

fn seeded() -> Option<Seeded> {
    let registry = DockerRegistry::start_logged()?;
    let client = Registry::new(RegistryOptions {
        endpoint: format!("http://{}", registry.host()),
        ..Default::default()
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut apps = BTreeMap::new();
    let (amd, arm) = (image(100, 1, 3000, "amd64"), image(101, 2, 2000, "arm64"));
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    rt.block_on(async {
        for i in 0..12u64 {
            let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
            let img = image(i, 1 + (i as usize % 2), 1000 + 10 * i as usize, arch);
            let repo = format!("team/app-{i:02}");
            push(&client, &repo, "latest", &img).await;
            if i < 3 {
                push(&client, &repo, "v1", &img).await;
            }
            apps.insert(repo, img);
        }
        let decoy = image(50, 1, 500, "amd64");
        for repo in ["team/app", "team/app-03/sub", "other/app-00"] {
            push(&client, repo, "latest", &decoy).await;
        }
        let multi = RepoName::new("team/multi").unwrap();
        for (child, _) in [(&amd, "amd64"), (&arm, "arm64")] {
            push(&client, "team/multi", child.manifest.digest.as_str(), child).await;
        }
        client
            .put_manifest(
                &multi,
                "v1",
                MediaType::OCI_INDEX,
                Bytes::from(idx.bytes.clone()),
            )
            .await
            .unwrap();
    });
    let mut every_repository: Vec<String> = apps.keys().cloned().collect();
    every_repository
        .extend(["team/app", "team/app-03/sub", "other/app-00", "team/multi"].map(String::from));
    every_repository.sort();
    Some(Seeded {
        registry,
        apps,
        multi: (idx, amd, arm),
        every_repository,
    })
}

fn layers_size(img: &Image) -> u64 {
    img.layers.iter().map(|l| l.bytes.len() as u64).sum()
}

#[test]
fn catalog_lists_every_repository_across_pages() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let before = s.registry.count_requests("GET", "/v2/_catalog");
    let lines: Vec<String> =
        stdout_ok(&["catalog", "--page-size", "4", &format!("registry://{host}")])
            .lines()
            .map(str::to_owned)
            .collect();
    assert_eq!(lines, s.every_repository);
    // 16 names at 4 a page: the client followed the registry's Link pages to the end.
    let pages = s.registry.count_requests("GET", "/v2/_catalog") - before;
    assert!(pages >= 4, "{pages} catalog requests");

    let v = json(&["catalog", "--json", &format!("docker://{host}/")]);
    assert_eq!(v["registry"], host);
    assert_eq!(v["repositories"], serde_json::json!(s.every_repository));

    let port = free_port();
    let err = failure(&["catalog", &format!("registry://127.0.0.1:{port}")]);
    assert!(err.contains("Connection refused"), "{err}");
    let err = failure(&["catalog", &format!("registry://{host}/team/app")]);
    assert!(err.contains("registry://host[:port]"), "{err}");
}

#[test]
fn info_resolves_a_wildcard_over_the_catalog_and_tag_lists() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let pattern = format!("registry://{host}/team/app-*:latest");
    let v = json(&[
        "info",
        "--json",
        "--jobs",
        "4",
        "--page-size",
        "5",
        &pattern,
    ]);
    let got = v.as_array().unwrap();
    // Exactly the twelve team/app-NN, in order; not team/app, team/app-03/sub or other/app-00.
    let names: Vec<&str> = got.iter().map(|o| o["name"].as_str().unwrap()).collect();
    let want: Vec<String> = s
        .apps
        .keys()
        .map(|r| format!("{host}/{r}:latest"))
        .collect();
    assert_eq!(names, want);
    for (o, img) in got.iter().zip(s.apps.values()) {
        assert_eq!(o["digest"], img.manifest.digest.to_string(), "{o}");
        assert_eq!(o["mediaType"], MediaType::OCI_MANIFEST, "{o}");
        assert_eq!(o["size"], layers_size(img), "{o}");
        assert_eq!(o["config"], img.config.digest.to_string(), "{o}");
        assert_eq!(o["layers"].as_array().unwrap().len(), img.layers.len());
    }
    assert_eq!(got[0]["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(got[1]["platforms"], serde_json::json!(["linux/arm64"]));

    // Text: one tab-separated line per image.
    let text = stdout_ok(&["info", &pattern]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 12, "{text}");
    let first = s.apps.values().next().unwrap();
    assert_eq!(
        lines[0],
        format!(
            "{host}/team/app-00:latest\t{}\t{}\tlinux/amd64\t{}",
            first.manifest.digest,
            MediaType::OCI_MANIFEST,
            layers_size(first)
        )
    );

    // `?` is one character, and a tag pattern reads each tag list.
    let v = json(&[
        "info",
        "--json",
        &format!("registry://{host}/team/app-0?:v*"),
    ]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["00", "01", "02"].map(|n| format!("{host}/team/app-{n}:v1"))
    );

    // A literal tag over a repository wildcard names only the repositories that have it.
    let v = json(&[
        "info",
        "--json",
        &format!("registry://{host}/team/app-*:v1"),
    ]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["00", "01", "02"].map(|n| format!("{host}/team/app-{n}:v1"))
    );

    // An index: every platform, and the layers of all of them.
    let (idx, amd, arm) = &s.multi;
    let v = json(&[
        "info",
        "--json",
        &format!("registry://{host}/team/mult?:v1"),
    ]);
    let o = &v[0];
    assert_eq!(o["digest"], idx.digest.to_string());
    assert_eq!(o["mediaType"], MediaType::OCI_INDEX);
    assert_eq!(
        o["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(o["size"], layers_size(amd) + layers_size(arm));

    // No wildcard: just that image, no catalog read.
    let before = s.registry.count_requests("GET", "/v2/_catalog");
    let v = json(&["info", "--json", &format!("registry://{host}/team/app-05")]);
    assert_eq!(
        v[0]["digest"],
        s.apps["team/app-05"].manifest.digest.to_string()
    );
    assert_eq!(s.registry.count_requests("GET", "/v2/_catalog"), before);
}

#[test]
fn a_failed_image_is_reported_and_the_others_still_print() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let good = format!("registry://{host}/team/app-00:latest");
    let missing = format!("registry://{host}/team/app-01:nope");
    let also_good = format!("registry://{host}/team/app-02:v1");
    let out = ferry(&["info", &good, &missing, &also_good]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with(&format!("{host}/team/app-00:latest\t")));
    assert!(lines[1].starts_with(&format!("{host}/team/app-02:v1\t")));
    assert!(
        stderr.contains(&format!("manifest unknown: {host}/team/app-01:nope")),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 3 images failed"), "{stderr}");

    // In JSON the failure is an object of its own, in place.
    let out = ferry(&["info", "--json", &good, &missing]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], format!("{host}/team/app-00:latest"));
    assert!(
        v[1]["error"].as_str().unwrap().contains("manifest unknown"),
        "{v}"
    );

    // Errors that stop the whole command are one line.
    let port = free_port();
    let err = failure(&["info", &format!("registry://127.0.0.1:{port}/team/*")]);
    assert!(err.contains("Connection refused"), "{err}");
    let err = failure(&["info", &format!("registry://{host}/*/app")]);
    assert!(
        err.contains("only in the repository's last component"),
        "{err}"
    );
    let err = failure(&["info", "oci:/tmp/layout"]);
    assert!(err.contains("registry:// and quay://"), "{err}");
}

/// An in-process server of Quay's shapes (quay/quay `endpoints/api/repository.py` and
/// `endpoints/api/tag.py`): `/api/v1/repository?namespace=` two repositories a page with an
/// opaque `next_page`, `/api/v1/repository/NS/REPO/tag/` two tags a page with `has_additional`,
/// both only with `Authorization: Bearer t0ken`; and the registry API's manifests and blobs.
pub(crate) mod fake_quay {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode, header};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct State {
        /// `namespace/name` → tags (each tag's image).
        pub repos: BTreeMap<String, BTreeMap<String, Image>>,
        /// Path and query of every API request.
        pub seen: Mutex<Vec<String>>,
        /// While set to `(n, total)`: each manifest request is answered only once `n` manifest
        /// requests are in flight together (or all `total` have arrived), so a client that keeps
        /// `n` in flight is seen doing it, and one that keeps fewer waits out `HOLD_LIMIT`.
        pub hold: Mutex<Option<(usize, usize)>>,
        pub manifests_in_flight: AtomicUsize,
        pub manifests_started: AtomicUsize,
        /// The most manifest requests ever in flight together.
        pub most_in_flight: AtomicUsize,
        /// Manifest requests up to this number (in arrival order) may be answered.
        pub released: AtomicUsize,
        pub changed: tokio::sync::Notify,
    }

    impl State {
        pub fn new(repos: BTreeMap<String, BTreeMap<String, Image>>) -> State {
            State {
                repos,
                seen: Mutex::default(),
                hold: Mutex::default(),
                manifests_in_flight: AtomicUsize::new(0),
                manifests_started: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
                released: AtomicUsize::new(0),
                changed: tokio::sync::Notify::new(),
            }
        }
    }

    /// A failsafe, not a synchronisation: a client that never reaches the concurrency a hold
    /// waits for still gets its answers, late, and the test then fails on `most_in_flight`.
    const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

    const OVERSHOOT_WINDOW: std::time::Duration = std::time::Duration::from_millis(200);

    /// Counts a manifest request in and, under a hold, waits for its company.
    async fn manifest_arrives(state: &State) {
        let me = state.manifests_started.fetch_add(1, Ordering::SeqCst) + 1;
        let now = state.manifests_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let Some((n, total)) = *state.hold.lock().unwrap() else {
            return;
        };
        if now >= n || me >= total {
            // This request completes a cohort (or is the last): it and every one before it may
            // go, after a moment in which a client that overshoots would send more (and be seen
            // in `most_in_flight`). A client within bounds sends nothing then: the pause only
            // costs time, it orders nothing.
            tokio::time::sleep(OVERSHOOT_WINDOW).await;
            state.released.fetch_max(me, Ordering::SeqCst);
            state.changed.notify_waiters();
        }
        let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
        loop {
            let notified = state.changed.notified();
            if state.released.load(Ordering::SeqCst) >= me {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    }

    fn json(v: serde_json::Value) -> Response<Body> {
        reply(
            StatusCode::OK,
            "application/json",
            v.to_string().into_bytes(),
        )
    }

    fn query(q: &str) -> BTreeMap<String, String> {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    async fn handle(state: Arc<State>, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let q = query(req.uri().query().unwrap_or(""));
        let not_found = || reply(StatusCode::NOT_FOUND, "text/plain", b"not found".to_vec());
        if let Some(rest) = path.strip_prefix("/api/v1/") {
            state
                .seen
                .lock()
                .unwrap()
                .push(format!("{path}?{}", req.uri().query().unwrap_or("")));
            let authorized = req
                .headers()
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v == "Bearer t0ken");
            if !authorized {
                return reply(StatusCode::UNAUTHORIZED, "application/json", b"{}".to_vec());
            }
            if rest == "repository" {
                let ns = q.get("namespace").cloned().unwrap_or_default();
                let names: Vec<&String> = state
                    .repos
                    .keys()
                    .filter(|r| r.starts_with(&format!("{ns}/")))
                    .collect();
                // Page tokens are opaque: "tok-N" starts at the N-th name.
                let start: usize = q
                    .get("next_page")
                    .and_then(|t| t.strip_prefix("tok-"))
                    .map_or(0, |n| n.parse().unwrap());
                let page: Vec<serde_json::Value> = names
                    .iter()
                    .skip(start)
                    .take(2)
                    .map(|r| {
                        let (namespace, name) = r.split_once('/').unwrap();
                        serde_json::json!({"namespace": namespace, "name": name, "is_public": true})
                    })
                    .collect();
                let mut body = serde_json::json!({ "repositories": page });
                if start + 2 < names.len() {
                    body["next_page"] = serde_json::json!(format!("tok-{}", start + 2));
                }
                return json(body);
            }
            let Some(repo) = rest
                .strip_prefix("repository/")
                .and_then(|r| r.strip_suffix("/tag/"))
            else {
                return not_found();
            };
            let Some(tags) = state.repos.get(repo) else {
                return not_found();
            };
            // The shape Quay documents: active tags, at most 100 a page, pages from 1.
            if q.get("onlyActiveTags").map(String::as_str) != Some("true")
                || q.get("limit").map(String::as_str) != Some("100")
            {
                return reply(StatusCode::BAD_REQUEST, "application/json", b"{}".to_vec());
            }
            let page: usize = q.get("page").map_or(1, |p| p.parse().unwrap());
            let matching: Vec<(&String, &Image)> = tags
                .iter()
                .filter(|(t, _)| q.get("specificTag").is_none_or(|s| s == *t))
                .collect();
            let listed: Vec<serde_json::Value> = matching
                .iter()
                .skip((page - 1) * 2)
                .take(2)
                .map(|(t, img)| {
                    serde_json::json!({"name": t, "manifest_digest": img.manifest.digest.to_string(), "reversion": false})
                })
                .collect();
            return json(serde_json::json!({
                "tags": listed,
                "page": page,
                "has_additional": page * 2 < matching.len(),
            }));
        }
        // The registry API, anonymous: /v2/NS/NAME/(manifests|blobs)/REF.
        let Some(rest) = path.strip_prefix("/v2/") else {
            return not_found();
        };
        for (kind, sep) in [("manifests", "/manifests/"), ("blobs", "/blobs/")] {
            let Some((repo, reference)) = rest.rsplit_once(sep) else {
                continue;
            };
            let Some(tags) = state.repos.get(repo) else {
                return not_found();
            };
            for (tag, img) in tags {
                if kind == "manifests"
                    && (reference == tag || reference == img.manifest.digest.as_str())
                {
                    manifest_arrives(&state).await;
                    let r = reply(
                        StatusCode::OK,
                        MediaType::OCI_MANIFEST,
                        img.manifest.bytes.clone(),
                    );
                    state.manifests_in_flight.fetch_sub(1, Ordering::SeqCst);
                    return r;
                }
                if kind == "blobs"
                    && let Some(b) = img.blobs().find(|b| b.digest.as_str() == reference)
                {
                    return reply(StatusCode::OK, "application/octet-stream", b.bytes.clone());
                }
            }
        }
        not_found()
    }

    /// Serves `state` on 127.0.0.1 from a runtime of its own; keep the runtime alive.
    pub fn start(state: Arc<State>) -> (String, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let app =
            axum::Router::new().fallback(move |req: Request<Body>| handle(state.clone(), req));
        rt.spawn(async move { axum::serve(listener, app).await });
        (host, rt)
    }
}

#[test]
fn info_resolves_quay_patterns_through_its_rest_api() {
    // org/app-a..e, each with tags v1, v2, latest; org/lib (no match); other/app-z (another
    // namespace).
    let mut repos: BTreeMap<String, BTreeMap<String, Image>> = BTreeMap::new();
    let mut seed = 0;
    for name in [
        "org/app-a",
        "org/app-b",
        "org/app-c",
        "org/app-d",
        "org/app-e",
        "org/lib",
        "other/app-z",
    ] {
        let mut tags = BTreeMap::new();
        for tag in ["latest", "v1", "v2"] {
            seed += 1;
            tags.insert(tag.to_owned(), image(seed, 1, 800, "amd64"));
        }
        repos.insert(name.to_owned(), tags);
    }
    let state = Arc::new(fake_quay::State::new(repos));
    let (host, _rt) = fake_quay::start(state.clone());
    let info = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(crate::ferry_bin());
        cmd.args(args)
            .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
            .env_remove("FERRY_LOG")
            .env_remove("QUAY_TOKEN");
        if let Some(t) = token {
            cmd.env("QUAY_TOKEN", t);
        }
        cmd.output().unwrap()
    };

    // Ten images, three requests at a time: the fake answers manifests only in threes.
    *state.hold.lock().unwrap() = Some((3, 10));
    let out = info(
        &[
            "info",
            "--json",
            "--jobs",
            "3",
            &format!("quay://{host}/org/app-*:v?"),
        ],
        Some("t0ken"),
    );
    *state.hold.lock().unwrap() = None;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want = Vec::new();
    for r in ["a", "b", "c", "d", "e"] {
        for t in ["v1", "v2"] {
            let repo = format!("org/app-{r}");
            let digest = state.repos[&repo][t].manifest.digest.to_string();
            want.push((format!("{host}/{repo}:{t}"), digest));
        }
    }
    assert_eq!(got, want);
    assert_eq!(
        state
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        3,
        "--jobs 3 keeps three manifest requests in flight, never more"
    );
    let seen = state.seen.lock().unwrap().clone();
    // The repository list was followed through its page tokens, and tag lists through pages.
    assert!(
        seen.iter()
            .any(|s| s == "/api/v1/repository?namespace=org&next_page=tok-4"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.starts_with("/api/v1/repository/org/app-c/tag/?") && s.contains("page=2")),
        "{seen:?}"
    );

    // A literal tag asks Quay for that tag only.
    let out = info(
        &["info", &format!("quay://{host}/org/app-?:latest")],
        Some("t0ken"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 5);
    let seen = state.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.contains("/org/app-a/tag/?") && s.contains("specificTag=latest")),
        "{seen:?}"
    );

    // Without the token, Quay refuses, and the one error line says what to do.
    let out = info(&["info", &format!("quay://{host}/org/*:v1")], None);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--token"), "{err}");
}
