//! `ferry trace`: the commands of docs/trace.md run as written on the repository's sample, and bad
//! input is reported with positions (skipped, or fatal with --strict).

use std::path::Path;
use std::process::{Command, Output};

use crate::ferry_bin;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `ferry ARGS` run from the repository root, where the docs' paths start.
fn ferry(args: &[&str]) -> Output {
    Command::new(ferry_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn analyze_characterizes_the_ibm_sample_as_the_docs_say() {
    let out = ferry(&["trace", "analyze", "testdata/traces/dal09_blobs_sample.csv"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "the sample reads cleanly: {stderr}");
    for figure in [
        "requests                     999",
        "blob sizes (566 distinct)",
        "65.7% under 1 MB, 79.5% under 10 MB",
        "top 10% get 47.8%",
        "87.8% requested once",
    ] {
        assert!(stdout.contains(figure), "{figure:?} in:\n{stdout}");
    }
    // The figures docs/trace.md quotes are the ones the command prints.
    let doc = std::fs::read_to_string(repo_root().join("docs/trace.md")).unwrap();
    for quoted in [
        "| 65.7% |",
        "| 79.5% |",
        "| 14.7 kB |",
        "| 47.8% |",
        "| 87.8% |",
    ] {
        assert!(doc.contains(quoted), "docs/trace.md quotes {quoted}");
    }
    assert!(stdout.contains("p50 14.7 kB"), "{stdout}");

    let out = ferry(&[
        "trace",
        "analyze",
        "--json",
        "testdata/traces/dal09_blobs_sample.csv",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 999);
    assert_eq!(v["kinds"]["blob"], 999);
    assert_eq!(v["popularity"]["objects"], 566);
    let under = v["blob_sizes"]["under_1mb"].as_f64().unwrap();
    assert!((under - 372.0 / 566.0).abs() < 1e-9, "{under}");
}

#[test]
fn every_command_of_docs_trace_runs_as_written() {
    let doc = std::fs::read_to_string(repo_root().join("docs/trace.md")).unwrap();
    let mut in_sh = false;
    let mut ran = 0;
    let tmp = tempfile::tempdir().unwrap();
    let mut registry: Option<ferry_testkit::peers::Ferry> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        let Some(args) = line.strip_prefix("ferry ").filter(|_| in_sh) else {
            continue;
        };
        // The recording section's lines are an operator's own server and log (a public upstream,
        // /var/log): `a_mirrors_access_log_reads_back_as_a_trace` runs them against local peers.
        // The tour test still parses them.
        if line.contains("/var/log/") {
            continue;
        }
        // The replay section's registry is `127.0.0.1:5000`: a ferry of the test's own stands in.
        let args = if args.contains("127.0.0.1:5000") {
            let server = registry.get_or_insert_with(|| {
                ferry_testkit::peers::Ferry::start(
                    crate::ferry_bin(),
                    &tmp.path().join("data"),
                    &[],
                )
            });
            args.replace("127.0.0.1:5000", &server.host())
        } else {
            args.to_owned()
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = ferry(&args);
        assert!(out.status.success(), "{line}: {}", text(&out).1);
        assert!(!out.stdout.is_empty(), "{line} printed nothing");
        ran += 1;
    }
    assert!(
        ran >= 6,
        "docs/trace.md shows its commands in ```sh blocks ({ran} ran)"
    );
}

#[test]
fn bad_records_are_reported_with_positions_and_strict_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    std::fs::write(
        &trace,
        concat!(
            r#"{"http.request.method":"GET","http.request.uri":"v2/a/b/blobs/1","timestamp":"2017-06-20T00:00:01Z"}"#,
            "\n",
            r#"{"http.request.method":"GET","timestamp":"2017-06-20T00:00:02Z"}"#,
            "\n",
            r#"{"http.request.method":"GET","http.request.uri":"v2/a/b/blobs/1","timestamp":"2017-06-20T00:00:03Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let path = trace.to_str().unwrap();
    let out = ferry(&["trace", "analyze", path]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}: record 2: no http.request.uri")),
        "{stderr}"
    );
    assert!(stderr.contains("1 record could not be read"), "{stderr}");
    assert!(
        stdout.contains("requests                     2"),
        "{stdout}"
    );

    let out = ferry(&["trace", "analyze", "--strict", path]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("record 2") && stderr.contains("--strict"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = ferry(&[
        "trace",
        "analyze",
        tmp.path().join("none*.json").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no trace files"), "{stderr}");
}

#[test]
fn simulate_sweeps_lru_over_the_sample_and_writes_json() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("lru.json");
    let out = ferry(&[
        "trace",
        "simulate",
        "--objects",
        "100,400,1000",
        "--bytes",
        "1GB,100%",
        "--json",
        json.to_str().unwrap(),
        "testdata/traces/dal09_blobs_sample.csv",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("999 cache requests, 566 objects"),
        "{stdout}"
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(results.len(), 5);
    let hits = |i: usize| results[i]["hits"].as_u64().unwrap();
    // A cache as large as the working set misses each object once: 999 - 566 requests hit.
    assert_eq!(hits(2), 433);
    assert_eq!(hits(4), 433, "100% of the working set in bytes");
    assert!(hits(0) < hits(1) && hits(1) <= hits(2), "{results:?}");
    for r in &results {
        for field in [
            "policy",
            "unit",
            "capacity",
            "requests",
            "hits",
            "hit_ratio",
            "byte_hit_ratio",
        ] {
            assert!(r.get(field).is_some(), "{field} in {r}");
        }
    }
    assert_eq!(results[3]["unit"], "bytes");
    assert_eq!(results[3]["capacity"], 1_000_000_000);

    // A URI list has no sizes: byte capacities are refused, saying what to use.
    let uris = tmp.path().join("uris.txt");
    std::fs::write(&uris, "v2/a/blobs/1\nv2/a/blobs/1\n").unwrap();
    let out = ferry(&[
        "trace",
        "simulate",
        "--bytes",
        "1GB",
        uris.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--objects"), "{}", text(&out).1);
    let out = ferry(&[
        "trace",
        "simulate",
        "--objects",
        "1",
        uris.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let printed = text(&out).0;
    let row: Vec<&str> = printed.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(row[..5], ["lru", "objects", "1", "2", "1"], "{printed}");
    let out = ferry(&[
        "trace",
        "simulate",
        "--policy",
        "belady",
        "--objects",
        "1",
        uris.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("unknown policy"), "{}", text(&out).1);
}

#[test]
fn gen_is_deterministic_and_reads_back_as_the_trace_it_describes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a.jsonl"),
        tmp.path().join("b.jsonl"),
        tmp.path().join("c.jsonl"),
    );
    let generate = |out: &Path, seed: &str| {
        let out = ferry(&[
            "trace",
            "gen",
            "--requests",
            "3000",
            "--objects",
            "300",
            "--zipf",
            "1.0",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out).1);
    };
    generate(&a, "5");
    generate(&b, "5");
    generate(&c, "6");
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "the same options, the same bytes");
    assert_ne!(bytes(&a), bytes(&c));
    let out = ferry(&[
        "trace",
        "analyze",
        "--json",
        "--strict",
        a.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 3000);
    assert_eq!(v["kinds"]["blob"], 3000);
    assert!(v["popularity"]["objects"].as_u64().unwrap() <= 300);
    // Zipf 1.0 over 300 objects: the top 10% take well over half of the requests.
    assert!(
        v["popularity"]["top_10pct_share"].as_f64().unwrap() > 0.5,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrors_access_log_reads_back_as_a_trace() {
    let Some(skopeo) = ferry_testkit::peers::Skopeo::new() else {
        return;
    };
    let Some(upstream) = ferry_testkit::peers::DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = ferry_testkit::image::image(151, 2, 20_000, "amd64");
    skopeo.push_image(&img, tmp.path(), &format!("{}/t/app:v1", upstream.host()));
    let log = tmp.path().join("access.jsonl");
    let mut server = ferry_testkit::peers::Ferry::start(
        crate::ferry_bin(),
        &tmp.path().join("data"),
        &[
            "--upstream",
            &format!("http://{}", upstream.host()),
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    // Each blob twice (a miss filling the cache, then a hit), the manifest once, one unknown blob.
    let c = crate::client();
    let get = |path: String| {
        let c = c.clone();
        let url = format!("{}/v2/t/app/{path}", server.url());
        async move {
            let r = c
                .get(url)
                .header("accept", ferry_oci::MediaType::ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().len())
        }
    };
    assert_eq!(get("manifests/v1".into()).await.0, 200);
    for b in img.blobs() {
        for _ in 0..2 {
            assert_eq!(
                get(format!("blobs/{}", b.digest)).await,
                (200, b.bytes.len())
            );
        }
    }
    let missing = ferry_oci::Digest::sha256(b"not there");
    assert_eq!(get(format!("blobs/{missing}")).await.0, 404);
    // Stopped gracefully, the server writes out what is queued.
    server
        .process
        .terminate(std::time::Duration::from_secs(10))
        .expect("ferry stops on SIGTERM");

    let out = ferry(&[
        "trace",
        "analyze",
        "--json",
        "--strict",
        log.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blob_gets = 2 * img.blobs().count() as u64 + 1;
    assert_eq!(v["requests"], blob_gets + 1, "{v}");
    assert_eq!(v["kinds"]["blob"], blob_gets);
    assert_eq!(v["kinds"]["manifest"], 1);
    assert_eq!(v["statuses"]["404"], 1);
    assert_eq!(v["statuses"]["200"], blob_gets);
    assert_eq!(v["clients"]["distinct"], 1);
    // The bytes written are the blobs' sizes: the largest blob is the largest size.
    let largest = img.blobs().map(|b| b.bytes.len()).max().unwrap() as f64;
    assert_eq!(v["blob_sizes"]["bytes"]["max"].as_f64(), Some(largest));
    // Every blob was asked for twice: LRU big enough hits each second request.
    let out = ferry(&[
        "trace",
        "simulate",
        "--objects",
        "100",
        log.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let row: Vec<&str> = stdout.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(
        row[3..5],
        [(blob_gets + 1).to_string(), img.blobs().count().to_string()],
        "{stdout}"
    );
}
