//! `ferry-bench`: side-by-side benchmarks. Run through `cargo xtask bench <name>`.
//!
//! `serve`: cached pulls of many small images (manifest by tag + config + 5 layers, the mix
//! containerd produces) from ferry, CNCF Distribution (`docker-registry`) and nginx serving the same
//! files statically (the serving limit), driven by `wrk` with a fixed connection count; then one
//! large blob from ferry and from nginx; then ferry's memory with the store full. Prints a table of
//! medians and ratios and writes JSON.
//!
//! `mirror`: ferry as a pull-through cache against the Distribution proxy. `load`: ociregistry's
//! load test with `ferry load`. `copy`: `ferry copy` and `ferry info` against skopeo on issue #12's
//! workflows, on loopback and through a delaying proxy (`delay.rs`). `trace`: issue #13's trace-lab
//! targets: the simulator against libCacheSim and a Python OrderedDict LRU, and `ferry trace run`
//! against a null registry in the bench process. `rollout`: issue #14's: N ferry nodes roll an
//! image out from a bandwidth-limited upstream, alone and as peers.
//!
//! Everything runs on 127.0.0.1 and stops by itself; nothing is timed inside a test.

mod common;
mod copy;
mod delay;
mod load;
mod mirror;
mod rollout;
mod scale;
mod serve;
mod trace;

use std::process::ExitCode;

use clap::Parser;

/// ferry's side-by-side benchmarks (run through `cargo xtask bench <name>`, which builds ferry in
/// release mode and passes --ferry).
#[derive(Debug, Parser)]
#[command(
    name = "ferry-bench",
    after_help = "Examples:\n  cargo xtask bench serve --quick\n  cargo xtask bench mirror --quick\n  cargo xtask bench load --quick\n  cargo xtask bench copy --quick\n  cargo xtask bench trace --quick\n  cargo xtask bench rollout --quick"
)]
enum Bench {
    /// Cached pulls of many small images and one large blob: ferry, Distribution and nginx.
    Serve(serve::Args),
    /// ferry as a pull-through cache versus the Distribution proxy, cold and cached.
    Mirror(mirror::Args),
    /// ociregistry's load test with `ferry load`: ferry, the Distribution proxy and nginx.
    Load(load::Args),
    /// `ferry copy` and `ferry info` against skopeo: pull, tar, push, bulk info and many images
    /// into one directory, on loopback and with a round-trip time added.
    Copy(copy::Args),
    /// The trace lab: the simulator's requests/s per policy against libCacheSim, a 10-capacity
    /// LRU sweep against a Python OrderedDict LRU, and `ferry trace run` against a null registry.
    Trace(trace::Args),
    /// Spegel's benchmark on one machine: N mirrors roll an image out from a remote-like
    /// upstream, each on its own (baseline) and sharing blobs as peers.
    Rollout(rollout::Args),
}

fn main() -> ExitCode {
    let result = match Bench::parse() {
        Bench::Serve(a) => serve::Options::new(a).and_then(serve::run),
        Bench::Mirror(a) => mirror::Options::new(a).and_then(mirror::run),
        Bench::Load(a) => load::Options::new(a).and_then(load::run),
        Bench::Copy(a) => copy::Options::new(a).and_then(copy::run).map(|_| ()),
        Bench::Trace(a) => trace::Options::new(a).and_then(trace::run).map(|_| ()),
        Bench::Rollout(a) => rollout::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
