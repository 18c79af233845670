//! The `serve` benchmark.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use base64::Engine;
use ferry_testkit::image::{Image, Rng, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Nginx, find, rss};
use ferry_testkit::tls::TestPki;

use crate::common::*;

/// `ferry-bench serve`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Images pulled in each run [default: 1000; --quick: 200]
    #[arg(long, value_name = "N")]
    images: Option<usize>,
    /// Images stored in each server (at least --images) [default: 1500; --quick: 300]
    #[arg(long, value_name = "N")]
    stored: Option<usize>,
    /// wrk connections [default: 10]
    #[arg(long, value_name = "N")]
    pullers: Option<usize>,
    /// Seconds per run [default: 10; --quick: 3]
    #[arg(long, value_name = "S")]
    seconds: Option<u64>,
    /// Runs per server, of which the median is reported [default: 3; --quick: 1]
    #[arg(long, value_name = "R")]
    repeats: Option<usize>,
    /// Size of the large blob in MiB [default: 1024; --quick: 256]
    #[arg(long, value_name = "M")]
    big_mib: Option<u64>,
    /// Images in the scale store (start-up, idle RSS and cached pulls at that size; 0 skips the
    /// scale rows) [default: 100000; --quick: 0]
    #[arg(long, value_name = "N")]
    scale: Option<usize>,
    /// Where the scale store is generated once and reused [default: scale-N in the --out directory]
    #[arg(long, value_name = "DIR")]
    scale_data: Option<PathBuf>,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    ferry: PathBuf,
    images: usize,
    stored: usize,
    pullers: usize,
    seconds: u64,
    repeats: usize,
    big_mib: u64,
    out: PathBuf,
    quick: bool,
    scale: Option<crate::scale::ScaleOptions>,
}

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let o = Options {
            ferry: c.ferry("serve")?,
            images: c.sized(a.images, 1000, 200),
            stored: c.sized(a.stored, 1500, 300),
            pullers: c.sized(a.pullers, 10, 10),
            seconds: c.sized(a.seconds, 10, 3),
            repeats: c.sized(a.repeats, 3, 1),
            big_mib: c.sized(a.big_mib, 1024, 256),
            out: c.out(),
            quick: c.quick,
            scale: crate::scale::ScaleOptions::from_args(c, a.scale, a.scale_data.as_deref()),
        };
        ensure!(
            o.stored >= o.images && o.images > 0 && o.repeats > 0 && o.pullers > 0,
            "--stored must be at least --images; --images, --repeats and --pullers at least 1"
        );
        Ok(o)
    }
}

/// Connections of the second small-pull row (the "at 64 connections").
const WIDE: usize = 64;

/// The one user of the basic-auth rows.
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

pub fn run(o: Options) -> anyhow::Result<()> {
    for tool in ["docker-registry", "nginx", "wrk"] {
        ensure!(
            find(tool).is_some(),
            "{tool} is not installed: apt-get install docker-registry nginx wrk"
        );
    }
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new().prefix("ferry-bench").tempdir()?;
    let w = work.path();
    let rt = tokio::runtime::Runtime::new()?;
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .build()?;

    eprintln!(
        "generating {} images (config + 5 layers of ~1.6 KB)…",
        o.stored
    );
    let images: Vec<Image> = (0..o.stored)
        .map(|i| image(i as u64, 5, 1500, "amd64"))
        .collect();
    let pulled = &images[..o.images];

    let ferry_data = w.join("ferry-data");
    let ferry = Ferry::start(&o.ferry, &ferry_data, &["--log-level", "warn"]);
    let distribution = DockerRegistry::start().context("docker-registry")?;
    let dist_base = format!("http://{}", distribution.host());
    eprintln!(
        "pushing {} images to ferry and {} to Distribution…",
        o.stored, o.images
    );
    rt.block_on(push_all(&c, &ferry.url(), &images))?;
    rt.block_on(push_all(&c, &dist_base, pulled))?;

    eprintln!("writing {} MiB blob…", o.big_mib);
    let big_path = w.join("big.bin");
    let big_digest = {
        let mut rng = Rng::new(99);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big_path)?);
        let mut h = ferry_oci::Algorithm::Sha256.hasher();
        for _ in 0..o.big_mib {
            let chunk = rng.bytes(1024 * 1024);
            h.update(&chunk);
            std::io::Write::write_all(&mut f, &chunk)?;
        }
        std::io::Write::flush(&mut f)?;
        h.finish()
    };
    rt.block_on(async {
        let file = tokio::fs::File::open(&big_path).await?;
        let body = reqwest::Body::wrap_stream(tokio_util_stream(file));
        push_blob(&c, &ferry.url(), "bench/big", &big_digest, body).await
    })?;

    let www = w.join("www");
    write_static_tree(&www, pulled)?;
    let big_static = www.join("v2/bench/big/blobs");
    std::fs::create_dir_all(&big_static)?;
    std::fs::rename(&big_path, big_static.join(big_digest.as_str()))?;

    // Memory with the store full, measured on a fresh process (index rebuilt, nothing cached).
    drop(ferry);
    let ferry = Ferry::start(&o.ferry, &ferry_data, &["--log-level", "warn"]);
    rt.block_on(async {
        // One request, so the runtime and connection paths are initialised before measuring "idle".
        c.get(format!("{}/v2/", ferry.url()))
            .send()
            .await
            .map(|_| ())
    })?;
    let (idle_rss, _) = rss(ferry.process.pid()).context("reading ferry's RSS")?;
    eprintln!(
        "ferry idle RSS with {} images stored: {:.1} MiB",
        o.stored,
        idle_rss as f64 / 1048576.0
    );

    let nginx = Nginx::start(&www).context("nginx")?;
    let nginx_base = format!("http://127.0.0.1:{}", nginx.port);
    eprintln!("verifying every path on all three servers…");
    for base in [&ferry.url(), &dist_base, &nginx_base] {
        rt.block_on(verify(&c, base, pulled))?;
    }

    let script = w.join("wrk.lua");
    std::fs::write(&script, include_str!("wrk.lua"))?;
    let small_paths = w.join("small-paths.txt");
    let lines: Vec<String> = pulled
        .iter()
        .enumerate()
        .flat_map(|(i, img)| pull_paths(i, img))
        .collect();
    std::fs::write(&small_paths, lines.join("\n") + "\n")?;
    let big_paths = w.join("big-paths.txt");
    std::fs::write(&big_paths, format!("/v2/bench/big/blobs/{big_digest}\n"))?;

    eprintln!(
        "small-image pulls: {} images × 7 requests, {} connections, {} × {}s, nginx and ferry taking turns",
        o.images, o.pullers, o.repeats, o.seconds
    );
    let ferry_url = ferry.url();
    let turns = |name_n: &str, name_f: &str, connections: usize| {
        let targets = [
            Target {
                name: name_n,
                url: &nginx_base,
                auth: None,
            },
            Target {
                name: name_f,
                url: &ferry_url,
                auth: None,
            },
        ];
        interleaved(
            o.seconds,
            o.repeats,
            &targets,
            &script,
            &small_paths,
            connections,
            w,
        )
    };
    let mut small = turns("small-nginx", "small-ferry", o.pullers)?;
    let small_ferry = small.pop().unwrap_or_default();
    let small_nginx = small.pop().unwrap_or_default();
    eprintln!("the same at {WIDE} connections");
    let mut wide = turns("small-nginx-wide", "small-ferry-wide", WIDE)?;
    let wide_ferry = wide.pop().unwrap_or_default();
    let wide_nginx = wide.pop().unwrap_or_default();
    let small_dist = series(
        o.seconds,
        o.repeats,
        "small-distribution",
        &script,
        &small_paths,
        &dist_base,
        o.pullers,
        w,
    )?;
    eprintln!("large blob ({} MiB), 1 connection", o.big_mib);
    let big_nginx = series(
        o.seconds,
        o.repeats,
        "big-nginx",
        &script,
        &big_paths,
        &nginx_base,
        1,
        w,
    )?;
    let big_ferry = series(
        o.seconds,
        o.repeats,
        "big-ferry",
        &script,
        &big_paths,
        &ferry.url(),
        1,
        w,
    )?;
    let (_, ferry_peak) = rss(ferry.process.pid()).context("reading ferry's RSS")?;
    let scale = match &o.scale {
        Some(so) => Some(scale_rows(
            &o,
            so,
            &rt,
            &c,
            &script,
            &small_paths,
            &ferry,
            w,
        )?),
        None => None,
    };
    let dist_rss = rss(distribution.process.pid()).map(|r| r.1).unwrap_or(0);

    // Basic auth on every request: a second ferry with --htpasswd and one user (so no access
    // rules: that user may do everything, anonymous nothing), filled the same way, taking turns
    // with the plain one.
    let htpasswd = w.join("htpasswd");
    ferry_testkit::write_secret(
        &htpasswd,
        format!(
            "{USER}:{}\n",
            bcrypt::hash(PASSWORD, 10).map_err(|e| anyhow::anyhow!("bcrypt: {e:?}"))?
        ),
    );
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let authed = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Basic {credentials}").parse()?,
        )]))
        .build()?;
    let auth_data = w.join("ferry-auth-data");
    let auth_args = [
        "--log-level",
        "warn",
        "--htpasswd",
        htpasswd.to_str().context("a UTF-8 temp path")?,
    ];
    eprintln!("pushing {} images to ferry with basic auth…", o.stored);
    {
        let f = Ferry::start(&o.ferry, &auth_data, &auth_args);
        rt.block_on(push_all(&authed, &f.url(), &images))?;
    }
    // Restarted, as the plain one was, so that both serve with the index rebuilt from disk.
    let ferry_auth = Ferry::start(&o.ferry, &auth_data, &auth_args);
    rt.block_on(async {
        let anonymous = c
            .get(format!("{}/v2/{}/manifests/v1", ferry_auth.url(), repo(0)))
            .send()
            .await?;
        ensure!(
            anonymous.status() == 401,
            "ferry --htpasswd answered {} to an anonymous pull",
            anonymous.status()
        );
        verify(&authed, &ferry_auth.url(), pulled).await
    })?;
    eprintln!("small-image pulls, ferry with and without basic auth, taking turns");
    let (ferry_url, auth_url) = (ferry.url(), ferry_auth.url());
    let [small_plain, small_auth]: [Vec<WrkRun>; 2] = interleaved(
        o.seconds,
        o.repeats,
        &[
            Target {
                name: "small-ferry-beside-auth",
                url: &ferry_url,
                auth: None,
            },
            Target {
                name: "small-ferry-basic-auth",
                url: &auth_url,
                auth: Some(&credentials),
            },
        ],
        &script,
        &small_paths,
        o.pullers,
        w,
    )?
    .try_into()
    .map_err(|_| anyhow::anyhow!("two series expected"))?;
    drop(ferry_auth);

    // TLS: ferry restarted on the same data with a certificate for 127.0.0.1, against nginx
    // serving the same files over TLS, taking turns.
    drop(ferry);
    let pki = TestPki::generate();
    let ferry = Ferry::start(
        &o.ferry,
        &ferry_data,
        &[
            "--log-level",
            "warn",
            "--tls-cert",
            pki.cert.to_str().context("a UTF-8 temp path")?,
            "--tls-key",
            pki.key.to_str().context("a UTF-8 temp path")?,
        ],
    );
    let ferry_tls = format!("https://{}", ferry.host());
    let nginx_tls = Nginx::start_tls(&www, &pki).context("nginx")?;
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem)?)
        .build()?;
    eprintln!("verifying every path on ferry and nginx over TLS…");
    for base in [&ferry_tls, &nginx_tls.url()] {
        rt.block_on(verify(&trusting, base, pulled))?;
    }
    let negotiated = serde_json::json!({
        "ferry": negotiated_tls(ferry.port, &pki),
        "nginx": negotiated_tls(nginx_tls.port, &pki),
        "server_key": "ECDSA P-256 (rcgen)",
    });
    let nginx_tls_url = nginx_tls.url();
    let mut tls_runs = Vec::new();
    for (kind, paths, connections) in [("small", &small_paths, o.pullers), ("big", &big_paths, 1)] {
        eprintln!("{kind} over TLS, nginx and ferry taking turns");
        let (n, f) = (format!("{kind}-nginx-tls"), format!("{kind}-ferry-tls"));
        let targets = [
            Target {
                name: &n,
                url: &nginx_tls_url,
                auth: None,
            },
            Target {
                name: &f,
                url: &ferry_tls,
                auth: None,
            },
        ];
        tls_runs.push(interleaved(
            o.seconds,
            o.repeats,
            &targets,
            &script,
            paths,
            connections,
            w,
        )?);
    }
    drop(nginx_tls);

    let s = |runs: &[WrkRun]| summary(runs);
    let (sn, sf, sd, bn, bf) = (
        s(&small_nginx),
        s(&small_ferry),
        s(&small_dist),
        s(&big_nginx),
        s(&big_ferry),
    );
    let rps = |v: &serde_json::Value| v["median_rps"].as_f64().unwrap_or(0.0);
    let bps = |v: &serde_json::Value| v["median_bytes_per_s"].as_f64().unwrap_or(0.0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut result = serde_json::json!({
        "benchmark": "serve",
        "date": now_utc(),
        "machine": machine(),
        "parameters": {
            "images_pulled": o.images, "images_stored": o.stored, "connections": o.pullers,
            "seconds_per_run": o.seconds, "repeats": o.repeats, "big_blob_mib": o.big_mib, "quick": o.quick,
            "driver": "wrk -t1, one request per path, cycling manifest-by-tag + config + 5 layers",
        },
        "small_pulls": {"nginx": sn, "ferry": sf, "distribution": sd},
        "small_pulls_wide": {"connections": WIDE, "nginx": summary(&wide_nginx), "ferry": summary(&wide_ferry)},
        "big_blob": {"nginx": bn, "ferry": bf},
        "memory": {"ferry_idle_rss_bytes": idle_rss, "ferry_peak_rss_bytes": ferry_peak, "distribution_peak_rss_bytes": dist_rss},
        "ratios": {
            "small_ferry_vs_nginx": ratio(rps(&sf), rps(&sn)),
            "small_ferry_vs_nginx_wide": ratio(rps(&summary(&wide_ferry)), rps(&summary(&wide_nginx))),
            "small_ferry_vs_distribution": ratio(rps(&sf), rps(&sd)),
            "big_ferry_vs_nginx": ratio(bps(&bf), bps(&bn)),
        },
        "targets": {"small_ferry_vs_nginx": 0.9, "small_ferry_vs_nginx_wide": 0.9, "big_ferry_vs_nginx": 1.0, "ferry_idle_rss_mib": 15, "ferry_peak_rss_mib": 30},
    });
    let (tn, tf, btn, btf, ap, aa) = (
        s(&tls_runs[0][0]),
        s(&tls_runs[0][1]),
        s(&tls_runs[1][0]),
        s(&tls_runs[1][1]),
        s(&small_plain),
        s(&small_auth),
    );
    let added = [
        (
            "small_ferry_tls_vs_nginx_tls",
            ratio(rps(&tf), rps(&tn)),
            0.6,
        ),
        (
            "big_ferry_tls_vs_nginx_tls",
            ratio(bps(&btf), bps(&btn)),
            0.8,
        ),
        (
            "small_ferry_basic_auth_vs_ferry",
            ratio(rps(&aa), rps(&ap)),
            0.9,
        ),
    ];
    for (key, r, target) in added {
        result["ratios"][key] = r.into();
        result["targets"][key] = target.into();
    }
    result["small_pulls_tls"] = serde_json::json!({"nginx": tn, "ferry": tf});
    result["big_blob_tls"] = serde_json::json!({"nginx": btn, "ferry": btf});
    result["small_pulls_basic_auth"] = serde_json::json!({"ferry": ap, "ferry_basic_auth": aa});
    result["tls_negotiated"] = negotiated;
    if let Some(sc) = scale {
        result["ratios"]["small_ferry_scale_vs_1500"] = sc["ratio"].clone();
        result["targets"]["small_ferry_scale_vs_1500"] = 0.9.into();
        result["targets"]["scale_startup_s"] = 3.0.into();
        result["targets"]["scale_idle_rss_mib"] = 64.into();
        result["scale"] = sc;
    }
    let table = render(&result);
    println!("{table}");
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    let json_path = o.out.join(format!("serve-{stamp}.json"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&result)?)?;
    std::fs::write(
        o.out.join("serve-latest.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("serve-latest.md"), &table)?;
    eprintln!("wrote {} and serve-latest.{{json,md}}", json_path.display());
    drop(nginx);
    drop(distribution);
    drop(ferry);
    Ok(())
}

/// Start-up, idle RSS and cached pulls with the scale store, the pulls taking turns with the same
/// pulls from the ordinary store (`ferry`, still serving).
#[allow(clippy::too_many_arguments)]
fn scale_rows(
    o: &Options,
    so: &crate::scale::ScaleOptions,
    rt: &tokio::runtime::Runtime,
    c: &reqwest::Client,
    script: &std::path::Path,
    small_paths: &std::path::Path,
    ferry: &Ferry,
    w: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let sc = crate::scale::prepare(&o.ferry, so, o.images, rt, c, w)?;
    let (scale_url, base_url) = (sc.ferry.url(), ferry.url());
    let (mut at_base, mut at_scale) = (Vec::new(), Vec::new());
    eprintln!(
        "small pulls of {} images: {} stored and {} stored, taking turns",
        o.images, o.stored, so.images
    );
    for _ in 0..o.repeats {
        at_base.extend(series(
            o.seconds,
            1,
            "small-ferry-base",
            script,
            small_paths,
            &base_url,
            o.pullers,
            w,
        )?);
        at_scale.extend(series(
            o.seconds,
            1,
            "small-ferry-scale",
            script,
            &sc.paths,
            &scale_url,
            o.pullers,
            w,
        )?);
    }
    let (_, peak) = rss(sc.ferry.process.pid()).context("reading ferry's RSS")?;
    let (b, s) = (summary(&at_base), summary(&at_scale));
    let rps = |v: &serde_json::Value| v["median_rps"].as_f64().unwrap_or(0.0);
    Ok(serde_json::json!({
        "images": so.images,
        "startup_s": sc.startup.as_secs_f64(),
        "idle_rss_bytes": sc.idle_rss,
        "peak_rss_bytes": peak,
        "generated": sc.generated,
        "small_pulls": {"ferry_base": b, "ferry_scale": s},
        "ratio": if rps(&b) > 0.0 { rps(&s) / rps(&b) } else { 0.0 },
    }))
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1024 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// The markdown table printed and saved.
fn render(r: &serde_json::Value) -> String {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let p = &r["parameters"];
    let mut s = String::new();
    s.push_str(&format!(
        "serve benchmark, {} — {} ({} cores)\n\n",
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"]
    ));
    s.push_str(&format!(
        "Cached pulls of {} small images (manifest by tag + config + 5 layers), wrk -t1 -c{}, median of {} × {}s:\n\n",
        p["images_pulled"], p["connections"], p["repeats"], p["seconds_per_run"]
    ));
    small_table(
        &mut s,
        &r["small_pulls"],
        &[
            ("nginx", "nginx"),
            ("ferry", "ferry"),
            ("distribution", "distribution"),
        ],
        "ferry",
    );
    s.push_str(&format!(
        "\nOne {} MiB blob, 1 connection, median of {} × {}s:\n\n",
        p["big_blob_mib"], p["repeats"], p["seconds_per_run"]
    ));
    big_table(
        &mut s,
        &r["big_blob"],
        &[("nginx", "nginx"), ("ferry", "ferry")],
    );
    if r["small_pulls_wide"].is_object() {
        s.push_str(&format!(
            "\nThe same pulls at {} connections, nginx and ferry taking turns:\n\n",
            r["small_pulls_wide"]["connections"]
        ));
        small_table(
            &mut s,
            &r["small_pulls_wide"],
            &[("nginx", "nginx"), ("ferry", "ferry")],
            "ferry",
        );
    }
    let m = &r["memory"];
    s.push_str(&format!(
        "\nMemory: ferry idle RSS with {} images stored {:.1} MiB (target ≤ 15), ferry peak RSS {:.1} MiB (target ≤ 30), Distribution peak RSS {:.1} MiB.\n",
        p["images_stored"],
        f(&m["ferry_idle_rss_bytes"]) / 1048576.0,
        f(&m["ferry_peak_rss_bytes"]) / 1048576.0,
        f(&m["distribution_peak_rss_bytes"]) / 1048576.0
    ));
    let t = &r["ratios"];
    s.push_str(&format!(
        "\nTargets: small pulls ferry ÷ nginx {:.2} (target ≥ 0.9), at {} connections {:.2} (≥ 0.9); large blob ferry ÷ nginx {:.2} (target ≥ 1.0); ferry ÷ Distribution {:.1}×.\n",
        f(&t["small_ferry_vs_nginx"]),
        WIDE,
        f(&t["small_ferry_vs_nginx_wide"]),
        f(&t["big_ferry_vs_nginx"]),
        f(&t["small_ferry_vs_distribution"])
    ));

    let tls = &r["tls_negotiated"];
    let session = |server: &str| {
        let v = &tls[server];
        format!(
            "{} {}",
            v["protocol"].as_str().unwrap_or("?"),
            v["cipher"].as_str().unwrap_or("?")
        )
    };
    s.push_str(&format!(
        "\nOver TLS (HTTP/1.1; openssl s_client negotiated ferry: {}, nginx: {}; server key {}), nginx and ferry taking turns, median of {} × {}s. Small pulls, {} connections:\n\n",
        session("ferry"),
        session("nginx"),
        tls["server_key"].as_str().unwrap_or("?"),
        p["repeats"],
        p["seconds_per_run"],
        p["connections"]
    ));
    let tls_rows = [("nginx", "nginx TLS"), ("ferry", "ferry TLS")];
    small_table(&mut s, &r["small_pulls_tls"], &tls_rows, "ferry");
    s.push_str(&format!(
        "\nOne {} MiB blob over TLS, 1 connection:\n\n",
        p["big_blob_mib"]
    ));
    big_table(&mut s, &r["big_blob_tls"], &tls_rows);
    s.push_str(&format!(
        "\nBasic auth on every request (ferry --htpasswd, one bcrypt user) and plain ferry, taking turns, median of {} × {}s, {} connections:\n\n",
        p["repeats"], p["seconds_per_run"], p["connections"]
    ));
    small_table(
        &mut s,
        &r["small_pulls_basic_auth"],
        &[("ferry", "ferry"), ("ferry_basic_auth", "ferry basic auth")],
        "ferry_basic_auth",
    );
    let checks = [
        (
            "small pulls ferry TLS ÷ nginx TLS",
            "small_ferry_tls_vs_nginx_tls",
        ),
        (
            "large blob ferry TLS ÷ nginx TLS",
            "big_ferry_tls_vs_nginx_tls",
        ),
        (
            "small pulls ferry basic auth ÷ ferry",
            "small_ferry_basic_auth_vs_ferry",
        ),
    ];
    let readings: Vec<String> = checks
        .iter()
        .map(|(what, key)| {
            let (ratio, target) = (f(&t[key]), f(&r["targets"][key]));
            let verdict = if ratio >= target { "met" } else { "missed" };
            format!("{what} {ratio:.2} (target ≥ {target}: {verdict})")
        })
        .collect();
    s.push_str(&format!(
        "\nTargets over TLS and with auth: {}.\n",
        readings.join("; ")
    ));
    let sc = &r["scale"];
    if sc.is_object() {
        let met = |ok: bool| if ok { "met" } else { "missed" };
        let (startup, idle, peak, ratio) = (
            f(&sc["startup_s"]),
            f(&sc["idle_rss_bytes"]) / 1048576.0,
            f(&sc["peak_rss_bytes"]) / 1048576.0,
            f(&sc["ratio"]),
        );
        let pushed = f(&sc["generated"]["push_images_per_s"]);
        s.push_str(&format!(
            "\nScale: {} images stored (pushed once with ferry load gen at {pushed:.0} images/s, on {}; target > 160: {}):\n\n",
            sc["images"],
            sc["generated"]["generated"].as_str().unwrap_or("an earlier run"),
            met(pushed > 160.0)
        ));
        small_table(
            &mut s,
            &sc["small_pulls"],
            &[
                ("ferry_base", "ferry, base store"),
                ("ferry_scale", "ferry, scale store"),
            ],
            "ferry_scale",
        );
        s.push_str(&format!(
            "\nStart-up to serving {startup:.2} s (target ≤ 3: {}); idle RSS {idle:.1} MiB (target ≤ 64: {}), peak {peak:.1} MiB; cached pulls at scale ÷ base {ratio:.2} (target ≥ 0.9: {}).\n",
            met(startup <= 3.0),
            met(idle <= 64.0),
            met(ratio >= 0.9)
        ));
    }
    s
}

/// Rows of small-pull results (`rows`: key in `section`, label), the last column being the
/// `reference` row's rate over each row's.
fn small_table(
    s: &mut String,
    section: &serde_json::Value,
    rows: &[(&str, &str)],
    reference: &str,
) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let reference_rps = f(&section[reference]["median_rps"]);
    let label = rows
        .iter()
        .find(|(key, _)| *key == reference)
        .map_or(reference, |(_, label)| *label);
    s.push_str(&format!("| server | requests/s | images/s | p50 µs | p99 µs | errors | {label} ÷ this |\n|---|---:|---:|---:|---:|---:|---:|\n"));
    for (key, name) in rows {
        let v = &section[*key];
        let rps = f(&v["median_rps"]);
        s.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2}× |\n",
            rps,
            rps / 7.0,
            f(&v["median_p50_us"]),
            f(&v["median_p99_us"]),
            v["errors"],
            if rps > 0.0 { reference_rps / rps } else { 0.0 }
        ));
    }
}

/// Rows of large-blob results (`rows`: key in `section`, label), the last one being ferry's.
fn big_table(s: &mut String, section: &serde_json::Value, rows: &[(&str, &str)]) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let label = rows.last().map_or("ferry", |(_, label)| *label);
    let ferry_bps = f(&section["ferry"]["median_bytes_per_s"]);
    s.push_str(&format!(
        "| server | MB/s | {label} ÷ this |\n|---|---:|---:|\n"
    ));
    for (key, name) in rows {
        let b = f(&section[*key]["median_bytes_per_s"]);
        s.push_str(&format!(
            "| {name} | {:.0} | {:.2}× |\n",
            b / 1e6,
            if b > 0.0 { ferry_bps / b } else { 0.0 }
        ));
    }
}

/// The protocol and cipher suite `openssl s_client` (the library wrk uses, with its defaults)
/// negotiates with the server on 127.0.0.1:`port`; nulls when openssl is not installed.
fn negotiated_tls(port: u16, pki: &TestPki) -> serde_json::Value {
    let Some(openssl) = find("openssl") else {
        return serde_json::json!({"protocol": null, "cipher": null});
    };
    let out = std::process::Command::new(openssl)
        .args([
            "s_client",
            "-brief",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-CAfile")
        .arg(&pki.ca)
        .stdin(std::process::Stdio::null())
        .output();
    let text = out
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    serde_json::json!({
        "protocol": field("Protocol version:"),
        "cipher": field("Ciphersuite:"),
        "key_exchange": field("Server Temp Key:").or_else(|| field("Peer Temp Key:")),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// The options `ferry-bench serve --ferry <an existing file> <args>` gives.
    fn options(args: &[&str]) -> anyhow::Result<Options> {
        let exe = std::env::current_exe().unwrap();
        let cli = Cli::try_parse_from(
            ["serve", "--ferry", exe.to_str().unwrap()]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        Options::new(cli.args)
    }

    fn sizes(o: &Options) -> (usize, usize, usize, u64, usize, u64, bool) {
        (
            o.images, o.stored, o.pullers, o.seconds, o.repeats, o.big_mib, o.quick,
        )
    }

    #[test]
    fn quick_sizes_the_options_not_given_and_given_ones_win() {
        assert_eq!(
            sizes(&options(&[]).unwrap()),
            (1000, 1500, 10, 10, 3, 1024, false)
        );
        assert_eq!(
            sizes(&options(&["--quick"]).unwrap()),
            (200, 300, 10, 3, 1, 256, true)
        );
        for args in [
            ["--images", "250", "--quick"],
            ["--quick", "--images", "250"],
        ] {
            assert_eq!(
                sizes(&options(&args).unwrap()),
                (250, 300, 10, 3, 1, 256, true),
                "{args:?}"
            );
        }
        assert!(
            options(&["--images", "400", "--quick"]).is_err(),
            "more than --stored"
        );
        assert!(options(&["--bogus"]).is_err());
        assert!(options(&["--images"]).is_err());
    }
}
