//! `ferry trace warmup|run|merge` against a real `ferry serve`: every replayed GET comes back
//! right, a second warmup pushes nothing, runs repeat, shards merge into the whole, and bad input
//! is a clear error.

use std::path::Path;
use std::process::{Command, Output};

use crate::ferry_bin;

fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin()).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = ferry(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "ferry {args:?}: {stderr}\n{stdout}");
    stdout
}

/// Exits non-zero with a message containing `expected`, and no panic.
fn fails(args: &[&str], expected: &str) {
    let out = ferry(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ferry {args:?} succeeded");
    assert!(stderr.contains(expected), "ferry {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn results(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn warmup_and_run_against_ferry_serve_replay_every_get() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ferry_testkit::peers::Ferry::start(ferry_bin(), &tmp.path().join("data"), &[]);
    let url = server.url();
    let trace = tmp.path().join("t.jsonl");
    let map = tmp.path().join("t.map.jsonl");
    ok(&[
        "trace",
        "gen",
        "--requests",
        "300",
        "--objects",
        "40",
        "--seed",
        "9",
        "--out",
        s(&trace),
    ]);
    let warm = [
        "trace",
        "warmup",
        s(&trace),
        "--registry",
        &url,
        "--map",
        s(&map),
        "--max-blob-size",
        "64KB",
        "-j",
        "4",
    ];
    let first = ok(&warm);
    assert!(!first.contains(" pushed 0 blobs"), "{first}");
    let second = ok(&warm);
    assert!(
        second.contains("pushed 0 blobs and 0 manifests (0 bytes)"),
        "{second}"
    );
    // Without --map, the map goes beside the trace under an extension no trace reader takes.
    ok(&[
        "trace",
        "warmup",
        s(&trace),
        "--registry",
        &url,
        "--max-blob-size",
        "64KB",
    ]);
    assert_eq!(
        std::fs::read(tmp.path().join("t.jsonl.map")).unwrap(),
        std::fs::read(&map).unwrap()
    );

    let run = |extra: &[&str], name: &str| {
        let json = tmp.path().join(format!("{name}.json"));
        let log = tmp.path().join(format!("{name}.log"));
        let mut args = vec![
            "trace",
            "run",
            s(&trace),
            "--map",
            s(&map),
            "--registry",
            &url,
            "--json",
            s(&json),
            "--sent-log",
            s(&log),
        ];
        args.extend_from_slice(extra);
        let table = ok(&args);
        assert!(table.contains("blob"), "{table}");
        (results(&json), std::fs::read_to_string(log).unwrap())
    };
    let (a, log_a) = run(&["--speed", "50"], "a");
    assert_eq!(a["summary"]["errors"], 0, "{a}");
    assert_eq!(a["replay"]["kinds"]["blob"]["requests"], 300);
    assert_eq!(a["replay"]["kinds"]["blob"]["lag_ms"]["count"], 300);
    assert_eq!(a["mode"], "trace-recorded");
    let (b, log_b) = run(&["--pace", "asap", "--concurrency", "8"], "b");
    assert_eq!(b["summary"]["errors"], 0);
    assert_eq!(
        log_a, log_b,
        "two runs request the same things in the same order"
    );
    assert_eq!(log_a.lines().count(), 300);

    // Two shards cover the trace between them; merged, they are the whole.
    let (s0, log0) = run(&["--speed", "50", "--shard", "0/2"], "s0");
    let (s1, log1) = run(
        &["--speed", "50", "--shard", "1/2", "--start-at", "0"],
        "s1",
    );
    let n = |r: &serde_json::Value| r["replay"]["kinds"]["blob"]["requests"].as_u64().unwrap();
    assert!(n(&s0) > 0 && n(&s1) > 0);
    assert_eq!(n(&s0) + n(&s1), 300);
    let mut both: Vec<&str> = log0.lines().chain(log1.lines()).collect();
    let mut whole: Vec<&str> = log_a.lines().collect();
    both.sort_unstable();
    whole.sort_unstable();
    assert_eq!(both, whole);
    let merged = tmp.path().join("merged.json");
    ok(&[
        "trace",
        "merge",
        s(&tmp.path().join("s0.json")),
        s(&tmp.path().join("s1.json")),
        "--json",
        s(&merged),
    ]);
    let m = results(&merged);
    assert_eq!(m["replay"]["kinds"]["blob"]["requests"], 300);
    assert_eq!(m["replay"]["kinds"]["blob"]["latency_ms"]["count"], 300);
    assert_eq!(m["summary"]["requests"], 300);
}

#[test]
fn replay_input_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    ok(&[
        "trace",
        "gen",
        "--requests",
        "20",
        "--objects",
        "5",
        "--out",
        s(&trace),
    ]);
    let map = tmp.path().join("bad.map.jsonl");
    std::fs::write(&map, "{\"uri\": 3}\n").unwrap();
    let run = |map: &Path, registry: &str| {
        vec![
            "trace".to_owned(),
            "run".to_owned(),
            s(&trace).to_owned(),
            "--map".to_owned(),
            s(map).to_owned(),
            "--registry".to_owned(),
            registry.to_owned(),
        ]
    };
    let call = |args: Vec<String>, expected: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, expected);
    };
    call(
        run(&map, "http://127.0.0.1:9"),
        "line 1: not a warmup map entry",
    );
    call(
        run(&tmp.path().join("none.jsonl"), "http://127.0.0.1:9"),
        "none.jsonl",
    );
    call(run(&map, "ftp://127.0.0.1:9"), "unknown scheme");
    call(run(&map, "https://127.0.0.1:9"), "plain HTTP");
    call(run(&map, "127.0.0.1:9"), "expected http://host:port");
    let mut shard = run(&map, "http://127.0.0.1:9");
    shard.extend(["--shard".to_owned(), "2/2".to_owned()]);
    call(shard, "expected i/N");
    fails(
        &[
            "trace",
            "warmup",
            s(&trace),
            "--registry",
            "ftp://127.0.0.1:9",
        ],
        "http(s)://host[:port]",
    );
    fails(
        &[
            "trace",
            "warmup",
            s(&trace),
            "--registry",
            "http://127.0.0.1:9",
            "--max-blob-size",
            "1GB",
            "--max-total",
            "1KB",
        ],
        "--max-total",
    );
    fails(
        &[
            "trace",
            "merge",
            s(&trace),
            "--json",
            s(&tmp.path().join("o.json")),
        ],
        "not a ferry load results file",
    );
}
