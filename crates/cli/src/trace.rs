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
    let mut analyzer = ferry_trace::analyze::Analyzer::default();
    let read = read_trace(&args.input, |r| analyzer.add(r));
    let c = analyzer.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", c.render());
    }
    read?;
    Ok(ExitCode::SUCCESS)
}
