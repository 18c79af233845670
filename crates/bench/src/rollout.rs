//! The `rollout` benchmark (issue #14): Spegel's benchmark on one machine. N ferry nodes, each a
//! `ferry serve` process with its own data directory and port, mirror one Distribution upstream
//! reached through a link with latency and a shared bandwidth limit (`delay.rs`), as a remote
//! registry is. Every node pulls an image the way containerd does (manifest by tag, then config
//! and layers, three at a time, digests checked):
//!
//! - **v1**: all nodes at once, the cold rollout of a new DaemonSet (Spegel cannot help there: a
//!   layer is advertised only once pulled);
//! - **v2**: a new version, node after node, each once the previous finished (a rolling update).
//!
//! each twice: **baseline** (nodes pull through their own mirror from the upstream) and **p2p**
//! (the nodes find each other through the DHT, `--p2p`, bootstrapping from the first node; or,
//! with `--discovery static`, list each other, `--peer`). Per node: the pull's duration; per run: the bytes
//! the upstream sent, as a multiple of the image's size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, find, free_port};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::*;
use crate::delay::{DelayProxy, Link};

/// Spegel's published averages (AKS, 50 nodes; v2 rollout), ms: (MB, layers, baseline, Spegel).
const SPEGEL: [(usize, usize, f64, f64); 6] = [
    (10, 1, 1220.0, 210.0),
    (10, 4, 1409.0, 155.0),
    (100, 1, 1725.0, 560.0),
    (100, 4, 1573.0, 500.0),
    (1000, 1, 8429.0, 6682.0),
    (1000, 4, 7310.0, 5125.0),
];

/// Layers a puller fetches at once (containerd's `max_concurrent_downloads` default).
const DOWNLOADS: usize = 3;

/// `ferry-bench rollout`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Nodes [default: 8]
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// Image sizes in MB [default: 10,100,1000; --quick: 10,100]
    #[arg(long, value_name = "MB,…", value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Layer counts of each size [default: 1,4]
    #[arg(long, value_name = "N,…", value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// The upstream link's bandwidth, MB/s, shared by all nodes [default: 100]
    #[arg(long, value_name = "MB/S")]
    upstream_mbps: Option<u64>,
    /// The upstream link's one-way latency, ms [default: 10]
    #[arg(long, value_name = "MS")]
    upstream_latency_ms: Option<u64>,
    /// How p2p nodes find each other: `dht` (`--p2p`, bootstrapping from the first node) or
    /// `static` (each lists every node, `--peer URL`)
    #[arg(long, value_enum, default_value_t = Discovery::Dht)]
    discovery: Discovery,
    #[command(subcommand)]
    action: Option<Action>,
}

/// What else `rollout` does than run the benchmark.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Print the table and the targets' verdicts of a results file (a `rollout-*.json` of this
    /// bench, or what deploy/k8s/bench/summarize.jq makes of a cluster's puller lines) and draw
    /// its charts into --out
    Analyze {
        /// The results file
        file: PathBuf,
        /// Where to draw the charts [default: target/bench of the workspace]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `ferry-bench rollout [analyze FILE]`.
pub fn main(a: Args) -> anyhow::Result<()> {
    match a.action {
        Some(Action::Analyze { ref file, ref out }) => {
            analyze(file, &out.clone().unwrap_or_else(|| a.common.out()))
        }
        None => Options::new(a).and_then(run),
    }
}

/// Prints the table and targets of the results in `file` and draws their charts into `out`.
fn analyze(file: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the results file {}", file.display()))?;
    let mut result: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON (a rollout-*.json, or summarize.jq's output)",
            file.display()
        )
    })?;
    let runs = result["runs"].as_array().cloned().with_context(|| {
        format!(
            "{} has no \"runs\" list: not a rollout results file",
            file.display()
        )
    })?;
    ensure!(!runs.is_empty(), "{} has no runs", file.display());
    result["targets"] = json!(targets(&runs));
    println!("{}", render(&result));
    std::fs::create_dir_all(out)?;
    plot(&result, out)?;
    eprintln!("charts in {}", out.display());
    Ok(())
}

/// How the p2p scenario's nodes find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Discovery {
    Dht,
    Static,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    ferry: PathBuf,
    nodes: usize,
    sizes: Vec<usize>,
    layers: Vec<usize>,
    mbps: u64,
    latency_ms: u64,
    out: PathBuf,
    quick: bool,
    discovery: Discovery,
}

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let o = Options {
            ferry: c.ferry("rollout")?,
            nodes: c.sized(a.nodes, 8, 8),
            sizes: c.sized(a.sizes, vec![10, 100, 1000], vec![10, 100]),
            layers: c.sized(a.layers, vec![1, 4], vec![1, 4]),
            mbps: c.sized(a.upstream_mbps, 100, 100),
            latency_ms: c.sized(a.upstream_latency_ms, 10, 10),
            out: c.out(),
            quick: c.quick,
            discovery: a.discovery,
        };
        ensure!(
            o.nodes >= 2
                && o.mbps > 0
                && !o.sizes.is_empty()
                && !o.layers.is_empty()
                && o.sizes.iter().chain(&o.layers).all(|n| *n > 0),
            "--nodes must be at least 2, and --sizes, --layers and --upstream-mbps at least 1"
        );
        Ok(o)
    }
}

/// Pulls `img` from `repo` at `base` as containerd does; the seconds it took.
async fn pull(c: &reqwest::Client, base: &str, repo: &str, img: &Image) -> anyhow::Result<f64> {
    let started = Instant::now();
    let m = c
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await?;
    ensure!(m.status() == 200, "{base} {repo}: manifest {}", m.status());
    ensure!(
        m.bytes().await?.as_ref() == img.manifest.bytes.as_slice(),
        "{base} {repo}: manifest bytes differ"
    );
    futures_util::stream::iter(img.blobs())
        .map(|b| async move {
            let got = c
                .get(format!("{base}/v2/{repo}/blobs/{}", b.digest))
                .send()
                .await?;
            ensure!(got.status() == 200, "{base} {repo}: blob {}", got.status());
            ensure!(
                Digest::sha256(&got.bytes().await?) == b.digest,
                "{base} {repo}: blob {} differs",
                b.digest
            );
            Ok(())
        })
        .buffer_unordered(DOWNLOADS)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Bytes of `img`'s blobs the upstream has sent for `repo` so far.
fn upstream_bytes(upstream: &DockerRegistry, repo: &str, img: &Image) -> u64 {
    img.blobs()
        .map(|b| {
            let gets = upstream.count_requests("GET", &format!("/v2/{repo}/blobs/{}", b.digest));
            gets as u64 * b.bytes.len() as u64
        })
        .sum()
}

fn image_bytes(img: &Image) -> u64 {
    img.blobs().map(|b| b.bytes.len() as u64).sum()
}

/// N nodes mirroring `upstream`, peers of each other when `p2p` (found through the DHT, or
/// listed, as `o.discovery` says); with the DHT, returned once every node sees all the others.
async fn start_nodes(
    o: &Options,
    dir: &Path,
    upstream: &str,
    p2p: bool,
) -> anyhow::Result<Vec<Ferry>> {
    let ports: Vec<u16> = (0..o.nodes).map(|_| free_port()).collect();
    let peer_ports: Vec<u16> = (0..o.nodes).map(|_| free_port()).collect();
    let metrics: Vec<u16> = (0..o.nodes).map(|_| free_port()).collect();
    let nodes: Vec<Ferry> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let mut args = vec![
                "--log-level".to_owned(),
                "warn".to_owned(),
                "--upstream".to_owned(),
                format!("http://{upstream}"),
                "--metrics".to_owned(),
                format!("127.0.0.1:{}", metrics[i]),
            ];
            match (p2p, o.discovery) {
                (false, _) => {}
                (true, Discovery::Static) => {
                    for p in &ports {
                        args.extend(["--peer".to_owned(), format!("http://127.0.0.1:{p}")]);
                    }
                }
                (true, Discovery::Dht) => {
                    args.extend([
                        "--p2p".to_owned(),
                        "--p2p-listen".to_owned(),
                        format!("127.0.0.1:{}", peer_ports[i]),
                    ]);
                    if i > 0 {
                        args.extend([
                            "--p2p-bootstrap".to_owned(),
                            format!("127.0.0.1:{}", peer_ports[0]),
                        ]);
                    }
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Ferry::start_on(&o.ferry, port, &dir.join(format!("node-{i}")), &args)
        })
        .collect();
    if p2p && o.discovery == Discovery::Dht {
        let c = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        for m in &metrics {
            loop {
                let text = c
                    .get(format!("http://127.0.0.1:{m}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await?;
                let members = text
                    .lines()
                    .find_map(|l| l.strip_prefix("ferry_peer_members ")?.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if members >= (o.nodes - 1) as f64 {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the DHT did not form within 60 s (a node sees {members} of {} others)",
                    o.nodes - 1
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    Ok(nodes)
}

/// One rollout: every node pulls `repo` (all at once, or one after another); per-node seconds.
async fn rollout(
    c: &reqwest::Client,
    nodes: &[Ferry],
    repo: &str,
    img: &Image,
    at_once: bool,
) -> anyhow::Result<Vec<f64>> {
    if at_once {
        let pulls = nodes.iter().map(|n| {
            let base = n.url();
            async move { pull(c, &base, repo, img).await }
        });
        futures_util::future::join_all(pulls)
            .await
            .into_iter()
            .collect()
    } else {
        let mut secs = Vec::new();
        for n in nodes {
            secs.push(pull(c, &n.url(), repo, img).await?);
        }
        Ok(secs)
    }
}

fn stats(secs: &[f64]) -> Value {
    let mut ms: Vec<f64> = secs.iter().map(|s| s * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    json!({
        "avg_ms": ms.iter().sum::<f64>() / ms.len() as f64,
        "p50_ms": at(0.5),
        "p95_ms": at(0.95),
        "per_node_ms": secs.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
    })
}

pub fn run(o: Options) -> anyhow::Result<()> {
    ensure!(
        find("docker-registry").is_some(),
        "docker-registry is not installed: apt-get install docker-registry"
    );
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-rollout")
        .tempdir()?;
    let w = work.path();
    let rt = tokio::runtime::Runtime::new()?;
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(16)
        .build()?;
    let upstream = DockerRegistry::start_logged().context("docker-registry")?;
    let link = Link {
        one_way: std::time::Duration::from_millis(o.latency_ms),
        window: None,
        rate: Some(o.mbps * 1_000_000),
    };
    let target = format!("127.0.0.1:{}", upstream.port).parse()?;
    let remote = rt.block_on(DelayProxy::start(target, link))?;

    let mut runs = Vec::new();
    let mut case = 0;
    for &mb in &o.sizes {
        for &layers in &o.layers {
            let layer_size = mb * 1_000_000 / layers;
            eprintln!("{mb} MB in {layers} layer(s): generating v1 and v2…");
            let v1 = image(1000 + case as u64 * 2, layers, layer_size, "amd64");
            let v2 = image(1001 + case as u64 * 2, layers, layer_size, "amd64");
            let (r1, r2) = (repo(case * 2), repo(case * 2 + 1));
            let direct = format!("http://{}", upstream.host());
            rt.block_on(async {
                push_image(&c, &direct, &r1, &v1).await?;
                push_image(&c, &direct, &r2, &v2).await
            })?;
            let mut by_mode = serde_json::Map::new();
            for (mode, p2p) in [("baseline", false), ("p2p", true)] {
                let nodes = rt.block_on(start_nodes(
                    &o,
                    &w.join(format!("{case}-{mode}")),
                    &remote.host(),
                    p2p,
                ))?;
                let mut rollouts = serde_json::Map::new();
                for (name, at_once, r, img) in [("v1", true, &r1, &v1), ("v2", false, &r2, &v2)] {
                    let before = upstream_bytes(&upstream, r, img);
                    let secs = rt.block_on(rollout(&c, &nodes, r, img, at_once))?;
                    let sent = upstream_bytes(&upstream, r, img) - before;
                    let mut s = stats(&secs);
                    s["upstream_bytes"] = json!(sent);
                    s["upstream_x_image"] = json!(sent as f64 / image_bytes(img) as f64);
                    eprintln!(
                        "  {mode} {name}: avg {:.0} ms, p95 {:.0} ms, upstream {:.2}× the image",
                        s["avg_ms"].as_f64().unwrap_or(0.0),
                        s["p95_ms"].as_f64().unwrap_or(0.0),
                        s["upstream_x_image"].as_f64().unwrap_or(0.0)
                    );
                    rollouts.insert(name.to_owned(), s);
                }
                by_mode.insert(mode.to_owned(), Value::Object(rollouts));
                drop(nodes);
            }
            runs.push(json!({
                "size_mb": mb,
                "layers": layers,
                "image_bytes": image_bytes(&v1),
                "baseline": by_mode["baseline"],
                "p2p": by_mode["p2p"],
            }));
            case += 1;
        }
    }
    let result = json!({
        "benchmark": "rollout",
        "date": now_utc(),
        "machine": machine(),
        "parameters": {
            "nodes": o.nodes, "sizes_mb": o.sizes, "layers": o.layers, "quick": o.quick,
            "discovery": match o.discovery { Discovery::Dht => "dht (--p2p)", Discovery::Static => "static (--peer)" },
            "upstream_link": {"mbps": o.mbps, "one_way_latency_ms": o.latency_ms, "shared_by_all_nodes": true},
            "puller": format!("manifest by tag, then config and layers {DOWNLOADS} at a time, digests checked"),
            "v1": "every node at once", "v2": "node after node",
        },
        "runs": runs,
        "targets": targets(&runs),
    });
    let table = render(&result);
    println!("{table}");
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    let prefix = if o.quick { "rollout-quick" } else { "rollout" };
    std::fs::write(
        o.out.join(format!("{prefix}-{stamp}.json")),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(
        o.out.join("rollout-latest.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("rollout-latest.md"), &table)?;
    plot(&result, &o.out)?;
    eprintln!(
        "wrote {}",
        o.out.join(format!("{prefix}-{stamp}.json")).display()
    );
    drop((remote, upstream));
    Ok(())
}

fn improvement(base: f64, p2p: f64) -> f64 {
    if base > 0.0 {
        (base - p2p) / base * 100.0
    } else {
        0.0
    }
}

/// Issue #14's targets, each with its measure and PASS or MISS (printed, never asserted).
fn targets(runs: &[Value]) -> Vec<Value> {
    let mut t = Vec::new();
    let avg = |r: &Value, mode: &str, v: &str| r[mode][v]["avg_ms"].as_f64().unwrap_or(0.0);
    for r in runs {
        let (mb, layers) = (
            r["size_mb"].as_u64().unwrap_or(0) as usize,
            r["layers"].as_u64().unwrap_or(0) as usize,
        );
        if mb == 100 && layers == 4 {
            let x = r["p2p"]["v1"]["upstream_x_image"]
                .as_f64()
                .unwrap_or(f64::NAN);
            t.push(json!({
                "target": "cold v1 rollout, 100 MB in 4 layers: upstream bytes ≤ 1.1× the image",
                "measured": format!("{x:.2}× (baseline {:.2}×)", r["baseline"]["v1"]["upstream_x_image"].as_f64().unwrap_or(f64::NAN)),
                "verdict": if x <= 1.1 { "PASS" } else { "MISS" },
            }));
        }
        if mb <= 100 {
            for v in ["v1", "v2"] {
                let ratio = avg(r, "p2p", v) / avg(r, "baseline", v);
                t.push(json!({
                    "target": format!("{mb} MB in {layers} layer(s), {v}: average pull ≤ 0.3× baseline"),
                    "measured": format!("{ratio:.2}× ({:.0} ms vs {:.0} ms)", avg(r, "p2p", v), avg(r, "baseline", v)),
                    "verdict": if ratio <= 0.3 { "PASS" } else { "MISS" },
                }));
            }
        }
        if let Some(&(_, _, sb, sp)) = SPEGEL.iter().find(|s| s.0 == mb && s.1 == layers) {
            let ours = improvement(avg(r, "baseline", "v2"), avg(r, "p2p", "v2"));
            let theirs = improvement(sb, sp);
            t.push(json!({
                "target": format!("{mb} MB in {layers} layer(s), v2: improvement ≥ Spegel's {theirs:.0} %"),
                "measured": format!("{ours:.0} %"),
                "verdict": if ours >= theirs { "PASS" } else { "MISS" },
            }));
        }
    }
    t
}

fn render(r: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let p = &r["parameters"];
    if p.is_object() {
        let _ = writeln!(
            s,
            "# rollout: {} nodes, upstream link {} MB/s shared, {} ms one way; p2p peers: {}\n",
            p["nodes"],
            p["upstream_link"]["mbps"],
            p["upstream_link"]["one_way_latency_ms"],
            p["discovery"].as_str().unwrap_or("static (--peer)")
        );
    } else {
        let _ = writeln!(
            s,
            "# rollout: {}\n",
            r["source"].as_str().unwrap_or("results without parameters")
        );
    }
    s.push_str("| image | rollout | baseline avg ms | p2p avg ms | improvement | Spegel's | baseline p50 / p95 ms | p2p p50 / p95 ms | upstream × image: baseline / p2p |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for run in r["runs"].as_array().into_iter().flatten() {
        let (mb, layers) = (
            run["size_mb"].as_u64().unwrap_or(0) as usize,
            run["layers"].as_u64().unwrap_or(0) as usize,
        );
        for v in ["v1", "v2"] {
            let (b, q) = (&run["baseline"][v], &run["p2p"][v]);
            let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
            let spegel = SPEGEL
                .iter()
                .find(|s| s.0 == mb && s.1 == layers && v == "v2")
                .map_or("—".to_owned(), |s| {
                    format!("{:.0} % ({:.0} → {:.0})", improvement(s.2, s.3), s.2, s.3)
                });
            let _ = writeln!(
                s,
                "| {mb} MB, {layers} layer{} | {v} | {:.0} | {:.0} | {:.0} % | {spegel} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} / {:.2} |",
                if layers == 1 { "" } else { "s" },
                f(&b["avg_ms"]),
                f(&q["avg_ms"]),
                improvement(f(&b["avg_ms"]), f(&q["avg_ms"])),
                f(&b["p50_ms"]),
                f(&b["p95_ms"]),
                f(&q["p50_ms"]),
                f(&q["p95_ms"]),
                f(&b["upstream_x_image"]),
                f(&q["upstream_x_image"]),
            );
        }
    }
    s.push_str("\n| target (issue #14) | measured | verdict |\n|---|---|---|\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
            t["verdict"].as_str().unwrap_or("")
        );
    }
    s
}

/// One chart per image: each node's pull duration, one line per mode and rollout.
fn plot(r: &Value, out: &Path) -> anyhow::Result<()> {
    for run in r["runs"].as_array().into_iter().flatten() {
        let (mb, layers) = (&run["size_mb"], &run["layers"]);
        let mut series = Vec::new();
        for mode in ["baseline", "p2p"] {
            for v in ["v1", "v2"] {
                let points = run[mode][v]["per_node_ms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, ms)| ((i + 1) as f64, ms.as_f64().unwrap_or(0.0)))
                    .collect();
                series.push(ferry_report::Series {
                    label: format!("{mode} {v}"),
                    points,
                });
            }
        }
        let axes = ferry_report::Axes {
            title: format!("{mb} MB in {layers} layer(s): pull duration per node"),
            x: "node (v2: in rollout order)".to_owned(),
            y: "ms".to_owned(),
            log_x: false,
            log_y: true,
        };
        let file = out.join(format!("rollout-{mb}mb-{layers}l.svg"));
        ferry_report::line_chart(&series, &axes, &file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(avg: [f64; 2], x: f64) -> Value {
        let v = |avg: f64| json!({"avg_ms": avg, "p50_ms": avg, "p95_ms": avg, "per_node_ms": [avg, avg], "upstream_x_image": x});
        json!({"v1": v(avg[0]), "v2": v(avg[1])})
    }

    #[test]
    fn analyze_prints_the_table_and_verdicts_of_a_summary_without_parameters() {
        let dir = tempfile::tempdir().unwrap();
        // What summarize.jq makes of a cluster's lines: runs, no parameters or targets.
        let summary = json!({
            "benchmark": "rollout",
            "source": "kubernetes (deploy/k8s/bench)",
            "runs": [{
                "size_mb": 100, "layers": 4, "image_bytes": 100_000_000,
                "baseline": mode([8000.0, 1000.0], 8.0),
                "p2p": mode([2000.0, 250.0], 1.0),
            }],
        });
        let file = dir.path().join("rollout-k8s.json");
        std::fs::write(&file, summary.to_string()).unwrap();
        let table = {
            let mut r = summary.clone();
            r["targets"] = json!(targets(r["runs"].as_array().unwrap()));
            render(&r)
        };
        assert!(
            table.starts_with("# rollout: kubernetes (deploy/k8s/bench)"),
            "{table}"
        );
        assert!(
            table.contains("| 100 MB, 4 layers | v1 | 8000 | 2000 | 75 % |"),
            "{table}"
        );
        assert!(table.contains("| cold v1 rollout, 100 MB in 4 layers: upstream bytes ≤ 1.1× the image | 1.00× (baseline 8.00×) | PASS |"), "{table}");
        assert!(
            table.contains("v2: average pull ≤ 0.3× baseline | 0.25× (250 ms vs 1000 ms) | PASS |"),
            "{table}"
        );
        assert!(
            table.contains("v2: improvement ≥ Spegel's 68 % | 75 % | PASS |"),
            "{table}"
        );
        let out = dir.path().join("charts");
        analyze(&file, &out).unwrap();
        assert!(out.join("rollout-100mb-4l.svg").is_file());
    }

    #[test]
    fn analyze_says_what_is_wrong_with_a_file_that_is_not_results() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.json");
        for (text, says) in [
            ("not json", "is not JSON"),
            ("{}", "no \"runs\" list"),
            ("{\"runs\": []}", "has no runs"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = format!("{:#}", analyze(&file, dir.path()).unwrap_err());
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            analyze(&dir.path().join("missing.json"), dir.path()).unwrap_err()
        );
        assert!(e.contains("cannot read the results file"), "{e}");
    }
}
