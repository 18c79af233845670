//! `ferry trace …`: the trace lab's commands (the work is in `ferry_trace`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ferry_trace::{Format, Trace, TraceError};

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Characterize a trace: request mix, object sizes, popularity skew, reuse, arrivals, clients.
    #[command(
        after_help = "Examples:\n  ferry trace analyze testdata/traces/dal09_blobs_sample.csv\n  ferry trace analyze --json traces/dal09/ traces/fra02/ > characterization.json\n  ferry trace analyze 'traces/dal09/prod-dal09-logstash-2017.06.2*.json.gz'\n\nReads the IBM traces' JSON files (one array of records per file, or one record per line as\n`ferry serve` records them), their CSV export, or a list of URIs; plain, .gz or .zst; directories\n(walked) and * ? wildcards in a file name, merged in timestamp order. A record that cannot be\nread is reported with its file and position and skipped (--strict stops at it)."
    )]
    Analyze(AnalyzeArgs),
    /// Replay a trace's cache requests (GETs of blobs and manifests) through cache policies over a
    /// sweep of capacities; print hit ratios.
    #[command(
        after_help = "Examples:\n  ferry trace simulate --objects 10,50,100,200,400 testdata/traces/dal09_blobs_sample.csv\n  ferry trace simulate --bytes 100MB,1GB,25%,50% --warmup 0.2 testdata/traces/dal09_blobs_sample.csv\n  ferry trace simulate --policy lru,lfu,s3-fifo --objects 1000,10000 --json results.json traces/dal09/\n  ferry trace simulate --plugin 'python3 my_policy.py' traces/dal09/\n  ferry trace simulate --export-requests requests.csv traces/dal09/\n\nCapacities count objects (--objects) or bytes (--bytes: sizes like 512MB or 2GiB, or a percentage\nof the working set, the bytes of all distinct objects). Each object's size is the largest response\nthe trace recorded for it. Hits are counted after the first --warmup fraction of the requests.\nLRU over object capacities takes one pass over stack distances for the whole sweep; it is the\nsame LRU code the mirror's cache budget is meant to evict with.\n\nA --plugin program reads the cache requests in trace order as JSON lines on its standard input\n(time, client, method, kind, repository, reference, key, size, status) and prints its own result;\nferry fails if it does. --export-requests writes the replayed requests as `key,size` lines."
    )]
    Simulate(SimulateArgs),
    /// Generate a synthetic trace shaped like the IBM sample: Zipf popularity, the sample's sizes.
    #[command(
        after_help = "Examples:\n  ferry trace gen --requests 1000000 --objects 50000 --out /tmp/synthetic.jsonl\n  ferry trace gen --requests 5000 --zipf 1.1 --seed 7 | ferry trace analyze /dev/stdin --format json\n\nWrites JSON lines in the original traces' key names (blob GETs with sizes, clients and\ntimestamps), which every `ferry trace` command reads. The same options always give the same\nbytes; --seed changes them."
    )]
    Gen(GenArgs),
    /// Push every blob and manifest a trace GETs to a registry (seeded content of the recorded
    /// sizes) and write the warmup map `ferry trace run` replays through.
    #[command(
        after_help = "Examples:\n  ferry trace warmup /tmp/synthetic.jsonl --registry http://127.0.0.1:5000 --map /tmp/synthetic.map.jsonl\n  ferry trace warmup traces/dal09/ --registry http://127.0.0.1:5000 --max-blob-size 16MB -j 16\n\nBlobs get content seeded by their trace URI (two blobs of one size differ; a rerun pushes the\nsame bytes); manifests become OCI image manifests of a config and two layers, pushed under a tag.\nWhat the registry already has is not pushed again, so a broken warmup resumes."
    )]
    Warmup(crate::trace_run::WarmupArgs),
    /// Replay a trace's GETs of blobs and manifests against registries through a warmup map;
    /// report latency and schedule lag by kind.
    #[command(
        after_help = "Examples:\n  ferry trace run /tmp/synthetic.jsonl --map /tmp/synthetic.map.jsonl --registry http://127.0.0.1:5000 --speed 10\n  ferry trace run traces/dal09/ --map dal09.map.jsonl --registry http://registry-a:5000,http://registry-b:5000 --pace asap --concurrency 64 --json results.json\n\nEvery body is checked for its size and digest. --pace recorded (the default) sends each request\nat its trace time over --speed, whether or not earlier ones have been answered, with at most\n--max-in-flight in flight; --pace asap keeps --concurrency in flight. Several registries share the\nobjects by consistent hashing. Requests whose object is not in the map are counted, not sent."
    )]
    Run(Box<crate::trace_run::RunArgs>),
    /// Merge the results of a replay's shards (`ferry trace run --shard i/N --json`) exactly.
    #[command(
        after_help = "Example:\n  ferry trace merge shard-0.json shard-1.json --json all.json"
    )]
    Merge(crate::trace_run::MergeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Requests to generate.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Distinct blobs.
    #[arg(long, default_value_t = 10_000)]
    pub objects: u64,
    /// Zipf exponent of popularity (0 = uniform).
    #[arg(long, default_value_t = 0.9)]
    pub zipf: f64,
    /// Blobs per repository.
    #[arg(long, default_value_t = 10)]
    pub blobs_per_repository: u64,
    /// Distinct clients.
    #[arg(long, default_value_t = 100)]
    pub clients: u64,
    /// Mean requests per second of the timestamps.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Share of the requests that are manifest GETs (a pull's first request, of the drawn blob's
    /// repository); 0 gives blob GETs only, as the IBM sample has.
    #[arg(long, default_value_t = 0.0)]
    pub manifests: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// Policies, comma-separated: lru, lfu, s3-fifo, arc (objects only), two-tier (the capacity is
    /// its memory tier).
    #[arg(long, default_value = "lru", value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Capacities in objects, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    pub objects: Vec<u64>,
    /// Capacities in bytes (512MB, 2GiB) or percentages of the working set (25%), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SIZE|PCT%")]
    pub bytes: Vec<String>,
    /// two-tier: the SSD tier's size in multiples of the memory tier.
    #[arg(long, default_value_t = ferry_trace::simulate::DEFAULT_SSD_RATIO)]
    pub ssd_ratio: u64,
    /// two-tier: objects larger than this skip the memory tier, e.g. 1MB.
    #[arg(long, default_value = "1MB", value_parser = ferry_server::units::parse_size)]
    pub bypass_above: u64,
    /// Fraction of the requests that only warms the cache up (not counted).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw hit ratio against capacity, one line per policy, into FILE (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Prefetch on manifest GETs: admit the layers its repository had requested (or pushed, where
    /// the URI names the digest) within this window before it, e.g. 10m. Needs timestamps.
    #[arg(long, value_name = "AGE", value_parser = prefetch_window)]
    pub prefetch_window: Option<std::time::Duration>,
    /// Run CMD (through `sh -c`) and hand it the cache requests, in trace order, as JSON lines on
    /// its standard input; its output is printed as it comes.
    #[arg(long, value_name = "CMD")]
    pub plugin: Option<String>,
    /// Write the cache requests as the simulator replays them to FILE: a `key,size` header, then
    /// one line a request (the object's number, its size), for other simulators.
    #[arg(long, value_name = "FILE")]
    pub export_requests: Option<PathBuf>,
}

fn prefetch_window(s: &str) -> Result<std::time::Duration, String> {
    ferry_server::units::parse_age(s)
        .map(std::time::Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// The input formats, when a file's name and first bytes do not say.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// JSON arrays of records, or one record per line.
    Json,
    /// The CSV export (a header naming the JSON keys).
    Csv,
    /// One URI per line.
    Uris,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Json => Format::Json,
            FormatArg::Csv => Format::Csv,
            FormatArg::Uris => Format::Uris,
        }
    }
}

/// Which trace to read, and how strictly.
#[derive(Debug, Clone, Args)]
pub struct TraceInput {
    /// Trace files, directories of them, or file-name wildcards.
    #[arg(required = true, value_name = "TRACE")]
    pub paths: Vec<PathBuf>,
    /// Read every file as this format [default: by its name, else its first bytes].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Stop at the first record that cannot be read, instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// Print the characterization as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw the size CDF, popularity (rank against GETs, log-log) and requests over time as
    /// SVG files into DIR.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

/// Records reported one by one before the rest are only counted.
const REPORTED_PROBLEMS: u64 = 10;

/// Reads the trace `input` names, handing each request to `each`; reports what could not be read
/// on stderr. Fails on a file that cannot be read (or, with --strict, on any record).
pub fn read_trace(
    input: &TraceInput,
    mut each: impl FnMut(&ferry_trace::Request),
) -> anyhow::Result<()> {
    let trace = Trace::open(&input.paths, input.format.map(Format::from))?;
    let mut skipped = 0u64;
    let mut broken_files = Vec::new();
    for item in trace {
        match item {
            Ok(r) => each(&r),
            Err(e) if input.strict => {
                return Err(e)
                    .context("--strict: stopping at the first record that cannot be read");
            }
            Err(e @ TraceError::Record { .. }) => {
                skipped += 1;
                if skipped <= REPORTED_PROBLEMS {
                    eprintln!("warning: skipped {e}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                broken_files.push(e.to_string());
            }
        }
    }
    if skipped > 0 {
        eprintln!(
            "warning: {skipped} record{} could not be read and {} skipped{}",
            if skipped == 1 { "" } else { "s" },
            if skipped == 1 { "was" } else { "were" },
            if skipped > REPORTED_PROBLEMS {
                format!(" (the first {REPORTED_PROBLEMS} are shown above)")
            } else {
                String::new()
            }
        );
    }
    anyhow::ensure!(
        broken_files.is_empty(),
        "{} of the trace could not be read to its end (see above); the figures cover what was read",
        if broken_files.len() == 1 {
            "one file".to_owned()
        } else {
            format!("{} files", broken_files.len())
        }
    );
    Ok(())
}

/// `ferry trace analyze`.
pub fn analyze(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    use ferry_trace::analyze::{Analyzer, Characterization};
    let mut analyzer = Analyzer::default();
    let read = read_trace(&args.input, |r| analyzer.add(r));
    let c = analyzer.finish();
    // Several availability zones (the IBM traces' zone directories and file names): each is
    // characterized on its own too, from a second read of its files.
    let mut zones: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for f in ferry_trace::trace_files(&args.input.paths).unwrap_or_default() {
        if let Some(zone) = ferry_trace::zone_of(&f) {
            zones.entry(zone).or_default().push(f);
        }
    }
    let mut by_zone: std::collections::BTreeMap<String, Characterization> = Default::default();
    if zones.len() > 1 {
        for (zone, files) in zones {
            let mut a = Analyzer::default();
            let input = TraceInput {
                paths: files,
                ..args.input.clone()
            };
            // Problems were reported by the whole read above.
            let _ = ferry_trace::Trace::open(&input.paths, input.format.map(Format::from))
                .map(|t| t.flatten().for_each(|r| a.add(&r)));
            by_zone.insert(zone, a.finish());
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&c)?;
        if !by_zone.is_empty() {
            v["zones"] = serde_json::to_value(&by_zone)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", c.render());
        if !by_zone.is_empty() {
            println!("\nPer zone:");
            println!(
                "{:<10} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
                "zone",
                "requests",
                "cache GETs",
                "blobs<1MB",
                "blobs<10MB",
                "top 10%",
                "reads/write"
            );
            for (zone, z) in &by_zone {
                println!(
                    "{:<10} {:>12} {:>12} {:>9.1}% {:>9.1}% {:>9.1}% {:>10}",
                    zone,
                    z.requests,
                    z.cacheable_gets,
                    z.blob_sizes.under_1mb * 100.0,
                    z.blob_sizes.under_10mb * 100.0,
                    z.popularity.top_10pct_share * 100.0,
                    z.read_write_ratio
                        .map_or("-".to_owned(), |r| format!("{r:.1}"))
                );
            }
        }
    }
    if let Some(dir) = &args.plots {
        for f in crate::trace_plots::analysis(&analyzer.distributions(), dir)? {
            eprintln!("wrote {}", f.display());
        }
    }
    read?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry trace simulate`.
pub fn simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    use ferry_policy::cache::Capacity;
    use ferry_trace::simulate::{Policy, SimOptions, Workload, simulate_with};
    let simulating = !args.objects.is_empty() || !args.bytes.is_empty();
    anyhow::ensure!(
        simulating || args.plugin.is_some() || args.export_requests.is_some(),
        "give the capacities to simulate: --objects 100,1000 and/or --bytes 1GB,25% (or a --plugin to run, or --export-requests FILE)"
    );
    let policies = args
        .policy
        .iter()
        .map(|p| {
            Policy::parse(p).map(|p| match p {
                Policy::TwoTier { .. } => Policy::TwoTier {
                    ssd_ratio: args.ssd_ratio.max(1),
                    bypass_above: args.bypass_above,
                },
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut workload = Workload::default();
    // The workload keeps one key a request; a plugin alone needs none of it.
    let keep = simulating || args.export_requests.is_some();
    let mut plugin = args.plugin.as_deref().map(Plugin::start).transpose()?;
    let read = read_trace(&args.input, |r| {
        if keep {
            workload.add(r);
        }
        if let Some(p) = &mut plugin {
            p.feed(r);
        }
    });
    if let Some(p) = plugin {
        match (p.finish(), &read) {
            // The trace's own error, returned below, likely says why the plugin failed too.
            (Err(e), Err(_)) => eprintln!("error: {e:#}"),
            (finished, _) => finished?,
        }
    }
    if let Some(path) = &args.export_requests {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        workload
            .write_requests(&mut std::io::BufWriter::new(file))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "wrote {} cache requests ({} objects) to {}",
            workload.requests(),
            workload.objects(),
            path.display()
        );
    }
    if !simulating {
        read?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut capacities: Vec<Capacity> =
        args.objects.iter().map(|&n| Capacity::Objects(n)).collect();
    for b in &args.bytes {
        let bytes = match b.trim().strip_suffix('%') {
            Some(pct) => {
                let pct: f64 = pct
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p: &f64| p.is_finite() && *p > 0.0)
                    .with_context(|| format!("--bytes {b:?}: expected a percentage like 25%"))?;
                let set = workload.working_set_bytes().context(
                    "--bytes as a percentage needs every object's size, and the trace lacks some: use --objects",
                )?;
                (set as f64 * pct / 100.0).round() as u64
            }
            None => ferry_server::units::parse_size(b)
                .map_err(|e| anyhow::anyhow!("--bytes {b:?}: {e}"))?,
        };
        capacities.push(Capacity::Bytes(bytes));
    }
    let results = simulate_with(
        &workload,
        &policies,
        &capacities,
        SimOptions {
            warmup: args.warmup,
            prefetch: args.prefetch_window,
        },
    )?;
    println!(
        "{} cache requests, {} objects{}",
        workload.requests(),
        workload.objects(),
        workload
            .working_set_bytes()
            .map_or(String::new(), |b| format!(", working set {b} bytes"))
    );
    println!(
        "{:<8} {:<8} {:>16} {:>10} {:>10} {:>10} {:>10}",
        "policy", "unit", "capacity", "requests", "hits", "hit ratio", "byte hits"
    );
    for r in &results {
        println!(
            "{:<8} {:<8} {:>16} {:>10} {:>10} {:>10.4} {:>10.4}{}",
            r.policy,
            r.unit,
            r.capacity,
            r.requests,
            r.hits,
            r.hit_ratio,
            r.byte_hit_ratio,
            if args.prefetch_window.is_some() {
                format!("  {} prefetched", r.prefetched)
            } else {
                String::new()
            }
        );
    }
    if let Some(path) = &args.plot {
        crate::trace_plots::hit_ratios(&results, path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    read?;
    Ok(ExitCode::SUCCESS)
}

/// A `--plugin` program being fed the cache requests.
struct Plugin<'a> {
    command: &'a str,
    child: std::process::Child,
    /// `None` once the plugin stopped reading (it has what it wanted: not an error).
    stdin: Option<std::io::BufWriter<std::process::ChildStdin>>,
    keys: ferry_trace::simulate::ObjectKeys,
    error: Option<std::io::Error>,
}

impl<'a> Plugin<'a> {
    fn start(command: &'a str) -> anyhow::Result<Plugin<'a>> {
        use std::io::Write;
        // What ferry printed so far comes before the plugin's own output.
        std::io::stdout().flush()?;
        let mut child = std::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run the plugin `{command}` (sh -c)"))?;
        let stdin = child.stdin.take().map(std::io::BufWriter::new);
        Ok(Plugin {
            command,
            child,
            stdin,
            keys: Default::default(),
            error: None,
        })
    }

    /// Hands `r` to the plugin if it is a cache request.
    fn feed(&mut self, r: &ferry_trace::Request) {
        use std::io::Write;
        let Some(stdin) = &mut self.stdin else {
            return;
        };
        let Some((key, _)) = self.keys.key(r) else {
            return;
        };
        let line = ferry_trace::simulate::PluginRequest::new(r, key);
        let written = serde_json::to_writer(&mut *stdin, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| stdin.write_all(b"\n"));
        if let Err(e) = written {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                self.error = Some(e);
            }
            self.stdin = None;
        }
    }

    /// Closes the plugin's input and waits for it; fails if it did.
    fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take()
            && let Err(e) = stdin.flush()
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            self.error.get_or_insert(e);
        }
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for the plugin `{}`", self.command))?;
        anyhow::ensure!(
            status.success(),
            "the plugin `{}` failed ({status}); its own messages are above",
            self.command
        );
        if let Some(e) = self.error {
            return Err(e).with_context(|| {
                format!("cannot hand the requests to the plugin `{}`", self.command)
            });
        }
        Ok(())
    }
}

/// `ferry trace gen`.
pub fn generate(args: &GenArgs) -> anyhow::Result<ExitCode> {
    let o = ferry_trace::generate::GenOptions {
        requests: args.requests,
        objects: args.objects,
        zipf: args.zipf,
        blobs_per_repository: args.blobs_per_repository,
        clients: args.clients,
        rate: args.rate,
        seed: args.seed,
        manifests: args.manifests,
    };
    let written = match &args.out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let written = ferry_trace::generate::generate(&o, &mut std::io::BufWriter::new(file));
            if written.is_ok() {
                println!("wrote {} requests to {}", args.requests, path.display());
            }
            written
        }
        None => {
            let stdout = std::io::stdout();
            ferry_trace::generate::generate(&o, &mut std::io::BufWriter::new(stdout.lock()))
        }
    };
    match written {
        // The reader had enough (`| head`): not an error.
        Err(ferry_trace::generate::GenError::Write(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => {
            other?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
