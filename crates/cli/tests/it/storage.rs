//! A full disk: pushes are answered 507 with an envelope that says so, counted, and logged once
//! per episode. The disk is a small tmpfs in a private mount namespace (`unshare -m`), which needs
//! root: CI runs as root; elsewhere the test skips loudly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_oci::Digest;
use ferry_testkit::peers::{Ferry, Process, accepting, free_port, in_ci, wait_until};

use crate::{client, ferry_bin};

/// Whether this process may mount a tmpfs in a mount namespace of its own.
fn can_mount_tmpfs(dir: &Path) -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\""])
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A ferry on an 8 MiB tmpfs seen only by it, or `None` (skipped loudly) where mounting needs a
/// root this process does not have. Returns the process and its API and metrics ports.
fn ferry_on_a_small_disk(dir: &Path, extra: &[String]) -> Option<(Process, u16, u16)> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    if !can_mount_tmpfs(&data) {
        assert!(
            !in_ci(),
            "CI=true but `unshare -m` + `mount -t tmpfs` failed: this test needs root"
        );
        eprintln!(
            "SKIPPED: mounting a tmpfs in a private mount namespace needs root (and unshare)"
        );
        return None;
    }
    let (port, metrics_port) = (free_port(), free_port());
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=8m tmpfs \"$0\" && exec \"$@\" --data-dir \"$0\"",
    ])
    .arg(&data)
    .arg(ferry_bin())
    .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
    .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
    .args(extra)
    .env_remove("FERRY_LOG")
    .env_remove("FERRY_CONFIG");
    let ferry = Process::spawn("ferry", cmd, &dir.join("ferry.log"));
    assert!(
        wait_until(Duration::from_secs(20), || accepting(port)),
        "{}",
        ferry.log()
    );
    Some((ferry, port, metrics_port))
}

/// 10 MiB that do not fit on the 8 MiB disk.
fn big(seed: u8) -> Vec<u8> {
    (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

/// Pushes `bytes` as a blob of `repo` in one request.
async fn push(base: &str, repo: &str, bytes: Vec<u8>) -> reqwest::Response {
    let d = Digest::sha256(&bytes);
    client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_counts_it_and_logs_each_episode_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((ferry, port, metrics_port)) = ferry_on_a_small_disk(tmp.path(), &[]) else {
        return;
    };
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let push = |bytes: Vec<u8>| push(&base, "full/app", bytes);
    let warnings = |log: &str| log.matches("the storage is full").count();

    for seed in 0..3 {
        let r = push(big(seed)).await;
        assert_eq!(r.status(), 507);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "STORAGE_FULL", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("storage is full"),
            "{body}"
        );
    }
    let log = ferry.log();
    assert_eq!(warnings(&log), 1, "one warning for the episode:\n{log}");
    assert!(
        log.to_lowercase().contains("no space left on device"),
        "the warning gives the OS's cause:\n{log}"
    );

    // A write that fits ends the episode; the next failure starts (and logs) another.
    assert_eq!(push(vec![7; 1024]).await.status(), 201);
    assert!(ferry.log().contains("the storage accepts writes again"));
    assert_eq!(push(big(9)).await.status(), 507);
    let log = ferry.log();
    assert_eq!(warnings(&log), 2, "{log}");

    let metrics = c
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "ferry_storage_full_total 4"),
        "{metrics}"
    );
}

/// On a mirror that only pulls, a blob cached after a full-disk answer ends the episode (so the
/// next one is logged again); before, only a successful push did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_blob_ends_a_full_disk_episode_on_a_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Ferry::start(ferry_bin(), &tmp.path().join("upstream"), &[]);
    let small = vec![3u8; 4096];
    assert_eq!(
        push(&upstream.url(), "lib/app", small.clone())
            .await
            .status(),
        201
    );
    let config = tmp.path().join("ferry.toml");
    // The cache's own free-space floor would refuse every fill on an 8 MiB disk.
    std::fs::write(&config, "[cache]\nmin_free_space = \"0\"\n").unwrap();
    let extra = [
        "--config".to_owned(),
        config.display().to_string(),
        "--upstream".to_owned(),
        upstream.url(),
        "--local-namespace".to_owned(),
        "mine".to_owned(),
    ];
    let Some((ferry, port, _)) = ferry_on_a_small_disk(tmp.path(), &extra) else {
        return;
    };
    let base = format!("http://127.0.0.1:{port}");
    // A push that does not fit starts the episode.
    assert_eq!(push(&base, "mine/app", big(1)).await.status(), 507);
    assert!(
        ferry.log().contains("the storage is full"),
        "{}",
        ferry.log()
    );
    // A pull-through that fits ends it.
    let r = client()
        .get(format!(
            "{base}/v2/lib/app/blobs/{}",
            Digest::sha256(&small)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &small[..]);
    // Logged when the fill commits, which may be a moment after the client has its last byte.
    assert!(
        wait_until(Duration::from_secs(10), || ferry
            .log()
            .contains("the storage accepts writes again")),
        "{}",
        ferry.log()
    );
}
