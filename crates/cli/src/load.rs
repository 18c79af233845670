//! `ferry load …`: the load lab's commands (the work is in `ferry_load`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_load::generate::{GenOptions, GeneratedImage};
use futures_util::StreamExt;

#[derive(Debug, Subcommand)]
pub enum LoadCommand {
    /// Generate seeded images: push them to a registry and/or write them as archives.
    #[command(
        after_help = "Examples:\n  ferry load gen --registry http://127.0.0.1:5000 --count 1500 --batches 10 --seed 1 --out images.txt\n  ferry load gen --count 20 --batches 2 --platforms linux/amd64,linux/arm64 --tar-dir ./archives\n\nNames follow ociregistry's load test: <rand10>-<rand10>-<NNNN>:v<ddd>.<ddd>, NNNN the batch\n(select batches in `ferry load run --patterns -0001,-0002`). --out lists one repo:tag per line.\nThe same seed always gives the same names and bytes."
    )]
    Gen(GenArgs),
    /// Pull images from a registry or mirror with pullers scaled 1→N→1; print and save rates and
    /// latency percentiles.
    #[command(
        after_help = "Examples:\n  ferry load run --target http://127.0.0.1:8080 --registry-url http://127.0.0.1:5000 --ns 127.0.0.1:5000 \\\n      --patterns -0001,-0002,-0003 --iteration-seconds 60 --tally-seconds 15 --out results.json\n  ferry load run --target http://127.0.0.1:5000 --images images.txt --max-pullers 8 --duration 30 --out r.json\n  ferry load run --target http://127.0.0.1:8080 --images images.txt --rate 200 --duration 60 --out open.json\n\nEach pull is what containerd does: HEAD the tag, GET the manifest (and the platform's manifest of\nan index), GET config and layers (--layer-concurrency at once), every digest checked. Only plain\nHTTP targets (loopback load tests)."
    )]
    Run(Box<RunArgs>),
    /// Chart and tabulate results of `ferry load run`: the pull rate over time with the puller count,
    /// several runs overlaid.
    #[command(
        after_help = "Examples:\n  ferry load report results.json --out chart.svg\n  ferry load report ferry.json distribution.json --out compare.png --title \"cached pulls\""
    )]
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Results files written by `ferry load run --out`.
    #[arg(required = true, value_name = "RESULTS.json")]
    results: Vec<PathBuf>,
    /// The chart: `.svg` or `.png` (1200×600).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Chart title.
    #[arg(long, default_value = "image pulls per second")]
    title: String,
}

/// `ferry load report`.
pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let runs = args
        .results
        .iter()
        .map(|p| ferry_report::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", ferry_report::table(&runs));
    if let Some(out) = &args.out {
        ferry_report::chart(&runs, &args.title, out)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What is measured: `http://host:port`.
    #[arg(long, value_name = "URL")]
    target: String,
    /// List the images from this registry's catalog and tags (`http://host:port`).
    #[arg(long, value_name = "URL", required_unless_present = "images")]
    registry_url: Option<String>,
    /// …or from this file (`repo:tag` per line, as `ferry load gen --out` writes).
    #[arg(long, value_name = "FILE")]
    images: Option<PathBuf>,
    /// Address a mirror's upstream with `?ns=NAME` (containerd's form).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["x_registry", "in_path"])]
    ns: Option<String>,
    /// …or with an `X-Registry: NAME` header.
    #[arg(long, value_name = "NAME", conflicts_with = "in_path")]
    x_registry: Option<String>,
    /// …or with `/v2/NAME/<repo>/…` paths.
    #[arg(long, value_name = "NAME")]
    in_path: Option<String>,
    /// Batch patterns, comma-separated: puller k pulls the images containing pattern k (cycled).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    patterns: Vec<String>,
    /// Seconds per step of the 1→N→1 ramp.
    #[arg(long, default_value_t = 60.0)]
    iteration_seconds: f64,
    /// Most pullers (default: the number of patterns, or 10).
    #[arg(long)]
    max_pullers: Option<usize>,
    /// Run --max-pullers pullers for this many seconds instead of the ramp.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds per tally row.
    #[arg(long, default_value_t = 15.0)]
    tally_seconds: f64,
    /// Stop each puller after this many passes over its images.
    #[arg(long)]
    passes: Option<u64>,
    /// After every pass, delete the puller's images from a ferry mirror (admin API at --target;
    /// token from --admin-token-file or FERRY_ADMIN_TOKEN).
    #[arg(long)]
    prune: bool,
    /// The admin token for --prune.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// After every pass, run `sh -c CMD` with the puller's images in FERRY_LOAD_IMAGES (other mirrors).
    #[arg(long, value_name = "CMD", conflicts_with = "prune")]
    prune_cmd: Option<String>,
    /// Shuffle each puller's images (seeded by --seed).
    #[arg(long)]
    shuffle: bool,
    /// Seed for --shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only images matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Blobs fetched at once per pull (containerd: 3).
    #[arg(long, default_value_t = 3)]
    layer_concurrency: usize,
    /// Skip digest checks.
    #[arg(long)]
    no_verify: bool,
    /// Platform chosen from multi-platform indexes.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Open loop: start this many image pulls per second (latency counts from the intended start).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Seconds before a request is given up.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Write each pulled image here as a docker-save tar (compare with imgpull, whose client time
    /// includes writing one); blobs are held in memory up to 256 MiB each.
    #[arg(long, value_name = "DIR")]
    tar_dir: Option<PathBuf>,
    /// Name of this run in charts (default: the target).
    #[arg(long)]
    label: Option<String>,
    /// Write the results here (JSON).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the tally rows here (CSV).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Push to this registry (`http(s)://host[:port]`).
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// Images to generate.
    #[arg(long, default_value_t = 1500)]
    count: usize,
    /// Batches (the `-NNNN` name suffix).
    #[arg(long, default_value_t = 10)]
    batches: usize,
    /// Layers per image (per platform).
    #[arg(long, default_value_t = 5)]
    blobs: usize,
    /// Random bytes per layer, e.g. 1KiB or 4MiB (layers are gzip tars of them).
    #[arg(long, default_value = "1KiB")]
    blob_size: String,
    /// Seed for names and content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Platforms, comma-separated (all linux); several make every image a multi-platform index.
    #[arg(long, default_value = "linux/amd64", value_delimiter = ',')]
    platforms: Vec<String>,
    /// Write the generated references (`repo:tag`, one per line) to this file.
    #[arg(long, value_name = "LIST")]
    out: Option<PathBuf>,
    /// Write each image as a tar here (OCI layout and docker-save in one: `docker load`,
    /// `skopeo copy oci-archive:…` and `ferry preload` read it).
    #[arg(long, value_name = "DIR")]
    tar_dir: Option<PathBuf>,
    /// Images pushed or written at once.
    #[arg(short = 'J', long, default_value_t = 8)]
    images: usize,
    /// Blobs pushed at once per image.
    #[arg(short = 'j', long, default_value_t = 4)]
    jobs: usize,
}

impl GenArgs {
    fn options(&self) -> anyhow::Result<GenOptions> {
        let layer_size = ferry_server::units::parse_size(&self.blob_size)
            .map_err(|e| anyhow::anyhow!("--blob-size: {e}"))?;
        let mut architectures = Vec::new();
        for p in &self.platforms {
            match p.split_once('/') {
                Some(("linux", arch)) if !arch.is_empty() => architectures.push(arch.to_owned()),
                _ => bail!("--platforms: {p:?} is not linux/<arch> (e.g. linux/amd64)"),
            }
        }
        let o = GenOptions {
            count: self.count,
            batches: self.batches,
            layers: self.blobs,
            layer_size: usize::try_from(layer_size).context("--blob-size is too large")?,
            seed: self.seed,
            architectures,
        };
        o.validate()?;
        Ok(o)
    }
}

fn authority(url: &str, flag: &str) -> anyhow::Result<String> {
    let a = url
        .strip_prefix("http://")
        .with_context(|| {
            format!("{flag} {url:?}: give http://host:port (the driver speaks plain HTTP)")
        })?
        .trim_end_matches('/');
    anyhow::ensure!(
        !a.is_empty() && !a.contains('/'),
        "{flag} {url:?}: give http://host:port with no path"
    );
    Ok(a.to_owned())
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v < 1e7,
        "{flag} must be a positive number of seconds"
    );
    Ok(std::time::Duration::from_secs_f64(v))
}

/// `ferry load run`.
pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    use ferry_load::run::{Addressing, Prune, RunOptions};
    use ferry_load::schedule::Schedule;
    let target = authority(&args.target, "--target")?;
    let mut images: Vec<String> = match (&args.images, &args.registry_url) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        (None, Some(u)) => ferry_load::run::list_images(&authority(u, "--registry-url")?)
            .await
            .with_context(|| format!("listing the images of {u}"))?,
        (None, None) => bail!("give --registry-url URL or --images FILE"),
    };
    for i in &images {
        anyhow::ensure!(
            i.rsplit_once(':').is_some_and(
                |(r, t)| ferry_oci::RepoName::new(r).is_ok() && ferry_oci::Tag::new(t).is_ok()
            ),
            "{i:?} is not repo:tag"
        );
    }
    if let Some(f) = &args.filter {
        let re = regex_lite::Regex::new(f).with_context(|| format!("--filter {f:?}"))?;
        images.retain(|i| re.is_match(i));
    }
    if args.shuffle {
        let mut rng = ferry_load::image::Rng::new(args.seed);
        for i in (1..images.len()).rev() {
            images.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
    }
    anyhow::ensure!(
        !images.is_empty(),
        "no images to pull (check --registry-url/--images and --filter)"
    );
    for p in &args.patterns {
        anyhow::ensure!(
            images.iter().any(|i| i.contains(p.as_str())),
            "no image matches pattern {p:?}"
        );
    }
    let max = args.max_pullers.unwrap_or(if args.patterns.is_empty() {
        10
    } else {
        args.patterns.len()
    });
    anyhow::ensure!(
        (1..=10_000).contains(&max),
        "--max-pullers must be between 1 and 10000"
    );
    let schedule = match args.duration {
        Some(d) => Schedule::Fixed {
            pullers: max,
            duration: seconds(d, "--duration")?,
        },
        None => Schedule::Ramp {
            max,
            step: seconds(args.iteration_seconds, "--iteration-seconds")?,
        },
    };
    let addressing = match (&args.ns, &args.x_registry, &args.in_path) {
        (Some(n), _, _) => Addressing::Ns(n.clone()),
        (_, Some(n), _) => Addressing::Header(n.clone()),
        (_, _, Some(n)) => Addressing::InPath(n.clone()),
        _ => Addressing::Plain,
    };
    let prune = if args.prune {
        let token = match &args.admin_token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("FERRY_ADMIN_TOKEN")
                .context("--prune needs --admin-token-file or FERRY_ADMIN_TOKEN")?,
        };
        Some(Prune::Ferry {
            url: format!("http://{target}"),
            token,
        })
    } else {
        args.prune_cmd.clone().map(Prune::Command)
    };
    let platform = match args.platform.split_once('/') {
        Some((os, arch)) if !os.is_empty() && !arch.is_empty() => (os.to_owned(), arch.to_owned()),
        _ => bail!(
            "--platform {:?}: give os/arch, e.g. linux/amd64",
            args.platform
        ),
    };
    if let Some(r) = args.rate {
        anyhow::ensure!(r.is_finite() && r > 0.0, "--rate must be positive");
    }
    let options = RunOptions {
        target: target.clone(),
        addressing,
        images,
        patterns: args.patterns.clone(),
        schedule,
        tally: seconds(args.tally_seconds, "--tally-seconds")?,
        layer_concurrency: args.layer_concurrency.max(1),
        verify: !args.no_verify,
        platform,
        passes: args.passes,
        rate: args.rate,
        prune,
        timeout: seconds(args.timeout, "--timeout")?,
        live: true,
        tar_dir: args.tar_dir.clone(),
    };
    if let Some(d) = &args.tar_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    eprintln!(
        "pulling {} from {target}: {} for {:.0}s",
        crate::counts::count(options.images.len() as u64, "image", "images"),
        match schedule {
            Schedule::Ramp { max, step } =>
                format!("1→{max}→1 pullers, {}s per step", step.as_secs_f64()),
            Schedule::Fixed { pullers, .. } => format!("{pullers} pullers"),
        },
        schedule.total().as_secs_f64()
    );
    let results =
        ferry_load::run::run(options, args.label.clone().unwrap_or(args.target.clone())).await;
    let s = &results.summary;
    println!("{}", summary_text(s));
    if let Some(p) = &args.out {
        std::fs::write(p, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.csv {
        let mut w =
            String::from("t,pullers,images,images_per_sec,requests_per_sec,mb_per_sec,errors\n");
        for t in &results.tallies {
            w.push_str(&format!(
                "{:.3},{},{},{:.3},{:.3},{:.4},{}\n",
                t.t,
                t.pullers,
                t.images,
                t.images_per_sec,
                t.requests_per_sec,
                t.mb_per_sec,
                t.errors.values().sum::<u64>()
            ));
        }
        std::fs::write(p, w).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(s.images > 0)
}

/// What `ferry load run` prints when it is done: totals, rates, failures by kind, latencies.
fn summary_text(s: &ferry_report::results::Summary) -> String {
    let lat = |k: &str| {
        s.latency_ms
            .get(k)
            .map(|p| {
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    p.p50, p.p99, p.max
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{} in {:.1}s: {:.1} images/s, {:.0} requests/s, {}{}\nimage pull latency: {}\nblob request latency: {}",
        crate::counts::count(s.images, "image", "images"),
        s.duration_secs,
        s.images_per_sec,
        s.requests_per_sec,
        crate::counts::count(s.errors, "failed pull", "failed pulls"),
        if s.error_kinds.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                s.error_kinds
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        lat("image"),
        lat("blob"),
    )
}

/// `ferry load gen`.
pub async fn generate(args: GenArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    if args.registry.is_none() && args.out.is_none() && args.tar_dir.is_none() {
        bail!(
            "nothing to do: give --registry URL to push, --tar-dir DIR to write archives, and/or --out LIST"
        );
    }
    let registry = match &args.registry {
        Some(url) => Some(
            ferry_client::Registry::new(ferry_client::RegistryOptions {
                endpoint: url.trim_end_matches('/').to_owned(),
                ..ferry_client::RegistryOptions::default()
            })
            .context("--registry")?,
        ),
        None => None,
    };
    let host = args.registry.as_deref().map(|u| {
        u.split("://")
            .nth(1)
            .unwrap_or(u)
            .trim_end_matches('/')
            .to_owned()
    });
    if let Some(d) = &args.tar_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut list = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let started = Instant::now();
    let (mut done, mut bytes) = (0usize, 0u64);
    let step = (options.count / 10).max(1);
    let mut results = futures_util::stream::iter(0..options.count)
        .map(|i| {
            let (options, registry, host, tar_dir, jobs) = (
                &options,
                registry.as_ref(),
                host.as_deref(),
                args.tar_dir.as_ref(),
                args.jobs,
            );
            async move {
                // Generation is CPU work (gzip of random bytes): off the async threads.
                let o = options.clone();
                let img: GeneratedImage = tokio::task::spawn_blocking(move || o.generate(i))
                    .await
                    .context("generating an image failed")?;
                if let Some(r) = registry {
                    ferry_load::generate::push(r, &img, jobs)
                        .await
                        .with_context(|| format!("pushing {}", img.reference()))?;
                }
                if let Some(dir) = tar_dir {
                    let name = match host {
                        Some(h) => format!("{h}/{}", img.reference()),
                        None => img.reference(),
                    };
                    let name = ferry_oci::Reference::parse(&name)
                        .with_context(|| format!("{name:?} is not an image name"))?;
                    let path = dir.join(format!("{}_{}.tar", img.repo, img.tag));
                    let img2 = img.clone();
                    tokio::task::spawn_blocking(move || {
                        let f = std::fs::File::create(&path)?;
                        let w = std::io::BufWriter::new(f);
                        ferry_load::generate::write_archive(w, &img2, &name)?
                            .into_inner()
                            .map_err(|e| e.into_error())?;
                        anyhow::Ok(())
                    })
                    .await
                    .context("writing an archive failed")?
                    .context("writing an archive")?;
                }
                let size: u64 = img.blobs.iter().map(|b| b.bytes.len() as u64).sum();
                anyhow::Ok((img.reference(), size))
            }
        })
        .buffered(args.images.max(1));
    while let Some(r) = results.next().await {
        let (reference, size) = r?;
        if let Some(l) = list.as_mut() {
            writeln!(l, "{reference}")?;
        }
        done += 1;
        bytes += size;
        if done % step == 0 || done == options.count {
            eprintln!(
                "{done}/{} images ({:.1} MB) in {:.1}s",
                options.count,
                bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(mut l) = list {
        l.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {} in {} ({:.1} MB of blobs) in {secs:.1}s, {:.0} images/s{}",
        crate::counts::count(done as u64, "image", "images"),
        crate::counts::count(options.batches as u64, "batch", "batches"),
        bytes as f64 / 1e6,
        done as f64 / secs.max(1e-9),
        match &args.registry {
            Some(r) => format!(", pushed to {r}"),
            None => String::new(),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_report::results::Summary;

    use super::summary_text;

    fn summary(images: u64, errors: u64) -> Summary {
        Summary {
            images,
            images_per_sec: 0.5,
            requests: images * 6,
            requests_per_sec: 3.0,
            bytes: 0,
            errors,
            error_kinds: BTreeMap::from([("http_404".to_owned(), errors)]),
            duration_secs: 2.0,
            latency_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn the_summary_counts_one_image_and_one_failed_pull_in_the_singular() {
        let one = summary_text(&summary(1, 1));
        assert!(
            one.starts_with(
                "1 image in 2.0s: 0.5 images/s, 3 requests/s, 1 failed pull (http_404: 1)\n"
            ),
            "{one}"
        );
        let two = summary_text(&summary(2, 2));
        assert!(
            two.starts_with(
                "2 images in 2.0s: 0.5 images/s, 3 requests/s, 2 failed pulls (http_404: 2)\n"
            ),
            "{two}"
        );
    }
}
