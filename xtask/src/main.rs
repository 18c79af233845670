//! `cargo xtask <task>`: the project's own automation, in Rust so it runs wherever cargo does.
//!
//! - `test`: everything CI checks — formatting, clippy with warnings denied, rustdoc with warnings
//!   denied, then every unit, property and end-to-end test (property tests at 10,000 cases).
//! - `bench serve|mirror|load|copy|trace|rollout`: the benchmarks (see `docs/benchmarks/<name>.md`).

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask test [-- <cargo test args>]\n       cargo xtask bench serve|mirror|load|copy|trace [--quick]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn test(extra: &[String]) -> Result<(), String> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--quiet"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    let mut t = cargo();
    t.args(["test", "--workspace"]);
    if !extra.is_empty() {
        t.args(extra);
    }
    if std::env::var_os("PROPTEST_CASES").is_none() {
        t.env("PROPTEST_CASES", "10000");
    }
    run("cargo test", &mut t)?;
    // The README's run command is `cargo run --release -- serve`: plain `cargo run` must mean the
    // ferry binary (checked in the debug profile, which the tests have just built).
    eprintln!("==> cargo run -- version");
    let out = cargo()
        .args(["run", "--quiet", "--", "version"])
        .output()
        .map_err(|e| format!("cargo run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.starts_with("ferry ") {
        return Err(format!(
            "`cargo run -- version` did not run ferry: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some(name @ ("serve" | "mirror" | "load" | "copy" | "trace" | "rollout")) => {
            run(
                "cargo build --release",
                cargo().args([
                    "build",
                    "--release",
                    "--quiet",
                    "-p",
                    "ferry",
                    "-p",
                    "ferry-bench",
                ]),
            )?;
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            run(
                &format!("ferry-bench {name}"),
                Command::new(root.join("target/release/ferry-bench"))
                    .arg(name)
                    .arg("--ferry")
                    .arg(root.join("target/release/ferry"))
                    .args(&args[1..]),
            )
        }
        other => Err(format!(
            "unknown benchmark {other:?}; available: serve, mirror, load, copy, trace, rollout"
        )),
    }
}
