//! `ferry load`: generated images are valid to real tools (Distribution accepts the pushes, skopeo
//! copies them back digest-checked and reads the archives), and the seed decides everything.

use std::process::Command;

use ferry_testkit::peers::{DockerRegistry, Skopeo};

use crate::ferry_bin;

fn ferry(args: &[&str]) -> String {
    let out = Command::new(ferry_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ferry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn load_gen_pushes_valid_images_and_writes_archives() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("images.txt");
    let tars = tmp.path().join("tars");
    let url = format!("http://{}", registry.host());
    let said = ferry(&[
        "load",
        "gen",
        "--registry",
        &url,
        "--count",
        "6",
        "--batches",
        "3",
        "--blobs",
        "2",
        "--blob-size",
        "2KiB",
        "--seed",
        "7",
        "--out",
        list.to_str().unwrap(),
        "--tar-dir",
        tars.to_str().unwrap(),
    ]);
    assert!(said.contains("generated 6 images in 3 batches"), "{said}");
    let refs: Vec<String> = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(refs.len(), 6);
    let mut batches: Vec<&str> = refs
        .iter()
        .map(|r| &r.split(':').next().unwrap()[21..])
        .collect();
    batches.sort();
    assert_eq!(
        batches,
        ["-0001", "-0001", "-0002", "-0002", "-0003", "-0003"]
    );
    for (i, r) in refs.iter().enumerate() {
        // skopeo checks every blob digest as it copies.
        let dest = tmp.path().join(format!("pulled-{i}"));
        skopeo.copy(
            &format!("docker://{}/{r}", registry.host()),
            &format!("oci:{}:x", dest.display()),
            &[],
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&skopeo.raw(&format!("docker://{}/{r}", registry.host())))
                .unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
        let (repo, tag) = r.split_once(':').unwrap();
        let tar = tars.join(format!("{repo}_{tag}.tar"));
        for transport in ["oci-archive", "docker-archive"] {
            let dest = tmp.path().join(format!("{transport}-{i}"));
            skopeo.copy(
                &format!("{transport}:{}", tar.display()),
                &format!("oci:{}:x", dest.display()),
                &[],
            );
        }
    }
    // Same seed, same names; another seed, other names.
    let again = tmp.path().join("again.txt");
    ferry(&[
        "load",
        "gen",
        "--count",
        "6",
        "--batches",
        "3",
        "--blobs",
        "2",
        "--blob-size",
        "2KiB",
        "--seed",
        "7",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&list).unwrap()
    );
    ferry(&[
        "load",
        "gen",
        "--count",
        "6",
        "--batches",
        "3",
        "--seed",
        "8",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_ne!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&list).unwrap()
    );

    // Several platforms: an index over one image per platform.
    let multi = tmp.path().join("multi.txt");
    ferry(&[
        "load",
        "gen",
        "--registry",
        &url,
        "--count",
        "1",
        "--batches",
        "1",
        "--platforms",
        "linux/amd64,linux/arm64",
        "--out",
        multi.to_str().unwrap(),
    ]);
    let r = std::fs::read_to_string(&multi).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&skopeo.raw(&format!("docker://{}/{}", registry.host(), r.trim())))
            .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    skopeo.copy(
        &format!("docker://{}/{}", registry.host(), r.trim()),
        &format!("oci:{}:x", tmp.path().join("multi").display()),
        &["--all"],
    );

    // Bad input says what is wrong.
    let out = Command::new(ferry_bin())
        .args([
            "load",
            "gen",
            "--count",
            "3",
            "--batches",
            "5",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--batches must be between 1 and the image count")
    );
}

/// #11: "1 batches". One image in one batch is said in the singular.
#[test]
fn load_gen_counts_one_image_and_one_batch_in_the_singular() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("images.txt");
    let said = ferry(&[
        "load",
        "gen",
        "--count",
        "1",
        "--batches",
        "1",
        "--blobs",
        "1",
        "--out",
        list.to_str().unwrap(),
    ]);
    assert!(said.contains("generated 1 image in 1 batch ("), "{said}");
    let said = ferry(&[
        "load",
        "gen",
        "--count",
        "2",
        "--batches",
        "1",
        "--blobs",
        "1",
        "--out",
        list.to_str().unwrap(),
    ]);
    assert!(said.contains("generated 2 images in 1 batch ("), "{said}");
}

/// `ferry load report` names the file it cannot use and why, each cause once.
#[test]
fn load_report_says_which_file_is_wrong_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let report = |file: &std::path::Path| {
        let out = Command::new(ferry_bin())
            .args(["load", "report", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = tmp.path().join("missing.json");
    let err = report(&missing);
    assert!(
        err.contains(&format!("cannot read {}: ", missing.display())),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    let newer = tmp.path().join("newer.json");
    std::fs::write(&newer, r#"{"schema_version": 2}"#).unwrap();
    let err = report(&newer);
    assert!(
        err.contains(&format!(
            "{} has results schema version 2, and this ferry reads version 1",
            newer.display()
        )),
        "{err}"
    );
    let other = tmp.path().join("other.json");
    std::fs::write(&other, "[]").unwrap();
    let err = report(&other);
    assert!(
        err.contains(&format!(
            "{} is not a ferry load results file: ",
            other.display()
        )),
        "{err}"
    );
}

fn results(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A short closed-loop run against Distribution: every pull verified, rates tallied, the JSON and
/// CSV written and readable; then a run through a ferry mirror (`?ns=`) that prunes after each pass
/// (so every pass is a pull-through); then missing images are counted by kind without stopping the
/// run.
#[test]
fn load_run_pulls_tallies_prunes_and_counts_errors() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("images.txt");
    let url = format!("http://{}", registry.host());
    ferry(&[
        "load",
        "gen",
        "--registry",
        &url,
        "--count",
        "8",
        "--batches",
        "2",
        "--blobs",
        "3",
        "--seed",
        "3",
        "--out",
        list.to_str().unwrap(),
    ]);
    let out = tmp.path().join("direct.json");
    let csv = tmp.path().join("direct.csv");
    let said = ferry(&[
        "load",
        "run",
        "--target",
        &url,
        "--registry-url",
        &url,
        "--patterns",
        "-0001,-0002",
        "--duration",
        "2",
        "--tally-seconds",
        "0.5",
        "--out",
        out.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let r = results(&out);
    let s = &r["summary"];
    assert!(s["images"].as_u64().unwrap() > 0, "{said}");
    assert_eq!(s["errors"], 0, "{r}");
    // Each image: HEAD, GET manifest, config and 3 layers.
    assert_eq!(
        s["requests"].as_u64().unwrap(),
        6 * s["images"].as_u64().unwrap()
    );
    for k in ["image", "manifest_head", "manifest", "blob"] {
        let p = &s["latency_ms"][k];
        assert!(p["count"].as_u64().unwrap() > 0, "{k}: {p}");
        assert!(p["p50"].as_f64().unwrap() <= p["p99"].as_f64().unwrap());
        assert!(p["p99"].as_f64().unwrap() <= p["max"].as_f64().unwrap());
    }
    let tallies = r["tallies"].as_array().unwrap();
    assert!(tallies.len() >= 3, "{r}");
    assert!(tallies.iter().all(|t| t["pullers"] == 2));
    let tallied: u64 = tallies.iter().map(|t| t["images"].as_u64().unwrap()).sum();
    assert!(tallied <= s["images"].as_u64().unwrap());
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), tallies.len() + 1);
    assert!(csv.starts_with("t,pullers,images,"));
    // The report: a table on stdout, charts as SVG and PNG.
    for chart in ["chart.svg", "chart.png"] {
        let path = tmp.path().join(chart);
        let table = ferry(&[
            "load",
            "report",
            out.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(
            table.contains(&format!("| {url} | {} |", s["images"])),
            "{table}"
        );
        assert!(std::fs::metadata(&path).unwrap().len() > 5_000, "{chart}");
    }

    // Through a ferry mirror, pruning after every pass: each pass pulls through again.
    let token = tmp.path().join("token");
    ferry_testkit::write_secret(&token, "a-load-test-admin-token");
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "admin_token_file = \"{}\"\n[[upstream]]\nurl = \"{url}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let mirror = ferry_testkit::peers::Ferry::start(
        ferry_bin(),
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let out = tmp.path().join("mirror.json");
    ferry(&[
        "load",
        "run",
        "--target",
        &mirror.url(),
        "--images",
        list.to_str().unwrap(),
        "--ns",
        &registry.host(),
        "--max-pullers",
        "2",
        "--duration",
        "30",
        "--passes",
        "2",
        "--prune",
        "--admin-token-file",
        token.to_str().unwrap(),
        "--tally-seconds",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = results(&out);
    // Two pullers share the 8 images, two passes each.
    assert_eq!(r["summary"]["images"], 32, "{r}");
    assert_eq!(r["summary"]["errors"], 0, "{r}");
    let listed = Command::new(ferry_bin())
        .args(["list", "--json", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "pruned after the last pass: {listed}"
    );
    drop(mirror);

    // --tar-dir writes each pulled image as a docker-save tar that skopeo reads.
    let tars = tmp.path().join("pulled-tars");
    let out = tmp.path().join("tars.json");
    ferry(&[
        "load",
        "run",
        "--target",
        &url,
        "--images",
        list.to_str().unwrap(),
        "--max-pullers",
        "1",
        "--duration",
        "20",
        "--passes",
        "1",
        "--tar-dir",
        tars.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(results(&out)["summary"]["images"], 8);
    let first = std::fs::read_dir(&tars)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_dir(&tars).unwrap().count(), 8);
    if let Some(skopeo) = ferry_testkit::peers::Skopeo::new() {
        skopeo.copy(
            &format!("docker-archive:{}", first.display()),
            &format!("oci:{}:x", tmp.path().join("from-tar").display()),
            &[],
        );
    }

    // Missing images are failures by kind; the run goes on and pulls the others.
    let mixed = tmp.path().join("mixed.txt");
    let good = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&mixed, format!("{good}nothing-here:v1\n")).unwrap();
    let out = tmp.path().join("mixed.json");
    let status = Command::new(ferry_bin())
        .args([
            "load",
            "run",
            "--target",
            &url,
            "--images",
            mixed.to_str().unwrap(),
            "--max-pullers",
            "1",
            "--duration",
            "20",
            "--passes",
            "1",
            "--tally-seconds",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let r = results(&out);
    assert_eq!(r["summary"]["images"], 8, "{r}");
    assert_eq!(r["summary"]["error_kinds"]["http_404"], 1, "{r}");
}
