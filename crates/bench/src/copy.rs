//! The `copy` benchmark: `ferry copy` and `ferry info` against skopeo on the workflows of issue
//! #12, over a local Distribution (`docker-registry`), on plain loopback and through a delaying
//! proxy that adds a round-trip time ([`crate::delay`]).
//!
//! Workflows (each measured cold: a fresh output directory, file or registry every run):
//! - `pull`: one 5-layer image (~125 MB) registry → OCI layout;
//! - `tar`: the same image → `docker-archive` tar;
//! - `push`: the same image → a fresh, empty second registry;
//! - `info`: bulk information over ≥ 200 repositories (`ferry info 'registry://…/bulk/*:latest'`
//!   against a sequential loop of `skopeo inspect --no-tags`, as a skopeo user would write it);
//! - `multi`: 50 small images → one `dir:…?unique_names=true` (`ferry copy --from-file`) against a
//!   sequential loop of `skopeo copy` into 50 directories.
//!
//! ferry runs at each `-j` (and `-J` for `multi`), skopeo once per workflow (it has neither).
//! Images are made once per run with `ferry load gen`'s generator (`ferry_load::generate`, the
//! same names and bytes the command makes) and pushed before anything is timed. A ferry arm whose
//! command does not exist in the given binary is reported as unavailable, never as a number.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferry_load::generate::{GenOptions, GeneratedImage};
use ferry_testkit::peers::{DockerRegistry, find, require};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::common::{CommonArgs, machine, median, now_utc, push_blob};
use crate::delay::{DelayProxy, Link};

/// Which tools' arms run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// ferry and skopeo side by side.
    Both,
    /// Only ferry's arms.
    Ferry,
    /// Only skopeo's arms (e.g. before `ferry copy` exists).
    Skopeo,
}

/// A workflow of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workflow {
    /// One 5-layer image, registry → OCI layout.
    Pull,
    /// The same image → docker-archive.
    Tar,
    /// The same image → a fresh empty second registry.
    Push,
    /// Bulk information over many repositories.
    Info,
    /// Many small images → one directory with layers stored once.
    Multi,
}

impl Workflow {
    const ALL: [Workflow; 5] = [
        Workflow::Pull,
        Workflow::Tar,
        Workflow::Push,
        Workflow::Info,
        Workflow::Multi,
    ];

    fn name(self) -> &'static str {
        match self {
            Workflow::Pull => "pull",
            Workflow::Tar => "tar",
            Workflow::Push => "push",
            Workflow::Info => "info",
            Workflow::Multi => "multi",
        }
    }

    /// The target for ferry on this workflow at `rtt_ms` (printed next to the figures,
    /// not asserted). The targets against skopeo and crane were set on loopback; with latency
    /// the target is what `-j` buys.
    fn target(self, rtt_ms: u64) -> &'static str {
        if rtt_ms > 0 {
            return match self {
                Workflow::Pull => "-j 8 ≥ 2.5× -j 1",
                _ => "",
            };
        }
        match self {
            Workflow::Pull => "≥ 2.5× skopeo (crane 2.0–2.1×)",
            Workflow::Tar => "< 320 ms (crane 320–400 ms)",
            Workflow::Push => "≥ 1.5× skopeo",
            Workflow::Info => "",
            Workflow::Multi => "≥ 5× skopeo loop at the default -J (crane 1.9–4.3×)",
        }
    }

    fn uses_layer_jobs(self) -> bool {
        !matches!(self, Workflow::Info)
    }

    fn uses_image_jobs(self) -> bool {
        matches!(self, Workflow::Multi)
    }

    /// The ferry subcommand the workflow needs.
    fn ferry_command(self) -> &'static str {
        match self {
            Workflow::Info => "info",
            _ => "copy",
        }
    }
}

/// `ferry-bench copy`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed runs per arm, of which the median is reported [default: 3; --quick: 1]
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// ferry's -j values [default: 1,4,8,16; --quick: 1,8]
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    layer_jobs: Option<Vec<usize>>,
    /// ferry's -J values, for the multi-image workflow [default: 1,3,6; --quick: 3]
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    image_jobs: Option<Vec<usize>>,
    /// Round-trip times in milliseconds; 0 is plain loopback, others go through the delaying
    /// proxy [default: 0,20]
    #[arg(long, value_name = "MS,MS,…", value_delimiter = ',')]
    rtt_ms: Option<Vec<u64>>,
    /// With a round-trip time, also bound each connection to this many KiB in flight per
    /// direction (a TCP window: window ÷ RTT per connection) [default: no bound]
    #[arg(long, value_name = "KIB")]
    window_kib: Option<usize>,
    /// Random KiB per layer of the 5-layer image [default: 25600, ~125 MB in all]
    #[arg(long, value_name = "KIB")]
    big_layer_kib: Option<usize>,
    /// Small images of the multi-image workflow [default: 50]
    #[arg(long, value_name = "N")]
    small_images: Option<usize>,
    /// Repositories with a `latest` tag for the bulk-info workflow [default: 200]
    #[arg(long, value_name = "N")]
    info_repos: Option<usize>,
    /// Workflows to run [default: pull,tar,push,info,multi]
    #[arg(long, value_name = "W,W,…", value_delimiter = ',')]
    workflows: Option<Vec<Workflow>>,
    /// Which tools run
    #[arg(long, value_enum, default_value = "both")]
    only: Only,
    /// Print the results as JSON on stdout instead of the TSV table
    #[arg(long)]
    json: bool,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ferry binary; `None` makes every ferry arm unavailable.
    pub ferry: Option<PathBuf>,
    pub runs: usize,
    pub layer_jobs: Vec<usize>,
    pub image_jobs: Vec<usize>,
    pub rtt_ms: Vec<u64>,
    pub window_kib: Option<usize>,
    pub big_layer_kib: usize,
    pub small_images: usize,
    pub info_repos: usize,
    pub workflows: Vec<Workflow>,
    pub only: Only,
    pub json: bool,
    pub out: PathBuf,
    pub quick: bool,
}

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let ferry = match a.only {
            Only::Skopeo => None,
            _ => Some(c.ferry("copy")?),
        };
        let o = Options {
            ferry,
            runs: c.sized(a.runs, 3, 1),
            layer_jobs: c.sized(a.layer_jobs, vec![1, 4, 8, 16], vec![1, 8]),
            image_jobs: c.sized(a.image_jobs, vec![1, 3, 6], vec![3]),
            rtt_ms: c.sized(a.rtt_ms, vec![0, 20], vec![0, 20]),
            window_kib: a.window_kib,
            big_layer_kib: c.sized(a.big_layer_kib, 25600, 25600),
            small_images: c.sized(a.small_images, 50, 50),
            info_repos: c.sized(a.info_repos, 200, 200),
            workflows: a.workflows.unwrap_or_else(|| Workflow::ALL.to_vec()),
            only: a.only,
            json: a.json,
            out: c.out(),
            quick: c.quick,
        };
        o.check()?;
        Ok(o)
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.runs > 0 && self.big_layer_kib > 0 && self.small_images > 0 && self.info_repos > 0,
            "--runs, --big-layer-kib, --small-images and --info-repos must be at least 1"
        );
        ensure!(
            !self.layer_jobs.is_empty()
                && !self.image_jobs.is_empty()
                && self
                    .layer_jobs
                    .iter()
                    .chain(&self.image_jobs)
                    .all(|j| *j > 0),
            "--layer-jobs and --image-jobs need values of at least 1"
        );
        ensure!(
            !self.rtt_ms.is_empty() && self.rtt_ms.iter().all(|r| *r <= 10_000),
            "--rtt-ms needs values between 0 and 10000"
        );
        ensure!(!self.workflows.is_empty(), "--workflows is empty");
        ensure!(
            self.window_kib.is_none_or(|w| (1..=1 << 20).contains(&w)),
            "--window-kib must be between 1 and 1048576"
        );
        Ok(())
    }

    fn runs_ferry(&self) -> bool {
        self.only != Only::Skopeo
    }

    fn runs_skopeo(&self) -> bool {
        self.only != Only::Ferry
    }
}

/// The images the workflows copy, pushed once into the source registry.
struct Seed {
    /// `repo:tag` of the 5-layer image.
    big: String,
    /// `repo:tag` of each small image.
    small: Vec<String>,
    /// Repositories under `bulk/`, each with a `latest` tag.
    info_repos: Vec<String>,
    /// Bytes of the 5-layer image's blobs.
    big_bytes: u64,
}

const INFO_NAMESPACE: &str = "bulk";

/// Pushes a generated image under `repo:tag` with the bench's plain POST + PUT uploads.
async fn push_generated(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    img: &GeneratedImage,
) -> anyhow::Result<()> {
    for b in &img.blobs {
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
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", img.top_media_type())
        .body(img.top.bytes.clone())
        .send()
        .await?;
    ensure!(
        r.status() == 201,
        "manifest push of {repo}:{tag} to {base} answered {}",
        r.status()
    );
    Ok(())
}

async fn seed(c: &reqwest::Client, base: &str, o: &Options) -> anyhow::Result<Seed> {
    let one = |count, layer_size, seed| GenOptions {
        count,
        batches: 1,
        layers: 5,
        layer_size,
        seed,
        architectures: vec!["amd64".into()],
    };
    let big_gen = one(1, o.big_layer_kib * 1024, 11);
    big_gen.validate()?;
    let big = big_gen.generate(0);
    let big_bytes = big.blobs.iter().map(|b| b.bytes.len() as u64).sum();
    push_generated(c, base, &big.repo, &big.tag, &big).await?;
    let big_ref = big.reference();
    drop(big);

    let small_gen = one(o.small_images, 1024, 12);
    small_gen.validate()?;
    let small: Vec<String> = futures_util::stream::iter(0..o.small_images)
        .map(|i| {
            let img = small_gen.generate(i);
            async move {
                push_generated(c, base, &img.repo, &img.tag, &img).await?;
                anyhow::Ok(img.reference())
            }
        })
        .buffered(16)
        .try_collect()
        .await?;

    // Every bulk repository holds the same small image: what is measured is the listing and the
    // per-repository requests, not the bytes.
    let info_img = one(1, 1024, 13).generate(0);
    let info_repos: Vec<String> = (0..o.info_repos)
        .map(|i| format!("{INFO_NAMESPACE}/r-{i:04}"))
        .collect();
    futures_util::stream::iter(&info_repos)
        .map(|r| push_generated(c, base, r, "latest", &info_img))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Seed {
        big: big_ref,
        small,
        info_repos,
        big_bytes,
    })
}

/// How one arm of a workflow ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Timed runs, in milliseconds.
    Ran(Vec<f64>),
    /// The binary has no such command.
    Unavailable(String),
    /// A run failed; the first line of its error.
    Failed(String),
}

/// One row of the table: a tool at one setting, on one network, for one workflow.
#[derive(Debug, Clone)]
struct Row {
    rtt_ms: u64,
    workflow: Workflow,
    tool: &'static str,
    layer_jobs: Option<usize>,
    image_jobs: Option<usize>,
    outcome: Outcome,
}

impl Row {
    fn median_ms(&self) -> Option<f64> {
        match &self.outcome {
            Outcome::Ran(v) if !v.is_empty() => Some(median(v.clone())),
            _ => None,
        }
    }
}

fn network(rtt_ms: u64) -> String {
    if rtt_ms == 0 {
        "loopback".to_owned()
    } else {
        format!("rtt{rtt_ms}")
    }
}

/// A skopeo command with signature policy checks off (nothing here is signed).
fn skopeo(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--insecure-policy");
    c
}

/// Runs `cmd` to completion with stdout discarded and stderr kept in `log`; an error carries the
/// end of that log.
fn run_quiet(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let err = std::fs::File::create(log)?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("{:?} exited with {status}: {last}", cmd.get_program());
    }
    Ok(())
}

/// Whether `ferry <command> --help` succeeds, i.e. the binary has the command.
fn has_command(ferry: &Path, command: &str) -> bool {
    Command::new(ferry)
        .args([command, "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Flushes dirty pages, so one run's writeback (skopeo fsyncs, ferry syncs once) is not charged to
/// the next.
fn sync() {
    let _ = Command::new("sync").status();
}

/// A registry reached directly or through a delaying proxy.
struct Endpoint {
    host: String,
    _proxy: Option<DelayProxy>,
}

fn endpoint(
    rt: &tokio::runtime::Runtime,
    port: u16,
    rtt_ms: u64,
    window_kib: Option<usize>,
) -> anyhow::Result<Endpoint> {
    if rtt_ms == 0 {
        return Ok(Endpoint {
            host: format!("127.0.0.1:{port}"),
            _proxy: None,
        });
    }
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let link = Link {
        one_way: Duration::from_micros(rtt_ms * 500),
        window: window_kib.map(|k| k * 1024),
        rate: None,
    };
    let proxy = rt.block_on(DelayProxy::start(target, link))?;
    Ok(Endpoint {
        host: proxy.host(),
        _proxy: Some(proxy),
    })
}

/// One arm: the tool and its settings.
#[derive(Debug, Clone, Copy)]
struct Arm {
    tool: &'static str,
    layer_jobs: Option<usize>,
    image_jobs: Option<usize>,
}

fn arms(o: &Options, w: Workflow) -> Vec<Arm> {
    let mut v = Vec::new();
    if o.runs_skopeo() {
        v.push(Arm {
            tool: "skopeo",
            layer_jobs: None,
            image_jobs: None,
        });
    }
    if o.runs_ferry() {
        let js: Vec<Option<usize>> = if w.uses_layer_jobs() {
            o.layer_jobs.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        let image_js: Vec<Option<usize>> = if w.uses_image_jobs() {
            o.image_jobs.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for j in &js {
            for bj in &image_js {
                v.push(Arm {
                    tool: "ferry",
                    layer_jobs: *j,
                    image_jobs: *bj,
                });
            }
        }
    }
    v
}

/// What every timed run of one network needs.
struct Session<'a> {
    o: &'a Options,
    rt: &'a tokio::runtime::Runtime,
    seed: &'a Seed,
    src: String,
    skopeo: &'a Path,
    ferry: Option<&'a Path>,
    from_file: PathBuf,
    work: &'a Path,
    rtt_ms: u64,
}

impl Session<'_> {
    /// Runs one timed run of `arm` on `w` into a fresh output under `cold`; returns the time taken.
    fn measure(&self, w: Workflow, arm: Arm, cold: &Path) -> anyhow::Result<Duration> {
        std::fs::create_dir_all(cold)?;
        let log = cold.with_extension("log");
        let src = &self.src;
        let big = &self.seed.big;
        let ferry = |args: &[String]| -> Command {
            let mut c = Command::new(self.ferry.expect("a ferry arm without a binary"));
            c.arg(w.ferry_command());
            if w != Workflow::Info {
                c.arg("--quiet");
            }
            if let Some(j) = arm.layer_jobs {
                c.args(["-j", &j.to_string()]);
            }
            if let Some(bj) = arm.image_jobs {
                c.args(["-J", &bj.to_string()]);
            }
            c.args(args);
            c
        };
        let is_ferry = arm.tool == "ferry";
        // The second registry of `push` starts (and, through the proxy, gets its delay) before the
        // clock does.
        let dest = if w == Workflow::Push {
            let r = DockerRegistry::start().context("docker-registry")?;
            let e = endpoint(self.rt, r.port, self.rtt_ms, self.o.window_kib)?;
            Some((r, e))
        } else {
            None
        };
        sync();
        let started = Instant::now();
        match w {
            Workflow::Pull => {
                let out = format!("{}:latest", cold.join("layout").display());
                if is_ferry {
                    run_quiet(
                        &mut ferry(&[format!("registry://{src}/{big}"), format!("oci:{out}")]),
                        &log,
                    )?;
                } else {
                    run_quiet(
                        skopeo(self.skopeo).args([
                            "copy",
                            "--src-tls-verify=false",
                            &format!("docker://{src}/{big}"),
                            &format!("oci:{out}"),
                        ]),
                        &log,
                    )?;
                }
            }
            Workflow::Tar => {
                let out = format!("{}:bench/big:latest", cold.join("image.tar").display());
                if is_ferry {
                    run_quiet(
                        &mut ferry(&[
                            format!("registry://{src}/{big}"),
                            format!("docker-archive:{out}"),
                        ]),
                        &log,
                    )?;
                } else {
                    run_quiet(
                        skopeo(self.skopeo).args([
                            "copy",
                            "--src-tls-verify=false",
                            &format!("docker://{src}/{big}"),
                            &format!("docker-archive:{out}"),
                        ]),
                        &log,
                    )?;
                }
            }
            Workflow::Push => {
                let (_, e) = dest.as_ref().expect("started above");
                let to = &e.host;
                if is_ferry {
                    run_quiet(
                        &mut ferry(&[
                            format!("registry://{src}/{big}"),
                            format!("registry://{to}/{big}"),
                        ]),
                        &log,
                    )?;
                } else {
                    run_quiet(
                        skopeo(self.skopeo).args([
                            "copy",
                            "--src-tls-verify=false",
                            "--dest-tls-verify=false",
                            &format!("docker://{src}/{big}"),
                            &format!("docker://{to}/{big}"),
                        ]),
                        &log,
                    )?;
                }
            }
            Workflow::Info => {
                if is_ferry {
                    run_quiet(
                        &mut ferry(&[format!("registry://{src}/{INFO_NAMESPACE}/*:latest")]),
                        &log,
                    )?;
                } else {
                    for r in &self.seed.info_repos {
                        run_quiet(
                            skopeo(self.skopeo).args([
                                "inspect",
                                "--tls-verify=false",
                                "--no-tags",
                                &format!("docker://{src}/{r}:latest"),
                            ]),
                            &log,
                        )?;
                    }
                }
            }
            Workflow::Multi => {
                if is_ferry {
                    run_quiet(
                        &mut ferry(&[
                            "--from-file".to_owned(),
                            self.from_file.display().to_string(),
                            format!("dir:{}?unique_names=true", cold.join("images").display()),
                        ]),
                        &log,
                    )?;
                } else {
                    for (i, r) in self.seed.small.iter().enumerate() {
                        run_quiet(
                            skopeo(self.skopeo).args([
                                "copy",
                                "--src-tls-verify=false",
                                &format!("docker://{src}/{r}"),
                                &format!("dir:{}", cold.join(format!("image-{i:03}")).display()),
                            ]),
                            &log,
                        )?;
                    }
                }
            }
        }
        let took = started.elapsed();
        drop(dest);
        Ok(took)
    }

    /// Every arm of `w`, `runs` times, interleaved so that drift over time hits all arms alike.
    fn workflow(&self, w: Workflow, ferry_has: &dyn Fn(Workflow) -> bool) -> Vec<Row> {
        let mut arms = arms(self.o, w);
        if !ferry_has(w) {
            // One row says the ferry arm is missing, not one per setting.
            if let Some(k) = arms.iter().position(|a| a.tool == "ferry") {
                arms.retain(|a| a.tool != "ferry");
                arms.insert(
                    k,
                    Arm {
                        tool: "ferry",
                        layer_jobs: None,
                        image_jobs: None,
                    },
                );
            }
        }
        let mut outcomes: Vec<Outcome> = arms
            .iter()
            .map(|a| {
                if a.tool == "ferry" && !ferry_has(w) {
                    Outcome::Unavailable(format!(
                        "this ferry has no `{}` command",
                        w.ferry_command()
                    ))
                } else {
                    Outcome::Ran(Vec::new())
                }
            })
            .collect();
        for run in 0..self.o.runs {
            for (k, arm) in arms.iter().enumerate() {
                let Outcome::Ran(times) = &mut outcomes[k] else {
                    continue;
                };
                let label = label(w, *arm, self.rtt_ms);
                let cold = self.work.join(format!(
                    "{}-{}-{}-{}-{}-{run}",
                    network(self.rtt_ms),
                    w.name(),
                    arm.tool,
                    arm.layer_jobs.unwrap_or(0),
                    arm.image_jobs.unwrap_or(0)
                ));
                let result = self.measure(w, *arm, &cold);
                let _ = std::fs::remove_dir_all(&cold);
                match result {
                    Ok(t) => {
                        let ms = t.as_secs_f64() * 1e3;
                        eprintln!("  {label} run {}: {ms:.0} ms", run + 1);
                        times.push(ms);
                    }
                    Err(e) => {
                        eprintln!("  {label} run {} failed: {e:#}", run + 1);
                        outcomes[k] = Outcome::Failed(format!("{e:#}"));
                    }
                }
            }
        }
        arms.iter()
            .zip(outcomes)
            .map(|(a, outcome)| Row {
                rtt_ms: self.rtt_ms,
                workflow: w,
                tool: a.tool,
                layer_jobs: a.layer_jobs,
                image_jobs: a.image_jobs,
                outcome,
            })
            .collect()
    }
}

fn label(w: Workflow, a: Arm, rtt_ms: u64) -> String {
    let mut s = format!("{} {} {}", network(rtt_ms), w.name(), a.tool);
    if let Some(j) = a.layer_jobs {
        let _ = write!(s, " -j {j}");
    }
    if let Some(j) = a.image_jobs {
        let _ = write!(s, " -J {j}");
    }
    s
}

fn version(cmd: &Path, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs the benchmark, prints its table (or JSON) and writes the results; returns them.
pub fn run(o: Options) -> anyhow::Result<Value> {
    let skopeo_bin = match find("skopeo") {
        Some(p) => p,
        None if o.runs_skopeo() => bail!("skopeo is not installed: apt-get install skopeo"),
        // `--only ferry` never runs it.
        None => PathBuf::from("skopeo"),
    };
    ensure!(
        require("docker-registry").is_some(),
        "docker-registry is not installed: apt-get install docker-registry"
    );
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-copy")
        .tempdir()?;
    let w = work.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();

    let ferry = o.ferry.as_deref();
    let has_copy = ferry.is_some_and(|f| has_command(f, "copy"));
    let has_info = ferry.is_some_and(|f| has_command(f, "info"));
    let ferry_has = |w: Workflow| match w {
        Workflow::Info => has_info,
        _ => has_copy,
    };
    if o.runs_ferry() && !(has_copy && has_info) {
        eprintln!(
            "note: this ferry has {}: its arms are reported as unavailable",
            match (has_copy, has_info) {
                (false, false) => "neither `copy` nor `info`",
                (false, true) => "no `copy`",
                _ => "no `info`",
            }
        );
    }

    let registry = DockerRegistry::start().context("docker-registry")?;
    let base = format!("http://{}", registry.host());
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(32)
        .build()?;
    eprintln!(
        "seeding {base}: a 5-layer image of {} KiB layers, {} small images, {} repositories with `latest`…",
        o.big_layer_kib, o.small_images, o.info_repos
    );
    let seed = rt.block_on(seed(&c, &base, &o))?;
    eprintln!(
        "seeded in {:.1} s ({:.1} MB in the 5-layer image)",
        started.elapsed().as_secs_f64(),
        seed.big_bytes as f64 / 1e6
    );

    let mut rows = Vec::new();
    for &rtt in &o.rtt_ms {
        let src = endpoint(&rt, registry.port, rtt, o.window_kib)?;
        let from_file = w.join(format!("images-{}.txt", network(rtt)));
        let list: String = seed
            .small
            .iter()
            .map(|r| format!("registry://{}/{r}\n", src.host))
            .collect();
        std::fs::write(&from_file, list)?;
        let cx = Session {
            o: &o,
            rt: &rt,
            seed: &seed,
            src: src.host.clone(),
            skopeo: &skopeo_bin,
            ferry,
            from_file,
            work: w,
            rtt_ms: rtt,
        };
        for &wf in &o.workflows {
            eprintln!("{} {}…", network(rtt), wf.name());
            rows.extend(cx.workflow(wf, &ferry_has));
        }
    }

    let result = results(&o, &rows, &seed, &skopeo_bin, started.elapsed());
    let table = render(&result);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{table}");
    }
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    let name = if o.quick { "copy-quick" } else { "copy" };
    let file = o.out.join(format!("{name}-{stamp}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&result)?)?;
    std::fs::write(
        o.out.join("copy-latest.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("copy-latest.tsv"), &table)?;
    eprintln!(
        "wrote {} ({:.0} s in all)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    drop(registry);
    Ok(result)
}

/// skopeo's median on the same network and workflow.
fn skopeo_median(rows: &[Row], r: &Row) -> Option<f64> {
    rows.iter()
        .find(|s| s.tool == "skopeo" && s.rtt_ms == r.rtt_ms && s.workflow == r.workflow)
        .and_then(Row::median_ms)
}

fn ferry_median(rows: &[Row], rtt: u64, w: Workflow, j: usize) -> Option<f64> {
    rows.iter()
        .filter(|r| r.tool == "ferry" && r.rtt_ms == rtt && r.workflow == w)
        .filter(|r| r.layer_jobs == Some(j))
        .filter_map(Row::median_ms)
        .reduce(f64::min)
}

fn results(o: &Options, rows: &[Row], seed: &Seed, skopeo: &Path, took: Duration) -> Value {
    let row_json: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (status, runs, note) = match &r.outcome {
                Outcome::Ran(v) => ("ok", v.clone(), None),
                Outcome::Unavailable(n) => ("unavailable", Vec::new(), Some(n.clone())),
                Outcome::Failed(n) => ("failed", Vec::new(), Some(n.clone())),
            };
            let median = r.median_ms();
            let vs_skopeo = match (r.tool, median, skopeo_median(rows, r)) {
                ("ferry", Some(m), Some(s)) if m > 0.0 => Some(s / m),
                _ => None,
            };
            json!({
                "network": network(r.rtt_ms), "rtt_ms": r.rtt_ms, "workflow": r.workflow.name(),
                "tool": r.tool, "layer_jobs": r.layer_jobs, "image_jobs": r.image_jobs,
                "status": status, "note": note, "runs_ms": runs, "median_ms": median,
                "speed_vs_skopeo": vs_skopeo,
                "target": if r.tool == "ferry" { r.workflow.target(r.rtt_ms) } else { "" },
            })
        })
        .collect();

    // The targets, each with what this run measured (printed, never asserted).
    let mut targets = Vec::new();
    let best = |rtt: u64, w: Workflow| {
        rows.iter()
            .filter(|r| r.tool == "ferry" && r.rtt_ms == rtt && r.workflow == w)
            .filter_map(|r| r.median_ms().map(|m| (m, r)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    for &rtt in &o.rtt_ms {
        for &w in &o.workflows {
            if rtt > 0 || w.target(rtt).is_empty() {
                continue;
            }
            let measured = match best(rtt, w) {
                None => "no ferry figure".to_owned(),
                Some((m, r)) => {
                    let settings = label(
                        w,
                        Arm {
                            tool: "ferry",
                            layer_jobs: r.layer_jobs,
                            image_jobs: r.image_jobs,
                        },
                        rtt,
                    );
                    match (w, skopeo_median(rows, r)) {
                        (Workflow::Tar, _) => format!("{m:.0} ms ({settings}, fastest)"),
                        (_, Some(s)) => format!("{:.2}× skopeo ({settings}, fastest)", s / m),
                        (_, None) => format!("{m:.0} ms ({settings}, fastest; no skopeo figure)"),
                    }
                }
            };
            targets.push(json!({"network": network(rtt), "target": format!("{}: {}", w.name(), w.target(rtt)), "measured": measured}));
        }
        if rtt > 0 {
            for &w in &o.workflows {
                if !w.uses_layer_jobs() || w.uses_image_jobs() {
                    continue;
                }
                let measured = match (ferry_median(rows, rtt, w, 1), ferry_median(rows, rtt, w, 8))
                {
                    (Some(one), Some(eight)) if eight > 0.0 => {
                        format!("{:.2}× (-j 1 {one:.0} ms, -j 8 {eight:.0} ms)", one / eight)
                    }
                    _ => "needs ferry figures at -j 1 and -j 8".to_owned(),
                };
                let target = if !w.target(rtt).is_empty() {
                    format!("{}: {}", w.name(), w.target(rtt))
                } else {
                    format!("{}: -j 8 ÷ -j 1 (no target)", w.name())
                };
                targets
                    .push(json!({"network": network(rtt), "target": target, "measured": measured}));
            }
        }
    }

    json!({
        "benchmark": "copy",
        "date": now_utc(),
        "machine": machine(),
        "tools": {
            "skopeo": version(skopeo, "--version"),
            "ferry": o.ferry.as_deref().and_then(|f| version(f, "version")),
        },
        "parameters": {
            "runs": o.runs, "layer_jobs": o.layer_jobs, "image_jobs": o.image_jobs,
            "rtt_ms": o.rtt_ms, "window_kib": o.window_kib, "big_layer_kib": o.big_layer_kib, "big_image_bytes": seed.big_bytes,
            "small_images": o.small_images, "info_repos": o.info_repos,
            "workflows": o.workflows.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "quick": o.quick, "seconds_in_all": took.as_secs_f64(),
            "source": "docker-registry (CNCF Distribution) on 127.0.0.1, seeded with ferry load gen's generator",
            "latency": "rtt > 0: a delaying TCP proxy in the bench adds rtt/2 each way and one rtt per new connection",
            "skopeo_loops": "info and multi run skopeo once per image, sequentially, as a shell loop would",
        },
        "rows": row_json,
        "targets": targets,
    })
}

/// The TSV table: header lines start with `#`.
fn render(r: &Value) -> String {
    let mut s = format!(
        "# copy benchmark, {} — {} ({} cores), {}; ferry: {}\n# median of {} run(s), cold output each run; speed ÷ skopeo > 1 means faster than skopeo\n",
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"],
        r["tools"]["skopeo"].as_str().unwrap_or("skopeo ?"),
        r["tools"]["ferry"].as_str().unwrap_or("none"),
        r["parameters"]["runs"],
    );
    s.push_str("network\tworkflow\ttool\t-j\t-J\tmedian_ms\truns_ms\tspeed_vs_skopeo\ttarget\n");
    let opt = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    for row in r["rows"].as_array().into_iter().flatten() {
        let median = match row["status"].as_str() {
            Some("ok") => format!("{:.0}", row["median_ms"].as_f64().unwrap_or(0.0)),
            Some(other) => other.to_owned(),
            None => "?".to_owned(),
        };
        let runs: Vec<String> = row["runs_ms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{median}\t{}\t{}\t{}",
            row["network"].as_str().unwrap_or(""),
            row["workflow"].as_str().unwrap_or(""),
            row["tool"].as_str().unwrap_or(""),
            opt(&row["layer_jobs"]),
            opt(&row["image_jobs"]),
            if runs.is_empty() {
                "-".to_owned()
            } else {
                runs.join(",")
            },
            row["speed_vs_skopeo"]
                .as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.2}×")),
            row["target"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("-"),
        );
    }
    for row in r["rows"].as_array().into_iter().flatten() {
        if row["status"] != "ok" {
            let _ = writeln!(
                s,
                "# {} {} {} -j {} -J {}: {}",
                row["network"].as_str().unwrap_or(""),
                row["workflow"].as_str().unwrap_or(""),
                row["tool"].as_str().unwrap_or(""),
                opt(&row["layer_jobs"]),
                opt(&row["image_jobs"]),
                row["note"].as_str().unwrap_or("")
            );
        }
    }
    s.push_str("\n# targets of issue #12 (printed, not asserted)\nnetwork\ttarget\tmeasured\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{}\t{}\t{}",
            t["network"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or("")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole harness at its smallest: two small images, three bulk repositories, a 64 KiB
    /// layer image, one run, on loopback and through the proxy. Without a ferry binary every ferry
    /// arm must be reported unavailable, and every skopeo arm measured.
    #[test]
    fn the_smallest_run_measures_every_skopeo_arm_and_marks_ferry_unavailable() {
        if require("skopeo").is_none() || require("docker-registry").is_none() {
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let o = Options {
            ferry: None,
            runs: 1,
            layer_jobs: vec![1, 8],
            image_jobs: vec![3],
            rtt_ms: vec![0, 20],
            window_kib: None,
            big_layer_kib: 64,
            small_images: 2,
            info_repos: 3,
            workflows: Workflow::ALL.to_vec(),
            only: Only::Both,
            json: false,
            out: out.path().to_owned(),
            quick: true,
        };
        run(o).unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("copy-quick-")
            })
            .collect();
        assert_eq!(files.len(), 1, "one timestamped results file: {files:?}");
        let r: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        let rows = r["rows"].as_array().unwrap();
        for network in ["loopback", "rtt20"] {
            for w in Workflow::ALL {
                let of = |tool: &str| -> Vec<&Value> {
                    rows.iter()
                        .filter(|x| {
                            x["network"] == network
                                && x["workflow"] == w.name()
                                && x["tool"] == tool
                        })
                        .collect()
                };
                let skopeo = of("skopeo");
                assert_eq!(skopeo.len(), 1, "{network} {}: one skopeo row", w.name());
                let s = skopeo[0];
                assert_eq!(s["status"], "ok", "{network} {}: {s}", w.name());
                let runs = s["runs_ms"].as_array().unwrap();
                assert_eq!(runs.len(), 1, "{s}");
                assert!(runs[0].as_f64().unwrap() > 0.0, "{s}");
                assert!(s["median_ms"].as_f64().unwrap() > 0.0, "{s}");
                let ferry = of("ferry");
                assert_eq!(ferry.len(), 1, "{network} {}: one ferry row", w.name());
                assert_eq!(ferry[0]["status"], "unavailable", "{}", ferry[0]);
                assert!(ferry[0]["median_ms"].is_null(), "{}", ferry[0]);
            }
        }
        let table = std::fs::read_to_string(out.path().join("copy-latest.tsv")).unwrap();
        assert!(
            table.contains("loopback\tpull\tferry\t-\t-\tunavailable"),
            "{table}"
        );
    }

    /// With a binary that has `copy` and `info` (a stand-in here that records its arguments and
    /// does nothing, so its times mean nothing), every ferry arm runs once per setting with the
    /// command line of the `ferry copy` contract, and its rows carry a ratio to skopeo's.
    #[test]
    fn ferry_arms_run_the_copy_command_lines_at_every_setting() {
        if require("skopeo").is_none() || require("docker-registry").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let stub = dir.path().join("ferry");
        std::fs::write(
            &stub,
            format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
        )
        .unwrap();
        let chmod = Command::new("chmod").arg("+x").arg(&stub).status().unwrap();
        assert!(chmod.success());
        let o = Options {
            ferry: Some(stub),
            runs: 1,
            layer_jobs: vec![1, 8],
            image_jobs: vec![1, 3],
            rtt_ms: vec![0],
            window_kib: None,
            big_layer_kib: 4,
            small_images: 2,
            info_repos: 2,
            workflows: Workflow::ALL.to_vec(),
            only: Only::Both,
            json: true,
            out: dir.path().join("out"),
            quick: true,
        };
        let r = run(o).unwrap();
        let ferry: Vec<&Value> = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["tool"] == "ferry")
            .collect();
        let settings: Vec<String> = ferry
            .iter()
            .map(|x| format!("{} {} {}", x["workflow"], x["layer_jobs"], x["image_jobs"]))
            .collect();
        assert_eq!(
            settings,
            [
                "\"pull\" 1 null",
                "\"pull\" 8 null",
                "\"tar\" 1 null",
                "\"tar\" 8 null",
                "\"push\" 1 null",
                "\"push\" 8 null",
                "\"info\" null null",
                "\"multi\" 1 1",
                "\"multi\" 1 3",
                "\"multi\" 8 1",
                "\"multi\" 8 3",
            ]
        );
        for x in &ferry {
            assert_eq!(x["status"], "ok", "{x}");
            assert!(x["speed_vs_skopeo"].as_f64().unwrap() > 0.0, "{x}");
        }
        let calls = std::fs::read_to_string(&calls).unwrap();
        let run_calls: Vec<&str> = calls
            .lines()
            .filter(|l| !l.ends_with("--help") && *l != "version")
            .collect();
        let has = |prefix: &str, suffix: &str| {
            run_calls
                .iter()
                .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
        };
        assert_eq!(run_calls.len(), ferry.len(), "{calls}");
        assert!(
            has("copy --quiet -j 8 registry://127.0.0.1:", "/layout:latest"),
            "{calls}"
        );
        assert!(
            has(
                "copy --quiet -j 1 registry://127.0.0.1:",
                "/image.tar:bench/big:latest"
            ),
            "{calls}"
        );
        assert!(
            run_calls
                .iter()
                .any(|l| l.starts_with("copy --quiet -j 8 registry://")
                    && l.matches("registry://127.0.0.1:").count() == 2),
            "push goes registry to registry: {calls}"
        );
        assert!(
            has("info registry://127.0.0.1:", "/bulk/*:latest"),
            "{calls}"
        );
        assert!(
            has(
                "copy --quiet -j 8 -J 3 --from-file ",
                "/images?unique_names=true"
            ),
            "{calls}"
        );
    }

    /// Through the proxy, skopeo's loops open a connection per image and pay a round trip for
    /// each: the bulk loop over 3 repositories at 20 ms must take longer than on loopback.
    #[test]
    fn the_rtt_runs_go_through_the_delay() {
        if require("skopeo").is_none() || require("docker-registry").is_none() {
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let o = Options {
            ferry: None,
            runs: 1,
            layer_jobs: vec![1],
            image_jobs: vec![1],
            rtt_ms: vec![0, 200],
            window_kib: None,
            big_layer_kib: 4,
            small_images: 1,
            info_repos: 3,
            workflows: vec![Workflow::Info],
            only: Only::Skopeo,
            json: true,
            out: out.path().to_owned(),
            quick: true,
        };
        let r = run(o).unwrap();
        let ms = |n: &str| {
            r["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["network"] == n)
                .unwrap()["median_ms"]
                .as_f64()
                .unwrap()
        };
        // Each inspect needs at least a connection and a manifest request: ≥ 2 round trips.
        assert!(
            ms("rtt200") >= ms("loopback") + 3.0 * 2.0 * 200.0,
            "loopback {} ms, rtt200 {} ms",
            ms("loopback"),
            ms("rtt200")
        );
    }
}
