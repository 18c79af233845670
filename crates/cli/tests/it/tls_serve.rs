//! `ferry serve` over TLS with real clients (skopeo, containerd, ferry's own client), HTTP/2 by
//! ALPN, certificates reloaded on SIGHUP and on change without a failed request, and the start-up
//! checks of the TLS files.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use ferry_testkit::image::{image, write_layout};
use ferry_testkit::peers::{Containerd, Ferry, Skopeo, free_port, wait_until};
use ferry_testkit::tls::{CountingForwarder, TestPki};

use crate::ferry_bin;

fn tls_args(pki: &TestPki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pki.cert.display().to_string(),
        "--tls-key".into(),
        pki.key.display().to_string(),
    ]
}

fn start_tls(pki: &TestPki, data: &Path, extra: &[&str]) -> Ferry {
    let mut args = tls_args(pki);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ferry::start(ferry_bin(), data, &args)
}

/// A client trusting the test CA; `tls_info` exposes the server certificate each response came
/// over.
fn trusting(pki: &TestPki) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .build()
        .unwrap()
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_file: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The certificate a new connection to `url` is served.
async fn served_certificate(pki: &TestPki, url: &str) -> Vec<u8> {
    let r = trusting(pki).get(url).send().await.unwrap();
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response carries the peer certificate")
        .to_vec()
}

/// A test image (seeded) in an OCI layout under `dir`: the `oci:` source skopeo pushes.
fn app_layout(seed: u64, dir: &Path) -> (ferry_testkit::image::Image, String) {
    let app = image(seed, 2, 50_000, "amd64");
    let layout = dir.join("layout");
    write_layout(
        &layout,
        &app.blobs().collect::<Vec<_>>(),
        &[("v1", &app.manifest)],
    )
    .unwrap();
    let src = format!("oci:{}:v1", layout.display());
    (app, src)
}

/// skopeo pushes `src` to `https://host/team/app:v1`, trusting `certs`, with `creds` if given.
fn skopeo_push(skopeo: &Skopeo, certs: &Path, creds: Option<&str>, src: &str, host: &str) {
    let mut args = vec!["copy", "--dest-cert-dir", certs.to_str().unwrap()];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    let dest = format!("docker://{host}/team/app:v1");
    args.extend([src, dest.as_str()]);
    skopeo.run(&args);
}

/// A hosts.toml that makes containerd pull from `host` over TLS, trusting `pki`'s CA.
fn trust_in_containerd(containerd: &Containerd, host: &str, pki: &TestPki) {
    let hosts = containerd.hosts_dir().join(host);
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            pki.ca.display()
        ),
    )
    .unwrap();
}

/// `ferry ARGS` with no ambient credentials; panics with its stderr unless it succeeds; stdout.
fn ferry_ok(args: &[&str]) -> Vec<u8> {
    let out = Command::new(ferry_bin())
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends SIGHUP to `ferry`.
fn hangup(ferry: &Ferry) {
    let sent = Command::new("kill")
        .args(["-HUP", &ferry.process.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn skopeo_containerd_and_ferry_push_and_pull_over_tls_with_http2() {
    let pki = TestPki::generate();
    let (Some(skopeo), Some(containerd)) = (Skopeo::new(), Containerd::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ferry = start_tls(&pki, &tmp.path().join("data"), &[]);
    let host = ferry.host();
    let certs = pki.cert_dir(tmp.path());
    let (app, src) = app_layout(171, tmp.path());

    // skopeo pushes, trusting the CA from a cert dir.
    skopeo_push(&skopeo, &certs, None, &src, &host);

    // containerd pulls with a hosts.toml naming the CA.
    trust_in_containerd(&containerd, &host, &pki);
    let pulled = containerd.pull("default", &format!("{host}/team/app:v1"));
    assert!(
        pulled.status.success(),
        "ctr pull over TLS: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );

    // ferry's own client copies it out with parallel blobs over one HTTP/2 connection.
    let forwarder = CountingForwarder::start(ferry.port);
    let out = tmp.path().join("out");
    let copied = ferry_ok(&[
        "copy",
        "--json",
        "--cert-dir",
        certs.to_str().unwrap(),
        "-j",
        "4",
        &format!("docker://127.0.0.1:{}/team/app:v1", forwarder.port),
        &format!("oci:{}:v1", out.display()),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&copied).unwrap();
    assert_eq!(v["images"][0]["digest"], app.manifest.digest.to_string());
    assert_eq!(
        forwarder.accepted(),
        1,
        "one HTTP/2 connection for all blobs"
    );

    // A client offering HTTP/2 gets it; plain HTTP is not served on the port.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let r = trusting(&pki)
            .get(format!("https://{host}/v2/team/app/manifests/v1"))
            .header("accept", &app.manifest.media_type)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let plain = crate::client()
            .get(format!("http://{host}/v2/"))
            .send()
            .await;
        assert!(plain.is_err(), "plain HTTP answered on the TLS port");
    });
}

#[test]
fn certificates_reload_on_sighup_and_on_change_without_a_failed_request() {
    let pki = TestPki::generate();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ferry.toml");
    std::fs::write(&config, "[tls]\nreload_interval_secs = 1\n").unwrap();
    let mut ferry = start_tls(
        &pki,
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = format!("https://{}/v2/", ferry.host());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = der_of(&pki.cert);
    assert_eq!(rt.block_on(served_certificate(&pki, &url)), first);

    // Requests on fresh connections all through the rotations, each a new handshake.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, done, failed, url) = (stop.clone(), done.clone(), failed.clone(), url.clone());
        let ca = pki.ca_pem.clone();
        rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                    .build()
                    .unwrap();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => done.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    // One long-lived HTTP/2 connection, opened before the rotation.
    let kept = trusting(&pki);
    rt.block_on(kept.get(&url).send()).unwrap();

    // Rotation 1: SIGHUP.
    pki.reissue_server();
    let second = der_of(&pki.cert);
    assert_ne!(first, second);
    hangup(&ferry);
    assert!(
        wait_until(Duration::from_secs(20), || rt
            .block_on(served_certificate(&pki, &url))
            == second),
        "the new certificate was not served after SIGHUP:\n{}",
        ferry.process.log()
    );
    // The connection opened before still serves, with the session it had.
    let r = rt.block_on(kept.get(&url).send()).unwrap();
    assert_eq!(r.status(), 200);
    let cert = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec);
    assert_eq!(cert, Some(first.clone()), "the old connection was replaced");

    // Rotation 2: the files change; no signal.
    pki.reissue_server();
    let third = der_of(&pki.cert);
    assert!(
        wait_until(Duration::from_secs(20), || rt
            .block_on(served_certificate(&pki, &url))
            == third),
        "a changed certificate was not picked up:\n{}",
        ferry.process.log()
    );

    // A key that does not fit the certificate: the last good pair keeps being served.
    let (_, other_key) = pki.client("intruder");
    std::fs::copy(&other_key, &pki.key).unwrap();
    hangup(&ferry);
    assert!(
        wait_until(Duration::from_secs(20), || ferry
            .process
            .log()
            .contains("TLS files not reloaded")),
        "{}",
        ferry.process.log()
    );
    assert_eq!(rt.block_on(served_certificate(&pki, &url)), third);

    stop.store(true, Ordering::SeqCst);
    rt.block_on(load).unwrap();
    assert!(done.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the rotations"
    );
    assert!(ferry.process.running());
}

#[test]
fn sighup_without_tls_does_not_stop_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ferry = Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    hangup(&ferry);
    assert!(
        wait_until(Duration::from_secs(20), || ferry
            .process
            .log()
            .contains("nothing to reload")),
        "{}",
        ferry.process.log()
    );
    assert!(ferry.process.running());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(crate::client().get(format!("{}/v2/", ferry.url())).send())
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `ferry serve ARGS` must refuse to start: its stderr, which must not mention serving.
fn refused(args: &[&str], data: &Path) -> String {
    let out = Command::new(ferry_bin())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ferry serve {args:?} started");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("serving the OCI"), "{err}");
    assert!(!data.exists(), "the data directory was created first");
    err
}

#[test]
fn bad_tls_files_stop_serve_before_it_serves_and_say_why() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::generate();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();

    let err = refused(&["--tls-cert", cert], &data);
    assert!(err.contains("--tls-key"), "{err}");

    // A key others can read.
    let open_key = tmp.path().join("open.key");
    std::fs::copy(&pki.key, &open_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(
        &["--tls-cert", cert, "--tls-key", open_key.to_str().unwrap()],
        &data,
    );
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains("PRIVATE KEY"),
        "the key's content was printed: {err}"
    );

    // A key that does not belong to the certificate.
    let (_, other_key) = pki.client("someone");
    let err = refused(
        &["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()],
        &data,
    );
    assert!(err.contains("does not fit the certificate"), "{err}");

    // A certificate file that is not PEM.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = refused(
        &["--tls-cert", junk.to_str().unwrap(), "--tls-key", key],
        &data,
    );
    assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
}

const PASSWORD: &str = "correct-horse-battery-staple-42";

/// A config file with an htpasswd of `alice` and rules: anyone pulls, alice does everything.
fn auth_config(dir: &Path) -> std::path::PathBuf {
    let htpasswd = dir.join("htpasswd");
    ferry_testkit::write_secret(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash(PASSWORD, 5).unwrap()),
    );
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhtpasswd_file = \"{}\"\n[[auth.access]]\nrepositories = [\"*\"]\nanonymous = true\nactions = [\"pull\"]\n[[auth.access]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"*\"]\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn skopeo_and_ferry_push_and_pull_with_basic_auth_and_no_secret_reaches_the_logs() {
    let pki = TestPki::generate();
    let Some(skopeo) = Skopeo::new() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path());
    let ferry = start_tls(
        &pki,
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap(), "--log-level", "trace"],
    );
    let host = ferry.host();
    let certs = pki.cert_dir(tmp.path());
    let (_, src) = app_layout(173, tmp.path());
    let dest = format!("docker://{host}/team/app:v1");

    // Without credentials the push is refused; with them it lands.
    let anonymous = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-cert-dir"])
        .arg(&certs)
        .args([&src, &dest])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "an anonymous push was accepted"
    );
    let creds = format!("alice:{PASSWORD}");
    skopeo_push(&skopeo, &certs, Some(&creds), &src, &host);
    // Anyone pulls (skopeo anonymously, ferry with the credentials).
    skopeo.run(&[
        "inspect",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--raw",
        &dest,
    ]);
    let out = tmp.path().join("out");
    ferry_ok(&[
        "copy",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--src-creds",
        &creds,
        &dest,
        &format!("oci:{}:v1", out.display()),
    ]);

    // The trace-level log holds neither the password nor the header that carried it.
    let log = ferry.process.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "not a trace log"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(&creds);
    for secret in [PASSWORD, basic.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let metrics_free = !log.contains("authorization: Basic");
    assert!(metrics_free, "an Authorization header was logged");
}

#[test]
fn mutual_tls_refuses_unknown_clients_and_names_the_user_by_the_certificate() {
    let pki = TestPki::generate();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        "[[auth.access]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"*\"]\n[[auth.access]]\nrepositories = [\"*\"]\nusers = [\"bob\"]\nactions = [\"pull\"]\n",
    )
    .unwrap();
    let ferry = start_tls(
        &pki,
        &tmp.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}/v2/team/app/blobs/uploads/", ferry.host());
    let client = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap());
        if let Some((cert, key)) = identity {
            let mut pem = std::fs::read(cert).unwrap();
            pem.extend(std::fs::read(key).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // No certificate, or one from another CA: no connection at all.
        assert!(client(None).post(&url).send().await.is_err());
        assert!(
            client(Some(pki.foreign_client("alice")))
                .post(&url)
                .send()
                .await
                .is_err()
        );
        // alice's certificate: she may push.
        let r = client(Some(pki.client("alice")))
            .post(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        // bob's: he may only pull.
        let r = client(Some(pki.client("bob")))
            .post(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("bob"),
            "{body}"
        );
    });
}

#[test]
fn skopeo_containerd_and_ferry_follow_the_token_challenge() {
    let pki = TestPki::generate();
    let (Some(skopeo), Some(containerd)) = (Skopeo::new(), Containerd::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path());
    let ferry = start_tls(
        &pki,
        &tmp.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--token-auth",
            "--log-level",
            "trace",
        ],
    );
    let host = ferry.host();
    let certs = pki.cert_dir(tmp.path());
    let (_, src) = app_layout(175, tmp.path());
    let creds = format!("alice:{PASSWORD}");

    // The challenge is a Bearer one naming this server's /token.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let challenge = rt.block_on(async {
        let r = trusting(&pki)
            .post(format!("https://{host}/v2/team/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        r.headers()["www-authenticate"].to_str().unwrap().to_owned()
    });
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"https://{host}/token\",service=\"ferry\",scope=\"repository:team/app:pull,push\""
        )
    );

    // skopeo logs in through the token endpoint (GET with basic credentials) and pushes.
    skopeo_push(&skopeo, &certs, Some(&creds), &src, &host);
    // containerd with credentials (it posts the OAuth2 form first), and anonymously.
    trust_in_containerd(&containerd, &host, &pki);
    let hosts_dir = containerd.hosts_dir();
    for (ns, user) in [("withcreds", Some(creds.as_str())), ("anonymous", None)] {
        let mut args = vec![
            "-n",
            ns,
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir.to_str().unwrap(),
        ];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        let reference = format!("{host}/team/app:v1");
        args.push(&reference);
        let out = containerd.ctr(&args);
        assert!(
            out.status.success(),
            "ctr pull ({ns}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ferry's own client.
    let out = tmp.path().join("out");
    ferry_ok(&[
        "copy",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--src-creds",
        &creds,
        &format!("docker://{host}/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    ]);
    // The signing key was made in the data dir, owner-only.
    use std::os::unix::fs::PermissionsExt;
    let key = tmp.path().join("data/auth/token-signing.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A token used by hand; then neither it, the password nor the key is in the trace log.
    let token = rt.block_on(async {
        let v: serde_json::Value = trusting(&pki)
            .get(format!(
                "https://{host}/token?service=ferry&scope=repository:team/app:pull"
            ))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        let r = trusting(&pki)
            .get(format!("https://{host}/v2/team/app/tags/list"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        token
    });
    let log = ferry.process.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "not a trace log"
    );
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!key_lines.is_empty());
    let basic = base64::engine::general_purpose::STANDARD.encode(&creds);
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("password", PASSWORD),
        ("basic credentials", basic.as_str()),
        ("token signature", signature),
    ]
    .into_iter()
    .chain(key_lines.iter().map(|l| ("signing key", *l)))
    {
        assert!(!log.contains(secret), "the {what} reached the log");
    }
}

#[test]
fn htpasswd_changes_take_effect_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let config = auth_config(tmp.path());
    let mut ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = format!("{}/v2/", ferry.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = |password: &str| {
        rt.block_on(
            crate::client()
                .get(&url)
                .basic_auth("alice", Some(password))
                .send(),
        )
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(status(PASSWORD), 200);
    let new_password = "a-rotated-password-7";
    ferry_testkit::write_secret(
        &tmp.path().join("htpasswd"),
        format!("alice:{}\n", bcrypt::hash(new_password, 5).unwrap()),
    );
    hangup(&ferry);
    assert!(
        wait_until(Duration::from_secs(20), || status(new_password) == 200),
        "{}",
        ferry.process.log()
    );
    // The old password was cached as good; the reload voids it.
    assert_eq!(status(PASSWORD), 401);
    assert!(ferry.process.running());
}

#[test]
fn containerd_pulls_with_the_ca_and_credentials_containerd_config_writes() {
    let pki = TestPki::generate();
    let (Some(skopeo), Some(containerd)) = (Skopeo::new(), Containerd::start()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Only alice may pull: the header containerd-config writes is what lets containerd in.
    let htpasswd = tmp.path().join("htpasswd");
    ferry_testkit::write_secret(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash(PASSWORD, 5).unwrap()),
    );
    let ferry = start_tls(
        &pki,
        &tmp.path().join("data"),
        &["--htpasswd", htpasswd.to_str().unwrap()],
    );
    let host = ferry.host();
    let certs = pki.cert_dir(tmp.path());
    let (_, src) = app_layout(177, tmp.path());
    skopeo_push(
        &skopeo,
        &certs,
        Some(&format!("alice:{PASSWORD}")),
        &src,
        &host,
    );

    let password_file = tmp.path().join("password");
    ferry_testkit::write_secret(&password_file, format!("{PASSWORD}\n"));
    ferry_ok(&[
        "containerd-config",
        "--mirror",
        &format!("https://{host}"),
        "--registries",
        &host,
        "--ca",
        pki.ca.to_str().unwrap(),
        "--username",
        "alice",
        "--password-file",
        password_file.to_str().unwrap(),
        "--dir",
        containerd.hosts_dir().to_str().unwrap(),
    ]);
    let hosts = containerd.hosts_dir().join(&host).join("hosts.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&hosts).unwrap().permissions().mode() & 0o777,
        0o600,
        "a file holding credentials is owner-only"
    );
    assert!(
        containerd
            .hosts_dir()
            .join(&host)
            .join("ferry-ca.crt")
            .exists()
    );
    let pulled = containerd.pull("default", &format!("{host}/team/app:v1"));
    assert!(
        pulled.status.success(),
        "ctr pull with containerd-config's CA and header: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
}
