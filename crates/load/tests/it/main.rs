//! The driver against an in-process registry whose speed and faults the test controls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_load::generate::{GenOptions, GeneratedImage};
use ferry_load::run::{Addressing, RunOptions, run};
use ferry_load::schedule::Schedule;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the fake registry does wrong.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Every blob answers 500.
    Status500,
    /// Blobs come back with one byte flipped.
    WrongBytes,
    /// Blob connections are closed before an answer.
    Reset,
}

struct Fake {
    images: Vec<GeneratedImage>,
    delay: Duration,
    fault: Fault,
    requests: AtomicU64,
}

impl Fake {
    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Option<Response<Full<Bytes>>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path();
        let rest = path.strip_prefix("/v2/")?;
        let blobs: HashMap<String, &[u8]> = self
            .images
            .iter()
            .flat_map(|i| i.blobs.iter().chain(std::iter::once(&i.top)))
            .map(|b| (b.digest.to_string(), b.bytes.as_slice()))
            .collect();
        let img = self
            .images
            .iter()
            .find(|i| rest.starts_with(&format!("{}/", i.repo)))?;
        let tail = &rest[img.repo.len() + 1..];
        let ok = |ct: &str, body: &[u8], digest: &str| {
            Response::builder()
                .header("content-type", ct)
                .header("docker-content-digest", digest)
                .body(Full::new(Bytes::copy_from_slice(body)))
                .ok()
        };
        if let Some(r) = tail.strip_prefix("manifests/") {
            if r == img.tag || r == img.top.digest.as_str() {
                return ok(
                    img.top_media_type(),
                    &img.top.bytes,
                    img.top.digest.as_str(),
                );
            }
            return None;
        }
        let d = tail.strip_prefix("blobs/")?;
        let bytes = blobs.get(d)?;
        match self.fault {
            Fault::Status500 => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Full::new(Bytes::new()))
                .ok(),
            Fault::WrongBytes => {
                let mut b = bytes.to_vec();
                b[0] ^= 0xff;
                ok("application/octet-stream", &b, d)
            }
            _ => ok("application/octet-stream", bytes, d),
        }
    }
}

async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fake = fake.clone();
                    async move {
                        tokio::time::sleep(fake.delay).await;
                        if fake.fault == Fault::Reset && req.uri().path().contains("/blobs/") {
                            return Err("reset");
                        }
                        Ok::<_, &str>(fake.answer(&req).unwrap_or_else(|| {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new()))
                                .unwrap()
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn fake(n: usize, delay: Duration, fault: Fault) -> Arc<Fake> {
    let o = GenOptions {
        count: n,
        batches: 1,
        layers: 2,
        layer_size: 100,
        ..GenOptions::default()
    };
    Arc::new(Fake {
        images: (0..n).map(|i| o.generate(i)).collect(),
        delay,
        fault,
        requests: AtomicU64::new(0),
    })
}

fn options(target: String, images: &Fake, schedule: Schedule) -> RunOptions {
    RunOptions {
        target,
        addressing: Addressing::Plain,
        images: images.images.iter().map(|i| i.reference()).collect(),
        patterns: Vec::new(),
        schedule,
        tally: Duration::from_millis(200),
        layer_concurrency: 3,
        verify: true,
        platform: ("linux".into(), "amd64".into()),
        passes: None,
        rate: None,
        prune: None,
        timeout: Duration::from_secs(10),
        live: false,
        tar_dir: None,
    }
}

/// Open loop: pulls start on schedule however slow the server is, and their latency counts from
/// the intended start. A server that takes ~80 ms per pull and gets a pull every 25 ms falls
/// behind, and the latency shows the queue; a closed loop on the same server would report ~80 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_the_queue() {
    let f = fake(4, Duration::from_millis(20), Fault::None);
    let addr = serve(f.clone()).await;
    let mut o = options(
        addr.clone(),
        &f,
        Schedule::Fixed {
            pullers: 1,
            duration: Duration::from_millis(500),
        },
    );
    o.rate = Some(40.0);
    let r = run(o, "open".into()).await;
    let s = &r.summary;
    assert_eq!(s.errors, 0);
    assert_eq!(s.images, 20, "one pull every 25 ms for 500 ms");
    let image = &s.latency_ms["image"];
    let blob = &s.latency_ms["blob"];
    // 20 pulls × ≥ 60 ms of service (HEAD, GET manifest, then blobs in parallel: three 20 ms
    // waits) on one puller take ≥ 1.2 s; the last was meant to start at 475 ms.
    assert!(image.max >= 600.0, "the queue is missing from {image:?}");
    assert!(blob.p50 < 200.0, "{blob:?}");

    let mut o = options(
        addr,
        &f,
        Schedule::Fixed {
            pullers: 1,
            duration: Duration::from_millis(500),
        },
    );
    o.passes = Some(1);
    let closed = run(o, "closed".into()).await;
    assert!(
        closed.summary.latency_ms["image"].max < image.max / 2.0,
        "closed {:?} vs open {image:?}",
        closed.summary.latency_ms["image"]
    );
}

/// Failures are counted by kind and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind_and_do_not_stop_the_run() {
    for (fault, kind) in [
        (Fault::Status500, "http_500"),
        (Fault::WrongBytes, "digest"),
        (Fault::Reset, "io"),
    ] {
        let f = fake(3, Duration::ZERO, fault);
        let addr = serve(f.clone()).await;
        let mut o = options(
            addr,
            &f,
            Schedule::Fixed {
                pullers: 2,
                duration: Duration::from_secs(10),
            },
        );
        o.passes = Some(2);
        let mut images = o.images.clone();
        images.push("missing-repo:v1".into());
        o.images = images;
        let r = run(o, kind.into()).await;
        let s = &r.summary;
        assert_eq!(s.images, 0, "{kind}");
        // Two pullers × two passes × (three images + one missing).
        assert_eq!(
            s.error_kinds.get(kind).copied(),
            Some(12),
            "{kind}: {:?}",
            s.error_kinds
        );
        assert_eq!(
            s.error_kinds.get("http_404").copied(),
            Some(4),
            "{kind}: {:?}",
            s.error_kinds
        );
        assert_eq!(s.errors, 16);
    }
}

/// The ramp runs 1, 2, 1 pullers for a step each, and the tallies say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramp_shows_in_the_tallies() {
    let f = fake(4, Duration::from_millis(2), Fault::None);
    let addr = serve(f.clone()).await;
    let o = options(
        addr,
        &f,
        Schedule::Ramp {
            max: 2,
            step: Duration::from_millis(600),
        },
    );
    let r = run(o, "ramp".into()).await;
    assert_eq!(r.summary.errors, 0);
    let pullers: Vec<usize> = r.tallies.iter().map(|t| t.pullers).collect();
    assert!(pullers.contains(&2), "{pullers:?}");
    assert_eq!(pullers.first(), Some(&1), "{pullers:?}");
    assert!(pullers.iter().max() == Some(&2));
    let rates_at = |n: usize| {
        r.tallies
            .iter()
            .filter(|t| t.pullers == n)
            .map(|t| t.images)
            .sum::<u64>()
    };
    assert!(rates_at(1) > 0 && rates_at(2) > 0);
}

/// What a run returns is the report's schema: written as JSON, it reads back whole, with the
/// schema version, and tabulates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_written_in_the_report_schema() {
    let f = fake(2, Duration::from_millis(1), Fault::None);
    let addr = serve(f.clone()).await;
    let o = options(
        addr,
        &f,
        Schedule::Fixed {
            pullers: 1,
            duration: Duration::from_millis(300),
        },
    );
    let r = run(o, "schema".into()).await;
    let json = serde_json::to_vec_pretty(&r).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        value["schema_version"],
        ferry_report::results::SCHEMA_VERSION
    );
    let read = ferry_report::Results::from_json(&json).unwrap();
    // Integers compare exactly; floats may differ in the last bit through decimal text.
    assert!(r.summary.images > 0, "{value}");
    assert_eq!(
        (
            read.summary.images,
            read.summary.requests,
            read.tallies.len()
        ),
        (r.summary.images, r.summary.requests, r.tallies.len())
    );
    assert!(
        ferry_report::table(&[read]).contains(&format!("| schema | {} |", r.summary.images)),
        "{value}"
    );
}

/// The controller follows the ramp to the instant (paused time: no server, every puller's list is
/// empty, so only the schedule acts): sampled mid-step, the tallies read 1, 2, 3, 2, 1 pullers.
#[tokio::test(start_paused = true)]
async fn the_schedule_is_exact_in_paused_time() {
    let o = RunOptions {
        target: "127.0.0.1:9".into(),
        addressing: Addressing::Plain,
        images: vec!["a-0001:v1".into()],
        patterns: vec!["-9999".into()],
        schedule: Schedule::Ramp {
            max: 3,
            step: Duration::from_secs(10),
        },
        tally: Duration::from_secs(5),
        layer_concurrency: 3,
        verify: true,
        platform: ("linux".into(), "amd64".into()),
        passes: None,
        rate: None,
        prune: None,
        timeout: Duration::from_secs(10),
        live: false,
        tar_dir: None,
    };
    let start = tokio::time::Instant::now();
    let r = run(o, "paused".into()).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(50),
        "the ramp's length"
    );
    let mid_step: Vec<(u64, usize)> = r
        .tallies
        .iter()
        .map(|t| (t.t.round() as u64, t.pullers))
        .filter(|(t, _)| t % 10 == 5)
        .collect();
    assert_eq!(mid_step, vec![(5, 1), (15, 2), (25, 3), (35, 2), (45, 1)]);
    assert_eq!(r.summary.images, 0);
}
