//! The `load` benchmark: ociregistry's load test, run with `ferry load` against ferry (mirror), the
//! Distribution proxy and nginx (the same images as static files: the serving limit), in front of
//! one seeded Distribution upstream.
//!
//! 1. Pull-through: one pass over every image through a fresh cache, one puller per batch; pulling
//!    the upstream directly is the baseline. Upstream requests per image are counted.
//! 2. Cached: pullers ramp 1→N→1 (N = batches) over the warm caches and nginx.
//! 3. Pull-through under the ramp: ferry pruning each puller's images after every pass.
//! 4. The driver itself: `ferry load run` and `wrk` against nginx on one core with the same
//!    connection count, to show the driver is not what limits the numbers.
//!
//! Each server's CPU time and memory are sampled from `/proc` during its runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use ferry_load::generate::GenOptions;
use ferry_report::Results;
use ferry_testkit::peers::{DockerRegistry, Ferry, Nginx, find};

use crate::common::{CommonArgs, machine, now_utc};

/// `ferry-bench load`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Images generated into the upstream [default: 1500; --quick: 200]
    #[arg(long, value_name = "N")]
    images: Option<usize>,
    /// Batches the images fall into (one puller per batch; at most --images) [default: 10; --quick: 4]
    #[arg(long, value_name = "B")]
    batches: Option<usize>,
    /// Seconds per step of the ramp [default: 60; --quick: 3]
    #[arg(long = "iteration-seconds", value_name = "S")]
    step_secs: Option<f64>,
    /// Seconds per tally row [default: 15; --quick: 1]
    #[arg(long = "tally-seconds", value_name = "T")]
    tally_secs: Option<f64>,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    ferry: PathBuf,
    images: usize,
    batches: usize,
    step_secs: f64,
    tally_secs: f64,
    driver_secs: u64,
    out: PathBuf,
    quick: bool,
}

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let o = Options {
            ferry: c.ferry("load")?,
            images: c.sized(a.images, 1500, 200),
            batches: c.sized(a.batches, 10, 4),
            step_secs: c.sized(a.step_secs, 60.0, 3.0),
            tally_secs: c.sized(a.tally_secs, 15.0, 1.0),
            driver_secs: c.sized(None, 10, 4),
            out: c.out(),
            quick: c.quick,
        };
        ensure!(
            o.batches >= 1 && o.batches <= o.images && o.step_secs > 0.0 && o.tally_secs > 0.0,
            "need 1 ≤ --batches ≤ --images and positive --iteration-seconds and --tally-seconds"
        );
        Ok(o)
    }
}

/// CPU seconds and peak RSS of a process and its children, sampled until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(f64, u64)>,
}

/// `pid` and its direct children (a server's workers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids
}

fn cpu_ticks(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the parenthesised name: utime and stime are the 12th and 13th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn rss_tree(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|p| ferry_testkit::peers::rss(*p))
        .map(|(now, _)| now)
        .sum()
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = cpu_ticks(pid);
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_tree(pid));
                std::thread::sleep(Duration::from_millis(200));
            }
            // Linux reports CPU time in clock ticks of 1/100 s.
            ((cpu_ticks(pid) - start) as f64 / 100.0, peak)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0.0, 0))
    }
}

/// Runs `ferry load run` with `args`; its results file.
fn load_run(ferry: &Path, args: &[&str], out: &Path) -> anyhow::Result<Results> {
    let status = Command::new(ferry)
        .args(["load", "run"])
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running ferry load run")?;
    ensure!(status.success(), "ferry load run {args:?} failed");
    Ok(ferry_report::read(out)?)
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

pub fn run(o: Options) -> anyhow::Result<()> {
    for tool in ["docker-registry", "nginx", "wrk", "taskset"] {
        ensure!(
            find(tool).is_some(),
            "{tool} is not installed: apt-get install docker-registry nginx wrk util-linux"
        );
    }
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-load")
        .tempdir()?;
    let w = work.path();
    let ferry = o.ferry.as_path();
    let upstream = DockerRegistry::start_logged().context("docker-registry")?;
    let up = upstream.host();
    let up_url = format!("http://{up}");
    let list = w.join("images.txt");
    eprintln!(
        "generating and pushing {} images in {} batches…",
        o.images, o.batches
    );
    let status = Command::new(ferry)
        .args([
            "load",
            "gen",
            "--registry",
            &up_url,
            "--seed",
            "1",
            "--blob-size",
            "1KiB",
        ])
        .args([
            "--count",
            &o.images.to_string(),
            "--batches",
            &o.batches.to_string(),
        ])
        .arg("--out")
        .arg(&list)
        .stdout(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "ferry load gen failed");
    // nginx serves the same bytes: the generator is deterministic.
    let generator = GenOptions {
        count: o.images,
        batches: o.batches,
        layers: 5,
        layer_size: 1024,
        seed: 1,
        architectures: vec!["amd64".into()],
    };
    let www = w.join("www");
    for i in 0..o.images {
        let img = generator.generate(i);
        let r = www.join("v2").join(&img.repo);
        std::fs::create_dir_all(r.join("manifests"))?;
        std::fs::create_dir_all(r.join("blobs"))?;
        std::fs::write(r.join("manifests").join(&img.tag), &img.top.bytes)?;
        std::fs::write(
            r.join("manifests").join(img.top.digest.as_str()),
            &img.top.bytes,
        )?;
        for b in &img.blobs {
            std::fs::write(r.join("blobs").join(b.digest.as_str()), &b.bytes)?;
        }
    }
    let nginx = Nginx::start(&www).context("nginx")?;
    let nginx_url = format!("http://127.0.0.1:{}", nginx.port);
    let patterns: Vec<String> = (1..=o.batches)
        .map(ferry_load::generate::batch_key)
        .collect();
    let patterns = patterns.join(",");
    let tally = o.tally_secs.to_string();
    let step = o.step_secs.to_string();
    let batches = o.batches.to_string();
    let list_s = list.to_str().context("path")?.to_owned();
    let upstream_requests =
        || upstream.count_requests("GET", "/v2/") + upstream.count_requests("HEAD", "/v2/");

    // 1. Cold pull-through: one pass, one puller per batch.
    let cold_args = |target: &str, ns: Option<&str>| {
        let mut a = vec![
            "--target".to_owned(),
            target.to_owned(),
            "--images".into(),
            list_s.clone(),
            "--patterns".into(),
            patterns.clone(),
            "--max-pullers".into(),
            batches.clone(),
            "--duration".into(),
            "36000".into(),
            "--passes".into(),
            "1".into(),
            "--tally-seconds".into(),
            tally.clone(),
            "--label".into(),
        ];
        a.push(match ns {
            Some(_) => format!("{target} (mirror)"),
            None => target.to_owned(),
        });
        if let Some(n) = ns {
            a.extend(["--ns".into(), n.to_owned()]);
        }
        a
    };
    eprintln!("pull-through (cold), {} pullers: direct…", o.batches);
    let direct = load_run(
        ferry,
        &as_refs(&cold_args(&up_url, None)),
        &w.join("cold-direct.json"),
    )?;
    let token = "bench-load-admin-token-0123456789";
    let token_file = w.join("token");
    std::fs::write(&token_file, token)?;
    let config = w.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "admin_token_file = \"{}\"\n[[upstream]]\nurl = \"{up_url}\"\n",
            token_file.display()
        ),
    )?;
    let ferry_srv = Ferry::start(
        ferry,
        &w.join("ferry-data"),
        &[
            "--log-level",
            "warn",
            "--config",
            config.to_str().context("path")?,
        ],
    );
    eprintln!("  ferry…");
    let before = upstream_requests();
    let sampler = Sampler::start(ferry_srv.process.pid());
    let cold_ferry = load_run(
        ferry,
        &as_refs(&cold_args(&ferry_srv.url(), Some(&up))),
        &w.join("cold-ferry.json"),
    )?;
    let (ferry_cold_cpu, _) = sampler.finish();
    let ferry_upstream = upstream_requests() - before;
    eprintln!("  Distribution proxy…");
    let proxy = DockerRegistry::start_proxy(&up_url).context("docker-registry proxy")?;
    let proxy_url = format!("http://{}", proxy.host());
    let before = upstream_requests();
    let cold_proxy = load_run(
        ferry,
        &as_refs(&cold_args(&proxy_url, None)),
        &w.join("cold-proxy.json"),
    )?;
    let proxy_upstream = upstream_requests() - before;

    // 2. Cached, ramping 1→N→1.
    let ramp_args = |target: &str, label: &str, ns: Option<&str>| {
        let mut a = vec![
            "--target".to_owned(),
            target.to_owned(),
            "--images".into(),
            list_s.clone(),
            "--patterns".into(),
            patterns.clone(),
            "--iteration-seconds".into(),
            step.clone(),
            "--tally-seconds".into(),
            tally.clone(),
            "--label".into(),
            label.to_owned(),
        ];
        if let Some(n) = ns {
            a.extend(["--ns".into(), n.to_owned()]);
        }
        a
    };
    let mut cached = serde_json::Map::new();
    let mut cached_files = Vec::new();
    let ferry_url = ferry_srv.url();
    for (label, url, ns, pid) in [
        ("nginx", nginx_url.as_str(), None, nginx.process.pid()),
        (
            "ferry",
            ferry_url.as_str(),
            Some(up.as_str()),
            ferry_srv.process.pid(),
        ),
        (
            "Distribution proxy",
            proxy_url.as_str(),
            None,
            proxy.process.pid(),
        ),
    ] {
        eprintln!("cached, 1→{}→1 pullers: {label}…", o.batches);
        let file = w.join(format!("cached-{}.json", label.replace(' ', "-")));
        let sampler = Sampler::start(pid);
        let r = load_run(ferry, &as_refs(&ramp_args(url, label, ns)), &file)?;
        let (cpu, peak) = sampler.finish();
        let images = r.summary.images as f64;
        cached.insert(
            label.to_owned(),
            serde_json::json!({
                "summary": r.summary,
                "peak_tally_images_per_sec": r.tallies.iter().map(|t| t.images_per_sec).fold(0.0, f64::max),
                "cpu_seconds": cpu,
                "cpu_ms_per_image": if images > 0.0 { cpu * 1000.0 / images } else { 0.0 },
                "peak_rss_bytes": peak,
            }),
        );
        cached_files.push(file);
    }

    // 3. Pull-through under the ramp: ferry prunes each puller's images after every pass.
    eprintln!(
        "pull-through with --prune, 1→{}→1 pullers: ferry…",
        o.batches
    );
    let mut prune_args = ramp_args(&ferry_srv.url(), "ferry (prune every pass)", Some(&up));
    prune_args.extend([
        "--prune".into(),
        "--admin-token-file".into(),
        token_file.display().to_string(),
    ]);
    let prune_file = w.join("prune-ferry.json");
    let sampler = Sampler::start(ferry_srv.process.pid());
    let pruned = load_run(ferry, &as_refs(&prune_args), &prune_file)?;
    let (_, prune_peak) = sampler.finish();

    // 4. The driver against wrk, one core each, 8 connections, on nginx.
    eprintln!("driver check: ferry load run vs wrk on one core against nginx…");
    let paths = w.join("paths.txt");
    let mut lines = Vec::new();
    for i in 0..o.images {
        let img = generator.generate(i);
        lines.push(format!("/v2/{}/manifests/{}", img.repo, img.tag));
        lines.extend(
            img.blobs
                .iter()
                .map(|b| format!("/v2/{}/blobs/{}", img.repo, b.digest)),
        );
    }
    std::fs::write(&paths, lines.join("\n") + "\n")?;
    let script = w.join("wrk.lua");
    std::fs::write(&script, include_str!("wrk.lua"))?;
    let wrk_json = w.join("wrk.json");
    let status = Command::new("taskset")
        .args(["-c", "0"])
        .arg(find("wrk").context("wrk")?)
        .args(["-t1", "-c8", &format!("-d{}s", o.driver_secs)])
        .arg("-s")
        .arg(&script)
        .arg(&nginx_url)
        .arg("--")
        .arg(&paths)
        .env("WRK_JSON", &wrk_json)
        .stdout(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "wrk failed");
    let wrk: serde_json::Value = serde_json::from_slice(&std::fs::read(&wrk_json)?)?;
    let driver_file = w.join("driver.json");
    let status = Command::new("taskset")
        .args(["-c", "0"])
        .arg(ferry)
        .args(["load", "run", "--target", &nginx_url, "--images", &list_s])
        .args([
            "--max-pullers",
            "8",
            "--layer-concurrency",
            "1",
            "--no-verify",
        ])
        .args([
            "--duration",
            &o.driver_secs.to_string(),
            "--tally-seconds",
            "1",
        ])
        .arg("--out")
        .arg(&driver_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "ferry load run (driver check) failed");
    let driver = ferry_report::read(&driver_file)?;

    let n = o.images as f64;
    let result = serde_json::json!({
        "benchmark": "load",
        "date": now_utc(),
        "machine": machine(),
        "parameters": {"images": o.images, "batches": o.batches, "iteration_seconds": o.step_secs,
            "tally_seconds": o.tally_secs, "quick": o.quick, "image": "config + 5 gzip layers of 1 KiB random bytes",
            "driver": "ferry load run (HEAD tag, GET manifest, GET config and layers 3 at a time, digests checked)"},
        "cold": {
            "direct": direct.summary, "ferry": cold_ferry.summary, "proxy": cold_proxy.summary,
            "ferry_upstream_requests_per_image": ferry_upstream as f64 / n,
            "proxy_upstream_requests_per_image": proxy_upstream as f64 / n,
            "ferry_cpu_seconds": ferry_cold_cpu,
        },
        "cached": cached,
        "pull_through_prune": {"summary": pruned.summary, "ferry_peak_rss_bytes": prune_peak},
        "driver_check": {"wrk_requests_per_sec": wrk["rps"], "driver_requests_per_sec": driver.summary.requests_per_sec},
    });
    let table = render(&result);
    println!("{table}");
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    std::fs::write(
        o.out.join(format!("load-{stamp}.json")),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("load-latest.md"), &table)?;
    // Charts through `ferry load report`, the way users make them.
    for (name, files, title) in [
        (
            "load-cached",
            cached_files.clone(),
            "cached pulls, 1→N→1 pullers",
        ),
        (
            "load-pull-through",
            vec![prune_file.clone()],
            "pull-through (ferry pruning every pass), 1→N→1 pullers",
        ),
    ] {
        for ext in ["svg", "png"] {
            let out = o.out.join(format!("{name}-{stamp}.{ext}"));
            let status = Command::new(ferry)
                .args(["load", "report"])
                .args(&files)
                .arg("--out")
                .arg(&out)
                .args(["--title", title])
                .stdout(std::process::Stdio::null())
                .status()?;
            ensure!(status.success(), "ferry load report failed");
        }
    }
    for f in cached_files.iter().chain([
        &prune_file,
        &w.join("cold-direct.json"),
        &w.join("cold-ferry.json"),
        &w.join("cold-proxy.json"),
    ]) {
        if let Some(name) = f.file_name() {
            std::fs::copy(
                f,
                o.out
                    .join(format!("load-{stamp}-{}", name.to_string_lossy())),
            )?;
        }
    }
    eprintln!(
        "wrote {}",
        o.out.join(format!("load-{stamp}.json")).display()
    );
    drop((ferry_srv, proxy, nginx, upstream));
    Ok(())
}

fn render(r: &serde_json::Value) -> String {
    let c = &r["cold"];
    let ips = |v: &serde_json::Value| f(&v["images_per_sec"]);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut s = format!(
        "load benchmark, {} — {} ({} cores), {} images in {} batches, 1→{}→1 pullers, {} s per step\n\n",
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"],
        r["parameters"]["images"],
        r["parameters"]["batches"],
        r["parameters"]["batches"],
        r["parameters"]["iteration_seconds"]
    );
    let (d, fe, p) = (ips(&c["direct"]), ips(&c["ferry"]), ips(&c["proxy"]));
    s.push_str("Pull-through (cold cache, one pass, one puller per batch), images/s:\n\n| direct from upstream | ferry | Distribution proxy | ferry ÷ direct | ferry ÷ proxy | upstream req/img ferry | upstream req/img proxy |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    s.push_str(&format!(
        "| {d:.0} | {fe:.0} | {p:.0} | {:.2}× | {:.1}× | {:.2} | {:.2} |\n\n",
        ratio(fe, d),
        ratio(fe, p),
        f(&c["ferry_upstream_requests_per_image"]),
        f(&c["proxy_upstream_requests_per_image"]),
    ));
    s.push_str("Cached, ramping pullers (whole run):\n\n| server | images/s | peak tally images/s | image p50 ms | image p99 ms | failed | CPU ms/image | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let cached = &r["cached"];
    for k in ["nginx", "ferry", "Distribution proxy"] {
        let v = &cached[k];
        let lat = &v["summary"]["latency_ms"]["image"];
        s.push_str(&format!(
            "| {k} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.3} | {:.1} |\n",
            f(&v["summary"]["images_per_sec"]),
            f(&v["peak_tally_images_per_sec"]),
            f(&lat["p50"]),
            f(&lat["p99"]),
            v["summary"]["errors"],
            f(&v["cpu_ms_per_image"]),
            f(&v["peak_rss_bytes"]) / 1048576.0,
        ));
    }
    let (n, fc, pc) = (
        f(&cached["nginx"]["summary"]["images_per_sec"]),
        f(&cached["ferry"]["summary"]["images_per_sec"]),
        f(&cached["Distribution proxy"]["summary"]["images_per_sec"]),
    );
    s.push_str(&format!(
        "\nferry ÷ nginx {:.2}×, ferry ÷ Distribution proxy {:.1}× (cached).\n",
        ratio(fc, n),
        ratio(fc, pc)
    ));
    let pr = &r["pull_through_prune"];
    s.push_str(&format!(
        "\nPull-through under the ramp (ferry pruning every pass): {:.0} images/s, {} failed, ferry peak RSS {:.1} MiB.\n",
        f(&pr["summary"]["images_per_sec"]),
        pr["summary"]["errors"],
        f(&pr["ferry_peak_rss_bytes"]) / 1048576.0
    ));
    let dc = &r["driver_check"];
    s.push_str(&format!(
        "\nDriver check (one core, 8 connections, nginx): wrk {:.0} requests/s, ferry load run {:.0} requests/s ({:.2}×).\n",
        f(&dc["wrk_requests_per_sec"]),
        f(&dc["driver_requests_per_sec"]),
        ratio(f(&dc["driver_requests_per_sec"]), f(&dc["wrk_requests_per_sec"]))
    ));
    s
}
