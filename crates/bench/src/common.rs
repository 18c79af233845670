//! What the benchmarks share: their common options, pushing seeded images, laying them out for
//! nginx, verifying every path, running wrk and summarising its runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use ferry_oci::{Digest, MediaType};
use ferry_testkit::image::Image;
use ferry_testkit::peers::find;
use futures_util::{StreamExt, TryStreamExt};

/// The options every benchmark takes. A benchmark's other options are `Option`s: given, they win;
/// else `--quick` picks the small run's value, and without it the full-size default applies.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The ferry binary to benchmark (`cargo xtask bench` builds it and passes it here)
    #[arg(long, value_name = "PATH")]
    ferry: Option<PathBuf>,
    /// Where to write the results [default: target/bench of the workspace]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// A small, short run: the --quick values in the options' help apply to those not given
    #[arg(long)]
    pub quick: bool,
}

impl CommonArgs {
    /// `given` when the option was given, else its `--quick` or its full-size default.
    pub fn sized<T>(&self, given: Option<T>, full: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { full })
    }

    /// The ferry binary, which must exist; `bench` names the benchmark in the hint.
    pub fn ferry(&self, bench: &str) -> anyhow::Result<PathBuf> {
        match &self.ferry {
            Some(p) if p.is_file() => Ok(p.clone()),
            _ => bail!("--ferry must name the ferry binary (cargo xtask bench {bench} builds it)"),
        }
    }

    /// Where results go: `--out`, else `target/bench/` of the workspace.
    pub fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"))
    }
}

pub fn repo(i: usize) -> String {
    format!("bench/img-{i:04}")
}

pub async fn push_blob(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    d: &Digest,
    body: reqwest::Body,
) -> anyhow::Result<()> {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    ensure!(
        r.status() == 202,
        "upload start at {base} answered {}",
        r.status()
    );
    let loc = r
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_owned();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{url}{sep}digest={d}"))
        .body(body)
        .send()
        .await?;
    ensure!(
        r.status() == 201,
        "blob upload to {base} answered {}",
        r.status()
    );
    Ok(())
}

/// Pushes one image with POST + PUT uploads (the form every registry supports).
pub async fn push_image(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    img: &Image,
) -> anyhow::Result<()> {
    for b in img.blobs() {
        push_blob(
            c,
            base,
            repo,
            &b.digest,
            reqwest::Body::from(b.bytes.clone()),
        )
        .await?;
    }
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/v1"))
        .header("content-type", MediaType::OCI_MANIFEST)
        .body(img.manifest.bytes.clone())
        .send()
        .await?;
    ensure!(
        r.status() == 201,
        "manifest push to {base} answered {}",
        r.status()
    );
    Ok(())
}

pub async fn push_all(c: &reqwest::Client, base: &str, images: &[Image]) -> anyhow::Result<()> {
    futures_util::stream::iter(images.iter().enumerate())
        .map(|(i, img)| {
            let r = repo(i);
            async move { push_image(c, base, &r, img).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The request mix of one cached pull: manifest by tag, config, layers.
pub fn pull_paths(i: usize, img: &Image) -> Vec<String> {
    let r = repo(i);
    let mut p = vec![format!("/v2/{r}/manifests/v1")];
    p.extend(img.blobs().map(|b| format!("/v2/{r}/blobs/{}", b.digest)));
    p
}

/// Lays the same content out as static files for nginx.
pub fn write_static_tree(root: &Path, images: &[Image]) -> anyhow::Result<()> {
    for (i, img) in images.iter().enumerate() {
        let r = root.join("v2").join(repo(i));
        std::fs::create_dir_all(r.join("manifests"))?;
        std::fs::create_dir_all(r.join("blobs"))?;
        std::fs::write(r.join("manifests/v1"), &img.manifest.bytes)?;
        for b in img.blobs() {
            std::fs::write(r.join("blobs").join(b.digest.as_str()), &b.bytes)?;
        }
    }
    Ok(())
}

/// Pulls one image as containerd would and checks every digest.
pub async fn pull_image(
    c: &reqwest::Client,
    base: &str,
    i: usize,
    img: &Image,
) -> anyhow::Result<()> {
    let r = repo(i);
    let m = c
        .get(format!("{base}/v2/{r}/manifests/v1"))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await?;
    ensure!(m.status() == 200, "{base} {r}: manifest {}", m.status());
    ensure!(
        m.bytes().await?.as_ref() == img.manifest.bytes.as_slice(),
        "{base} {r}: manifest bytes differ"
    );
    // Config and layers three at a time, as containerd and dockerd fetch an image's blobs
    // (`max_concurrent_downloads`, 3 by default).
    let r = &r;
    futures_util::stream::iter(img.blobs())
        .map(|b| async move {
            let got = c
                .get(format!("{base}/v2/{r}/blobs/{}", b.digest))
                .send()
                .await?;
            ensure!(got.status() == 200, "{base} {r}: blob {}", got.status());
            ensure!(
                Digest::sha256(&got.bytes().await?) == b.digest,
                "{base} {r}: blob {} differs",
                b.digest
            );
            Ok(())
        })
        .buffer_unordered(BLOB_DOWNLOADS_PER_IMAGE)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Blobs of one image a puller fetches at once: containerd's and dockerd's default.
pub const BLOB_DOWNLOADS_PER_IMAGE: usize = 3;

/// Every path answers 200 with the right bytes, so the timed runs measure correct serving.
pub async fn verify(c: &reqwest::Client, base: &str, images: &[Image]) -> anyhow::Result<()> {
    futures_util::stream::iter(images.iter().enumerate())
        .map(|(i, img)| pull_image(c, base, i, img))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct WrkRun {
    pub rps: f64,
    pub bytes_per_s: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub json: serde_json::Value,
}

/// One wrk run against `url`; with `auth` (base64 of `user:password`) wrk.lua sends it as basic
/// credentials on every request (`WRK_AUTH`).
pub fn wrk(
    script: &Path,
    paths: &Path,
    url: &str,
    auth: Option<&str>,
    connections: usize,
    seconds: u64,
    out: &Path,
) -> anyhow::Result<WrkRun> {
    let json_path = out.with_extension("json");
    let mut cmd = Command::new(find("wrk").context("wrk is not installed (apt-get install wrk)")?);
    if let Some(a) = auth {
        cmd.env("WRK_AUTH", a);
    }
    let status = cmd
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
        ])
        .arg("-H")
        .arg(format!("Accept: {}", MediaType::ACCEPT_ALL))
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(paths)
        .env("WRK_JSON", &json_path)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running wrk")?;
    ensure!(status.success(), "wrk failed against {url}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path)?)?;
    let e = &json["errors"];
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|k| e[k].as_u64().unwrap_or(0))
        .sum();
    Ok(WrkRun {
        rps: json["rps"].as_f64().unwrap_or(0.0),
        bytes_per_s: json["bytes_per_s"].as_f64().unwrap_or(0.0),
        errors,
        p50_us: json["latency_us"]["p50"].as_u64().unwrap_or(0),
        p99_us: json["latency_us"]["p99"].as_u64().unwrap_or(0),
        json,
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs wrk `repeats` times for `seconds` each and keeps every run; the median is what gets reported.
#[allow(clippy::too_many_arguments)]
pub fn series(
    seconds: u64,
    repeats: usize,
    name: &str,
    script: &Path,
    paths: &Path,
    url: &str,
    connections: usize,
    work: &Path,
) -> anyhow::Result<Vec<WrkRun>> {
    let target = Target {
        name,
        url,
        auth: None,
    };
    let mut runs = interleaved(
        seconds,
        repeats,
        &[target],
        script,
        paths,
        connections,
        work,
    )?;
    Ok(runs.pop().unwrap_or_default())
}

/// A server as wrk drives it: a name for its result files and log lines, its base URL, and basic
/// credentials (base64 of `user:password`) to send, if any.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub auth: Option<&'a str>,
}

/// [`series`] for several servers taking turns: each is warmed up, then run `i` of every server
/// follows run `i` of the one before it, so that a machine whose load drifts affects all alike.
/// Returns the runs of each target, in `targets`' order.
pub fn interleaved(
    seconds: u64,
    repeats: usize,
    targets: &[Target],
    script: &Path,
    paths: &Path,
    connections: usize,
    work: &Path,
) -> anyhow::Result<Vec<Vec<WrkRun>>> {
    // A short warm-up so that page cache, connection setup and lazy initialisation are not timed.
    for t in targets {
        wrk(
            script,
            paths,
            t.url,
            t.auth,
            connections,
            1,
            &work.join(format!("{}-warmup", t.name)),
        )?;
    }
    let mut runs = vec![Vec::new(); targets.len()];
    for r in 0..repeats {
        for (t, kept) in targets.iter().zip(&mut runs) {
            let run = wrk(
                script,
                paths,
                t.url,
                t.auth,
                connections,
                seconds,
                &work.join(format!("{}-{r}", t.name)),
            )?;
            eprintln!(
                "  {} run {}: {:.0} req/s, {:.1} MB/s, {} errors",
                t.name,
                r + 1,
                run.rps,
                run.bytes_per_s / 1e6,
                run.errors
            );
            kept.push(run);
        }
    }
    Ok(runs)
}

pub fn summary(runs: &[WrkRun]) -> serde_json::Value {
    serde_json::json!({
        "median_rps": median(runs.iter().map(|r| r.rps).collect()),
        "median_bytes_per_s": median(runs.iter().map(|r| r.bytes_per_s).collect()),
        "median_p50_us": median(runs.iter().map(|r| r.p50_us as f64).collect()),
        "median_p99_us": median(runs.iter().map(|r| r.p99_us as f64).collect()),
        "errors": runs.iter().map(|r| r.errors).sum::<u64>(),
        "runs": runs.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
    })
}

pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    serde_json::json!({"cpu": cpu, "cores": cores, "mem_gib": mem / 1024 / 1024})
}

pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
