//! The command line: configuration layering, graceful shutdown, and errors a person can act on.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use ferry_testkit::peers::{Ferry, Process, accepting, free_port, wait_until};

use crate::{client, ferry_bin};

fn ferry(args: &[&str]) -> Command {
    let mut c = Command::new(ferry_bin());
    c.args(args);
    for k in [
        "FERRY_LISTEN",
        "FERRY_DATA_DIR",
        "FERRY_CONFIG",
        "FERRY_LOG",
        "FERRY_LOG_FORMAT",
    ] {
        c.env_remove(k);
    }
    c
}

fn stderr_of(mut c: Command) -> (bool, String) {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    (out.status.success(), err)
}

#[test]
fn config_layers_defaults_file_env_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ferry.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\n[limits]\nmax_connections = 11\n",
    )
    .unwrap();
    let print = |env: &[(&str, &str)], flags: &[&str]| {
        let mut c = ferry(&["config", "print", "--config", file.to_str().unwrap()]);
        c.args(flags).env("HOME", tmp.path());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file_only = print(&[], &[]);
    assert!(
        file_only.contains("listen = \"127.0.0.1:1111\""),
        "{file_only}"
    );
    assert!(file_only.contains("max_connections = 11"));
    assert!(
        file_only.contains("delete_enabled = true"),
        "defaults fill what the file omits"
    );
    let env = print(&[("FERRY_LISTEN", "127.0.0.1:2222")], &[]);
    assert!(
        env.contains("listen = \"127.0.0.1:2222\""),
        "env beats file"
    );
    assert!(env.contains("data_dir = \"/from/file\""));
    let flag = print(
        &[("FERRY_LISTEN", "127.0.0.1:2222")],
        &["--listen", "127.0.0.1:3333", "--no-delete"],
    );
    assert!(
        flag.contains("listen = \"127.0.0.1:3333\""),
        "flag beats env"
    );
    assert!(flag.contains("delete_enabled = false"));

    // With nothing configured, data goes under the user's data directory.
    let out = ferry(&["config", "print"])
        .env("HOME", tmp.path())
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let want = format!(
        "data_dir = \"{}\"",
        tmp.path().join(".local/share/ferry").display()
    );
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
}

#[test]
fn mistakes_get_a_message_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "listn = \"127.0.0.1:1\"\n").unwrap();
    let (ok, err) = stderr_of(ferry(&["serve", "--config", bad.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("listn"), "{err}");
    let (ok, err) = stderr_of(ferry(&["serve", "--config", "/nonexistent/ferry.toml"]));
    assert!(!ok && err.contains("cannot read config file"), "{err}");
    let (ok, err) = stderr_of(ferry(&["serve", "--listen", "not-an-address"]));
    assert!(!ok && err.contains("--listen"), "{err}");

    // A second server on the same data directory, and a port already taken.
    let data = tmp.path().join("data");
    let first = Ferry::start(ferry_bin(), &data, &[]);
    let port = free_port().to_string();
    let (ok, err) = stderr_of(ferry(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(
        !ok && err.contains("in use by another ferry process"),
        "{err}"
    );
    let (ok, err) = stderr_of(ferry(&["gc", "--data-dir", data.to_str().unwrap()]));
    assert!(
        !ok && err.contains("in use by another ferry process"),
        "gc must refuse to run under a server: {err}"
    );
    let other = tmp.path().join("other");
    let (ok, err) = stderr_of(ferry(&[
        "serve",
        "--listen",
        &first.host(),
        "--data-dir",
        other.to_str().unwrap(),
    ]));
    assert!(!ok && err.contains("cannot listen"), "{err}");
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &["serve"][..],
        &["fsck"],
        &["gc"],
        &["config", "print"],
        &["version"],
        &["containerd-config"],
        &["docker-config"],
        &["preload"],
        &["list"],
        &["prune"],
        &[],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = ferry(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(
            text.contains("Example"),
            "{args:?} help has no example:\n{text}"
        );
    }
    let out = ferry(&["version"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferry "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &[]);
    let (port, base) = (ferry.port, ferry.url());
    let mut process: Process = ferry.process;
    let c = client();
    let r = c
        .post(format!("{base}/v2/drain/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let id = loc.rsplit('/').next().unwrap().to_owned();

    // Stream half a chunk, and hold the rest back until the server has been told to stop.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let patch = tokio::spawn(c.patch(format!("{base}{loc}")).body(body).send());
    tx.send(Ok(Bytes::from(vec![1u8; 65536]))).await.unwrap();
    let partial = data.join("uploads").join(&id).join("data");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::metadata(&partial)
            .is_ok_and(|m| m.len() >= 65536)),
        "the first half never reached the server"
    );
    let pid = process.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Once the listener is closed, new connections are refused while the old one is served.
    assert!(
        wait_until(Duration::from_secs(20), || !accepting(port)),
        "still accepting after SIGTERM"
    );
    tx.send(Ok(Bytes::from(vec![2u8; 65536]))).await.unwrap();
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-131071");
    let status = process.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(process.log().contains("SIGTERM received"));
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_span_per_request_and_oversized_headers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(
        ferry_bin(),
        &data,
        &["--log-format", "json", "--log-level", "debug"],
    );
    let c = client();
    let r = c
        .get(format!("{}/v2/some/repo/tags/list", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A request head larger than the limit is refused by the HTTP layer, and the server lives on.
    let r = c
        .get(format!("{}/v2/", ferry.url()))
        .header("x-padding", "a".repeat(200 * 1024))
        .send()
        .await;
    assert!(r.map(|r| r.status().as_u16() == 431).unwrap_or(true));
    assert_eq!(
        c.get(format!("{}/v2/", ferry.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut process = ferry.process;
    process.terminate(Duration::from_secs(30));
    let log = process.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let done = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "done" && l["span"]["path"] == "/v2/some/repo/tags/list"
        })
        .unwrap_or_else(|| panic!("no request span in:\n{log}"));
    assert_eq!(done["fields"]["status"], 404);
    assert_eq!(done["span"]["method"], "GET");
}

/// The shipped Prometheus configuration is valid, and the Grafana dashboard queries only series
/// ferry exports.
#[test]
fn monitoring_configuration_matches_the_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Some(promtool) = ferry_testkit::peers::require("promtool") {
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(root.join("deploy/prometheus/prometheus.yml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dash: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("deploy/grafana/ferry-dashboard.json")).unwrap(),
    )
    .unwrap();
    // What ferry really exports: the names in a live scrape (counters and histograms get their
    // standard suffixes).
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--metrics", &format!("127.0.0.1:{port}")],
    );
    let mut scrape = String::new();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    std::io::Read::read_to_string(&mut s, &mut scrape).unwrap();
    let mut exported = Vec::new();
    for line in scrape.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => exported.push(format!("{name}_total")),
            "histogram" => {
                exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")))
            }
            _ => exported.push(name.to_owned()),
        }
    }
    // Labelled families appear once used (the mirror tests scrape those live); the rest must be here.
    let labelled = [
        "ferry_http_requests_total",
        "ferry_http_request_duration_seconds_bucket",
        "ferry_pulls_total",
        "ferry_upstream_fetched_bytes_total",
        "ferry_coalesced_requests_total",
        "ferry_upstream_errors_total",
        "ferry_stale_served_total",
    ];
    for plain in [
        "ferry_served_bytes_total",
        "ferry_fills_in_flight",
        "ferry_cache_bytes",
        "ferry_cache_blobs",
        "ferry_repositories",
        "ferry_uploads_open",
        "ferry_evictions_total",
    ] {
        assert!(
            exported.iter().any(|e| e == plain),
            "{plain} missing from a live scrape:\n{scrape}"
        );
    }
    exported.extend(labelled.map(str::to_owned));
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ferry_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(
                    exported.iter().any(|e| e == n),
                    "dashboard queries {n}, which ferry does not export: {exported:?}"
                );
            }
        }
    }
}

/// The shipped systemd unit is valid and starts ferry the way the docs say.
#[test]
fn systemd_unit_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = root.join("deploy/systemd/ferry.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/ferry serve --config /etc/ferry/ferry.toml --data-dir /var/lib/ferry"));
    let Some(analyze) = ferry_testkit::peers::require("systemd-analyze") else {
        return;
    };
    // verify needs the ExecStart binary to exist: point a copy of the unit at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("ferry.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/ferry", ferry_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Outside a booted systemd (CI containers) verify may complain about the manager itself; the
    // unit's own problems name the file.
    let own: Vec<&str> = msg
        .lines()
        .filter(|l| l.contains("ferry.service"))
        .collect();
    assert!(own.is_empty(), "systemd-analyze verify:\n{msg}");
}

/// `ferry serve` runs with two malloc arenas unless told otherwise (it re-executes itself with
/// `MALLOC_ARENA_MAX=2`; see `limit_malloc_arenas`), keeping its PID so supervisors are not confused.
#[test]
fn serve_limits_malloc_arenas_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_testkit::peers::Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    let environ = std::fs::read(format!("/proc/{}/environ", ferry.process.pid())).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|kv| kv == b"MALLOC_ARENA_MAX=2"),
        "the serving process (same PID as spawned) has MALLOC_ARENA_MAX=2"
    );
}

/// Logs written to a file (or a pipe) carry no terminal colour codes (#11: "ANSI colours are
/// written to files and pipes").
#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    let log = ferry.process.log();
    assert!(
        log.contains("ferry serving the OCI distribution API"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file: {log:?}"
    );
}

/// A listen address that is not IP:PORT says what is wanted (#11: `--listen 5000` said only
/// "invalid socket address syntax").
#[test]
fn a_bare_port_for_listen_says_ip_and_port_are_wanted() {
    let out = Command::new(ferry_bin())
        .args(["serve", "--listen", "5000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected IP:PORT") && err.contains("127.0.0.1:5000"),
        "{err}"
    );
}

/// A too-short admin token stops `serve` before anything happens: no "serving" line, no data
/// directory (#11: it was reported after the "serving" log line).
#[test]
fn a_short_admin_token_stops_serve_before_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut c = ferry(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    c.env("FERRY_ADMIN_TOKEN", "short");
    let (ok, err) = stderr_of(c);
    assert!(!ok, "{err}");
    assert!(
        err.contains("FERRY_ADMIN_TOKEN: the admin token must be at least 16 characters"),
        "names the variable: {err}"
    );
    assert!(!err.contains("serving"), "logged as serving first: {err}");
    assert!(!data.exists(), "the data directory was created first");
}

/// A short token read from `admin_token_file` is reported with the file's name, not the
/// variable's (the variable is ignored when the file is configured).
#[test]
fn a_short_admin_token_file_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = tmp.path().join("admin.token");
    ferry_testkit::write_secret(&token, "short\n");
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!("admin_token_file = \"{}\"\n", token.display()),
    )
    .unwrap();
    let mut c = ferry(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    c.env("FERRY_ADMIN_TOKEN", "0123456789abcdef0123");
    let (ok, err) = stderr_of(c);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "admin_token_file {}: the admin token must be at least 16 characters",
            token.display()
        )),
        "names the file: {err}"
    );
    assert!(!err.contains("FERRY_ADMIN_TOKEN"), "{err}");
    assert!(!data.exists(), "the data directory was created first");
}

/// A port in use stops `serve` before it creates its data directory (#11: the directory was
/// created first).
#[test]
fn a_port_in_use_stops_serve_before_it_creates_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, err) = stderr_of(ferry(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(!ok, "{err}");
    assert!(
        err.contains("cannot listen") && err.contains(&addr),
        "{err}"
    );
    assert!(!err.contains("serving"), "{err}");
    assert!(!data.exists(), "the data directory was created first");
}

#[test]
fn containerd_fallback_keeps_a_plain_http_upstreams_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ferry.toml");
    // Only written into files: nothing listens there and nothing is contacted.
    std::fs::write(
        &config,
        "[[upstream]]\nurl = \"http://127.0.0.1:5999\"\n\n[[upstream]]\nurl = \"https://127.0.0.1:5998/\"\n",
    )
    .unwrap();
    let dir = tmp.path().join("certs.d");
    let (ok, err) = stderr_of(ferry(&[
        "containerd-config",
        "--mirror",
        "http://127.0.0.1:8080",
        "--config",
        config.to_str().unwrap(),
        "--registries",
        "127.0.0.1:5999,127.0.0.1:5998,http://127.0.0.1:5997,127.0.0.1:5996",
        "--dir",
        dir.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let server = |registry: &str| {
        let text = std::fs::read_to_string(dir.join(registry).join("hosts.toml")).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        v["server"].as_str().unwrap().to_owned()
    };
    // A configured plain-HTTP upstream, a configured https one, a registry given with its scheme,
    // and one nothing is known about (https, containerd's own default).
    assert_eq!(server("127.0.0.1:5999"), "http://127.0.0.1:5999");
    assert_eq!(server("127.0.0.1:5998"), "https://127.0.0.1:5998");
    assert_eq!(server("127.0.0.1:5997"), "http://127.0.0.1:5997");
    assert_eq!(server("127.0.0.1:5996"), "https://127.0.0.1:5996");
}

#[test]
fn a_bad_environment_variable_is_named_not_its_flag() {
    for (var, value, wants) in [
        ("FERRY_LISTEN", "nonsense", "IP:PORT"),
        ("FERRY_LOG_FORMAT", "xml", "text, json"),
    ] {
        let mut c = ferry(&["config", "print"]);
        c.env(var, value);
        let (ok, err) = stderr_of(c);
        assert!(!ok);
        assert!(
            err.contains(&format!("environment variable {var}")) && err.contains(wants),
            "{err}"
        );
    }
    // The same value given as the flag is the flag's fault.
    let (ok, err) = stderr_of(ferry(&["config", "print", "--listen", "nonsense"]));
    assert!(
        !ok && err.contains("'--listen") && !err.contains("FERRY_LISTEN"),
        "{err}"
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let os =
        std::io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()).to_string();
    let (ok, err) = stderr_of(ferry(&[
        "serve",
        "--data-dir",
        file.join("sub").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(!ok, "{err}");
    assert_eq!(err.matches(&os).count(), 1, "{os:?} in {err}");
}

#[test]
fn readme_names_every_peer_ci_installs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split_once("## Two commands")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .expect("README has a \"Two commands\" section");
    // The Debian packages, and the tools installed outside Debian under `$tools/<name>/bin`.
    let mut peers: Vec<&str> = ci
        .lines()
        .find_map(|l| l.strip_prefix("peers=("))
        .and_then(|l| l.split(')').next())
        .expect(".ci/run lists its peers as peers=(…)")
        .split_whitespace()
        .collect();
    peers.extend(
        ci.split("$tools/")
            .skip(1)
            .filter_map(|s| s.split_once("/bin/"))
            .map(|(name, _)| name),
    );
    assert!(peers.contains(&"helm"), "{peers:?}");
    for p in peers {
        assert!(
            section.contains(&format!("`{p}`")),
            "README's \"Two commands\" does not name `{p}`, which .ci/run installs:\n{section}"
        );
    }
}
