//! `ferry copy` with a real docker-registry over TLS with a test CA (HTTP/2 by ALPN: one
//! connection carries the parallel layer transfers) and behind htpasswd basic auth.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use ferry_oci::Digest;
use ferry_testkit::image::{Image, image, write_layout};
use ferry_testkit::peers::{DockerRegistry, Skopeo};
use ferry_testkit::tls::{CountingForwarder, TestPki};

use crate::ferry_bin;

const USER: &str = "ferry";
const PASSWORD: &str = "s3cret-pass";

/// `ferry ARGS` with no ambient credentials.
fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("FERRY_LOG")
        .output()
        .unwrap()
}

/// `ferry copy --json ARGS`'s summary; panics with stderr if it fails.
fn copy_json(args: &[&str]) -> serde_json::Value {
    let all = [&["copy", "--json"][..], args].concat();
    let out = ferry(&all);
    assert!(
        out.status.success(),
        "ferry {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `error` lines of `ferry copy ARGS`, which must fail without panicking.
fn error_lines(args: &[&str]) -> Vec<String> {
    let all = [&["copy"][..], args].concat();
    let out = ferry(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ferry {all:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    err.lines()
        .filter(|l| l.starts_with("error"))
        .map(str::to_owned)
        .collect()
}

/// An image in an OCI layout under `work` (tag `v1`), for skopeo or ferry to push.
fn layout_of(img: &Image, work: &Path) -> String {
    let dir = work.join("src-layout");
    write_layout(
        &dir,
        &img.blobs().collect::<Vec<_>>(),
        &[("v1", &img.manifest)],
    )
    .unwrap();
    format!("oci:{}:v1", dir.display())
}

/// The digest the layout at `dir` records for its one image.
fn layout_digest(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

#[test]
fn copy_over_tls_trusts_the_cert_dir_ca_and_carries_everything_on_one_http2_connection() {
    let pki = TestPki::generate();
    let Some(skopeo) = Skopeo::new() else {
        return;
    };
    let Some(registry) = DockerRegistry::start_tls(&pki) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = pki.cert_dir(tmp.path());
    let app = image(21, 3, 300_000, "amd64");
    skopeo.run(&[
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        &layout_of(&app, tmp.path()),
        &format!("docker://{}/team/app:v1", registry.host()),
    ]);

    let forwarder = CountingForwarder::start(registry.port);
    let out = tmp.path().join("out");
    let v = copy_json(&[
        "--cert-dir",
        certs.to_str().unwrap(),
        "-j",
        "4",
        &format!("docker://127.0.0.1:{}/team/app:v1", forwarder.port),
        &format!("oci:{}:v1", out.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], app.manifest.digest.to_string());
    assert_eq!(v["images"][0]["blobs_copied"], 4);
    assert_eq!(layout_digest(&out), app.manifest.digest.to_string());
    assert_eq!(forwarder.accepted(), 1, "one HTTP/2 connection for all");

    // A cert dir without the CA: the registry's certificate is not trusted, and the one error
    // line says so and where the CA goes.
    let empty = tmp.path().join("no-ca");
    std::fs::create_dir(&empty).unwrap();
    let errors = error_lines(&[
        "--cert-dir",
        empty.to_str().unwrap(),
        &format!("docker://{}/team/app:v1", registry.host()),
        &format!("oci:{}:v1", tmp.path().join("untrusted").display()),
    ]);
    let about_cert: Vec<_> = errors
        .iter()
        .filter(|l| l.contains("certificate is not trusted") && l.contains("--cert-dir"))
        .collect();
    assert_eq!(about_cert.len(), 1, "{errors:?}");
}

/// Each side of a copy has its own cert dir: a plain-HTTP loopback registry to a TLS one with
/// `--dest-cert-dir` only, back with `--src-cert-dir` only, and `--cert-dir` for both sides from
/// one TLS registry to another.
#[test]
fn each_side_of_a_copy_has_its_own_cert_dir_and_loopback_tls() {
    let pki = TestPki::generate();
    let (Some(plain), Some(tls), Some(other_tls)) = (
        DockerRegistry::start(),
        DockerRegistry::start_tls(&pki),
        DockerRegistry::start_tls(&pki),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = pki.cert_dir(tmp.path());
    let certs = certs.to_str().unwrap();
    let app = image(23, 2, 50_000, "amd64");
    let digest = app.manifest.digest.to_string();
    let at = |r: &DockerRegistry, repo: &str| format!("docker://{}/team/{repo}:v1", r.host());
    copy_json(&[&layout_of(&app, tmp.path()), &at(&plain, "app")]);

    let v = copy_json(&[
        "--dest-cert-dir",
        certs,
        &at(&plain, "app"),
        &at(&tls, "app"),
    ]);
    assert_eq!(v["images"][0]["digest"], digest);
    assert_eq!(v["images"][0]["blobs_copied"], 3);
    let v = copy_json(&[
        "--src-cert-dir",
        certs,
        &at(&tls, "app"),
        &at(&plain, "back"),
    ]);
    assert_eq!(v["images"][0]["digest"], digest);
    let v = copy_json(&[
        "--cert-dir",
        certs,
        &at(&tls, "app"),
        &at(&other_tls, "app"),
    ]);
    assert_eq!(v["images"][0]["digest"], digest);
    assert_eq!(v["images"][0]["blobs_copied"], 3);

    // What each TLS registry received reads back over TLS, and the plain copy over plain HTTP.
    for (source, cert_dir) in [
        (at(&tls, "app"), Some(certs)),
        (at(&other_tls, "app"), Some(certs)),
        (at(&plain, "back"), None),
    ] {
        let out = tmp.path().join(format!("check-{}", layout_name(&source)));
        let mut args = Vec::new();
        if let Some(dir) = cert_dir {
            args.extend(["--src-cert-dir", dir]);
        }
        let dest = format!("oci:{}:v1", out.display());
        args.extend([source.as_str(), dest.as_str()]);
        copy_json(&args);
        assert_eq!(layout_digest(&out), digest, "{source}");
    }
}

/// A file name for `location`.
fn layout_name(location: &str) -> String {
    location
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// One registry on both sides needs one rule for both: a cert dir for one side only is refused
/// before anything is fetched.
#[test]
fn a_registry_on_both_sides_with_different_cert_dirs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let errors = error_lines(&[
        "--dest-cert-dir",
        tmp.path().to_str().unwrap(),
        "docker://127.0.0.1:9/team/app:v1",
        "docker://127.0.0.1:9/team/copy:v1",
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("127.0.0.1:9 is both a source and a destination")
            && errors[0].contains("--cert-dir"),
        "{errors:?}"
    );
}

/// A docker-registry behind htpasswd basic auth (`USER`/`PASSWORD`) holding `team/app:v1`.
struct Guarded {
    registry: DockerRegistry,
    skopeo: Skopeo,
    app: Image,
    tmp: tempfile::TempDir,
}

fn guarded() -> Option<Guarded> {
    let skopeo = Skopeo::new()?;
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = tmp.path().join("htpasswd");
    // Distribution accepts only bcrypt entries; the lowest cost keeps the test fast.
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
    let registry = DockerRegistry::start_htpasswd(&htpasswd)?;
    let app = image(22, 3, 100_000, "amd64");
    skopeo.copy(
        &layout_of(&app, tmp.path()),
        &format!("docker://{}/team/app:v1", registry.host()),
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
    );
    Some(Guarded {
        registry,
        skopeo,
        app,
        tmp,
    })
}

#[test]
fn copy_pulls_from_basic_auth_with_src_creds_and_fails_unauthorized_without() {
    let Some(g) = guarded() else { return };
    let src = format!("docker://{}/team/app:v1", g.registry.host());
    let out = g.tmp.path().join("pulled");
    let creds = format!("{USER}:{PASSWORD}");
    let v = copy_json(&[
        "--src-creds",
        &creds,
        &src,
        &format!("oci:{}:v1", out.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], g.app.manifest.digest.to_string());
    assert_eq!(layout_digest(&out), g.app.manifest.digest.to_string());

    let errors = error_lines(&[
        &src,
        &format!("oci:{}:v1", g.tmp.path().join("anonymous").display()),
    ]);
    let unauthorized: Vec<_> = errors
        .iter()
        .filter(|l| l.contains("unauthorized") && l.contains("--src-creds"))
        .collect();
    assert_eq!(unauthorized.len(), 1, "{errors:?}");
}

#[test]
fn copy_pushes_to_basic_auth_with_dest_creds_keeping_the_digest() {
    let Some(g) = guarded() else { return };
    let creds = format!("{USER}:{PASSWORD}");
    let dest = format!("docker://{}/team/pushed:v1", g.registry.host());
    let v = copy_json(&[
        "--dest-creds",
        &creds,
        &layout_of(&g.app, &g.tmp.path().join("push")),
        &dest,
    ]);
    assert_eq!(v["images"][0]["digest"], g.app.manifest.digest.to_string());
    let raw = g.skopeo.run(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        "--raw",
        &dest,
    ]);
    assert_eq!(Digest::sha256(raw.as_bytes()), g.app.manifest.digest);
}

#[test]
fn copy_takes_basic_auth_credentials_from_an_authfile() {
    let Some(g) = guarded() else { return };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let authfile = g.tmp.path().join("auth.json");
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {g.registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = g.tmp.path().join("pulled");
    let v = copy_json(&[
        "--authfile",
        authfile.to_str().unwrap(),
        &format!("docker://{}/team/app:v1", g.registry.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    assert_eq!(v["images"][0]["digest"], g.app.manifest.digest.to_string());
    assert_eq!(layout_digest(&out), g.app.manifest.digest.to_string());
}

#[test]
fn a_wildcard_copy_lists_and_copies_over_the_one_connection_of_its_process() {
    let pki = TestPki::generate();
    let Some(skopeo) = Skopeo::new() else {
        return;
    };
    let Some(registry) = DockerRegistry::start_tls(&pki) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = pki.cert_dir(tmp.path());
    let apps = [image(23, 2, 50_000, "amd64"), image(24, 2, 50_000, "amd64")];
    for (n, app) in apps.iter().enumerate() {
        skopeo.run(&[
            "copy",
            "--dest-cert-dir",
            certs.to_str().unwrap(),
            &layout_of(app, &tmp.path().join(format!("src{n}"))),
            &format!("docker://{}/team/app-{n}:v1", registry.host()),
        ]);
    }

    // The listing (catalog, tag lists) and the copies of what it names are separate clients
    // of one process: with one pool they ride on the listing's HTTP/2 connection.
    let forwarder = CountingForwarder::start(registry.port);
    let out = tmp.path().join("out");
    let v = copy_json(&[
        "--cert-dir",
        certs.to_str().unwrap(),
        &format!("registry://127.0.0.1:{}/team/app-*:v1", forwarder.port),
        &format!("oci:{}", out.display()),
    ]);
    let digests: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        apps.iter()
            .map(|a| a.manifest.digest.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        forwarder.accepted(),
        1,
        "one connection for listing and copies"
    );
}
