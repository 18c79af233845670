//! `ferry inspect` and `ferry tags` against a real CNCF Distribution (`docker-registry`).

use std::process::{Command, Output};

use ferry_oci::Digest;
use ferry_testkit::image::{Blob, Image, image, write_layout};
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo, free_port};

use crate::ferry_bin;

pub(crate) fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        // No credentials from the machine's docker config.
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

pub(crate) fn stdout_ok(args: &[&str]) -> String {
    let out = ferry(args);
    assert!(
        out.status.success(),
        "ferry {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_ok(args)).unwrap()
}

/// The one-line error of a command that must fail.
pub(crate) fn failure(args: &[&str]) -> String {
    let out = ferry(args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "ferry {args:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

/// A registry holding `team/app:v1` (one image) and `team/multi:v1` (an amd64 + arm64 index).
struct Seeded {
    _tmp: tempfile::TempDir,
    registry: DockerRegistry,
    skopeo: Skopeo,
    app: Image,
    amd: Image,
    arm: Image,
    idx: Blob,
}

fn seeded() -> Option<Seeded> {
    let (Some(skopeo), Some(registry)) = (Skopeo::new(), DockerRegistry::start()) else {
        return None;
    };
    let tmp = tempfile::tempdir().unwrap();
    let app = image(7, 3, 20_000, "amd64");
    skopeo.push_image(
        &app,
        tmp.path(),
        &format!("{}/team/app:v1", registry.host()),
    );
    let amd = image(1, 2, 10_000, "amd64");
    let arm = image(2, 2, 10_000, "arm64");
    let idx = skopeo.push_index(
        &[(&amd, "amd64"), (&arm, "arm64")],
        tmp.path(),
        &format!("{}/team/multi:v1", registry.host()),
    );
    Some(Seeded {
        _tmp: tmp,
        registry,
        skopeo,
        app,
        amd,
        arm,
        idx,
    })
}

#[test]
fn inspect_shows_digest_config_platform_layers_and_total_of_an_image() {
    let Some(s) = seeded() else { return };
    let reference = format!("registry://{}/team/app:v1", s.registry.host());
    let v = json(&["inspect", "--json", &reference]);
    assert_eq!(v["digest"], s.app.manifest.digest.to_string());
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(v["config"], s.app.config.digest.to_string());
    assert_eq!(v["os"], "linux");
    assert_eq!(v["architecture"], "amd64");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), s.app.layers.len());
    for (got, want) in layers.iter().zip(&s.app.layers) {
        assert_eq!(got["digest"], want.digest.to_string());
        assert_eq!(got["size"], want.bytes.len() as u64);
        assert_eq!(got["mediaType"], want.media_type);
    }
    let total: u64 = s.app.layers.iter().map(|l| l.bytes.len() as u64).sum();
    assert_eq!(v["size"], total);

    // The text form says the same things.
    let text = stdout_ok(&["inspect", &reference]);
    assert!(text.contains(&s.app.manifest.digest.to_string()), "{text}");
    assert!(text.contains("linux/amd64"), "{text}");
    assert!(
        text.contains(&format!("Total size: {total} bytes")),
        "{text}"
    );
    for l in &s.app.layers {
        assert!(text.contains(&l.digest.to_string()), "{text}");
    }
}

#[test]
fn inspect_raw_is_the_manifest_byte_for_byte() {
    let Some(s) = seeded() else { return };
    // A manifest as a person might write it: indented, keys in no canonical order, a final
    // newline. Re-serialising it would change its bytes and digest.
    let v: serde_json::Value = serde_json::from_slice(&s.app.manifest.bytes).unwrap();
    let text = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": {},\n   \"layers\": {},\n   \"config\": {}\n}}\n",
        v["mediaType"], v["layers"], v["config"]
    );
    let written = Blob::new(&s.app.manifest.media_type, text.into_bytes());
    let layout = s._tmp.path().join("written");
    write_layout(
        &layout,
        &s.app.blobs().collect::<Vec<_>>(),
        &[("v1", &written)],
    )
    .unwrap();
    s.skopeo.copy(
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/team/written:v1", s.registry.host()),
        &[],
    );
    for (repo, want) in [
        ("team/app:v1", &s.app.manifest),
        ("team/multi:v1", &s.idx),
        ("team/written:v1", &written),
    ] {
        let host = s.registry.host();
        let raw = ferry(&["inspect", "--raw", &format!("registry://{host}/{repo}")]);
        assert!(raw.status.success());
        // Digests first: a failure then shows two short strings, not two byte arrays.
        assert_eq!(Digest::sha256(&raw.stdout), want.digest, "{repo}");
        assert_eq!(raw.stdout, want.bytes, "{repo}");
        assert_eq!(raw.stdout, s.skopeo.raw(&format!("docker://{host}/{repo}")));
    }
}

#[test]
fn inspect_lists_the_platforms_of_an_index_and_picks_one() {
    let Some(s) = seeded() else { return };
    let reference = format!("registry://{}/team/multi:v1", s.registry.host());
    let v = json(&["inspect", "--json", &reference]);
    assert_eq!(v["digest"], s.idx.digest.to_string());
    let children: Vec<(String, String, u64)> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["platform"].as_str().unwrap().to_owned(),
                c["digest"].as_str().unwrap().to_owned(),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        children,
        [
            (
                "linux/amd64".to_owned(),
                s.amd.manifest.digest.to_string(),
                s.amd.manifest.bytes.len() as u64
            ),
            (
                "linux/arm64".to_owned(),
                s.arm.manifest.digest.to_string(),
                s.arm.manifest.bytes.len() as u64
            ),
        ]
    );

    let arm = json(&["inspect", "--json", "--platform", "linux/arm64", &reference]);
    assert_eq!(arm["digest"], s.arm.manifest.digest.to_string());
    assert_eq!(arm["architecture"], "arm64");
    assert_eq!(arm["config"], s.arm.config.digest.to_string());
    let raw = ferry(&["inspect", "--raw", "--platform", "linux/amd64", &reference]);
    assert_eq!(raw.stdout, s.amd.manifest.bytes);

    let err = failure(&["inspect", "--platform", "linux/s390x", &reference]);
    assert!(err.contains("linux/s390x"), "{err}");
    assert!(err.contains("linux/amd64, linux/arm64"), "{err}");
}

#[tokio::test]
async fn tags_lists_every_tag_across_pages() {
    let Some(s) = seeded() else { return };
    // Distribution 2.8 ignores `n` on tag lists (it pages only the catalog), so the pages come
    // from a ferry server, which honours `n` and sends `Link` while tags remain.
    let data = s._tmp.path().join("ferry-data");
    let server = Ferry::start(ferry_bin(), &data, &[]);
    let host = server.host();
    let mut want = Vec::new();
    for i in 1..=5 {
        let tag = format!("v{i}");
        s.skopeo.copy(
            &format!("docker://{}/team/app:v1", s.registry.host()),
            &format!("docker://{host}/team/app:{tag}"),
            &[],
        );
        want.push(tag);
    }
    let first = crate::client()
        .get(format!("{}/v2/team/app/tags/list?n=2", server.url()))
        .send()
        .await
        .unwrap();
    assert!(
        first.headers().contains_key("link"),
        "the server does not page"
    );
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["tags"].as_array().unwrap().len(), 2);

    let repo = format!("registry://{host}/team/app");
    let lines: Vec<String> = stdout_ok(&["tags", "--page-size", "2", &repo])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, want);
    let v = json(&[
        "tags",
        "--json",
        "--page-size",
        "2",
        &format!("docker://{host}/team/app"),
    ]);
    assert_eq!(v["repository"], format!("{host}/team/app"));
    assert_eq!(v["tags"], serde_json::json!(want));

    // Unpaged from Distribution, which lists tags in no particular order.
    let mut tags: Vec<String> = stdout_ok(&[
        "tags",
        &format!("registry://{}/team/app", s.registry.host()),
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    tags.sort();
    assert_eq!(tags, ["v1"]);
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let Some(s) = seeded() else { return };
    let host = s.registry.host();
    let missing = format!("registry://{host}/team/app:nope");
    let err = failure(&["inspect", &missing]);
    assert_eq!(err, format!("error: manifest unknown: {missing}"));

    let port = free_port();
    let err = failure(&[
        "inspect",
        &format!("registry://127.0.0.1:{port}/team/app:v1"),
    ]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    let err = failure(&["tags", &format!("registry://127.0.0.1:{port}/team/app")]);
    assert!(err.contains("Connection refused"), "{err}");

    let err = failure(&["inspect", "oci:/tmp/layout:v1"]);
    assert!(
        err.contains("ferry inspect reads registry:// locations")
            && err.contains("oci:/archives come with ferry copy"),
        "{err}"
    );
    let err = failure(&["tags", "ftp://example/x"]);
    assert!(err.contains("names no known transport"), "{err}");
}
