//! The scale rows of the serve benchmark: a store of many small images (100,000 in a full run),
//! generated once with `ferry load gen` and kept for later runs, since pushing it takes minutes.
//! Measured: start-up to answering `/v2/`, idle RSS, and cached pulls of some of its images beside
//! the same pulls from the ordinary 1,500-image store.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ferry_testkit::peers::{Ferry, rss};

/// Where the generated store lives and how many images it holds.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub images: usize,
    pub data: PathBuf,
}

impl ScaleOptions {
    /// From `--scale` (100,000 in a full run, none with `--quick`; 0: none) and `--scale-data`
    /// (default `scale-N` in the output directory, which the serve and mirror benchmarks share).
    pub fn from_args(
        c: &crate::common::CommonArgs,
        scale: Option<usize>,
        data: Option<&Path>,
    ) -> Option<ScaleOptions> {
        match c.sized(scale, 100_000, 0) {
            0 => None,
            n => Some(ScaleOptions {
                images: n,
                data: data.map_or_else(|| c.out().join(format!("scale-{n}")), Path::to_owned),
            }),
        }
    }
}

/// A ferry serving the large store, and what was measured on the way.
pub struct Scale {
    pub ferry: Ferry,
    /// From spawning the process to the first 200 on `/v2/`.
    pub startup: Duration,
    pub idle_rss: u64,
    /// The generation's record (when it ran, how long, images per second).
    pub generated: serde_json::Value,
    /// Request paths of `pulled` images (manifest by tag, config, layers), one per line.
    pub paths: PathBuf,
}

const MARKER: &str = "ferry-bench-scale.json";

/// Generates the store if `data` does not hold one of `o.images` images, starts ferry on it and
/// writes the paths of its first `pulled` images to `work`.
pub fn prepare(
    bin: &Path,
    o: &ScaleOptions,
    pulled: usize,
    rt: &tokio::runtime::Runtime,
    c: &reqwest::Client,
    work: &Path,
) -> anyhow::Result<Scale> {
    let generated = ensure_generated(bin, o)?;
    let (ferry, startup, idle_rss) = start_timed(
        bin,
        &o.data.join("store"),
        &["--log-level", "warn"],
        o.images,
        rt,
        c,
    )?;
    let names = first_names(o, pulled)?;
    let lines = rt.block_on(pull_paths_of(c, &ferry.url(), &names))?;
    let paths = work.join("scale-paths.txt");
    std::fs::write(&paths, lines.join("\n") + "\n")?;
    Ok(Scale {
        ferry,
        startup,
        idle_rss,
        generated,
        paths,
    })
}

/// The store of `o.images` images under `o.data`, generated unless an earlier run left it; its
/// generation record.
pub fn ensure_generated(bin: &Path, o: &ScaleOptions) -> anyhow::Result<serde_json::Value> {
    let marker = o.data.join(MARKER);
    match std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    {
        Some(m) if m["images"].as_u64() == Some(o.images as u64) => {
            eprintln!(
                "reusing the store of {} images in {}",
                o.images,
                o.data.display()
            );
            Ok(m)
        }
        _ => generate(
            bin,
            o,
            &o.data.join("store"),
            &o.data.join("refs.txt"),
            &marker,
        ),
    }
}

/// Starts ferry on `store` with `extra` arguments; the time from spawning it to its first 200 on
/// `/v2/`, and its RSS then.
pub fn start_timed(
    bin: &Path,
    store: &Path,
    extra: &[&str],
    images: usize,
    rt: &tokio::runtime::Runtime,
    c: &reqwest::Client,
) -> anyhow::Result<(Ferry, Duration, u64)> {
    eprintln!("starting ferry on {images} images…");
    let started = Instant::now();
    let ferry = Ferry::start(bin, store, extra);
    let base = ferry.url();
    rt.block_on(async {
        // Polled: the figure is the time to serving, and a 2 ms step is well below the target.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(r) = c.get(format!("{base}/v2/")).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "ferry did not answer /v2/ in 600 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })?;
    let startup = started.elapsed();
    let (idle_rss, _) = rss(ferry.process.pid()).context("reading ferry's RSS")?;
    eprintln!(
        "serving {images} images after {:.2} s, idle RSS {:.1} MiB",
        startup.as_secs_f64(),
        idle_rss as f64 / 1048576.0
    );
    Ok((ferry, startup, idle_rss))
}

/// `repo:tag` of the first `n` images generated.
fn first_names(o: &ScaleOptions, n: usize) -> anyhow::Result<Vec<String>> {
    let refs = o.data.join("refs.txt");
    let names: Vec<String> = std::fs::read_to_string(&refs)
        .with_context(|| format!("reading {}", refs.display()))?
        .lines()
        .take(n)
        .map(str::to_owned)
        .collect();
    ensure!(
        names.len() == n,
        "{} lists fewer than {n} images",
        refs.display()
    );
    Ok(names)
}

const MIRROR_MARKER: &str = "ferry-bench-mirror-store.json";

/// A mirror's data directory holding the scale store's images as the cache of upstream `prefix`
/// (`repos/<prefix>/<repo>`), made once beside the store from hard links (no content copied).
pub fn mirror_store(o: &ScaleOptions, prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = o.data.join("mirror-store");
    let marker = o.data.join(MIRROR_MARKER);
    let made = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    if let Some(m) = made
        && m["prefix"] == prefix
        && m["images"].as_u64() == Some(o.images as u64)
    {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    eprintln!(
        "linking the store of {} images into a mirror's cache in {} (once)…",
        o.images,
        dir.display()
    );
    let store = o.data.join("store");
    std::fs::create_dir_all(dir.join("repos"))?;
    for (from, to) in [
        (store.join("blobs"), dir.join("blobs")),
        (store.join("repos"), dir.join("repos").join(prefix)),
    ] {
        let status = std::process::Command::new("cp")
            .arg("-al")
            .arg(&from)
            .arg(&to)
            .status()
            .context("running cp -al")?;
        ensure!(
            status.success(),
            "cp -al {} {} failed: {status}",
            from.display(),
            to.display()
        );
    }
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&serde_json::json!({"prefix": prefix, "images": o.images}))?,
    )?;
    Ok(dir)
}

/// The seven requests of a cached pull of each of the first `n` images, the manifest by digest
/// (which a mirror serves from its cache without asking its upstream), read from the store's
/// files.
pub fn digest_paths(o: &ScaleOptions, n: usize) -> anyhow::Result<Vec<String>> {
    let store = o.data.join("store");
    let mut out = Vec::with_capacity(n * 7);
    for name in first_names(o, n)? {
        let (repo, tag) = name
            .rsplit_once(':')
            .with_context(|| format!("not repo:tag: {name}"))?;
        let tag_file = store.join("repos").join(repo).join("_tags").join(tag);
        let digest = std::fs::read_to_string(&tag_file)
            .with_context(|| format!("reading {}", tag_file.display()))?;
        let digest = digest.trim();
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("{}: not a sha256 digest", tag_file.display()))?;
        let content = store.join("blobs/sha256").join(&hex[..2]).join(hex);
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&content).with_context(|| format!("reading {}", content.display()))?,
        )?;
        out.push(format!("/v2/{repo}/manifests/{digest}"));
        for d in std::iter::once(&m["config"])
            .chain(m["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str())
        {
            out.push(format!("/v2/{repo}/blobs/{d}"));
        }
    }
    Ok(out)
}

/// Pushes `o.images` images with `ferry load gen` into a fresh store at `store`.
fn generate(
    bin: &Path,
    o: &ScaleOptions,
    store: &Path,
    refs: &Path,
    marker: &Path,
) -> anyhow::Result<serde_json::Value> {
    if o.data.exists() {
        std::fs::remove_dir_all(&o.data)
            .with_context(|| format!("clearing {}", o.data.display()))?;
    }
    std::fs::create_dir_all(&o.data)?;
    let ferry = Ferry::start(bin, store, &["--log-level", "warn"]);
    eprintln!(
        "pushing {} images into {} with ferry load gen (once; later runs reuse it)…",
        o.images,
        o.data.display()
    );
    let started = Instant::now();
    let status = std::process::Command::new(bin)
        .args(["load", "gen", "--registry", &ferry.url()])
        .args(["--count", &o.images.to_string()])
        .args(["--batches", "100", "--seed", "7", "--blob-size", "1KiB"])
        .args(["-J", "16", "--out"])
        .arg(refs)
        .status()
        .context("running ferry load gen")?;
    ensure!(status.success(), "ferry load gen failed: {status}");
    let secs = started.elapsed().as_secs_f64();
    let record = serde_json::json!({
        "images": o.images,
        "layers_per_image": 5,
        "generated": crate::common::now_utc(),
        "push_seconds": secs,
        "push_images_per_s": o.images as f64 / secs,
        "command": "ferry load gen --count N --batches 100 --seed 7 --blob-size 1KiB -J 16",
    });
    std::fs::write(marker, serde_json::to_vec_pretty(&record)?)?;
    drop(ferry);
    Ok(record)
}

/// The seven requests of each image's cached pull, read from its manifest.
async fn pull_paths_of(
    c: &reqwest::Client,
    base: &str,
    names: &[String],
) -> anyhow::Result<Vec<String>> {
    use futures_util::{StreamExt, TryStreamExt};
    let per_image: Vec<Vec<String>> = futures_util::stream::iter(names)
        .map(|name| async move {
            let (repo, tag) = name
                .rsplit_once(':')
                .with_context(|| format!("not repo:tag: {name}"))?;
            let manifest = format!("/v2/{repo}/manifests/{tag}");
            let m: serde_json::Value = c
                .get(format!("{base}{manifest}"))
                .header(
                    "accept",
                    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
                )
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let mut p = vec![manifest];
            for d in std::iter::once(&m["config"])
                .chain(m["layers"].as_array().into_iter().flatten())
                .filter_map(|d| d["digest"].as_str())
            {
                p.push(format!("/v2/{repo}/blobs/{d}"));
            }
            anyhow::Ok(p)
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(per_image.concat())
}
