//! A full disk: pushes are answered 507 with an envelope that says so, counted, and logged once
//! per episode. The disk is a small tmpfs in a private mount namespace (`unshare -m`), which needs
//! root: CI runs as root; elsewhere the test skips loudly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_oci::Digest;
use ferry_testkit::peers::{Process, accepting, free_port, in_ci, wait_until};

use crate::{client, ferry_bin};

/// Whether this process may mount a tmpfs in a mount namespace of its own.
fn can_mount_tmpfs(dir: &Path) -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\""])
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_counts_it_and_logs_each_episode_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    if !can_mount_tmpfs(&data) {
        assert!(
            !in_ci(),
            "CI=true but `unshare -m` + `mount -t tmpfs` failed: this test needs root"
        );
        eprintln!(
            "SKIPPED a_full_disk_answers_507…: mounting a tmpfs in a private mount namespace needs root (and unshare)"
        );
        return;
    }
    let (port, metrics_port) = (free_port(), free_port());
    let mut cmd = Command::new("unshare");
    // An 8 MiB disk, seen only by this ferry.
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=8m tmpfs \"$0\" && exec \"$1\" serve --listen \"$2\" --metrics \"$3\" --data-dir \"$0\"",
    ])
    .arg(&data)
    .arg(ferry_bin())
    .arg(format!("127.0.0.1:{port}"))
    .arg(format!("127.0.0.1:{metrics_port}"))
    .env_remove("FERRY_LOG")
    .env_remove("FERRY_CONFIG");
    let ferry = Process::spawn("ferry", cmd, &tmp.path().join("ferry.log"));
    assert!(
        wait_until(Duration::from_secs(20), || accepting(port)),
        "{}",
        ferry.log()
    );
    let base = format!("http://127.0.0.1:{port}");
    let c = client();
    let push = |bytes: Vec<u8>| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let d = Digest::sha256(&bytes);
            c.post(format!("{base}/v2/full/app/blobs/uploads/?digest={d}"))
                .body(bytes)
                .send()
                .await
                .unwrap()
        }
    };
    let big = |seed: u8| -> Vec<u8> {
        (0..10u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    };
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
