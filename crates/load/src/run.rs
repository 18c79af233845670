//! `ferry load run`: pullers that pull images the way containerd does, started and stopped on a
//! [`Schedule`], with rates tallied every few seconds and latency recorded in HDR histograms.
//!
//! A pull: `HEAD` the manifest by tag (standard `Accept` list) for its digest, `GET` it by digest,
//! resolve an index to the chosen platform and `GET` that manifest, then `GET` config and layers
//! (`layer_concurrency` at once), each body hashed and checked against its digest.
//!
//! Closed loop (default): each puller pulls its images one after another. Open loop (`rate`):
//! pulls start at fixed intended times whatever the server's speed, and latency counts from the
//! intended start, so a slow server's queueing shows (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ferry_oci::{Digest, Manifest, MediaType};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::Method;
use serde::Serialize;

use crate::http::{BodyUse, Failure, Http};
use crate::schedule::{Schedule, partition};

/// Largest manifest the driver reads.
const MAX_MANIFEST: usize = 4 << 20;
/// Largest blob held in memory to write `--tar-dir` archives.
const MAX_KEPT_BLOB: usize = 256 << 20;

/// How requests name the upstream when the target is a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Addressing {
    /// `/v2/<repo>/…`.
    Plain,
    /// `/v2/<repo>/…?ns=<registry>` (containerd's mirror form).
    Ns(String),
    /// An `X-Registry: <registry>` header.
    Header(String),
    /// `/v2/<registry>/<repo>/…`.
    InPath(String),
}

/// What to do after each pass over a puller's images.
#[derive(Debug, Clone)]
pub enum Prune {
    /// Delete them from a ferry mirror through its admin API.
    Ferry {
        /// `http://host:port` of the mirror.
        url: String,
        /// Its admin token.
        token: String,
    },
    /// Run `sh -c <command>` with the images (`repo:tag`, space-separated) in `FERRY_LOAD_IMAGES`.
    Command(String),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `host:port` of the server measured.
    pub target: String,
    /// How requests name the upstream.
    pub addressing: Addressing,
    /// Images, `repo:tag`.
    pub images: Vec<String>,
    /// Batch patterns, one puller each (cycled).
    pub patterns: Vec<String>,
    /// Pullers over time.
    pub schedule: Schedule,
    /// Rate rows every this long.
    pub tally: Duration,
    /// Blobs fetched at once per pull.
    pub layer_concurrency: usize,
    /// Check every digest.
    pub verify: bool,
    /// `os/arch` chosen from an index.
    pub platform: (String, String),
    /// Stop each puller after this many passes over its images.
    pub passes: Option<u64>,
    /// Open loop: images started per second across all pullers.
    pub rate: Option<f64>,
    /// After each pass.
    pub prune: Option<Prune>,
    /// Per request.
    pub timeout: Duration,
    /// Print a row per tally.
    pub live: bool,
    /// Write each pulled image here as a docker-save tar (as imgpull does).
    pub tar_dir: Option<std::path::PathBuf>,
}

/// The results file: one schema, owned by `ferry-report`, which reads what this writes.
pub use ferry_report::results::{Percentiles, Results, SCHEMA_VERSION, Summary, Tally};

/// Latency percentiles in milliseconds of a histogram of microseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

#[derive(Debug, Default)]
struct Counters {
    images: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn fail(&self, f: &Failure) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(f.kind())
            .or_default() += 1;
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Per-puller histograms (merged at the end; no lock on the hot path).
#[derive(Debug)]
struct Latencies(BTreeMap<&'static str, Histogram<u64>>);

impl Latencies {
    fn new() -> Latencies {
        Latencies(BTreeMap::new())
    }

    fn record(&mut self, kind: &'static str, d: Duration) {
        let h = self.0.entry(kind).or_insert_with(|| {
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
        });
        let _ = h.record((d.as_micros() as u64).max(1));
    }

    fn merge(&mut self, other: Latencies) {
        for (k, h) in other.0 {
            match self.0.get_mut(k) {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => {
                    self.0.insert(k, h);
                }
            }
        }
    }
}

/// Request paths and headers for one image under the run's addressing.
struct Addresser<'a>(&'a Addressing);

impl Addresser<'_> {
    fn path(&self, repo: &str, rest: &str) -> String {
        match self.0 {
            Addressing::Plain | Addressing::Header(_) => format!("/v2/{repo}/{rest}"),
            Addressing::Ns(ns) => format!("/v2/{repo}/{rest}?ns={ns}"),
            Addressing::InPath(ns) => format!("/v2/{ns}/{repo}/{rest}"),
        }
    }

    fn headers<'h>(&'h self, accept: Option<&'h str>) -> Vec<(&'h str, &'h str)> {
        let mut h = Vec::new();
        if let Some(a) = accept {
            h.push(("accept", a));
        }
        if let Addressing::Header(r) = self.0 {
            h.push(("x-registry", r.as_str()));
        }
        h
    }
}

/// Pulls `image` (`repo:tag`); the requests it made, and its failure if any.
async fn pull(
    http: &Http,
    o: &RunOptions,
    image: &str,
    lat: &mut Latencies,
    counters: &Counters,
) -> Result<(), Failure> {
    let a = Addresser(&o.addressing);
    let (repo, tag) = image.rsplit_once(':').ok_or(Failure::Protocol)?;
    let count = |n: u64, bytes: u64| {
        counters.requests.fetch_add(n, Ordering::Relaxed);
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    };
    let ok = |status: http::StatusCode| {
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status.as_u16()))
        }
    };
    // Resolve the tag as containerd does: HEAD for the digest.
    let t = Instant::now();
    let head = http
        .exchange(
            Method::HEAD,
            &a.path(repo, &format!("manifests/{tag}")),
            &a.headers(Some(MediaType::ACCEPT_ALL)),
            BodyUse::Drain,
        )
        .await?;
    lat.record("manifest_head", t.elapsed());
    count(1, 0);
    ok(head.status)?;
    let digest: Option<Digest> = head
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    // Without a digest header (static file servers), containerd GETs the tag instead.
    let mut manifest = match &digest {
        Some(d) => get_manifest(http, o, &a, repo, d.as_str(), Some(d), lat, counters).await?,
        None => get_manifest(http, o, &a, repo, tag, None, lat, counters).await?,
    };
    if manifest.media_type().is_index() {
        let (os, arch) = &o.platform;
        let child = manifest
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| &p.os == os && &p.architecture == arch)
            })
            .ok_or(Failure::Protocol)?
            .digest
            .clone();
        manifest = get_manifest(
            http,
            o,
            &a,
            repo,
            child.as_str(),
            Some(&child),
            lat,
            counters,
        )
        .await?;
    }
    let blobs: Vec<Digest> = manifest
        .blob_references()
        .map(|d| d.digest.clone())
        .collect();
    let keep = o.tar_dir.is_some();
    let results: Vec<(Digest, Result<bytes::Bytes, Failure>, Duration)> =
        futures_util::stream::iter(blobs)
            .map(|d| {
                let a = &a;
                async move {
                    let t = Instant::now();
                    let use_ = if keep {
                        BodyUse::Keep(MAX_KEPT_BLOB)
                    } else if o.verify {
                        BodyUse::Hash(d.algorithm())
                    } else {
                        BodyUse::Drain
                    };
                    let r = http
                        .exchange(
                            Method::GET,
                            &a.path(repo, &format!("blobs/{d}")),
                            &a.headers(None),
                            use_,
                        )
                        .await
                        .and_then(|ans| {
                            count(1, ans.len);
                            ok(ans.status)?;
                            let got = match ans.digest {
                                Some(g) => Some(g),
                                None if keep && o.verify => {
                                    Some(Digest::of(d.algorithm(), &ans.body))
                                }
                                None => None,
                            };
                            match got {
                                Some(got) if got != d => Err(Failure::Digest),
                                _ => Ok(ans.body),
                            }
                        });
                    (d, r, t.elapsed())
                }
            })
            .buffer_unordered(o.layer_concurrency.max(1))
            .collect()
            .await;
    let mut bodies = std::collections::HashMap::new();
    for (digest, r, d) in results {
        lat.record("blob", d);
        bodies.insert(digest, r?);
    }
    if let Some(dir) = &o.tar_dir {
        // Like imgpull: the pulled image as a docker-save tar, written before the pull counts.
        let blob = |d: &Digest| -> Result<crate::image::Blob, Failure> {
            let bytes = bodies.get(d).ok_or(Failure::Protocol)?;
            Ok(crate::image::Blob {
                media_type: String::new(),
                digest: d.clone(),
                bytes: bytes.to_vec(),
            })
        };
        let img = crate::generate::GeneratedImage {
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            batch: 0,
            top: crate::image::Blob::new(manifest.media_type().as_str(), manifest.bytes().to_vec()),
            children: Vec::new(),
            blobs: manifest
                .blob_references()
                .map(|d| blob(&d.digest))
                .collect::<Result<_, _>>()?,
        };
        let path = dir.join(format!("{repo}_{tag}.tar").replace('/', "_"));
        let name = ferry_oci::Reference::parse(&format!("{}/{repo}:{tag}", o.target))
            .map_err(|_| Failure::Protocol)?;
        tokio::task::spawn_blocking(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let w = std::io::BufWriter::new(std::fs::File::create(path)?);
                crate::generate::write_archive(w, &img, &name)?
                    .into_inner()
                    .map_err(|e| e.into_error())?;
                Ok(())
            },
        )
        .await
        .map_err(|_| Failure::Protocol)?
        .map_err(|_| Failure::Io)?;
    }
    Ok(())
}

/// `GET` a manifest by `reference`; checked against `digest` when one is known.
#[allow(clippy::too_many_arguments)]
async fn get_manifest(
    http: &Http,
    o: &RunOptions,
    a: &Addresser<'_>,
    repo: &str,
    reference: &str,
    digest: Option<&Digest>,
    lat: &mut Latencies,
    counters: &Counters,
) -> Result<Manifest, Failure> {
    let t = Instant::now();
    let ans = http
        .exchange(
            Method::GET,
            &a.path(repo, &format!("manifests/{reference}")),
            &a.headers(Some(MediaType::ACCEPT_ALL)),
            BodyUse::Keep(MAX_MANIFEST),
        )
        .await?;
    lat.record("manifest", t.elapsed());
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(ans.len, Ordering::Relaxed);
    if !ans.status.is_success() {
        return Err(Failure::Status(ans.status.as_u16()));
    }
    if let Some(d) = digest
        && o.verify
        && Digest::of(d.algorithm(), &ans.body) != *d
    {
        return Err(Failure::Digest);
    }
    // A static server's `application/octet-stream` says nothing: the body's mediaType decides.
    let ct = ans
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.contains("manifest") || v.contains("image.index"))
        .map(str::to_owned);
    let algorithm = digest.map_or(ferry_oci::Algorithm::Sha256, Digest::algorithm);
    Manifest::parse_as(ans.body.to_vec(), ct.as_deref(), algorithm).map_err(|_| Failure::Protocol)
}

async fn prune(p: &Prune, images: &[&String]) {
    match p {
        Prune::Ferry { url, token } => {
            if let Err(f) = admin_prune(url, token, images).await {
                eprintln!(
                    "warning: pruning through the admin API failed: {}",
                    f.kind()
                );
            }
        }
        Prune::Command(cmd) => {
            let list: Vec<&str> = images.iter().map(|s| s.as_str()).collect();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("FERRY_LOAD_IMAGES", list.join(" "))
                .status()
                .await;
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("warning: --prune-cmd {cmd:?} failed");
            }
        }
    }
}

/// `POST /admin/prune?pattern=/<repo>:` per image on a ferry mirror (the cached repository name
/// carries the upstream's prefix, so the pattern anchors on `/<repo>:`).
async fn admin_prune(url: &str, token: &str, images: &[&String]) -> Result<(), Failure> {
    let authority = url
        .strip_prefix("http://")
        .ok_or(Failure::Protocol)?
        .trim_end_matches('/');
    let http = Http::new(authority, Duration::from_secs(30));
    let auth = format!("Bearer {token}");
    let mut repos: Vec<&str> = images
        .iter()
        .filter_map(|i| i.rsplit_once(':').map(|(r, _)| r))
        .collect();
    repos.sort_unstable();
    repos.dedup();
    // A few requests per pass, not one per repository: each prune also collects garbage.
    for chunk in repos.chunks(64) {
        let alternatives: Vec<String> = chunk.iter().map(|r| regex_escape(r)).collect();
        // Cached repositories are `<upstream prefix>/<repo>`: anchor on exactly one component.
        let pattern = format!("^[^/]+/({}):", alternatives.join("|"));
        let q: String = form_urlencoded(&pattern);
        let ans = http
            .exchange(
                Method::POST,
                &format!("/admin/prune?pattern={q}"),
                &[("authorization", auth.as_str())],
                BodyUse::Drain,
            )
            .await?;
        if !ans.status.is_success() {
            return Err(Failure::Status(ans.status.as_u16()));
        }
    }
    Ok(())
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn form_urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why the images of a registry could not be listed: the registry's answers, or no answer.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No answer: no connection, a broken one, or a timeout.
    #[error("GET {path}: {}", failure.kind())]
    Request {
        /// The request's path.
        path: String,
        /// What went wrong.
        failure: Failure,
    },
    /// The registry answered with an error status.
    #[error("GET {path}: {status}")]
    Status {
        /// The request's path.
        path: String,
        /// Its answer.
        status: http::StatusCode,
    },
    /// The catalog is not the JSON the distribution spec says.
    #[error("catalog")]
    Catalog(#[source] serde_json::Error),
    /// A repository's tag list is not the JSON the distribution spec says.
    #[error("tags of {repo}")]
    Tags {
        /// The repository.
        repo: String,
        /// Where the parse failed.
        #[source]
        source: serde_json::Error,
    },
}

/// Every `repo:tag` of the registry at `addr` (`host:port`, plain HTTP): the catalog, page by
/// page, then each repository's tags.
pub async fn list_images(addr: &str) -> Result<Vec<String>, ListError> {
    #[derive(serde::Deserialize)]
    struct Catalog {
        #[serde(default)]
        repositories: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let http = Http::new(addr, Duration::from_secs(30));
    let get = |path: String| {
        let http = &http;
        async move {
            let ans = http
                .exchange(Method::GET, &path, &[], BodyUse::Keep(64 << 20))
                .await
                .map_err(|failure| ListError::Request {
                    path: path.clone(),
                    failure,
                })?;
            if !ans.status.is_success() {
                return Err(ListError::Status {
                    path,
                    status: ans.status,
                });
            }
            Ok(ans.body)
        }
    };
    let mut repos = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let path = match &last {
            Some(l) => format!("/v2/_catalog?n=1000&last={}", form_urlencoded(l)),
            None => "/v2/_catalog?n=1000".to_owned(),
        };
        let page: Catalog =
            serde_json::from_slice(&get(path).await?).map_err(ListError::Catalog)?;
        let n = page.repositories.len();
        // Registries that ignore `n` return everything at once; a repeated page ends the loop.
        let fresh: Vec<String> = page
            .repositories
            .into_iter()
            .filter(|r| last.as_ref().is_none_or(|l| r > l))
            .collect();
        if fresh.is_empty() {
            break;
        }
        last = fresh.last().cloned();
        repos.extend(fresh);
        if n < 1000 {
            break;
        }
    }
    let mut images = Vec::new();
    for r in repos {
        let t: Tags = serde_json::from_slice(&get(format!("/v2/{r}/tags/list")).await?).map_err(
            |source| ListError::Tags {
                repo: r.clone(),
                source,
            },
        )?;
        images.extend(
            t.tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| format!("{r}:{t}")),
        );
    }
    Ok(images)
}

/// Runs the load; returns the results when the schedule is over.
pub async fn run(o: RunOptions, label: String) -> Results {
    let o = Arc::new(o);
    let counters = Arc::new(Counters::default());
    // Tokio's clock, so that schedules run (and are tested) in paused time too.
    let started = tokio::time::Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let max = o.schedule.max_pullers();
    let lists: Vec<Vec<String>> = partition(&o.images, &o.patterns, max)
        .into_iter()
        .map(|l| l.into_iter().cloned().collect())
        .collect();
    let live_pullers = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tally = tokio::spawn(tally_loop(
        o.clone(),
        counters.clone(),
        live_pullers.clone(),
        started,
        rows.clone(),
    ));
    let latencies = if let Some(rate) = o.rate {
        live_pullers.store(max as u64, Ordering::Relaxed);
        open_loop(&o, &counters, &lists, rate, started).await
    } else {
        closed_loop(&o, &counters, &lists, &live_pullers, started).await
    };
    let duration = started.elapsed();
    tally.abort();
    let _ = tally.await;
    let tallies = rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let secs = duration.as_secs_f64().max(1e-9);
    let images = counters.images.load(Ordering::Relaxed);
    let requests = counters.requests.load(Ordering::Relaxed);
    let error_kinds = counters.errors();
    Results {
        schema_version: SCHEMA_VERSION,
        target: o.target.clone(),
        label,
        started_unix,
        mode: if o.rate.is_some() { "open" } else { "closed" }.into(),
        summary: Summary {
            images,
            images_per_sec: images as f64 / secs,
            requests,
            requests_per_sec: requests as f64 / secs,
            bytes: counters.bytes.load(Ordering::Relaxed),
            errors: error_kinds.values().sum(),
            error_kinds,
            duration_secs: secs,
            latency_ms: latencies
                .0
                .iter()
                .map(|(k, h)| ((*k).to_owned(), percentiles(h)))
                .collect(),
        },
        tallies,
        replay: None,
    }
}

/// Appends a tally row to `rows` every tally interval until aborted.
async fn tally_loop(
    o: Arc<RunOptions>,
    counters: Arc<Counters>,
    pullers: Arc<AtomicU64>,
    started: tokio::time::Instant,
    rows: Arc<std::sync::Mutex<Vec<Tally>>>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + o.tally, o.tally);
    let (mut images, mut requests, mut bytes) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let secs = o.tally.as_secs_f64();
    if o.live {
        eprintln!(
            "{:>8} {:>7} {:>10} {:>12} {:>9}  errors",
            "t(s)", "pullers", "images/s", "requests/s", "MB/s"
        );
    }
    loop {
        tick.tick().await;
        let (i, r, b) = (
            counters.images.load(Ordering::Relaxed),
            counters.requests.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed),
        );
        let now_errors = counters.errors();
        let delta: BTreeMap<String, u64> = now_errors
            .iter()
            .map(|(k, v)| (k.clone(), v - errors.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let row = Tally {
            t: started.elapsed().as_secs_f64(),
            pullers: pullers.load(Ordering::Relaxed) as usize,
            images: i - images,
            images_per_sec: (i - images) as f64 / secs,
            requests_per_sec: (r - requests) as f64 / secs,
            mb_per_sec: (b - bytes) as f64 / secs / 1e6,
            errors: delta,
        };
        if o.live {
            eprintln!(
                "{:>8.1} {:>7} {:>10.1} {:>12.1} {:>9.2}  {}",
                row.t,
                row.pullers,
                row.images_per_sec,
                row.requests_per_sec,
                row.mb_per_sec,
                row.errors
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        (images, requests, bytes, errors) = (i, r, b, now_errors);
        rows.lock().unwrap_or_else(|e| e.into_inner()).push(row);
    }
}

async fn closed_loop(
    o: &Arc<RunOptions>,
    counters: &Arc<Counters>,
    lists: &[Vec<String>],
    live: &Arc<AtomicU64>,
    started: tokio::time::Instant,
) -> Latencies {
    let mut workers: Vec<(Arc<AtomicBool>, tokio::task::JoinHandle<Latencies>)> = Vec::new();
    let finished = Arc::new(tokio::sync::Notify::new());
    let done_count = Arc::new(AtomicU64::new(0));
    for (at, n) in o.schedule.changes() {
        let until = started + at;
        // With --passes, the run ends early once every puller has done its passes.
        loop {
            let all_done = o.passes.is_some()
                && !workers.is_empty()
                && done_count.load(Ordering::SeqCst) == workers.len() as u64;
            if all_done {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = finished.notified() => {}
            }
        }
        if o.passes.is_some()
            && !workers.is_empty()
            && done_count.load(Ordering::SeqCst) == workers.len() as u64
        {
            break;
        }
        while workers
            .iter()
            .filter(|(s, _)| !s.load(Ordering::Relaxed))
            .count()
            < n
        {
            let k = workers.len() % lists.len().max(1);
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = stop.clone();
            let list = lists.get(k).cloned().unwrap_or_default();
            let (o2, c2, done, count) = (
                o.clone(),
                counters.clone(),
                finished.clone(),
                done_count.clone(),
            );
            let handle = tokio::spawn(async move {
                let lat = puller(o2, c2, list, stop2).await;
                count.fetch_add(1, Ordering::SeqCst);
                done.notify_one();
                lat
            });
            workers.push((stop, handle));
        }
        // Newest first, like the ramp down of the seed's driver.
        let mut running = workers
            .iter()
            .filter(|(s, _)| !s.load(Ordering::Relaxed))
            .count();
        for (stop, _) in workers.iter().rev() {
            if running <= n {
                break;
            }
            if !stop.swap(true, Ordering::Relaxed) {
                running -= 1;
            }
        }
        if n > 0 {
            live.store(n as u64, Ordering::Relaxed);
        }
    }
    let mut all = Latencies::new();
    for (stop, h) in workers {
        stop.store(true, Ordering::Relaxed);
        if let Ok(l) = h.await {
            all.merge(l);
        }
    }
    all
}

async fn puller(
    o: Arc<RunOptions>,
    counters: Arc<Counters>,
    list: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Latencies {
    let http = Http::new(&o.target, o.timeout);
    let mut lat = Latencies::new();
    if list.is_empty() {
        return lat;
    }
    let mut pass = 0u64;
    'passes: while !stop.load(Ordering::Relaxed) {
        for image in &list {
            if stop.load(Ordering::Relaxed) {
                break 'passes;
            }
            let t = Instant::now();
            match pull(&http, &o, image, &mut lat, &counters).await {
                Ok(()) => {
                    lat.record("image", t.elapsed());
                    counters.images.fetch_add(1, Ordering::Relaxed);
                }
                Err(f) => counters.fail(&f),
            }
        }
        pass += 1;
        if let Some(p) = &o.prune {
            prune(p, &list.iter().collect::<Vec<_>>()).await;
        }
        if o.passes.is_some_and(|n| pass >= n) {
            break;
        }
    }
    lat
}

async fn open_loop(
    o: &Arc<RunOptions>,
    counters: &Arc<Counters>,
    lists: &[Vec<String>],
    rate: f64,
    started: tokio::time::Instant,
) -> Latencies {
    let all: Vec<String> = lists.iter().flatten().cloned().collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(o.schedule.max_pullers().max(1)));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let end = o.schedule.total();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Latencies>();
    // Merged as they come, so memory stays at about one set of histograms per running pull.
    let collector = tokio::spawn(async move {
        let mut all = Latencies::new();
        while let Some(l) = rx.recv().await {
            all.merge(l);
        }
        all
    });
    let mut k = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let intended = interval * k as u32;
        if intended >= end || all.is_empty() {
            break;
        }
        tokio::time::sleep_until(started + intended).await;
        let image = all[k % all.len()].clone();
        let (o, counters, permits, tx) = (o.clone(), counters.clone(), permits.clone(), tx.clone());
        let intended_at = started + intended;
        tasks.spawn(async move {
            // Waiting for a free puller is part of the latency: it is measured from the intended
            // start.
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let http = Http::new(&o.target, o.timeout);
            let mut lat = Latencies::new();
            match pull(&http, &o, &image, &mut lat, &counters).await {
                Ok(()) => {
                    lat.record("image", intended_at.elapsed());
                    counters.images.fetch_add(1, Ordering::Relaxed);
                }
                Err(f) => counters.fail(&f),
            }
            let _ = tx.send(lat);
        });
        k += 1;
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
    collector.await.unwrap_or_else(|_| Latencies::new())
}
