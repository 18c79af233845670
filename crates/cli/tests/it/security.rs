//! Attacks on a running `ferry serve` (issue #10's findings, each reproduced here): what a hostile
//! client can do to what other clients pull, and to the server's memory and connections.

use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo};

use crate::{client, ferry_bin};

/// Pushes `img` as `repo:tag` (monolithic blob uploads, then the manifest); the statuses of every
/// request, in order.
async fn push_statuses(base: &str, repo: &str, tag: &str, img: &Image) -> Vec<u16> {
    push_statuses_with(&client(), base, repo, tag, img).await
}

/// [`push_statuses`] with a given client.
async fn push_statuses_with(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    img: &Image,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for b in img.blobs() {
        let r = c
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                b.digest
            ))
            .body(b.bytes.clone())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(img.manifest.bytes.clone())
        .send()
        .await
        .unwrap();
    statuses.push(r.status().as_u16());
    statuses
}

/// The digest a GET of `repo:tag` answers with.
async fn manifest_digest(base: &str, repo: &str, tag: &str) -> (u16, Option<Digest>) {
    let r = client()
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, (status == 200).then(|| Digest::sha256(&body)))
}

/// Finding 1 (HIGH): with a default upstream, a push without `ns` to a name the upstream serves
/// replaced the image for every client (Docker's `registry-mirrors` sends no `ns`). Now every name
/// routed to an upstream is read-only, a repository pushed before the upgrade no longer shadows the
/// upstream's, and only configured local namespaces take pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cannot_replace_what_the_default_upstream_serves() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let good = image(1001, 1, 20_000, "amd64");
    let evil = image(1002, 1, 20_000, "amd64");
    skopeo.push_image(
        &good,
        tmp.path(),
        &format!("{}/good/img:v1", upstream.host()),
    );
    let data = tmp.path().join("data");

    // A repository of the same name pushed while ferry was a plain registry.
    {
        let plain = Ferry::start(ferry_bin(), &data, &[]);
        let pushed = push_statuses(&plain.url(), "good/img", "v1", &evil).await;
        assert!(pushed.iter().all(|s| *s == 201), "{pushed:?}");
    }

    let up = format!("http://{}", upstream.host());
    let ferry = Ferry::start(
        ferry_bin(),
        &data,
        &["--upstream", &up, "--local-namespace", "mine"],
    );
    let base = ferry.url();
    assert_eq!(
        manifest_digest(&base, "good/img", "v1").await,
        (200, Some(good.manifest.digest.clone())),
        "the earlier push shadows the upstream's image"
    );
    assert!(
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(10), || ferry
            .process
            .log()
            .contains("pushed repositories are not served")),
        "no warning about the shadowed repository: {}",
        ferry.process.log()
    );

    // The attack: push over the upstream's name, and over a name the upstream does not have.
    for repo in ["good/img", "other/new"] {
        let statuses = push_statuses(&base, repo, "v1", &evil).await;
        assert!(
            statuses.iter().all(|s| *s == 405),
            "{repo}: pushes were accepted: {statuses:?}"
        );
    }
    let r = client()
        .post(format!("{base}/v2/good/img/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("local_namespaces"));
    assert_eq!(
        manifest_digest(&base, "good/img", "v1").await,
        (200, Some(good.manifest.digest.clone())),
        "a push replaced the upstream's image"
    );

    // A local namespace is a registry of its own: pushes land, pulls never go upstream.
    let statuses = push_statuses(&base, "mine/app", "v1", &evil).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(
        manifest_digest(&base, "mine/app", "v1").await,
        (200, Some(evil.manifest.digest.clone()))
    );
    assert_eq!(manifest_digest(&base, "mine/nothing", "v1").await.0, 404);
}

/// A local namespace may not overlap an upstream's cache namespace.
#[test]
fn a_local_namespace_inside_a_cache_namespace_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferry_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
            "--local-namespace",
            "127.0.0.1__9/team",
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the cache namespace"), "{err}");
}

/// Finding 2: every unknown request method became a metrics series of its own (20,000 unique 4 KB
/// methods: RSS 7.8 → 90.5 MB, an 81 MB `/metrics`). Methods outside the registry's set now count
/// as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_do_not_grow_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = ferry_testkit::peers::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--metrics", &metrics_addr],
    );
    let c = client();
    let scrape = || async {
        c.get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let (rss_before, _) = ferry_testkit::peers::rss(ferry.process.pid()).unwrap();
    const N: usize = 3_000;
    for i in 0..N {
        let method =
            reqwest::Method::from_bytes(format!("X{i:05}{}", "M".repeat(4_000)).as_bytes())
                .unwrap();
        let r = c
            .request(method, format!("{}/v2/a/manifests/v1", ferry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let after = scrape().await;
    let (rss_after, _) = ferry_testkit::peers::rss(ferry.process.pid()).unwrap();
    assert!(
        after.len() < before.len() + 4_096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(&format!(
            "ferry_http_requests_total{{endpoint=\"manifest\",method=\"other\",status=\"405\"}} {N}"
        )),
        "{after}"
    );
    let r = c.get(format!("{}/v2/", ferry.url())).send().await.unwrap();
    assert_eq!(r.status(), 200, "other clients are not served");
    // Each unique series held ~4 KB: the bug cost ≥ 12 MB here.
    assert!(
        rss_after < rss_before + 8 * 1024 * 1024,
        "RSS grew from {rss_before} to {rss_after} bytes"
    );
}

/// A ferry whose `[limits]` are `limits` (TOML lines), with nothing else configured.
fn ferry_with_limits(tmp: &std::path::Path, limits: &str, extra: &[&str]) -> Ferry {
    let config = tmp.join("limits.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    Ferry::start(ferry_bin(), &tmp.join("data"), &args)
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is this machine).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Pushes one blob of `len` seeded bytes to `repo`; its digest.
async fn push_blob(base: &str, repo: &str, len: usize) -> Digest {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let digest = Digest::sha256(&bytes);
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    digest
}

/// Finding 3: eight clients that GET a 32 MiB blob and stop reading after its head held all eight
/// connection slots forever, and `/v2/` timed out for everyone. Now a client must take response
/// bytes at `min_client_rate` over each window; one that stalls is cut off and its slot freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_lose_their_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(
        tmp.path(),
        "max_connections = 8\nclient_rate_window_secs = 2",
        &[],
    );
    const SIZE: usize = 32 << 20;
    let digest = push_blob(&ferry.url(), "big/blob", SIZE).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        // A small receive buffer, as an attacker would set, so the kernel does not take the
        // whole blob on the client's behalf (loopback autotunes it up to 32 MiB here).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let mut s = socket.connect(ferry.host().parse().unwrap()).await.unwrap();
        s.write_all(
            format!(
                "GET /v2/big/blob/blobs/{digest} HTTP/1.1\r\nhost: {}\r\n\r\n",
                ferry.host()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 1024];
        s.read_exact(&mut head).await.unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200"));
        stalled.push(s);
    }
    // Every slot is held by a stalled reader; a new client is served once they are cut off.
    let started = std::time::Instant::now();
    let r = client_from("127.0.0.1")
        .get(format!("{}/v2/", ferry.url()))
        .send()
        .await
        .expect("/v2/ was not answered while stalled readers held the slots");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Every stalled connection is closed on ferry's side (no longer ESTABLISHED there)...
    let ports: Vec<u16> = stalled
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    assert!(
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(20), || {
            ports
                .iter()
                .all(|p| tcp_state(ferry.port, *p).is_none_or(|st| st != 1))
        }),
        "stalled connections are still open"
    );
    // ...before the blob was sent: what reaches the client is what sat in socket buffers.
    for mut s in stalled {
        let mut got = 1024u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(
            got < SIZE as u64,
            "a stalled reader still got the whole blob"
        );
    }
}

/// The rate floor must not cut off a client that reads well above it: one that starts fast and
/// then reads at 128 KiB/s for three windows gets the whole blob, intact. (Its receive buffer is
/// small, so what it reads is what ferry sees taken: a client whose own kernel holds megabytes it
/// reads slowly takes nothing from ferry meanwhile, which is why the default window is long.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_keeps_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(tmp.path(), "client_rate_window_secs = 8", &[]);
    const SIZE: usize = 32 << 20;
    let digest = push_blob(&ferry.url(), "big/blob", SIZE).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(256 * 1024).unwrap();
    let mut s = socket.connect(ferry.host().parse().unwrap()).await.unwrap();
    s.write_all(
        format!(
            "GET /v2/big/blob/blobs/{digest} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            ferry.host()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::with_capacity(SIZE + 1024);
    let mut buf = vec![0u8; 1 << 20];
    // Fast for the first 8 MiB.
    while got.len() < 8 << 20 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    // 16 KiB every 125 ms for 24 s: 128 KiB/s, over a hundred times the floor, for three windows.
    // (A write waits until a few hundred KiB have drained, ~3 s at this rate: the window must be
    // longer than that, as the default two minutes is for clients down to ~10 KiB/s.)
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(125));
    for _ in 0..192 {
        tick.tick().await;
        let n = s.read(&mut buf[..16 * 1024]).await.unwrap();
        assert!(
            n > 0,
            "closed after {} bytes while reading at 128 KiB/s",
            got.len()
        );
        got.extend_from_slice(&buf[..n]);
    }
    // Then the rest, fast.
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - head_end, SIZE, "the body was cut short");
    assert_eq!(Digest::sha256(&got[head_end..]), digest);
}

/// Finding 3: a request body trickled one byte at a time (each gap under `body_idle_timeout`)
/// was held forever. Now it must arrive at `min_client_rate` over each window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(tmp.path(), "client_rate_window_secs = 2", &[]);
    let r = client()
        .post(format!("{}/v2/slow/body/blobs/uploads/", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let mut s = tokio::net::TcpStream::connect(ferry.host()).await.unwrap();
    s.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: 100000\r\n\r\n",
            ferry.host()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The attack: one byte every 200 ms (5 B/s against a 1 KiB/s floor). Stop within 20 s.
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
            }
            n = s.read_buf(&mut answer) => {
                if n.unwrap_or(0) == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the trickled body is still being accepted"
        );
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "unexpected answer: {text}"
    );
}

/// Finding 3: one address may hold only `max_connections_per_client` connections, so one host
/// cannot take every slot; others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(
        tmp.path(),
        "max_connections = 16\nmax_connections_per_client = 4",
        &[],
    );
    // Four idle connections from 127.0.0.3 (they send nothing; an address of their own, so the
    // harness's readiness probes from 127.0.0.1 cannot count against it).
    let mut held = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        held.push(socket.connect(ferry.host().parse().unwrap()).await.unwrap());
    }
    let r = client_from("127.0.0.3")
        .get(format!("{}/v2/", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));
    let r = client_from("127.0.0.2")
        .get(format!("{}/v2/", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
}

/// Finding 5: 10,000 upload sessions started by one client blocked every other client's chunked
/// pushes until the 168 h TTL. Now one address holds at most `max_uploads_per_client` sessions,
/// and sessions that never received a byte make room after `empty_upload_ttl_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_block_everyone_elses_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(
        tmp.path(),
        "max_uploads = 30\nmax_uploads_per_client = 20\nempty_upload_ttl_secs = 1",
        &[],
    );
    let start = |c: reqwest::Client, url: String| async move {
        c.post(format!("{url}/v2/team/app/blobs/uploads/"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let attacker = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(start(attacker.clone(), ferry.url()).await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 20);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20);
    // Others still start sessions up to the global cap...
    let other = client_from("127.0.0.2");
    for _ in 0..10 {
        assert_eq!(start(other.clone(), ferry.url()).await, 202);
    }
    // ...and beyond it once the attacker's empty sessions are abandoned.
    let third = client_from("127.0.0.3");
    let rt = tokio::runtime::Handle::current();
    let url = ferry.url();
    let ok = tokio::task::spawn_blocking(move || {
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(20), || {
            rt.block_on(start(third.clone(), url.clone())) == 202
        })
    })
    .await
    .unwrap();
    assert!(ok, "abandoned empty sessions never made room");
}

/// The TCP state (as /proc/net/tcp numbers it: 1 is ESTABLISHED) of the socket on 127.0.0.1
/// `local` connected to `remote`.
fn tcp_state(local: u16, remote: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |i: usize| u16::from_str_radix(f.get(i)?.rsplit(':').next()?, 16).ok();
        (port(1)? == local && port(2)? == remote)
            .then(|| u8::from_str_radix(f.get(3)?, 16).ok())
            .flatten()
    })
}

/// Bytes waiting unread in the receive queues of `port`'s server-side sockets (from
/// /proc/net/tcp), so a test knows when a server has read everything its clients sent.
fn unread_bytes_at(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            (local_port == port).then_some(rx)
        })
        .sum()
}

/// Opens `count` connections from each of `ips`, each sending a chunked manifest of 4 MiB − 4 KiB
/// without its last chunk, and returns them once ferry has read everything they sent.
async fn hold_manifest_bodies(
    ferry: &Ferry,
    ips: &[&str],
    count: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    const BODY: usize = (4 << 20) - 4096;
    let mut senders = Vec::new();
    for ip in ips {
        for i in 0..count {
            let (host, ip) = (ferry.host(), ip.to_string());
            senders.push(tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
                let mut s = socket.connect(host.parse().unwrap()).await.unwrap();
                let head = format!(
                    "PUT /v2/m/app/manifests/t{i} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < BODY {
                    let n = chunk.len().min(BODY - sent);
                    let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                    if s.write_all(&framed).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                // Held open without the last chunk.
                s
            }));
        }
    }
    let mut held = Vec::new();
    for t in senders {
        held.push(t.await.unwrap());
    }
    assert!(
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(60), || {
            unread_bytes_at(ferry.port) == 0
        }),
        "the server did not read what its clients sent"
    );
    held
}

/// How many of `held` ferry has answered and closed (a refused body), as opposed to still
/// reading: its side of the connection is no longer ESTABLISHED.
fn refused(ferry_port: u16, held: &[tokio::net::TcpStream]) -> usize {
    held.iter()
        .filter(|s| {
            let port = s.local_addr().unwrap().port();
            tcp_state(ferry_port, port).is_none_or(|st| st != 1)
        })
        .count()
}

/// Finding 4: manifests are read whole before they are hashed, bounded per request only: 60
/// connections each holding a chunked manifest of 4 MiB − 4 KiB took 280 MB. Now the bytes held
/// across all requests are bounded (`max_buffered_manifest_bytes`, 64 MiB, which also pays for
/// parsing), one address holds at most a quarter of it while its bodies arrive (so another
/// address still pushes), and beyond the whole budget pushes get 429 while pulls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_manifest_bodies_are_bounded_in_total() {
    let tmp = tempfile::tempdir().unwrap();
    let ferry = ferry_with_limits(tmp.path(), "max_buffered_manifest_bytes = 67108864", &[]);
    let pid = ferry.process.pid();
    let (_, peak_before) = ferry_testkit::peers::rss(pid).unwrap();
    // One address, 60 connections.
    let one = hold_manifest_bodies(&ferry, &["127.0.0.1"], 60).await;
    let other = client_from("127.0.0.2");
    let img = image(1004, 1, 10_000, "amd64");
    let statuses = push_statuses_with(&other, &ferry.url(), "other/app", "v1", &img).await;
    assert!(
        statuses.iter().all(|s| *s == 201),
        "another address's push while one address holds its share: {statuses:?}"
    );
    let (_, peak_one) = ferry_testkit::peers::rss(pid).unwrap();
    let refused_one = refused(ferry.port, &one);
    // Six more addresses, 15 connections each: together past the whole budget.
    let many = hold_manifest_bodies(
        &ferry,
        &[
            "127.0.0.11",
            "127.0.0.12",
            "127.0.0.13",
            "127.0.0.14",
            "127.0.0.15",
            "127.0.0.16",
        ],
        15,
    )
    .await;
    let (_, peak) = ferry_testkit::peers::rss(pid).unwrap();
    let r = other
        .get(format!("{}/v2/", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "pulls stop while the budget is spent");
    // At most the whole budget is held, whatever the number of addresses: 16 bodies of
    // 4 MiB − 4 KiB fit in 64 MiB, and one more may hold the few KiB left. Small pushes still fit
    // in what is left. (Refused connections are closed a moment after their 429: wait for that.)
    let held_bodies =
        || (one.len() - refused(ferry.port, &one)) + (many.len() - refused(ferry.port, &many));
    assert!(
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(30), || held_bodies()
            <= 17),
        "{} bodies held",
        held_bodies()
    );
    let statuses = push_statuses_with(&other, &ferry.url(), "other/app", "v2", &img).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    eprintln!(
        "held manifests: peak RSS {} MiB before, {} MiB with 60 bodies from one address ({refused_one} refused), {} MiB with 90 more from six ({} refused)",
        peak_before >> 20,
        peak_one >> 20,
        peak >> 20,
        refused(ferry.port, &many)
    );
    assert!(refused_one > 0, "no push was refused with 429");
    // The 64 MiB budget, plus per-connection buffers (150 connections, up to 64 KiB each) and
    // allocator slack; before the fix 60 connections alone took 265 MiB more.
    assert!(
        peak < peak_before + 128 * 1024 * 1024,
        "peak RSS grew from {peak_before} to {peak} bytes"
    );
    drop((one, many));
}

/// A request's head (up to 64 KiB) as a test server reads it; `None` if the client went away.
async fn read_request_head(c: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match c.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The one blob the hostile upstream serves honestly, with its true length.
const HONEST_BLOB: &[u8] = b"honest bytes";

/// A hostile upstream on 127.0.0.1: `/v2/` answers, the manifest `h/app:v1` lists a 1-byte config
/// blob, and every blob request is answered with junk, chunked and without a length (paths with
/// `huge` claim a 1 TiB `Content-Length` instead), up to 256 MiB per request. It counts the body
/// bytes it managed to send and the requests that ended.
struct HostileUpstream {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ended: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileUpstream {
    async fn start(manifest: Vec<u8>, tags: Vec<u8>) -> HostileUpstream {
        let tags = std::sync::Arc::new(tags);
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s2, e2) = (sent.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = listener.accept().await else {
                    return;
                };
                let (sent, ended, manifest, tags) =
                    (s2.clone(), e2.clone(), manifest.clone(), tags.clone());
                tokio::spawn(async move {
                    let Some(head) = read_request_head(&mut c).await else {
                        return;
                    };
                    let line = head.lines().next().unwrap_or("").to_owned();
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    if path.contains("/tags/list") {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            tags.len()
                        );
                        let _ = c.write_all(h.as_bytes()).await;
                        let _ = c.write_all(&tags).await;
                        return;
                    }
                    if path.contains("/manifests/") {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            manifest.len()
                        );
                        let _ = c.write_all(&[h.as_bytes(), &manifest].concat()).await;
                        return;
                    }
                    if !path.contains("/blobs/") {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                            .await;
                        return;
                    }
                    let honest = Digest::sha256(HONEST_BLOB);
                    if path.ends_with(honest.as_str()) {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            HONEST_BLOB.len()
                        );
                        let _ = c.write_all(&[h.as_bytes(), HONEST_BLOB].concat()).await;
                        return;
                    }
                    let huge = path.contains("huge");
                    let h: &[u8] = if huge {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\nconnection: close\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    };
                    if c.write_all(h).await.is_ok() {
                        let junk = vec![b'j'; 256 * 1024];
                        let framed = if huge {
                            junk.clone()
                        } else {
                            [format!("{:x}\r\n", junk.len()).as_bytes(), &junk, b"\r\n"].concat()
                        };
                        for _ in 0..1024 {
                            if c.write_all(&framed).await.is_err() {
                                break;
                            }
                            sent.fetch_add(junk.len() as u64, Ordering::SeqCst);
                        }
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HostileUpstream {
            addr,
            sent,
            ended,
            task,
        }
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finding 9: asked for a 1-byte blob, an upstream answering without a length made ferry write
/// 290 MB into `tmp/` (and go on after the client left); a 1 TiB Content-Length was accepted. Now a
/// fill stops at the size the manifest gave, or at `max_blob_size` when none did, and a length
/// beyond either is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cannot_fill_the_disk_through_a_blob() {
    use std::sync::atomic::Ordering;
    let config_blob = Digest::sha256(b"x");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1, "digest": config_blob.as_str()},
        // A descriptor whose size is wrong (anyone can push such a manifest): the blob, served
        // honestly with its length, must still be cached.
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 3, "digest": Digest::sha256(HONEST_BLOB).as_str()}],
    }))
    .unwrap();
    let hostile = HostileUpstream::start(manifest, Vec::new()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nurl = \"http://{}\"\nmax_blob_size = \"1MiB\"\n",
            hostile.addr
        ),
    )
    .unwrap();
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let c = client();
    let base = ferry.url();
    let fetch_blob = |digest: Digest| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c
                .get(format!("{base}/v2/h/app/blobs/{digest}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.map(|b| b.len()).unwrap_or(0);
            (status, body)
        }
    };
    let wait_ended = |n: u64| {
        let ended = hostile.ended.clone();
        ferry_testkit::peers::wait_until(std::time::Duration::from_secs(60), move || {
            ended.load(Ordering::SeqCst) >= n
        })
    };
    // Known size: the manifest said 1 byte.
    let r = c
        .get(format!("{base}/v2/h/app/manifests/v1"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, got) = fetch_blob(config_blob).await;
    assert!(
        status != 200 || got <= 1,
        "a client got {got} bytes of a 1-byte blob"
    );
    assert!(wait_ended(1), "the upstream transfer never ended");
    let sent_known = hostile.sent.load(Ordering::SeqCst);
    // Unknown size: bounded by max_blob_size (1 MiB).
    let (status, got) = fetch_blob(Digest::sha256(b"unknown")).await;
    assert!(status != 200 || got <= 1 << 20, "a client got {got} bytes");
    assert!(wait_ended(2), "the upstream transfer never ended");
    let sent_unknown = hostile.sent.load(Ordering::SeqCst) - sent_known;
    // The upstream can push at most what sits in socket buffers past the point ferry stops; the
    // bug took all 256 MiB each time.
    eprintln!(
        "blob fills: the upstream sent {sent_known} bytes (known size), {sent_unknown} (unknown)"
    );
    for (what, sent) in [("known", sent_known), ("unknown", sent_unknown)] {
        assert!(
            sent < 64 << 20,
            "{what} size: the upstream sent {sent} bytes before ferry stopped"
        );
    }
    // A 1 TiB Content-Length: refused before a byte is written.
    let (status, _) = fetch_blob(Digest::sha256(b"huge")).await;
    assert_eq!(status, 502);
    // A wrong size in a manifest does not stop an honest transfer.
    let r = c
        .get(format!(
            "{base}/v2/h/app/blobs/{}",
            Digest::sha256(HONEST_BLOB)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), HONEST_BLOB);
    let leftovers: u64 = std::fs::read_dir(tmp.path().join("data/tmp"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "failed fills left bytes in tmp/");
    let r = c.get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "other clients are not served");
}

/// Finding 10: one 8 MiB upstream page of tags added ~140 MB of RSS (every tag collected into a
/// string, then into a JSON value); ten concurrent requests peaked at 470 MB, not coalesced. Now a
/// page is filtered as it is parsed, identical requests share one fetch and its bytes, fetches in
/// flight are bounded, and pages held for unsent responses are budgeted (429 beyond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tag_lists_do_not_amplify_memory() {
    // ~8 MiB of short tags, just under the page limit.
    let mut tags = b"{\"name\":\"h/app\",\"tags\":[".to_vec();
    let mut i = 0u32;
    while tags.len() < (8 << 20) - 64 {
        if i > 0 {
            tags.push(b',');
        }
        tags.extend_from_slice(format!("\"t{i:x}\"").as_bytes());
        i += 1;
    }
    tags.extend_from_slice(b"]}");
    let hostile = HostileUpstream::start(Vec::new(), tags).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!("[[upstream]]\nurl = \"http://{}\"\n", hostile.addr),
    )
    .unwrap();
    let ferry = Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let pid = ferry.process.pid();
    let (_, peak_before) = ferry_testkit::peers::rss(pid).unwrap();
    let list = |query: String| {
        let url = format!("{}/v2/h/app/tags/list{query}", ferry.url());
        tokio::spawn(async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            (status, body.len())
        })
    };
    // Ten identical requests at once.
    let same: Vec<_> = (0..10).map(|_| list(String::new())).collect();
    for r in same {
        let (status, len) = r.await.unwrap();
        assert_eq!(status, 200);
        assert!(len > 8_000_000, "{len}");
    }
    let (_, peak_same) = ferry_testkit::peers::rss(pid).unwrap();
    // Ten different pages at once.
    let different: Vec<_> = (0..10)
        .map(|k| list(format!("?n={}", 5_000_000 + k)))
        .collect();
    let mut served = 0;
    for r in different {
        let (status, _) = r.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        served += usize::from(status == 200);
    }
    assert!(served > 0);
    let r = client()
        .get(format!("{}/v2/", ferry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "other clients are not served");
    let (_, peak) = ferry_testkit::peers::rss(pid).unwrap();
    let mib = |b: u64| b >> 20;
    eprintln!(
        "tag lists: peak RSS {} MiB before, {} MiB after ten identical, {} MiB after ten different",
        mib(peak_before),
        mib(peak_same),
        mib(peak)
    );
    assert!(
        peak_same < peak_before + (100 << 20),
        "ten identical tag lists: peak RSS {} MiB → {} MiB",
        mib(peak_before),
        mib(peak_same)
    );
    assert!(
        peak < peak_before + (200 << 20),
        "ten different tag lists: peak RSS {} MiB → {} MiB",
        mib(peak_before),
        mib(peak)
    );
}

/// A registry on `ip` that answers `/v2/…` with a Bearer challenge naming `realm`, and, when it is
/// also the realm, hands out tokens; it records the `Authorization` headers it receives.
struct ChallengingServer {
    addr: std::net::SocketAddr,
    authorizations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ChallengingServer {
    async fn start(ip: &str, realm: impl Fn(std::net::SocketAddr) -> String) -> ChallengingServer {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let realm = realm(addr);
        let authorizations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = listener.accept().await else {
                    return;
                };
                let (seen, realm) = (seen.clone(), realm.clone());
                tokio::spawn(async move {
                    let Some(head) = read_request_head(&mut c).await else {
                        return;
                    };
                    let text = head;
                    if let Some(a) = text
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    {
                        seen.lock().unwrap().push(a.to_owned());
                    }
                    let answer = if text.starts_with("GET /token") {
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"token\":\"tok\"}".to_owned()
                    } else {
                        format!(
                            "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"test\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                    };
                    let _ = c.write_all(answer.as_bytes()).await;
                });
            }
        });
        ChallengingServer {
            addr,
            authorizations,
            task,
        }
    }
}

impl Drop for ChallengingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finding 11: an upstream's 401 named a token realm on another host over plain HTTP, and ferry
/// sent the upstream's password there. Now such a realm gets nothing unless the upstream is
/// configured to allow it, and the log says which realm received credentials (never them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_a_plain_http_realm_to_another_host() {
    // The realm: 127.0.0.2 is another host than the upstream's 127.0.0.1.
    let realm = ChallengingServer::start("127.0.0.2", |a| format!("http://{a}/token")).await;
    let realm_url = format!("http://{}/token", realm.addr);
    let upstream = ChallengingServer::start("127.0.0.1", move |_| realm_url.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    for allow in [false, true] {
        let config = tmp.path().join(format!("ferry-{allow}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[upstream]]\nurl = \"http://{}\"\nusername = \"me\"\npassword = \"s3cret-pass\"\nallow_plain_http_realm = {allow}\n",
                upstream.addr
            ),
        )
        .unwrap();
        let ferry = Ferry::start(
            ferry_bin(),
            &tmp.path().join(format!("data-{allow}")),
            &["--config", config.to_str().unwrap()],
        );
        let r = client()
            .get(format!("{}/v2/x/app/manifests/v1", ferry.url()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        let sent = realm.authorizations.lock().unwrap().clone();
        if allow {
            assert!(
                sent.iter().any(|a| a.contains("Basic")),
                "the allowed realm got no credentials: {sent:?}"
            );
            let log = ferry.process.log();
            assert!(
                log.contains("sending this upstream's credentials to its token realm")
                    && log.contains(&format!("http://{}", realm.addr)),
                "{log}"
            );
            assert!(!log.contains("s3cret-pass"), "the password is in the log");
        } else {
            assert!(sent.is_empty(), "credentials went to the realm: {sent:?}");
            assert_eq!(status, 502, "{body}");
            assert!(body.contains("plain HTTP"), "{body}");
        }
    }
}
