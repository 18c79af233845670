//! `ferry-bench`: side-by-side benchmarks. Run through `cargo xtask bench <name>`.
//!
//! `serve`: cached pulls of many small images (manifest by tag + config + 5 layers, the mix
//! containerd produces) from ferry, CNCF Distribution (`docker-registry`) and nginx serving the same
//! files statically (the serving limit), driven by `wrk` with a fixed connection count; then one
//! large blob from ferry and from nginx; then ferry's memory with the store full. Prints a table of
//! medians and ratios and writes JSON.
//!
//! Everything runs on 127.0.0.1 and stops by itself; nothing is timed inside a test.

mod common;
mod load;
mod mirror;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> &'static str {
    "usage: ferry-bench serve --ferry PATH [--quick] [--images N] [--stored N] [--pullers N]\n                     [--seconds S] [--repeats R] [--big-mib M] [--out DIR]\n       ferry-bench mirror --ferry PATH [--quick] [--images N] [--pullers 1,4,10]\n                     [--seconds S] [--repeats R] [--out DIR]\n       ferry-bench load --ferry PATH [--quick] [--images N] [--batches B]\n                     [--iteration-seconds S] [--tally-seconds T] [--out DIR]\n\nexamples: cargo xtask bench serve --quick\n          cargo xtask bench mirror --quick\n          cargo xtask bench load --quick"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::Options::parse(&args[1..]).and_then(serve::run),
        Some("mirror") => mirror::Options::parse(&args[1..]).and_then(mirror::run),
        Some("load") => load::Options::parse(&args[1..]).and_then(load::run),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where results go by default: `target/bench/` of the workspace.
fn default_out() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench")
}
