//! Upstream faults injected between ferry and a real Distribution: clients get correct bytes or a
//! clean error — never a complete response with wrong bytes — nothing corrupt is stored, and the
//! next pull succeeds once the fault is gone.

use ferry_oci::{Digest, MediaType};
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::image::image;
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo};

use crate::{client, ferry_bin};

#[derive(Debug)]
enum Outcome {
    Complete(Vec<u8>),
    Refused {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    Broken,
}

async fn get(url: &str) -> Outcome {
    let r = match client()
        .get(url)
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return Outcome::Broken,
    };
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    match (status, r.bytes().await) {
        (200, Ok(b)) => Outcome::Complete(b.to_vec()),
        (_, Err(_)) => Outcome::Broken,
        (s, Ok(b)) => Outcome::Refused {
            status: s,
            retry_after,
            body: String::from_utf8_lossy(&b).into_owned(),
        },
    }
}

fn assert_clean(data: &std::path::Path) {
    let out = std::process::Command::new(ferry_bin())
        .args(["fsck", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let leftovers: Vec<_> = std::fs::read_dir(data.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial files left behind: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_never_reach_clients_as_wrong_bytes() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(41, 1, 1024 * 1024, "amd64");
    skopeo.push_image(&img, tmp.path(), &format!("{}/f/app:v1", upstream.host()));
    let proxy = FaultProxy::start(&upstream.host());
    let layer = &img.layers[0];

    let scenarios: Vec<(&str, Target, Fault, usize)> = vec![
        ("reset mid-body", Target::Blob, Fault::ResetMidBody, 1),
        ("truncated body", Target::Blob, Fault::TruncateBody, 1),
        ("wrong bytes", Target::Blob, Fault::WrongBytes, 1),
        (
            "503 with Retry-After, persistent",
            Target::Blob,
            Fault::Status(503, Some(1)),
            5,
        ),
        (
            "429 with a long Retry-After",
            Target::Blob,
            Fault::Status(429, Some(30)),
            1,
        ),
        ("500", Target::Blob, Fault::Status(500, None), 3),
        (
            "manifest 503, persistent",
            Target::Manifest,
            Fault::Status(503, Some(1)),
            5,
        ),
        (
            "manifest 500",
            Target::Manifest,
            Fault::Status(500, None),
            3,
        ),
    ];
    for (i, (name, target, fault, times)) in scenarios.into_iter().enumerate() {
        proxy.clear();
        let data = tmp.path().join(format!("data-{i}"));
        let ferry = Ferry::start(
            ferry_bin(),
            &data,
            &["--upstream", &format!("http://{}", proxy.host())],
        );
        proxy.inject(target, fault.clone(), times);
        let url = match target {
            Target::Blob => format!("{}/v2/f/app/blobs/{}", ferry.url(), layer.digest),
            Target::Manifest => format!("{}/v2/f/app/manifests/v1", ferry.url()),
        };
        let want: &[u8] = match target {
            Target::Blob => &layer.bytes,
            Target::Manifest => &img.manifest.bytes,
        };
        let outcome = get(&url).await;
        match (&fault, &outcome) {
            // Interrupted transfers are resumed with Range inside ferry: the client never notices.
            (Fault::ResetMidBody | Fault::TruncateBody, Outcome::Complete(b)) => {
                assert_eq!(b.as_slice(), want, "{name}")
            }
            (Fault::WrongBytes, Outcome::Broken) => {}
            (Fault::WrongBytes, Outcome::Refused { status: 502, .. }) => {}
            (
                Fault::Status(503, _),
                Outcome::Refused {
                    status: 503,
                    retry_after,
                    body,
                },
            ) => {
                assert_eq!(retry_after.as_deref(), Some("1"), "{name}");
                assert!(body.contains("\"errors\""), "{name}: {body}");
                assert!(
                    !body.contains("MANIFEST_UNKNOWN"),
                    "{name}: an upstream failure is not a missing image"
                );
            }
            (
                Fault::Status(429, _),
                Outcome::Refused {
                    status: 429,
                    retry_after,
                    ..
                },
            ) => {
                assert_eq!(retry_after.as_deref(), Some("30"), "{name}");
            }
            (
                Fault::Status(500, _),
                Outcome::Refused {
                    status: 502, body, ..
                },
            ) => {
                assert!(body.contains("UNAVAILABLE"), "{name}: {body}");
            }
            _ => panic!("{name}: unexpected outcome {outcome:?}"),
        }
        if let Outcome::Complete(b) = &outcome {
            assert_eq!(
                Digest::sha256(b),
                Digest::sha256(want),
                "{name}: complete response with wrong bytes"
            );
        }
        assert_clean(&data);
        // The fault is gone: the next pull succeeds.
        proxy.clear();
        match get(&url).await {
            Outcome::Complete(b) => assert_eq!(b.as_slice(), want, "{name}: retry after the fault"),
            other => panic!("{name}: retry after the fault gave {other:?}"),
        }
        assert_clean(&data);
    }
}

/// An upstream that trickles a blob at 1 byte/s is abandoned once the configured transfer floor
/// applies: the client gets a clean failure instead of waiting on it, nothing partial is kept, and the
/// next pull (fault gone) succeeds. Without the floor the trickle would end after 30 s, the fill would
/// resume with Range and the client would get the complete blob, so `Complete` fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upstream_is_abandoned_at_the_transfer_floor() {
    let Some(skopeo) = Skopeo::new() else { return };
    let Some(upstream) = DockerRegistry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(43, 1, 512 * 1024, "amd64");
    skopeo.push_image(&img, tmp.path(), &format!("{}/s/app:v1", upstream.host()));
    let proxy = FaultProxy::start(&upstream.host());
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstream]]\nurl = \"http://{}\"\nmin_transfer_rate = \"64KiB\"\nmin_transfer_grace_secs = 2\n",
            proxy.host()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let ferry = Ferry::start(ferry_bin(), &data, &["--config", config.to_str().unwrap()]);
    proxy.inject(Target::Blob, Fault::Stall, 1);
    let layer = &img.layers[0];
    let url = format!("{}/v2/s/app/blobs/{}", ferry.url(), layer.digest);
    match get(&url).await {
        Outcome::Broken => {}
        Outcome::Refused { status, body, .. } => {
            assert_eq!(status, 504, "a stalled upstream is a timeout: {body}");
            assert!(body.contains("\"errors\""), "{body}");
        }
        Outcome::Complete(_) => panic!("the trickling transfer was not abandoned"),
    }
    assert_clean(&data);
    proxy.clear();
    match get(&url).await {
        Outcome::Complete(b) => assert_eq!(b, layer.bytes, "retry after the stall"),
        other => panic!("retry after the stall gave {other:?}"),
    }
    assert_clean(&data);
}
