//! The `trace` benchmark: issue #13's targets for the trace lab, each against a peer in the same
//! run.
//!
//! - `simulate`: ferry's simulator replaying a `ferry trace gen` trace through LRU, LFU, S3-FIFO
//!   and ARC at one capacity, timed in-process on a [`Workload`] built once (replay only: the
//!   requests/s per policy), and as the whole `ferry trace simulate` command (reading the JSON
//!   trace included); libCacheSim's Python wheel replays the same requests
//!   (`--export-requests`) in its C loop (`libcachesim_replay.py --c-loop`).
//! - `sweep`: a whole LRU sweep over 10 capacities: `ferry trace simulate --objects c1,…,c10`
//!   against a straightforward Python `OrderedDict` LRU (`crates/bench/lru_ordereddict.py`) and
//!   libCacheSim on the same exported requests, as whole commands.
//! - `run`: `ferry trace run` against a null registry in this process (hyper on 127.0.0.1 serving
//!   every object of the map from memory, the seeded bytes warmup would have pushed), at the
//!   trace's pace sped up to an offered rate, and as fast as it goes; then the same against
//!   `ferry serve` warmed up by `ferry trace warmup` (a second row, not a target).
//!
//! Every arm is repeated `--runs` times, the arms of a part interleaved run by run, and medians are
//! reported; the targets are printed with PASS or MISS, never asserted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use ferry_policy::cache::Capacity;
use ferry_trace::Trace;
use ferry_trace::replay::content::Content;
use ferry_trace::replay::map::{MapEntry, ObjectKind, repository_name, write_map};
use ferry_trace::replay::warmup::{DEFAULT_SIZE, Objects};
use ferry_trace::simulate::{Policy, Workload, simulate};
use serde_json::{Value, json};

use ferry_testkit::peers::Ferry;

use crate::common::{CommonArgs, machine, median, now_utc};

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Requests/s per policy at one capacity: ferry in-process and as a command, libCacheSim.
    Simulate,
    /// A 10-capacity LRU sweep as whole commands: ferry, Python OrderedDict, libCacheSim.
    Sweep,
    /// `ferry trace run` against the in-process null registry, recorded pace and asap.
    Run,
}

impl Part {
    const ALL: [Part; 3] = [Part::Simulate, Part::Sweep, Part::Run];
}

/// `ferry-bench trace`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed runs per arm, of which the median is reported [default: 3]
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Requests of the trace the policies replay [default: 5000000; --quick: 1000000]
    #[arg(long, value_name = "N")]
    sim_requests: Option<u64>,
    /// Distinct objects of that trace; the capacity is a tenth of them [default: 100000;
    /// --quick: 20000]
    #[arg(long, value_name = "N")]
    sim_objects: Option<u64>,
    /// Requests of the trace of the 10-capacity sweep [default: 400000]
    #[arg(long, value_name = "N")]
    sweep_requests: Option<u64>,
    /// Distinct objects of that trace; the capacities are 5 %, 10 %, …, 50 % of them
    /// [default: 40000]
    #[arg(long, value_name = "N")]
    sweep_objects: Option<u64>,
    /// Requests of the trace `ferry trace run` replays [default: 200000; --quick: 50000]
    #[arg(long, value_name = "N")]
    run_requests: Option<u64>,
    /// Distinct objects of that trace [default: 10000]
    #[arg(long, value_name = "N")]
    run_objects: Option<u64>,
    /// Offered requests/s at recorded pace (the trace's rate times --speed) [default: 25000]
    #[arg(long, value_name = "REQ/S")]
    run_rate: Option<f64>,
    /// Bytes of a blob at most: the null registry serves blobs capped at this size, as
    /// `ferry trace warmup --max-blob-size` pushes them [default: 4096]
    #[arg(long, value_name = "BYTES")]
    run_blob_size: Option<u64>,
    /// Leave out the `run` part's second registry, `ferry serve`
    #[arg(long)]
    no_ferry_serve: bool,
    /// Parts to run [default: simulate,sweep,run]
    #[arg(long, value_name = "P,P,…", value_delimiter = ',')]
    parts: Option<Vec<Part>>,
    /// Print the results as JSON on stdout instead of the TSV table
    #[arg(long)]
    json: bool,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub ferry: PathBuf,
    pub runs: usize,
    pub sim_requests: u64,
    pub sim_objects: u64,
    pub sweep_requests: u64,
    pub sweep_objects: u64,
    pub run_requests: u64,
    pub run_objects: u64,
    pub run_rate: f64,
    pub run_blob_size: u64,
    /// Also replay against `ferry serve` (warmed up with `ferry trace warmup`).
    pub run_ferry_serve: bool,
    pub parts: Vec<Part>,
    pub json: bool,
    pub out: PathBuf,
    pub quick: bool,
}

/// The generated trace's mean rate for the `run` part; `--speed` scales it to `--run-rate`.
const RUN_TRACE_RATE: f64 = 1000.0;

/// The issue's targets.
const SIM_TARGET_RPS: f64 = 50e6;
const SIM_TARGET_REQUESTS: u64 = 5_000_000;
const SWEEP_TARGET_RATIO: f64 = 20.0;
const RUN_TARGET_RPS: f64 = 20_000.0;
const RUN_TARGET_LAG_MS: f64 = 5.0;

impl Options {
    pub fn new(a: Args) -> anyhow::Result<Options> {
        let c = &a.common;
        let o = Options {
            ferry: c.ferry("trace")?,
            runs: c.sized(a.runs, 3, 3),
            sim_requests: c.sized(a.sim_requests, 5_000_000, 1_000_000),
            sim_objects: c.sized(a.sim_objects, 100_000, 20_000),
            sweep_requests: c.sized(a.sweep_requests, 400_000, 400_000),
            sweep_objects: c.sized(a.sweep_objects, 40_000, 40_000),
            run_requests: c.sized(a.run_requests, 200_000, 50_000),
            run_objects: c.sized(a.run_objects, 10_000, 10_000),
            run_rate: c.sized(a.run_rate, 25_000.0, 25_000.0),
            run_blob_size: c.sized(a.run_blob_size, 4096, 4096),
            run_ferry_serve: !a.no_ferry_serve,
            parts: a.parts.unwrap_or_else(|| Part::ALL.to_vec()),
            json: a.json,
            out: c.out(),
            quick: c.quick,
        };
        ensure!(o.runs > 0, "--runs must be at least 1");
        ensure!(
            [
                o.sim_requests,
                o.sim_objects,
                o.sweep_requests,
                o.sweep_objects,
                o.run_requests,
                o.run_objects
            ]
            .iter()
            .all(|n| *n > 0),
            "--sim-*, --sweep-* and --run-* counts must be at least 1"
        );
        ensure!(
            o.sweep_objects >= 20,
            "--sweep-objects must be at least 20 (the capacities are 5 %, 10 %, …, 50 % of them)"
        );
        ensure!(
            o.run_rate.is_finite() && o.run_rate > 0.0,
            "--run-rate must be above 0 requests/s"
        );
        // The null registry holds every blob in memory: bound it.
        ensure!(
            (1..=1 << 20).contains(&o.run_blob_size) && o.run_objects <= 1_000_000,
            "--run-blob-size must be 1 to 1048576 and --run-objects at most 1000000"
        );
        ensure!(!o.parts.is_empty(), "--parts is empty");
        Ok(o)
    }
}

/// Runs `cmd` to completion, timing it; its stdout is returned, a failure carries its stderr's
/// last line.
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            err.lines().last().unwrap_or("")
        );
    }
    Ok((secs, out.stdout))
}

/// Writes a trace of `requests` requests over `objects` blobs with `ferry trace gen`.
fn gen_trace(
    ferry: &Path,
    out: &Path,
    requests: u64,
    objects: u64,
    rate: f64,
) -> anyhow::Result<f64> {
    let (secs, _) = timed(Command::new(ferry).args([
        "trace",
        "gen",
        "--requests",
        &requests.to_string(),
        "--objects",
        &objects.to_string(),
        "--rate",
        &rate.to_string(),
        "--out",
        &out.display().to_string(),
    ]))?;
    Ok(secs)
}

/// The trace's cache requests, as `ferry trace simulate` builds them.
fn read_workload(path: &Path) -> anyhow::Result<Workload> {
    let mut w = Workload::default();
    for r in Trace::open(&[path.to_owned()], None)? {
        w.add(&r?);
    }
    Ok(w)
}

/// `ferry trace simulate --export-requests`: the `key,size` lines the Python peers read.
fn export_requests(ferry: &Path, trace: &Path, out: &Path) -> anyhow::Result<()> {
    timed(
        Command::new(ferry)
            .args(["trace", "simulate", "--export-requests"])
            .arg(out)
            .arg(trace),
    )?;
    Ok(())
}

/// A Python that imports libcachesim: the PYTHONPATH it needs (`None`: as is), as the CLI's
/// libCacheSim test finds it.
fn libcachesim_pythonpath() -> Option<Option<PathBuf>> {
    let default = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|cache| cache.join("ferry-ci-tools/libcachesim"));
    std::env::var_os("FERRY_LIBCACHESIM_PYTHONPATH")
        .map(PathBuf::from)
        .into_iter()
        .chain(default.filter(|d| d.is_dir()))
        .map(Some)
        .chain([None])
        .find(|path| {
            let mut python = Command::new("python3");
            python.args(["-c", "import libcachesim"]);
            if let Some(p) = path {
                python.env("PYTHONPATH", p);
            }
            python.output().is_ok_and(|o| o.status.success())
        })
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `libcachesim_replay.py REQUESTS --c-loop …` as a command.
fn libcachesim(
    pythonpath: &Option<PathBuf>,
    requests: &Path,
    policies: &str,
    objects: &str,
) -> Command {
    let mut c = Command::new("python3");
    c.arg(workspace().join("crates/cli/tests/it/libcachesim_replay.py"))
        .arg(requests)
        .args(["--policy", policies, "--objects", objects, "--c-loop"]);
    if let Some(p) = pythonpath {
        c.env("PYTHONPATH", p);
    }
    c
}

/// The figures of the Python scripts' JSON output: (policy, capacity) → (hits, seconds).
fn script_results(stdout: &[u8]) -> anyhow::Result<HashMap<(String, u64), (u64, f64)>> {
    let v: Value = serde_json::from_slice(stdout).context("the script's output is not JSON")?;
    let mut out = HashMap::new();
    for r in v
        .as_array()
        .context("the script's output is not a JSON array")?
    {
        let policy = r["policy"].as_str().context("a result without policy")?;
        let capacity = r["capacity"]
            .as_u64()
            .context("a result without capacity")?;
        let hits = r["hits"].as_u64().context("a result without hits")?;
        let seconds = r["seconds"].as_f64().context("a result without seconds")?;
        out.insert((policy.to_owned(), capacity), (hits, seconds));
    }
    Ok(out)
}

/// `"PASS"` when `measured` reaches `target` (at least it, or at most it when lower is better).
fn verdict(measured: f64, target: f64, higher_is_better: bool) -> &'static str {
    let ok = if higher_is_better {
        measured >= target
    } else {
        measured <= target
    };
    if ok { "PASS" } else { "MISS" }
}

/// `a ÷ b` when both are measured.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn med(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| median(v.to_vec()))
}

const POLICIES: [Policy; 4] = [Policy::Lru, Policy::Lfu, Policy::S3Fifo, Policy::Arc];

fn simulate_part(
    o: &Options,
    py: &Option<Option<PathBuf>>,
    w: &Path,
    targets: &mut Vec<Value>,
) -> anyhow::Result<Value> {
    let trace = w.join("simulate.jsonl");
    eprintln!(
        "simulate: ferry trace gen --requests {} --objects {}…",
        o.sim_requests, o.sim_objects
    );
    let gen_s = gen_trace(&o.ferry, &trace, o.sim_requests, o.sim_objects, 100.0)?;
    let started = Instant::now();
    let workload = read_workload(&trace)?;
    let read_s = started.elapsed().as_secs_f64();
    let requests = workload.requests() as u64;
    let capacity = (o.sim_objects / 10).max(1);
    let csv = w.join("simulate.csv");
    export_requests(&o.ferry, &trace, &csv)?;
    eprintln!(
        "  {requests} cache requests, {} objects, read in {read_s:.1} s; capacity {capacity} objects",
        workload.objects()
    );

    let names: Vec<&str> = POLICIES.iter().map(|p| p.as_str()).collect();
    let mut ferry_s: Vec<Vec<f64>> = vec![Vec::new(); POLICIES.len()];
    let mut ferry_hits = vec![0u64; POLICIES.len()];
    let mut command_s = Vec::new();
    let mut lcs_s: Vec<Vec<f64>> = vec![Vec::new(); POLICIES.len()];
    let mut lcs_hits: Vec<Option<u64>> = vec![None; POLICIES.len()];
    let mut lcs_command_s = Vec::new();
    for run in 0..o.runs {
        for (i, &p) in POLICIES.iter().enumerate() {
            let started = Instant::now();
            let r = simulate(&workload, &[p], &[Capacity::Objects(capacity)], 0.0)?;
            ferry_s[i].push(started.elapsed().as_secs_f64());
            ferry_hits[i] = r[0].hits;
        }
        let (secs, _) = timed(
            Command::new(&o.ferry)
                .args(["trace", "simulate", "--warmup", "0", "--policy"])
                .arg(names.join(","))
                .args(["--objects", &capacity.to_string()])
                .arg(&trace),
        )?;
        command_s.push(secs);
        if let Some(pp) = py {
            let (secs, out) = timed(&mut libcachesim(
                pp,
                &csv,
                &names.join(","),
                &capacity.to_string(),
            ))?;
            lcs_command_s.push(secs);
            let got = script_results(&out)?;
            for (i, name) in names.iter().enumerate() {
                let (hits, s) = got
                    .get(&(name.to_string(), capacity))
                    .context("libcachesim_replay.py left a policy out")?;
                lcs_s[i].push(*s);
                lcs_hits[i] = Some(*hits);
            }
        }
        eprintln!(
            "  run {}: ferry {} ms; whole command {:.2} s{}",
            run + 1,
            names
                .iter()
                .zip(&ferry_s)
                .map(|(n, v)| format!("{n} {:.0}", v[run] * 1e3))
                .collect::<Vec<_>>()
                .join(", "),
            command_s[run],
            lcs_command_s
                .get(run)
                .map(|s| format!("; libCacheSim {s:.2} s"))
                .unwrap_or_default()
        );
    }

    let rps = |s: Option<f64>| s.map(|s| requests as f64 / s);
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let f = rps(med(&ferry_s[i]));
        let l = rps(med(&lcs_s[i]));
        rows.push(json!({
            "policy": name,
            "capacity_objects": capacity,
            "requests": requests,
            "ferry_runs_s": ferry_s[i],
            "ferry_requests_per_s": f,
            "ferry_hits": ferry_hits[i],
            "libcachesim_runs_s": lcs_s[i],
            "libcachesim_requests_per_s": l,
            "libcachesim_hits": lcs_hits[i],
            "speed_vs_libcachesim": ratio(f, l),
        }));
        if let Some(f) = f {
            let mut v = verdict(f, SIM_TARGET_RPS, true).to_owned();
            if requests < SIM_TARGET_REQUESTS {
                v.push_str(" (trace < 5 M requests)");
            }
            targets.push(json!({
                "target": format!("simulate {name}: ≥ 50 M requests/s, one capacity, one core"),
                "measured": format!("{:.1} M requests/s over {:.2} M requests", f / 1e6, requests as f64 / 1e6),
                "verdict": v,
            }));
        }
    }
    Ok(json!({
        "trace": {"requests": o.sim_requests, "objects": o.sim_objects, "gen_s": gen_s},
        "cache_requests": requests,
        "objects": workload.objects(),
        "capacity_objects": capacity,
        "read_s": read_s,
        "policies": rows,
        "ferry_command": {
            "argv": format!("ferry trace simulate --warmup 0 --policy {} --objects {capacity} TRACE", names.join(",")),
            "runs_s": command_s,
            "median_s": med(&command_s),
        },
        "libcachesim_command": {
            "argv": format!("libcachesim_replay.py REQUESTS.csv --policy {} --objects {capacity} --c-loop", names.join(",")),
            "available": py.is_some(),
            "runs_s": lcs_command_s,
            "median_s": med(&lcs_command_s),
        },
    }))
}

/// The sweep's capacities: 5 %, 10 %, …, 50 % of the objects.
fn sweep_capacities(objects: u64) -> Vec<u64> {
    (1..=10).map(|k| (objects * k / 20).max(1)).collect()
}

fn sweep_part(
    o: &Options,
    py: &Option<Option<PathBuf>>,
    w: &Path,
    targets: &mut Vec<Value>,
) -> anyhow::Result<Value> {
    let trace = w.join("sweep.jsonl");
    eprintln!(
        "sweep: ferry trace gen --requests {} --objects {}…",
        o.sweep_requests, o.sweep_objects
    );
    gen_trace(&o.ferry, &trace, o.sweep_requests, o.sweep_objects, 100.0)?;
    let csv = w.join("sweep.csv");
    export_requests(&o.ferry, &trace, &csv)?;
    let workload = read_workload(&trace)?;
    let requests = workload.requests() as u64;
    let caps = sweep_capacities(o.sweep_objects);
    let list = caps
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let capacities: Vec<Capacity> = caps.iter().map(|&c| Capacity::Objects(c)).collect();

    let mut in_process_s = Vec::new();
    let mut ferry_s = Vec::new();
    let mut od_s = Vec::new();
    let mut od_replay_s = Vec::new();
    let mut od_keys_s = Vec::new();
    let mut od_keys_replay_s = Vec::new();
    let mut lcs_s = Vec::new();
    let mut lcs_replay_s = Vec::new();
    let mut ferry_hits = Vec::new();
    let mut od_agrees = true;
    let mut lcs_agrees = true;
    for run in 0..o.runs {
        let started = Instant::now();
        let r = simulate(&workload, &[Policy::Lru], &capacities, 0.0)?;
        in_process_s.push(started.elapsed().as_secs_f64());
        ferry_hits = r.iter().map(|x| x.hits).collect();
        let (secs, _) = timed(
            Command::new(&o.ferry)
                .args(["trace", "simulate", "--warmup", "0", "--policy", "lru"])
                .args(["--objects", &list])
                .arg(&trace),
        )?;
        ferry_s.push(secs);
        // The same input as ferry's (the trace), then the keys ferry exported from it.
        for (input, command_s, replay_s) in [
            (&trace, &mut od_s, &mut od_replay_s),
            (&csv, &mut od_keys_s, &mut od_keys_replay_s),
        ] {
            let (secs, out) = timed(
                Command::new("python3")
                    .arg(workspace().join("crates/bench/lru_ordereddict.py"))
                    .arg(input)
                    .args(["--objects", &list]),
            )?;
            command_s.push(secs);
            let got = script_results(&out)?;
            replay_s.push(got.values().map(|(_, s)| s).sum::<f64>());
            od_agrees &= caps
                .iter()
                .zip(&ferry_hits)
                .all(|(c, h)| got.get(&("lru".to_owned(), *c)).map(|x| x.0) == Some(*h));
        }
        if let Some(pp) = py {
            let (secs, out) = timed(&mut libcachesim(pp, &csv, "lru", &list))?;
            lcs_s.push(secs);
            let got = script_results(&out)?;
            lcs_replay_s.push(got.values().map(|(_, s)| s).sum::<f64>());
            // The C loop's hits come back through a rounded miss ratio.
            lcs_agrees &= caps.iter().zip(&ferry_hits).all(|(c, h)| {
                got.get(&("lru".to_owned(), *c))
                    .is_some_and(|x| x.0.abs_diff(*h) <= 1 + requests / 1_000_000)
            });
        }
        eprintln!(
            "  run {}: ferry {:.3} s (in-process {:.3} s), OrderedDict {:.2} s (on exported keys {:.2} s){}",
            run + 1,
            ferry_s[run],
            in_process_s[run],
            od_s[run],
            od_keys_s[run],
            lcs_s
                .get(run)
                .map(|s| format!(", libCacheSim {s:.2} s"))
                .unwrap_or_default()
        );
    }
    let f = med(&ferry_s);
    let od = med(&od_s);
    let speedup = ratio(od, f);
    if let Some(x) = speedup {
        targets.push(json!({
            "target": "LRU sweep over 10 capacities: ≥ 20× Python OrderedDict, whole commands",
            "measured": format!("{x:.1}× ({:.3} s vs {:.2} s over {:.0} K requests)", f.unwrap_or(0.0), od.unwrap_or(0.0), requests as f64 / 1e3),
            "verdict": verdict(x, SWEEP_TARGET_RATIO, true),
        }));
    }
    Ok(json!({
        "trace": {"requests": o.sweep_requests, "objects": o.sweep_objects},
        "cache_requests": requests,
        "capacities_objects": caps,
        "ferry_hits": ferry_hits,
        "ferry_command": {
            "argv": format!("ferry trace simulate --warmup 0 --policy lru --objects {list} TRACE"),
            "includes": "reading and parsing the JSON-lines trace",
            "runs_s": ferry_s,
            "median_s": f,
        },
        "ferry_in_process": {"runs_s": in_process_s, "median_s": med(&in_process_s)},
        "ordereddict_command": {
            "argv": format!("python3 crates/bench/lru_ordereddict.py TRACE --objects {list}"),
            "includes": "interpreter start and reading the JSON-lines trace ferry reads",
            "runs_s": od_s,
            "median_s": od,
            "replay_runs_s": od_replay_s,
            "replay_median_s": med(&od_replay_s),
            "hits_agree_with_ferry": od_agrees,
        },
        "ordereddict_keys_command": {
            "argv": format!("python3 crates/bench/lru_ordereddict.py REQUESTS.csv --objects {list}"),
            "includes": "interpreter start and parsing the key,size lines ferry exported from the trace (not timed)",
            "runs_s": od_keys_s,
            "median_s": med(&od_keys_s),
            "replay_runs_s": od_keys_replay_s,
            "replay_median_s": med(&od_keys_replay_s),
        },
        "speed_vs_ordereddict_keys": ratio(med(&od_keys_s), f),
        "libcachesim_command": {
            "argv": format!("libcachesim_replay.py REQUESTS.csv --policy lru --objects {list} --c-loop"),
            "includes": "interpreter start, the script reading the key,size lines, and libCacheSim parsing them again per capacity",
            "available": py.is_some(),
            "runs_s": lcs_s,
            "median_s": med(&lcs_s),
            "replay_runs_s": lcs_replay_s,
            "replay_median_s": med(&lcs_replay_s),
            "hits_agree_with_ferry": py.is_some().then_some(lcs_agrees),
        },
        "speed_vs_ordereddict": speedup,
        "speed_vs_libcachesim": ratio(med(&lcs_s), f),
    }))
}

/// A run trace made ready for the null registry.
struct RunSetup {
    /// The map `ferry trace warmup --max-blob-size CAP` writes for a trace of blob GETs, made
    /// here without a registry.
    entries: Vec<MapEntry>,
    /// Each blob's bytes by the path a GET asks for.
    blobs: HashMap<String, Bytes>,
    /// Seconds from the trace's first request to its last.
    span_s: f64,
}

fn map_and_blobs(trace: &Path, cap: u64) -> anyhow::Result<RunSetup> {
    let mut objects = Objects::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for r in Trace::open(&[trace.to_owned()], None)? {
        let r = r?;
        if let Some(t) = r.time_us {
            first = first.min(t);
            last = last.max(t);
        }
        objects.add(&r);
    }
    let mut entries = Vec::with_capacity(objects.len());
    let mut blobs = HashMap::with_capacity(objects.len());
    for ob in objects.iter() {
        ensure!(
            ob.kind == ObjectKind::Blob,
            "the run trace has a manifest GET ({}); `ferry trace gen` writes blob GETs only",
            ob.key
        );
        let recorded = ob.size.unwrap_or(DEFAULT_SIZE);
        let size = recorded.min(cap);
        let content = Content::new(&ob.key, size);
        let mut body = Vec::with_capacity(size as usize);
        for c in content.chunks() {
            body.extend_from_slice(&c);
        }
        let digest = content.digest();
        let e = MapEntry {
            uri: ob.key.clone(),
            kind: ObjectKind::Blob,
            repository: repository_name(&ob.repo).to_string(),
            reference: digest.to_string(),
            digest,
            size,
            recorded_size: (ob.size != Some(size)).then_some(recorded),
        };
        blobs.insert(e.path(), Bytes::from(body));
        entries.push(e);
    }
    Ok(RunSetup {
        entries,
        blobs,
        span_s: last.saturating_sub(first).max(0) as f64 / 1e6,
    })
}

/// A registry that answers every GET of a mapped blob with its bytes and anything else with 404,
/// on 127.0.0.1, on one worker thread of its own; it stops when dropped.
struct NullRegistry {
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl NullRegistry {
    fn start(blobs: HashMap<String, Bytes>) -> anyhow::Result<NullRegistry> {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper::{Method, Response, StatusCode};

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let blobs = Arc::new(blobs);
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let blobs = blobs.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let found = (req.method() == Method::GET)
                            .then(|| blobs.get(req.uri().path()).cloned())
                            .flatten();
                        let resp = match found {
                            Some(body) => Response::builder()
                                .header("content-type", "application/octet-stream")
                                .header("content-length", body.len())
                                .body(Full::new(body)),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new())),
                        };
                        std::future::ready(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(NullRegistry { url, _rt: rt })
    }
}

/// The figures of one `ferry trace run --json` results file.
#[derive(Debug, Clone, PartialEq)]
struct RunFigures {
    requests: u64,
    requests_per_s: f64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    lag_p99_ms: f64,
    /// Requests sent more than [`RUN_TARGET_LAG_MS`] after they were due.
    late: u64,
    /// Requests that went late for the in-flight cap.
    overflowed: u64,
}

/// Reads a results file of `ferry trace run`; latency and lag are the largest over its kinds.
fn run_figures(v: &Value) -> anyhow::Result<RunFigures> {
    let s = &v["summary"];
    let rp = &v["replay"];
    let kinds = rp["kinds"]
        .as_object()
        .context("the results have no replay kinds")?;
    let most = |f: &dyn Fn(&Value) -> f64| kinds.values().map(f).fold(0.0, f64::max);
    let late_us = (RUN_TARGET_LAG_MS * 1000.0) as u64;
    let late = kinds
        .values()
        .flat_map(|k| k["lag_us"].as_array().into_iter().flatten())
        .filter_map(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()?)))
        .filter(|(lag, _)| *lag > late_us)
        .map(|(_, n)| n)
        .sum();
    Ok(RunFigures {
        requests: s["requests"].as_u64().context("no summary.requests")?,
        requests_per_s: s["requests_per_sec"]
            .as_f64()
            .context("no summary.requests_per_sec")?,
        errors: s["errors"].as_u64().unwrap_or(0),
        p50_ms: most(&|k| k["latency_ms"]["p50"].as_f64().unwrap_or(0.0)),
        p99_ms: most(&|k| k["latency_ms"]["p99"].as_f64().unwrap_or(0.0)),
        lag_p99_ms: most(&|k| k["lag_ms"]["p99"].as_f64().unwrap_or(0.0)),
        late,
        overflowed: rp["overflowed"].as_u64().unwrap_or(0),
    })
}

fn run_part(o: &Options, w: &Path, targets: &mut Vec<Value>) -> anyhow::Result<Value> {
    let trace = w.join("run.jsonl");
    let speed = o.run_rate / RUN_TRACE_RATE;
    eprintln!(
        "run: ferry trace gen --requests {} --objects {} --rate {RUN_TRACE_RATE}, replayed at --speed {speed}…",
        o.run_requests, o.run_objects
    );
    gen_trace(
        &o.ferry,
        &trace,
        o.run_requests,
        o.run_objects,
        RUN_TRACE_RATE,
    )?;
    let RunSetup {
        mut entries,
        blobs,
        span_s,
    } = map_and_blobs(&trace, o.run_blob_size)?;
    // What recorded pace offers: the trace's requests over its span, sped up.
    let offered = if span_s > 0.0 {
        o.run_requests as f64 * speed / span_s
    } else {
        o.run_rate
    };
    let map = w.join("run.map");
    write_map(&map, &mut entries)?;
    let blob_bytes: usize = blobs.values().map(Bytes::len).sum();
    let registry = NullRegistry::start(blobs)?;
    eprintln!(
        "  null registry at {} with {} blobs ({:.1} MB); {offered:.0} requests/s offered at recorded pace",
        registry.url,
        entries.len(),
        blob_bytes as f64 / 1e6
    );
    let replay = |url: &str, map: &Path, pace: &str, name: &str| -> anyhow::Result<RunFigures> {
        let out = w.join(format!("{name}.json"));
        let mut c = Command::new(&o.ferry);
        c.args(["trace", "run", "--map"])
            .arg(map)
            .args(["--registry", url, "--pace", pace])
            .arg("--json")
            .arg(&out);
        if pace == "recorded" {
            c.args(["--speed", &speed.to_string()]);
        }
        c.arg(&trace);
        timed(&mut c)?;
        let v: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        let f = run_figures(&v)?;
        ensure!(
            f.errors == 0,
            "ferry trace run --pace {pace} against {url} had {} errors: {}",
            f.errors,
            v["summary"]["error_kinds"]
        );
        Ok(f)
    };
    // Recorded pace and asap, interleaved run by run.
    let series = |label: &str,
                  url: &str,
                  map: &Path|
     -> anyhow::Result<(Vec<RunFigures>, Vec<RunFigures>)> {
        let (mut recorded, mut asap) = (Vec::new(), Vec::new());
        for run in 0..o.runs {
            let r = replay(url, map, "recorded", &format!("{label}-recorded-{run}"))?;
            let a = replay(url, map, "asap", &format!("{label}-asap-{run}"))?;
            eprintln!(
                "  {label} run {}: recorded {:.0} req/s, p99 {:.2} ms, lag p99 {:.2} ms, {} late; asap {:.0} req/s",
                run + 1,
                r.requests_per_s,
                r.p99_ms,
                r.lag_p99_ms,
                r.late,
                a.requests_per_s
            );
            recorded.push(r);
            asap.push(a);
        }
        Ok((recorded, asap))
    };
    let (recorded, asap) = series("null", &registry.url, &map)?;
    drop(registry);
    // The same replay against `ferry serve`, warmed up by `ferry trace warmup` at the same cap.
    let ferry_serve = if o.run_ferry_serve {
        let server = Ferry::start(&o.ferry, &w.join("ferry-serve"), &[]);
        let ferry_map = w.join("run-ferry.map");
        let (warmup_s, _) = timed(
            Command::new(&o.ferry)
                .args(["trace", "warmup", "--registry", &server.url(), "--map"])
                .arg(&ferry_map)
                .args(["--max-blob-size", &o.run_blob_size.to_string()])
                .arg(&trace),
        )?;
        eprintln!(
            "  ferry serve at {}: warmed up in {warmup_s:.1} s",
            server.url()
        );
        let (r, a) = series("ferry-serve", &server.url(), &ferry_map)?;
        drop(server);
        Some((r, a, warmup_s))
    } else {
        None
    };
    let summary = |v: &[RunFigures]| {
        let m = |f: fn(&RunFigures) -> f64| med(&v.iter().map(f).collect::<Vec<_>>());
        json!({
            "requests": v.first().map(|f| f.requests),
            "median_requests_per_s": m(|f| f.requests_per_s),
            "median_p50_ms": m(|f| f.p50_ms),
            "median_p99_ms": m(|f| f.p99_ms),
            "median_lag_p99_ms": m(|f| f.lag_p99_ms),
            "median_late": m(|f| f.late as f64),
            "median_overflowed": m(|f| f.overflowed as f64),
            "runs": v.iter().map(|f| json!({
                "requests_per_s": f.requests_per_s, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
                "lag_p99_ms": f.lag_p99_ms, "late": f.late, "overflowed": f.overflowed,
            })).collect::<Vec<_>>(),
        })
    };
    let rec = summary(&recorded);
    let asp = summary(&asap);
    let rps = rec["median_requests_per_s"].as_f64().unwrap_or(0.0);
    let lag = rec["median_lag_p99_ms"].as_f64().unwrap_or(f64::MAX);
    targets.push(json!({
        "target": "run: ≥ 20,000 requests/s against the null registry (recorded pace)",
        "measured": format!("{rps:.0} requests/s of {offered:.0} offered (asap: {:.0})", asp["median_requests_per_s"].as_f64().unwrap_or(0.0)),
        "verdict": verdict(rps, RUN_TARGET_RPS, true),
    }));
    targets.push(json!({
        "target": "run: p99 schedule lag ≤ 5 ms at recorded pace",
        "measured": format!("{lag:.2} ms at {offered:.0} requests/s offered"),
        "verdict": verdict(lag, RUN_TARGET_LAG_MS, false),
    }));
    Ok(json!({
        "trace": {"requests": o.run_requests, "objects": o.run_objects, "rate": RUN_TRACE_RATE},
        "speed": speed,
        "target_offered_requests_per_s": o.run_rate,
        "offered_requests_per_s": offered,
        "trace_span_s": span_s,
        "blob_size_cap": o.run_blob_size,
        "blobs": entries.len(),
        "blob_bytes": blob_bytes,
        "registry": "null: hyper http1 in the bench process, one worker thread, blobs from memory",
        "recorded": rec,
        "asap": asp,
        "ferry_serve": ferry_serve.map(|(r, a, warmup_s)| json!({
            "registry": "ferry serve (release build, default options), warmed up by `ferry trace warmup --max-blob-size CAP`",
            "warmup_s": warmup_s,
            "recorded": summary(&r),
            "asap": summary(&a),
        })),
    }))
}

pub fn run(o: Options) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new()
        .prefix("ferry-bench-trace")
        .tempdir()?;
    let w = work.path();
    let started = Instant::now();
    let py = libcachesim_pythonpath();
    if py.is_none() {
        eprintln!(
            "note: python3 cannot import libcachesim (set FERRY_LIBCACHESIM_PYTHONPATH, or run .ci/run): its arms are left out"
        );
    }
    let mut targets = Vec::new();
    let mut result = json!({
        "bench": "trace",
        "date": now_utc(),
        "machine": machine(),
        "quick": o.quick,
        "runs": o.runs,
        "ferry": o.ferry.display().to_string(),
    });
    for part in &o.parts {
        let (key, v) = match part {
            Part::Simulate => ("simulate", simulate_part(&o, &py, w, &mut targets)?),
            Part::Sweep => ("sweep", sweep_part(&o, &py, w, &mut targets)?),
            Part::Run => ("run", run_part(&o, w, &mut targets)?),
        };
        result[key] = v;
    }
    result["targets"] = Value::from(targets);
    result["seconds"] = json!(started.elapsed().as_secs_f64());
    let table = render(&result);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{table}");
    }
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    let name = if o.quick { "trace-quick" } else { "trace" };
    let file = o.out.join(format!("{name}-{stamp}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&result)?)?;
    std::fs::write(
        o.out.join("trace-latest.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(o.out.join("trace-latest.tsv"), &table)?;
    eprintln!(
        "wrote {} ({:.0} s in all)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(result)
}

fn num(v: &Value, scale: f64, digits: usize) -> String {
    v.as_f64()
        .map_or("-".to_owned(), |x| format!("{:.*}", digits, x * scale))
}

/// The TSV tables of a result.
fn render(r: &Value) -> String {
    let mut s = String::new();
    let sim = &r["simulate"];
    if !sim.is_null() {
        let _ = writeln!(
            s,
            "# simulate: {} cache requests, capacity {} objects; replay only (ferry in-process, libCacheSim's C loop incl. its CSV parsing)",
            sim["cache_requests"], sim["capacity_objects"]
        );
        s.push_str("policy\tferry M req/s\tlibCacheSim M req/s\tferry ÷ libCacheSim\thits ferry\thits libCacheSim\n");
        for p in sim["policies"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "{}\t{}\t{}\t{}\t{}\t{}",
                p["policy"].as_str().unwrap_or(""),
                num(&p["ferry_requests_per_s"], 1e-6, 1),
                num(&p["libcachesim_requests_per_s"], 1e-6, 2),
                num(&p["speed_vs_libcachesim"], 1.0, 1),
                p["ferry_hits"],
                p["libcachesim_hits"],
            );
        }
        let _ = writeln!(
            s,
            "whole commands, all four policies: ferry trace simulate {} s (reading the trace {} s in-process); libcachesim_replay.py --c-loop {} s",
            num(&sim["ferry_command"]["median_s"], 1.0, 2),
            num(&sim["read_s"], 1.0, 2),
            num(&sim["libcachesim_command"]["median_s"], 1.0, 2),
        );
    }
    let sw = &r["sweep"];
    if !sw.is_null() {
        let _ = writeln!(
            s,
            "\n# LRU sweep over 10 capacities, {} cache requests: whole commands on the JSON-lines trace (the libCacheSim and exported-keys rows read key,size lines)",
            sw["cache_requests"]
        );
        s.push_str("tool\tmedian s\treplay s\tferry speed-up\n");
        let _ = writeln!(
            s,
            "ferry trace simulate\t{}\t{}\t-",
            num(&sw["ferry_command"]["median_s"], 1.0, 3),
            num(&sw["ferry_in_process"]["median_s"], 1.0, 3),
        );
        let _ = writeln!(
            s,
            "OrderedDict LRU\t{}\t{}\t{}",
            num(&sw["ordereddict_command"]["median_s"], 1.0, 2),
            num(&sw["ordereddict_command"]["replay_median_s"], 1.0, 2),
            num(&sw["speed_vs_ordereddict"], 1.0, 1),
        );
        let _ = writeln!(
            s,
            "OrderedDict LRU, exported keys\t{}\t{}\t{}",
            num(&sw["ordereddict_keys_command"]["median_s"], 1.0, 2),
            num(&sw["ordereddict_keys_command"]["replay_median_s"], 1.0, 2),
            num(&sw["speed_vs_ordereddict_keys"], 1.0, 1),
        );
        let _ = writeln!(
            s,
            "libCacheSim --c-loop\t{}\t{}\t{}",
            num(&sw["libcachesim_command"]["median_s"], 1.0, 2),
            num(&sw["libcachesim_command"]["replay_median_s"], 1.0, 2),
            num(&sw["speed_vs_libcachesim"], 1.0, 1),
        );
    }
    let rn = &r["run"];
    if !rn.is_null() {
        let _ = writeln!(
            s,
            "\n# ferry trace run: {} requests, blobs ≤ {} bytes, {} req/s offered at recorded pace (×{})",
            rn["trace"]["requests"],
            rn["blob_size_cap"],
            num(&rn["offered_requests_per_s"], 1.0, 0),
            rn["speed"]
        );
        s.push_str(
            "registry\tpace\treq/s\tp50 ms\tp99 ms\tlag p99 ms\tlate > 5 ms\tlate for in-flight cap\n",
        );
        let registries = [("null", rn), ("ferry serve", &rn["ferry_serve"])];
        for (pace, (registry, figures)) in registries
            .iter()
            .filter(|(_, f)| !f.is_null())
            .flat_map(|r| ["recorded", "asap"].map(|p| (p, r)))
        {
            let p = &figures[pace];
            let _ = writeln!(
                s,
                "{registry}\t{pace}\t{}\t{}\t{}\t{}\t{}\t{}",
                num(&p["median_requests_per_s"], 1.0, 0),
                num(&p["median_p50_ms"], 1.0, 2),
                num(&p["median_p99_ms"], 1.0, 2),
                num(&p["median_lag_p99_ms"], 1.0, 2),
                num(&p["median_late"], 1.0, 0),
                num(&p["median_overflowed"], 1.0, 0),
            );
        }
    }
    s.push_str("\n# targets of issue #13 (printed, not asserted; medians of the runs)\ntarget\tmeasured\tverdict\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{}\t{}\t{}",
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
            t["verdict"].as_str().unwrap_or("")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_pass_at_the_target_and_miss_short_of_it() {
        assert_eq!(verdict(50e6, SIM_TARGET_RPS, true), "PASS");
        assert_eq!(verdict(49.9e6, SIM_TARGET_RPS, true), "MISS");
        assert_eq!(verdict(5.0, RUN_TARGET_LAG_MS, false), "PASS");
        assert_eq!(verdict(5.1, RUN_TARGET_LAG_MS, false), "MISS");
        assert_eq!(ratio(Some(10.0), Some(0.5)), Some(20.0));
        assert_eq!(ratio(Some(10.0), None), None);
        assert_eq!(ratio(Some(10.0), Some(0.0)), None);
    }

    #[test]
    fn sweep_capacities_are_ten_steps_of_five_percent() {
        assert_eq!(
            sweep_capacities(40_000),
            [
                2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000, 18000, 20000
            ]
        );
    }

    #[test]
    fn script_results_key_hits_and_seconds_by_policy_and_capacity() {
        let out = br#"[{"policy":"lru","unit":"objects","capacity":10,"requests":5,"hits":3,"seconds":0.5},
                       {"policy":"arc","unit":"objects","capacity":10,"requests":5,"hits":4,"seconds":0.25}]"#;
        let got = script_results(out).unwrap();
        assert_eq!(got[&("lru".to_owned(), 10)], (3, 0.5));
        assert_eq!(got[&("arc".to_owned(), 10)], (4, 0.25));
        assert!(script_results(b"[{\"policy\":\"lru\"}]").is_err());
    }

    /// Late requests are counted from the lag histogram's buckets above 5 ms, over every kind;
    /// latency and lag percentiles are the worst kind's.
    #[test]
    fn run_figures_count_late_requests_from_the_lag_histogram() {
        let v = json!({
            "summary": {"requests": 10, "requests_per_sec": 20000.5, "errors": 0},
            "replay": {
                "overflowed": 2,
                "kinds": {
                    "blob": {
                        "latency_ms": {"p50": 0.2, "p99": 1.5},
                        "lag_ms": {"p99": 3.0},
                        "lag_us": [[100, 5], [5000, 1], [5001, 2], [9000, 1]]
                    },
                    "manifest": {
                        "latency_ms": {"p50": 0.3, "p99": 1.0},
                        "lag_ms": {"p99": 6.0},
                        "lag_us": [[7000, 1]]
                    }
                }
            }
        });
        let f = run_figures(&v).unwrap();
        assert_eq!(
            f,
            RunFigures {
                requests: 10,
                requests_per_s: 20000.5,
                errors: 0,
                p50_ms: 0.3,
                p99_ms: 1.5,
                lag_p99_ms: 6.0,
                late: 4,
                overflowed: 2,
            }
        );
    }

    /// The null registry serves a mapped blob's exact bytes, whose digest is the map's, and 404
    /// for anything else.
    #[test]
    fn the_null_registry_serves_the_mapped_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.jsonl");
        let mut f = std::fs::File::create(&trace).unwrap();
        ferry_trace::generate::generate(
            &ferry_trace::generate::GenOptions {
                requests: 50,
                objects: 5,
                ..Default::default()
            },
            &mut f,
        )
        .unwrap();
        drop(f);
        let RunSetup {
            entries,
            blobs,
            span_s,
        } = map_and_blobs(&trace, 300).unwrap();
        // 50 requests at the generator's default 100 requests/s.
        assert!(span_s > 0.0 && span_s < 5.0, "{span_s}");
        assert!(!entries.is_empty() && entries.len() <= 5);
        let reg = NullRegistry::start(blobs).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            for e in &entries {
                assert!(e.size <= 300);
                let body = c
                    .get(format!("{}{}", reg.url, e.path()))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(body.len() as u64, e.size);
                assert_eq!(ferry_oci::Digest::sha256(&body), e.digest);
            }
            let missing = c
                .get(format!("{}/v2/x/blobs/sha256:00", reg.url))
                .send()
                .await
                .unwrap();
            assert_eq!(missing.status(), 404);
        });
    }
}
