//! The `mirror` benchmark: ferry as a pull-through cache versus the Distribution proxy, in front of
//! the same Distribution upstream, with nginx serving the same bytes as the cached-serving limit.
//!
//! Cold passes pull every image once through a fresh cache with 1, 4 and 10 pullers (a Rust client
//! doing what containerd does: manifest by tag, then config and layers, digests checked) and count
//! the upstream's requests per image; the same client pulling the upstream directly is the
//! baseline. Cached passes drive each server with wrk over the same request mix.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Nginx, cpu_seconds, find, rss};
use futures_util::StreamExt;

use crate::common::*;

/// `ferry-bench mirror`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Images in the upstream, each pulled once per cold pass [default: 1500; --quick: 200]
    #[arg(long, value_name = "N")]
    images: Option<usize>,
    /// Concurrency levels, each measured: pullers of a cold pass, wrk connections of the cached
    /// runs [default: 1,4,10]
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    pullers: Option<Vec<usize>>,
    /// Seconds per cached run [default: 10; --quick: 3]
    #[arg(long, value_name = "S")]
    seconds: Option<u64>,
    /// Cached runs per server, of which the median is reported [default: 3; --quick: 1]
    #[arg(long, value_name = "R")]
    repeats: Option<usize>,
    /// Images in the scale rows' cache (start-up, idle RSS and cached pulls of a mirror holding
    /// that many; 0 skips them) [default: 100000; --quick: 0]
    #[arg(long, value_name = "N")]
    scale: Option<usize>,
    /// Where the scale store is generated once and reused, the serve benchmark's by default
    /// [default: scale-N in the --out directory]
    #[arg(long, value_name = "DIR")]
    scale_data: Option<PathBuf>,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    ferry: PathBuf,
    images: usize,
    pullers: Vec<usize>,
    seconds: u64,
    repeats: usize,
    out: PathBuf,
    quick: bool,
    scale: Option<crate::scale::ScaleOptions>,
}

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let o = Options {
            ferry: c.ferry("mirror")?,
            images: c.sized(a.images, 1500, 200),
            pullers: c.sized(a.pullers, vec![1, 4, 10], vec![1, 4, 10]),
            seconds: c.sized(a.seconds, 10, 3),
            repeats: c.sized(a.repeats, 3, 1),
            out: c.out(),
            quick: c.quick,
            scale: crate::scale::ScaleOptions::from_args(c, a.scale, a.scale_data.as_deref()),
        };
        ensure!(
            o.images > 0
                && o.repeats > 0
                && !o.pullers.is_empty()
                && o.pullers.iter().all(|p| *p > 0),
            "--images, --repeats and every --pullers value must be at least 1"
        );
        Ok(o)
    }
}

/// Pulls every image once with `pullers` concurrent pullers; returns images/s and the failures.
async fn pull_all(base: &str, images: &[Image], pullers: usize) -> (f64, usize) {
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pullers * (BLOB_DOWNLOADS_PER_IMAGE + 1))
        .build()
        .expect("client");
    let started = Instant::now();
    let errors = futures_util::stream::iter(images.iter().enumerate())
        .map(|(i, img)| {
            let c = &c;
            async move {
                match pull_image(c, base, i, img).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("    pull failed: {e:#}");
                        1
                    }
                }
            }
        })
        .buffer_unordered(pullers)
        .fold(0usize, |a, e| async move { a + e })
        .await;
    (
        images.len() as f64 / started.elapsed().as_secs_f64(),
        errors,
    )
}

fn upstream_requests(upstream: &DockerRegistry) -> usize {
    upstream.count_requests("GET", "/v2/bench/") + upstream.count_requests("HEAD", "/v2/bench/")
}

pub fn run(o: Options) -> anyhow::Result<()> {
    for tool in ["docker-registry", "nginx", "wrk"] {
        ensure!(
            find(tool).is_some(),
            "{tool} is not installed: apt-get install docker-registry nginx wrk"
        );
    }
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-mirror")
        .tempdir()?;
    let w = work.path();
    let rt = tokio::runtime::Runtime::new()?;
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .build()?;

    eprintln!(
        "generating {} images (config + 5 layers of ~1.6 KB)…",
        o.images
    );
    let images: Vec<Image> = (0..o.images)
        .map(|i| image(i as u64, 5, 1500, "amd64"))
        .collect();
    let upstream = DockerRegistry::start_logged().context("docker-registry")?;
    let up_base = format!("http://{}", upstream.host());
    eprintln!("seeding the upstream…");
    rt.block_on(push_all(&c, &up_base, &images))?;
    let www = w.join("www");
    write_static_tree(&www, &images)?;
    let nginx = Nginx::start(&www).context("nginx")?;
    let nginx_base = format!("http://127.0.0.1:{}", nginx.port);

    let mut cold = serde_json::Map::new();
    let mut last_ferry_data = None;
    // Earlier proxies stay up (idle) until the end: deleting their caches right before the next
    // measured pass would make its file creations slower (ext4 without a journal scans recently
    // freed inodes when it allocates one), which would charge one peer's clean-up to another.
    let mut proxies = Vec::new();
    for &p in &o.pullers {
        eprintln!("cold pull-through, {p} pullers…");
        // CPU seconds per image of a process over a pass (where the time of a cold pull goes on
        // a machine whose cores the upstream shares).
        let per_image = |pid: u32, before: f64| {
            cpu_seconds(pid).map_or(0.0, |after| (after - before) / images.len() as f64)
        };
        let up_pid = upstream.process.pid();
        let up_before = cpu_seconds(up_pid).unwrap_or(0.0);
        let (direct, direct_err) = rt.block_on(pull_all(&up_base, &images, p));
        let direct_upstream_cpu = per_image(up_pid, up_before);
        let data = w.join(format!("ferry-{p}"));
        let ferry = Ferry::start(
            &o.ferry,
            &data,
            &["--log-level", "warn", "--upstream", &up_base],
        );
        let before = upstream_requests(&upstream);
        let (up_before, ferry_before) = (
            cpu_seconds(up_pid).unwrap_or(0.0),
            cpu_seconds(ferry.process.pid()).unwrap_or(0.0),
        );
        let (ferry_rate, ferry_err) = rt.block_on(pull_all(&ferry.url(), &images, p));
        let (ferry_upstream_cpu, ferry_cpu) = (
            per_image(up_pid, up_before),
            per_image(ferry.process.pid(), ferry_before),
        );
        let ferry_upstream = upstream_requests(&upstream) - before;
        let (_, ferry_peak) = rss(ferry.process.pid()).unwrap_or((0, 0));
        drop(ferry);
        let proxy = DockerRegistry::start_proxy(&up_base).context("docker-registry proxy")?;
        let proxy_base = format!("http://{}", proxy.host());
        let before = upstream_requests(&upstream);
        let (up_before, proxy_before) = (
            cpu_seconds(up_pid).unwrap_or(0.0),
            cpu_seconds(proxy.process.pid()).unwrap_or(0.0),
        );
        let (proxy_rate, proxy_err) = rt.block_on(pull_all(&proxy_base, &images, p));
        let (proxy_upstream_cpu, proxy_cpu) = (
            per_image(up_pid, up_before),
            per_image(proxy.process.pid(), proxy_before),
        );
        let proxy_upstream = upstream_requests(&upstream) - before;
        eprintln!(
            "  direct {direct:.0} img/s, ferry {ferry_rate:.0} img/s ({:.1} upstream req/img), Distribution proxy {proxy_rate:.0} img/s ({:.1} upstream req/img)",
            ferry_upstream as f64 / images.len() as f64,
            proxy_upstream as f64 / images.len() as f64
        );
        cold.insert(
            p.to_string(),
            serde_json::json!({
                "direct_images_per_sec": direct, "direct_errors": direct_err,
                "ferry_images_per_sec": ferry_rate, "ferry_errors": ferry_err,
                "ferry_upstream_requests_per_image": ferry_upstream as f64 / images.len() as f64,
                "ferry_peak_rss_bytes": ferry_peak,
                "proxy_images_per_sec": proxy_rate, "proxy_errors": proxy_err,
                "proxy_upstream_requests_per_image": proxy_upstream as f64 / images.len() as f64,
                "cpu_seconds_per_image": {
                    "direct_upstream": direct_upstream_cpu,
                    "ferry": ferry_cpu, "ferry_upstream": ferry_upstream_cpu,
                    "proxy": proxy_cpu, "proxy_upstream": proxy_upstream_cpu,
                },
            }),
        );
        last_ferry_data = Some(data);
        proxies.push(proxy);
    }
    let proxy = proxies.last().context("no cold pass ran")?;
    let proxy_base = format!("http://{}", proxy.host());

    // Cached: a fresh ferry process over the warm cache (index rebuilt from disk).
    let ferry = Ferry::start(
        &o.ferry,
        &last_ferry_data.context("no cold pass ran")?,
        &["--log-level", "warn", "--upstream", &up_base],
    );
    rt.block_on(async {
        c.get(format!("{}/v2/", ferry.url()))
            .send()
            .await
            .map(|_| ())
    })?;
    let (idle_rss, _) = rss(ferry.process.pid()).context("ferry RSS")?;
    let mut cached_upstream = 0;
    let script = w.join("wrk.lua");
    std::fs::write(&script, include_str!("wrk.lua"))?;
    let paths = w.join("paths.txt");
    let lines: Vec<String> = images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| pull_paths(i, img))
        .collect();
    std::fs::write(&paths, lines.join("\n") + "\n")?;
    let mut cached = serde_json::Map::new();
    for &p in &o.pullers {
        eprintln!("cached serving, {p} connections…");
        let n = series(
            o.seconds,
            o.repeats,
            &format!("nginx-{p}"),
            &script,
            &paths,
            &nginx_base,
            p,
            w,
        )?;
        let before = upstream_requests(&upstream);
        let f = series(
            o.seconds,
            o.repeats,
            &format!("ferry-{p}"),
            &script,
            &paths,
            &ferry.url(),
            p,
            w,
        )?;
        cached_upstream += upstream_requests(&upstream) - before;
        let d = series(
            o.seconds,
            o.repeats,
            &format!("proxy-{p}"),
            &script,
            &paths,
            &proxy_base,
            p,
            w,
        )?;
        cached.insert(
            p.to_string(),
            serde_json::json!({"nginx": summary(&n), "ferry": summary(&f), "proxy": summary(&d)}),
        );
    }
    let (_, ferry_peak) = rss(ferry.process.pid()).context("ferry RSS")?;
    let scale = match &o.scale {
        Some(so) => {
            let base_paths = w.join("digest-paths.txt");
            let lines: Vec<String> = images
                .iter()
                .enumerate()
                .flat_map(|(i, img)| {
                    let r = repo(i);
                    std::iter::once(format!("/v2/{r}/manifests/{}", img.manifest.digest)).chain(
                        img.blobs()
                            .map(move |b| format!("/v2/{}/blobs/{}", repo(i), b.digest)),
                    )
                })
                .collect();
            std::fs::write(&base_paths, lines.join("\n") + "\n")?;
            let rows = ScaleRows {
                rt: &rt,
                c: &c,
                upstream: &upstream,
                up_base: &up_base,
                base: &ferry,
                base_paths: &base_paths,
                script: &script,
                w,
            };
            Some(rows.run(&o, so, images.len())?)
        }
        None => None,
    };
    let mut result = serde_json::json!({
        "benchmark": "mirror",
        "date": now_utc(),
        "machine": machine(),
        "parameters": {"images": o.images, "pullers": o.pullers, "seconds_per_run": o.seconds, "repeats": o.repeats, "quick": o.quick,
            "image": "config + 5 gzip layers of ~1.6 KB", "cold_driver": "Rust client, manifest by tag then config and layers 3 at a time (containerd's default), digests checked", "cached_driver": "wrk -t1"},
        "cold": cold,
        "cached": cached,
        "cached_upstream_requests": cached_upstream,
        "memory": {"ferry_idle_rss_bytes": idle_rss, "ferry_peak_rss_bytes": ferry_peak},
        "targets": {"pull_through_vs_direct": 0.9, "ferry_peak_rss_mib": 30,
            "scale_startup_s": 3.0, "scale_idle_rss_mib": 64, "scale_vs_base": 0.9},
    });
    if let Some(sc) = scale {
        result["scale"] = sc;
    }
    let table = render(&result);
    println!("{table}");
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    std::fs::write(
        o.out.join(format!("mirror-{stamp}.json")),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(
        o.out.join("mirror-latest.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("mirror-latest.md"), &table)?;
    eprintln!(
        "wrote {}",
        o.out.join(format!("mirror-{stamp}.json")).display()
    );
    drop((ferry, proxy, nginx, upstream));
    Ok(())
}

/// The name the scale rows' mirror gives its upstream: the prefix its cache is stored under.
const SCALE_UPSTREAM: &str = "scale.upstream";

/// What the scale rows use of the main run: the warm 1,500-image mirror (`base`) is the baseline.
struct ScaleRows<'a> {
    rt: &'a tokio::runtime::Runtime,
    c: &'a reqwest::Client,
    upstream: &'a DockerRegistry,
    up_base: &'a str,
    base: &'a Ferry,
    base_paths: &'a std::path::Path,
    script: &'a std::path::Path,
    w: &'a std::path::Path,
}

impl ScaleRows<'_> {
    /// A mirror whose cache holds `so.images` images (the serve benchmark's scale store, linked
    /// under the upstream's prefix): start-up, idle RSS, and cached pulls of `pulled` of them
    /// (manifest by digest, config, layers) taking turns with the same pulls from the base mirror.
    fn run(
        &self,
        o: &Options,
        so: &crate::scale::ScaleOptions,
        pulled: usize,
    ) -> anyhow::Result<serde_json::Value> {
        let generated = crate::scale::ensure_generated(&o.ferry, so)?;
        let store = crate::scale::mirror_store(so, SCALE_UPSTREAM)?;
        let config = self.w.join("scale-mirror.toml");
        std::fs::write(
            &config,
            format!(
                "[[upstream]]\nurl = \"{}\"\nname = \"{SCALE_UPSTREAM}\"\n",
                self.up_base
            ),
        )?;
        let config = config.to_string_lossy().into_owned();
        let (mirror, startup, idle_rss) = crate::scale::start_timed(
            &o.ferry,
            &store,
            &["--log-level", "warn", "--config", &config],
            so.images,
            self.rt,
            self.c,
        )?;
        let paths = self.w.join("scale-digest-paths.txt");
        std::fs::write(
            &paths,
            crate::scale::digest_paths(so, pulled)?.join("\n") + "\n",
        )?;
        let conns = o.pullers.iter().copied().max().unwrap_or(10);
        eprintln!(
            "cached pulls of {pulled} images through the mirror: {pulled} cached and {} cached, taking turns, {conns} connections",
            so.images
        );
        let before = self.upstream.count_requests("GET", "/v2/")
            + self.upstream.count_requests("HEAD", "/v2/");
        let (mut at_base, mut at_scale) = (Vec::new(), Vec::new());
        for _ in 0..o.repeats {
            at_base.extend(series(
                o.seconds,
                1,
                "mirror-base",
                self.script,
                self.base_paths,
                &self.base.url(),
                conns,
                self.w,
            )?);
            at_scale.extend(series(
                o.seconds,
                1,
                "mirror-scale",
                self.script,
                &paths,
                &mirror.url(),
                conns,
                self.w,
            )?);
        }
        let upstream_requests = self.upstream.count_requests("GET", "/v2/")
            + self.upstream.count_requests("HEAD", "/v2/")
            - before;
        let (_, peak) = rss(mirror.process.pid()).context("reading ferry's RSS")?;
        let (b, s) = (summary(&at_base), summary(&at_scale));
        let rps = |v: &serde_json::Value| v["median_rps"].as_f64().unwrap_or(0.0);
        Ok(serde_json::json!({
            "images": so.images,
            "pulled": pulled,
            "connections": conns,
            "startup_s": startup.as_secs_f64(),
            "idle_rss_bytes": idle_rss,
            "peak_rss_bytes": peak,
            "generated": generated,
            "upstream_requests": upstream_requests,
            "cached_pulls": {"ferry_base": b, "ferry_scale": s},
            "ratio": if rps(&b) > 0.0 { rps(&s) / rps(&b) } else { 0.0 },
        }))
    }
}

fn render(r: &serde_json::Value) -> String {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut s = format!(
        "mirror benchmark, {} — {} ({} cores), {} images (config + 5 layers of ~1.6 KB)\n\n",
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"],
        r["parameters"]["images"]
    );
    s.push_str("Pull-through (cold cache), images/s:\n\n| pullers | direct from upstream | ferry | Distribution proxy | ferry ÷ direct | ferry ÷ proxy | upstream req/img ferry | upstream req/img proxy |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    if let Some(cold) = r["cold"].as_object() {
        let mut keys: Vec<&String> = cold.keys().collect();
        keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(0));
        for k in keys {
            let v = &cold[k];
            let (d, fe, p) = (
                f(&v["direct_images_per_sec"]),
                f(&v["ferry_images_per_sec"]),
                f(&v["proxy_images_per_sec"]),
            );
            s.push_str(&format!(
                "| {k} | {d:.0} | {fe:.0} | {p:.0} | {:.2}× | {:.1}× | {:.2} | {:.2} |\n",
                if d > 0.0 { fe / d } else { 0.0 },
                if p > 0.0 { fe / p } else { 0.0 },
                f(&v["ferry_upstream_requests_per_image"]),
                f(&v["proxy_upstream_requests_per_image"])
            ));
        }
    }
    s.push_str("\nCPU per image pulled (ms; the upstream shares the cores, so what ferry uses is taken from it):\n\n| pullers | direct: upstream | via ferry: upstream + ferry | via proxy: upstream + proxy |\n|---:|---:|---:|---:|\n");
    if let Some(cold) = r["cold"].as_object() {
        let mut keys: Vec<&String> = cold.keys().collect();
        keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(0));
        for k in keys {
            let c = &cold[k]["cpu_seconds_per_image"];
            let ms = |v: &serde_json::Value| f(v) * 1000.0;
            s.push_str(&format!(
                "| {k} | {:.1} | {:.1} + {:.1} | {:.1} + {:.1} |\n",
                ms(&c["direct_upstream"]),
                ms(&c["ferry_upstream"]),
                ms(&c["ferry"]),
                ms(&c["proxy_upstream"]),
                ms(&c["proxy"]),
            ));
        }
    }
    s.push_str(&format!("\nCached, requests/s (wrk -t1, median of {} × {}s):\n\n| connections | nginx | ferry | Distribution proxy | ferry ÷ nginx | ferry ÷ proxy |\n|---:|---:|---:|---:|---:|---:|\n", r["parameters"]["repeats"], r["parameters"]["seconds_per_run"]));
    if let Some(cached) = r["cached"].as_object() {
        let mut keys: Vec<&String> = cached.keys().collect();
        keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(0));
        for k in keys {
            let v = &cached[k];
            let (n, fe, p) = (
                f(&v["nginx"]["median_rps"]),
                f(&v["ferry"]["median_rps"]),
                f(&v["proxy"]["median_rps"]),
            );
            s.push_str(&format!(
                "| {k} | {n:.0} | {fe:.0} | {p:.0} | {:.2}× | {:.1}× |\n",
                if n > 0.0 { fe / n } else { 0.0 },
                if p > 0.0 { fe / p } else { 0.0 }
            ));
        }
    }
    s.push_str(&format!(
        "\nUpstream requests while ferry served the cached passes: {}. ferry RSS: idle with every image cached {:.1} MiB, peak under load {:.1} MiB.\n",
        r["cached_upstream_requests"],
        f(&r["memory"]["ferry_idle_rss_bytes"]) / 1048576.0,
        f(&r["memory"]["ferry_peak_rss_bytes"]) / 1048576.0
    ));
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let target = |key: &str| f(&r["targets"][key]);
    let mut readings = Vec::new();
    if let Some(cold) = r["cold"].as_object() {
        let mut keys: Vec<&String> = cold.keys().collect();
        keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(0));
        for k in keys {
            let (d, fe) = (
                f(&cold[k]["direct_images_per_sec"]),
                f(&cold[k]["ferry_images_per_sec"]),
            );
            let ratio = if d > 0.0 { fe / d } else { 0.0 };
            readings.push(format!(
                "pull-through at {k} ÷ direct {ratio:.2} (≥ {}: {})",
                target("pull_through_vs_direct"),
                met(ratio >= target("pull_through_vs_direct"))
            ));
        }
    }
    let cached_rps = |k: &str| f(&r["cached"][k]["ferry"]["median_rps"]);
    if r["cached"]["4"].is_object() && r["cached"]["10"].is_object() {
        readings.push(format!(
            "cached 4 → 10 connections {:.0} → {:.0} req/s (no dip: {})",
            cached_rps("4"),
            cached_rps("10"),
            met(cached_rps("10") >= cached_rps("4"))
        ));
    }
    let peak = f(&r["memory"]["ferry_peak_rss_bytes"]) / 1048576.0;
    readings.push(format!(
        "peak RSS {peak:.1} MiB (≤ {}: {})",
        target("ferry_peak_rss_mib"),
        met(peak <= target("ferry_peak_rss_mib"))
    ));
    s.push_str(&format!("\n#16 targets: {}.\n", readings.join("; ")));
    let sc = &r["scale"];
    if sc.is_object() {
        let (startup, idle, peak, ratio) = (
            f(&sc["startup_s"]),
            f(&sc["idle_rss_bytes"]) / 1048576.0,
            f(&sc["peak_rss_bytes"]) / 1048576.0,
            f(&sc["ratio"]),
        );
        s.push_str(&format!(
            "\nScale: a mirror whose cache holds {} images; cached pulls of {} of them (manifest by digest, config, layers; wrk, {} connections) beside the same pulls from the mirror above:\n\n| mirror | requests/s | p50 µs | p99 µs | errors |\n|---|---:|---:|---:|---:|\n",
            sc["images"], sc["pulled"], sc["connections"]
        ));
        for (key, name) in [
            ("ferry_base", "cache of the run above"),
            ("ferry_scale", "cache of the scale store"),
        ] {
            let v = &sc["cached_pulls"][key];
            s.push_str(&format!(
                "| {name} | {:.0} | {:.0} | {:.0} | {} |\n",
                f(&v["median_rps"]),
                f(&v["median_p50_us"]),
                f(&v["median_p99_us"]),
                v["errors"]
            ));
        }
        s.push_str(&format!(
            "\nStart-up to serving {startup:.2} s (target ≤ {}: {}); idle RSS {idle:.1} MiB (target ≤ {}: {}), peak {peak:.1} MiB; cached pulls at scale ÷ base {ratio:.2} (target ≥ {}: {}); upstream requests during these pulls: {}.\n",
            target("scale_startup_s"),
            met(startup <= target("scale_startup_s")),
            target("scale_idle_rss_mib"),
            met(idle <= target("scale_idle_rss_mib")),
            target("scale_vs_base"),
            met(ratio >= target("scale_vs_base")),
            sc["upstream_requests"]
        ));
    }
    s
}
