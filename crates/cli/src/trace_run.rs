//! `ferry trace warmup|run|merge`: replaying a trace against registries (the work is in
//! `ferry_trace::replay`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferry_trace::replay::map::{WarmupMap, write_map};
use ferry_trace::replay::pace::Pace;
use ferry_trace::replay::warmup::{
    DEFAULT_MAX_BLOB_SIZE, DEFAULT_MAX_TOTAL, Objects, WarmupOptions,
};
use ferry_trace::{Format, Request, Trace, TraceError};

use crate::trace::{TraceInput, read_trace};

#[derive(Debug, Clone, Args)]
pub struct WarmupArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// The registry to fill, http(s)://host:port.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// Where to write the warmup map [default: the first trace path with .map appended].
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// Objects pushed at a time.
    #[arg(short = 'j', long, default_value_t = 8)]
    pub jobs: usize,
    /// Blobs recorded larger than this are pushed at this size (the map says so), e.g. 64MB.
    #[arg(long, default_value_t = DEFAULT_MAX_BLOB_SIZE, value_parser = ferry_server::units::parse_size)]
    pub max_blob_size: u64,
    /// Refuse a trace whose objects would push more than this in all, e.g. 500GB.
    #[arg(long, default_value_t = DEFAULT_MAX_TOTAL, value_parser = ferry_server::units::parse_size)]
    pub max_total: u64,
}

/// Timings of `ferry trace run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaceArg {
    /// Open loop at the trace's timestamps (over --speed).
    Recorded,
    /// Back to back, --concurrency in flight.
    Asap,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// The warmup map `ferry trace warmup` wrote.
    #[arg(long, value_name = "FILE")]
    pub map: PathBuf,
    /// Registries, comma-separated (http://host:port): objects are spread over them by
    /// consistent hashing.
    #[arg(
        long,
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        required = true
    )]
    pub registry: Vec<String>,
    /// recorded: at the trace's timestamps; asap: as fast as --concurrency allows.
    #[arg(long, value_enum, default_value_t = PaceArg::Recorded)]
    pub pace: PaceArg,
    /// recorded: replay this many times faster than the trace.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// recorded: most requests in flight (a request due while all are busy goes late, and is
    /// counted).
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// asap: requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Replay only shard i of N (`--shard 0/4`): the requests of a deterministic quarter of the
    /// clients, each client's requests in their order.
    #[arg(long, value_name = "i/N", value_parser = parse_shard)]
    pub shard: Option<(u64, u64)>,
    /// Start at this time (RFC 3339, or seconds since the Unix epoch), so shards started apart
    /// begin together.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Also write the results (the load lab's results schema) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write each request sent, `<registry> <path>` a line in send order, to FILE.
    #[arg(long, value_name = "FILE")]
    pub sent_log: Option<PathBuf>,
    /// A label for the results [default: the registries].
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Results files of the shards of one replay (`ferry trace run --json`).
    #[arg(required = true, value_name = "RESULTS")]
    pub results: Vec<PathBuf>,
    /// Where to write the merged results.
    #[arg(long, value_name = "FILE")]
    pub json: PathBuf,
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?}: expected i/N with 0 <= i < N, e.g. 0/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The map of the trace at `path`: `.map` appended, beside a directory rather than in it, and
/// with an extension no trace reader takes, so replaying the directory never reads the map.
fn default_map(path: &Path) -> PathBuf {
    let trimmed = path.to_string_lossy().trim_end_matches('/').to_owned();
    PathBuf::from(format!(
        "{}.map",
        if trimmed.is_empty() {
            "trace"
        } else {
            &trimmed
        }
    ))
}

/// `ferry trace warmup`.
pub fn warmup(args: &WarmupArgs) -> anyhow::Result<ExitCode> {
    let map_path = args
        .map
        .clone()
        .unwrap_or_else(|| default_map(&args.input.paths[0]));
    let registry = ferry_client::Registry::new(ferry_client::RegistryOptions {
        endpoint: args.registry.clone(),
        ..ferry_client::RegistryOptions::default()
    })
    .with_context(|| format!("--registry {:?}", args.registry))?;
    let mut objects = Objects::default();
    read_trace(&args.input, |r| objects.add(r))?;
    anyhow::ensure!(
        !objects.is_empty(),
        "the trace has no GETs of blobs or manifests: nothing to warm up"
    );
    let o = WarmupOptions {
        jobs: args.jobs.max(1),
        max_blob_size: args.max_blob_size,
        max_total: args.max_total,
    };
    let (mut entries, report) =
        crate::runtime()?.block_on(ferry_trace::replay::warmup::warmup(&registry, &objects, &o))?;
    write_map(&map_path, &mut entries)?;
    println!(
        "{} blobs and {} manifests: pushed {} blobs and {} manifests ({} bytes), {} already there; {} capped at --max-blob-size, {} without a size pushed at {} bytes",
        report.blobs,
        report.manifests,
        report.pushed_blobs,
        report.pushed_manifests,
        report.bytes_pushed,
        report.present,
        report.capped,
        report.defaulted,
        ferry_trace::replay::warmup::DEFAULT_SIZE
    );
    println!("wrote the warmup map {}", map_path.display());
    Ok(ExitCode::SUCCESS)
}

/// The trace's requests as an iterator, reporting what cannot be read as `read_trace` does: a
/// record is skipped with a warning (fatal with --strict), a broken file noted.
struct Reading {
    trace: Trace,
    strict: bool,
    skipped: u64,
    fatal: Option<anyhow::Error>,
    broken: u64,
    shard: Option<(u64, u64)>,
}

impl Iterator for Reading {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        loop {
            match self.trace.next()? {
                Ok(r) => {
                    if let Some((i, n)) = self.shard
                        && ferry_trace::replay::run::shard_of(&r, n) != i
                    {
                        continue;
                    }
                    return Some(r);
                }
                Err(e) if self.strict => {
                    self.fatal = Some(
                        anyhow::Error::new(e)
                            .context("--strict: stopping at the first record that cannot be read"),
                    );
                    return None;
                }
                Err(e @ TraceError::Record { .. }) => {
                    self.skipped += 1;
                    if self.skipped <= 10 {
                        eprintln!("warning: skipped {e}");
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    self.broken += 1;
                }
            }
        }
    }
}

/// Seconds since the Unix epoch of `--start-at` (RFC 3339 or seconds).
fn start_at(s: &str) -> anyhow::Result<Duration> {
    if let Ok(secs) = s.trim().parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    let us = ferry_trace::parse_timestamp(s.trim()).ok_or_else(|| {
        anyhow::anyhow!(
            "--start-at {s:?}: expected RFC 3339 (2026-12-03T15:00:00Z) or seconds since the Unix epoch"
        )
    })?;
    anyhow::ensure!(us >= 0, "--start-at {s:?} is before 1970");
    Ok(Duration::from_micros(us as u64))
}

/// `ferry trace run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    for url in &args.registry {
        ferry_trace::replay::run::registry_address(url).context("--registry")?;
    }
    let map = WarmupMap::read(&args.map)?;
    anyhow::ensure!(
        !map.is_empty(),
        "{} has no objects: warm the registry up with `ferry trace warmup` first",
        args.map.display()
    );
    let pace = match args.pace {
        PaceArg::Recorded => {
            anyhow::ensure!(
                args.speed.is_finite() && args.speed > 0.0,
                "--speed {}: must be above 0",
                args.speed
            );
            Pace::Recorded {
                speed: args.speed,
                max_in_flight: args.max_in_flight.max(1),
            }
        }
        PaceArg::Asap => Pace::Asap {
            concurrency: args.concurrency.max(1),
        },
    };
    let start = args.start_at.as_deref().map(start_at).transpose()?;
    let mut reading = Reading {
        trace: Trace::open(&args.input.paths, args.input.format.map(Format::from))?,
        strict: args.input.strict,
        skipped: 0,
        fatal: None,
        broken: 0,
        shard: args.shard,
    };
    let mut log = match &args.sent_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let o = ferry_trace::replay::run::RunOptions {
        registries: args.registry.clone(),
        pace,
        timeout: Duration::from_secs(args.timeout.max(1)),
        label: args
            .label
            .clone()
            .unwrap_or_else(|| args.registry.join(",")),
        shard: args.shard.map(|(i, n)| format!("{i}/{n}")),
    };
    let rt = crate::runtime()?;
    let results = rt.block_on(async {
        if let Some(at) = start {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            if at > now {
                tokio::time::sleep(at - now).await;
            } else {
                eprintln!("warning: --start-at is past; starting now");
            }
        }
        ferry_trace::replay::run::run(
            &mut reading,
            &map,
            &o,
            log.as_mut().map(|l| l as &mut (dyn std::io::Write + Send)),
        )
        .await
    })?;
    if let Some(l) = log {
        l.into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write --sent-log")?;
    }
    print!("{}", ferry_trace::replay::run::render(&results));
    if let Some(path) = &args.json {
        write_results(path, &results)?;
    }
    if let Some(e) = reading.fatal {
        return Err(e);
    }
    if reading.skipped > 0 {
        eprintln!(
            "warning: {} records could not be read and were skipped",
            reading.skipped
        );
    }
    anyhow::ensure!(
        reading.broken == 0,
        "{} trace files could not be read to their end (see above); the figures cover what was read",
        reading.broken
    );
    Ok(if results.summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} requests failed (see the table)",
            results.summary.errors
        );
        ExitCode::FAILURE
    })
}

fn write_results(path: &Path, r: &ferry_report::results::Results) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `ferry trace merge`.
pub fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let all = args
        .results
        .iter()
        .map(|p| ferry_report::results::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = ferry_trace::replay::run::merge(&all)?;
    print!("{}", ferry_trace::replay::run::render(&merged));
    write_results(&args.json, &merged)?;
    Ok(ExitCode::SUCCESS)
}
