//! `ferry trace run`: replays a trace's GETs of blobs and manifests through a warmup map on the
//! load lab's HTTP driver ([`ferry_load::http::Http`]), checks every body's size and digest,
//! and measures latency and schedule lag by kind in HDR histograms. Several registries share
//! the objects by consistent hashing ([`Ring`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ferry_load::http::{BodyUse, Failure, Http};
use ferry_oci::{Algorithm, MediaType};
use ferry_report::results::{KindFigures, Replay, Results, SCHEMA_VERSION, Summary};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::map::{MapEntry, ObjectKind, WarmupMap, object_of};
use super::pace::{Pace, pace};
use super::ring::Ring;
use crate::request::Request;

/// Why a replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A registry URL the driver cannot use.
    #[error("registry {url:?}: {why}")]
    Registry {
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// An option out of range.
    #[error("{0}")]
    Option(String),
}

/// The `host:port` of a registry URL (`http://host:port`): the driver speaks plain HTTP/1.1.
pub fn registry_address(url: &str) -> Result<String, RunError> {
    let bad = |why: &str| RunError::Registry {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http://host:port"))?;
    match scheme {
        "http" => {}
        "https" => {
            return Err(bad(
                "the replay driver speaks plain HTTP only: give http://host:port (put a TLS terminator in front for https)",
            ));
        }
        _ => return Err(bad("unknown scheme: expected http://host:port")),
    }
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || !host.contains(':') {
        return Err(bad("expected http://host:port (with the port, no path)"));
    }
    Ok(host.to_owned())
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Registry URLs (`http://host:port`), shared by consistent hashing.
    pub registries: Vec<String>,
    /// Timing.
    pub pace: Pace,
    /// Limit on one exchange.
    pub timeout: Duration,
    /// A label for the results.
    pub label: String,
    /// The shard replayed (`i/N`), for the results.
    pub shard: Option<String>,
}

/// One kind's histograms and counts while replaying.
#[derive(Debug)]
struct KindStats {
    requests: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
}

/// A histogram of microseconds up to an hour, 3 significant digits, as the load lab keeps.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

/// A histogram's recorded buckets as `[value, count]` pairs; [`histogram_from_pairs`] reads them
/// back into the same buckets, so merged shards count exactly.
pub fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// The histogram of [`histogram_pairs`].
pub fn histogram_from_pairs(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = histogram();
    for &(v, n) in pairs {
        let _ = h.record_n(v.min(3_600_000_000), n);
    }
    h
}

impl KindStats {
    fn new() -> KindStats {
        KindStats {
            requests: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
            lag: histogram(),
        }
    }

    fn figures(&self) -> KindFigures {
        KindFigures {
            requests: self.requests,
            errors: self.errors.values().sum(),
            error_kinds: self.errors.clone(),
            bytes: self.bytes,
            latency_ms: ferry_load::run::percentiles(&self.latency),
            lag_ms: ferry_load::run::percentiles(&self.lag),
            latency_us: histogram_pairs(&self.latency),
            lag_us: histogram_pairs(&self.lag),
        }
    }
}

/// What a replay counts besides the requests it sends.
#[derive(Debug, Default)]
struct Unsent {
    unmapped: BTreeMap<String, u64>,
    skipped: u64,
}

/// The outcome of one GET: the bytes received, or why it failed.
fn check(
    entry: &MapEntry,
    answer: Result<ferry_load::http::Answer, Failure>,
) -> (u64, Option<String>) {
    match answer {
        Err(f) => (0, Some(f.kind())),
        Ok(a) if !a.status.is_success() => (a.len, Some(Failure::Status(a.status.as_u16()).kind())),
        Ok(a) if a.len != entry.size => (a.len, Some("size".to_owned())),
        Ok(a) if a.digest.as_ref() != Some(&entry.digest) => (a.len, Some(Failure::Digest.kind())),
        Ok(a) => (a.len, None),
    }
}

/// Replays `requests` (in trace order) through `map` as `o` says; every request sent is also
/// written to `sent_log` as `<registry> <path>` (in send order), if given. Memory holds the
/// map and the requests in flight, not the trace.
pub async fn run(
    requests: impl Iterator<Item = Request>,
    map: &WarmupMap,
    o: &RunOptions,
    mut sent_log: Option<&mut (dyn Write + Send)>,
) -> Result<Results, RunError> {
    if o.registries.is_empty() {
        return Err(RunError::Option("give at least one registry".to_owned()));
    }
    if let Pace::Recorded { speed, .. } = o.pace
        && !(speed.is_finite() && speed > 0.0)
    {
        return Err(RunError::Option(format!(
            "--speed {speed}: must be above 0"
        )));
    }
    let mut drivers = Vec::new();
    for url in &o.registries {
        drivers.push(Arc::new(Http::new(&registry_address(url)?, o.timeout)));
    }
    let ring = Ring::new(o.registries.clone());
    let stats: Arc<Mutex<BTreeMap<ObjectKind, KindStats>>> = Arc::default();
    let mut per_registry = vec![0u64; o.registries.len()];
    let mut unsent = Unsent::default();
    let mut untimed = false;
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let started = Instant::now();
    let recorded = matches!(o.pace, Pace::Recorded { .. });
    let mut requests = requests;
    let items = std::iter::from_fn(|| {
        loop {
            let r = requests.next()?;
            let Some((key, kind)) = object_of(&r) else {
                unsent.skipped += 1;
                continue;
            };
            let Some(e) = map.get(&key) else {
                *unsent.unmapped.entry(kind.as_str().to_owned()).or_default() += 1;
                continue;
            };
            // Recorded pace needs every request's time: stop at the first without one.
            if recorded && r.time_us.is_none() {
                untimed = true;
                return None;
            }
            return Some((r.time_us.unwrap_or(0), e.clone()));
        }
    });
    let paced = pace(items, o.pace, |entry, intended, sent| {
        let node = ring.pick(&entry.uri);
        per_registry[node] += 1;
        let path = entry.path();
        if let Some(log) = sent_log.as_mut() {
            // A log that cannot be written must not stop the replay: it only loses its lines.
            let _ = writeln!(log, "{} {path}", o.registries[node]);
        }
        let http = drivers[node].clone();
        let stats = stats.clone();
        async move {
            let headers: &[(&str, &str)] = match entry.kind {
                ObjectKind::Manifest => &[("accept", MediaType::ACCEPT_ALL)],
                ObjectKind::Blob => &[],
            };
            let answer = http
                .exchange(
                    http::Method::GET,
                    &path,
                    headers,
                    BodyUse::Hash(Algorithm::Sha256),
                )
                .await;
            let latency = sent.elapsed();
            let (bytes, failure) = check(&entry, answer);
            let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
            let k = stats.entry(entry.kind).or_insert_with(KindStats::new);
            k.requests += 1;
            k.bytes += bytes;
            if let Some(f) = failure {
                *k.errors.entry(f).or_default() += 1;
            }
            let _ = k.latency.record((latency.as_micros() as u64).max(1));
            let _ = k.lag.record((sent - intended).as_micros() as u64);
        }
    })
    .await;
    if let Some(log) = sent_log.as_mut() {
        let _ = log.flush();
    }
    let duration = started.elapsed().as_secs_f64().max(1e-9);
    if untimed {
        return Err(RunError::Option(
            "the trace's requests have no timestamps (a URI list?): replay it with --pace asap"
                .to_owned(),
        ));
    }
    let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
    let kinds: BTreeMap<String, KindFigures> = stats
        .iter()
        .map(|(k, s)| (k.as_str().to_owned(), s.figures()))
        .collect();
    let (pace_name, speed) = match o.pace {
        Pace::Recorded { speed, .. } => ("recorded", speed),
        Pace::Asap { .. } => ("asap", 1.0),
    };
    let replay = Replay {
        pace: pace_name.to_owned(),
        speed,
        shard: o.shard.clone(),
        unmapped: unsent.unmapped,
        skipped: unsent.skipped,
        overflowed: paced.overflowed,
        registries: o.registries.iter().cloned().zip(per_registry).collect(),
        kinds,
    };
    Ok(results(
        o.registries.join(","),
        o.label.clone(),
        started_unix,
        duration,
        replay,
    ))
}

/// The results file of a replay: totals in the summary, the rest in [`Replay`].
pub fn results(
    target: String,
    label: String,
    started_unix: u64,
    duration: f64,
    replay: Replay,
) -> Results {
    let mut error_kinds = BTreeMap::new();
    for (kind, f) in &replay.kinds {
        for (e, n) in &f.error_kinds {
            *error_kinds.entry(format!("{kind}_{e}")).or_default() += n;
        }
    }
    let requests: u64 = replay.kinds.values().map(|f| f.requests).sum();
    let latency_ms = replay
        .kinds
        .iter()
        .flat_map(|(k, f)| {
            [
                (k.clone(), f.latency_ms.clone()),
                (format!("{k}_lag"), f.lag_ms.clone()),
            ]
        })
        .collect();
    Results {
        schema_version: SCHEMA_VERSION,
        target,
        label,
        started_unix,
        mode: format!("trace-{}", replay.pace),
        summary: Summary {
            images: 0,
            images_per_sec: 0.0,
            requests,
            requests_per_sec: requests as f64 / duration,
            bytes: replay.kinds.values().map(|f| f.bytes).sum(),
            errors: error_kinds.values().sum(),
            error_kinds,
            duration_secs: duration,
            latency_ms,
        },
        tallies: Vec::new(),
        replay: Some(replay),
    }
}

/// The console table of a replay's results.
pub fn render(r: &Results) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(rp) = &r.replay else {
        return s;
    };
    let _ = writeln!(
        s,
        "{} requests in {:.2} s ({:.1}/s), {} bytes, {} errors; pace {}{}",
        r.summary.requests,
        r.summary.duration_secs,
        r.summary.requests_per_sec,
        r.summary.bytes,
        r.summary.errors,
        rp.pace,
        if rp.pace == "recorded" {
            format!(" ×{}", rp.speed)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "{:<9} {:>9} {:>7} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "kind",
        "requests",
        "errors",
        "bytes",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "lag p50",
        "lag p99",
        "lag max"
    );
    for (k, f) in &rp.kinds {
        let (l, g) = (&f.latency_ms, &f.lag_ms);
        let _ = writeln!(
            s,
            "{k:<9} {:>9} {:>7} {:>13} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            f.requests, f.errors, f.bytes, l.p50, l.p90, l.p99, l.p999, l.max, g.p50, g.p99, g.max
        );
        for (e, n) in &f.error_kinds {
            let _ = writeln!(s, "  {k} errors {e}: {n}");
        }
    }
    let unmapped: u64 = rp.unmapped.values().sum();
    let _ = writeln!(
        s,
        "unmapped (not in the map, not sent): {unmapped}{}; not GETs of blobs or manifests (not replayed): {}; late for --max-in-flight: {}",
        if unmapped > 0 {
            format!(
                " ({})",
                rp.unmapped
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        },
        rp.skipped,
        rp.overflowed
    );
    if rp.registries.len() > 1 {
        for (url, n) in &rp.registries {
            let _ = writeln!(s, "  {url}: {n} requests");
        }
    }
    s
}

/// The shard (of `n`) that replays `r`: by its client, so each client's requests stay together
/// and in their order; a request without a client goes by its URI (its object's shard).
pub fn shard_of(r: &Request, n: u64) -> u64 {
    let key = r.client.as_deref().unwrap_or(&r.uri);
    super::content::hash64(key) % n.max(1)
}

/// Why results cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no results to merge")]
    Empty,
    /// A file is not a replay's results.
    #[error("results {0} are not a trace replay's (`ferry trace run --json` writes those)")]
    NotReplay(usize),
    /// The files are of different replays.
    #[error("results {0} were paced {1}, the first {2}: merge the shards of one replay only")]
    Pace(usize, String, String),
}

/// Merges the results of a replay's shards: counts add up, histograms merge bucket by bucket (so
/// the percentiles are those of one run over all shards), the duration is the longest shard's.
pub fn merge(all: &[Results]) -> Result<Results, MergeError> {
    let first = all.first().ok_or(MergeError::Empty)?;
    let base = first.replay.as_ref().ok_or(MergeError::NotReplay(1))?;
    let mut out = Replay {
        pace: base.pace.clone(),
        speed: base.speed,
        shard: None,
        ..Replay::default()
    };
    let mut hists: BTreeMap<String, (Histogram<u64>, Histogram<u64>, KindFigures)> =
        BTreeMap::new();
    for (i, r) in all.iter().enumerate() {
        let rp = r.replay.as_ref().ok_or(MergeError::NotReplay(i + 1))?;
        let paced = |p: &Replay| format!("{} ×{}", p.pace, p.speed);
        if rp.pace != base.pace || rp.speed != base.speed {
            return Err(MergeError::Pace(i + 1, paced(rp), paced(base)));
        }
        for (k, n) in &rp.unmapped {
            *out.unmapped.entry(k.clone()).or_default() += n;
        }
        out.skipped += rp.skipped;
        out.overflowed += rp.overflowed;
        for (k, n) in &rp.registries {
            *out.registries.entry(k.clone()).or_default() += n;
        }
        for (k, f) in &rp.kinds {
            let (lat, lag, sum) = hists
                .entry(k.clone())
                .or_insert_with(|| (histogram(), histogram(), KindFigures::default()));
            let _ = lat.add(histogram_from_pairs(&f.latency_us));
            let _ = lag.add(histogram_from_pairs(&f.lag_us));
            sum.requests += f.requests;
            sum.bytes += f.bytes;
            for (e, n) in &f.error_kinds {
                *sum.error_kinds.entry(e.clone()).or_default() += n;
            }
        }
    }
    for (k, (lat, lag, mut f)) in hists {
        f.errors = f.error_kinds.values().sum();
        f.latency_ms = ferry_load::run::percentiles(&lat);
        f.lag_ms = ferry_load::run::percentiles(&lag);
        f.latency_us = histogram_pairs(&lat);
        f.lag_us = histogram_pairs(&lag);
        out.kinds.insert(k, f);
    }
    let duration = all
        .iter()
        .map(|r| r.summary.duration_secs)
        .fold(0.0, f64::max)
        .max(1e-9);
    let started = all.iter().map(|r| r.started_unix).min().unwrap_or(0);
    Ok(results(
        first.target.clone(),
        first.label.clone(),
        started,
        duration,
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(latencies_us: &[u64]) -> KindFigures {
        let mut h = histogram();
        for &v in latencies_us {
            h.record(v).unwrap();
        }
        KindFigures {
            requests: latencies_us.len() as u64,
            latency_ms: ferry_load::run::percentiles(&h),
            lag_ms: ferry_load::run::percentiles(&h),
            latency_us: histogram_pairs(&h),
            lag_us: histogram_pairs(&h),
            ..KindFigures::default()
        }
    }

    fn replay(latencies_us: &[u64]) -> Results {
        let rp = Replay {
            pace: "recorded".into(),
            speed: 1.0,
            kinds: [("blob".to_owned(), figures(latencies_us))].into(),
            ..Replay::default()
        };
        results("t".into(), "t".into(), 0, 1.0, rp)
    }

    #[test]
    fn merged_shards_have_the_percentiles_of_one_run() {
        let a: Vec<u64> = (1..=1000).map(|i| i * 37 % 5000 + 1).collect();
        let b: Vec<u64> = (1..=300).map(|i| i * 1_013 + 20_000).collect();
        let whole: Vec<u64> = a.iter().chain(&b).copied().collect();
        let merged = merge(&[replay(&a), replay(&b)]).unwrap();
        let m = &merged.replay.as_ref().unwrap().kinds["blob"];
        let w = figures(&whole);
        assert_eq!(m.requests, 1300);
        assert_eq!(m.latency_ms, w.latency_ms);
        assert_eq!(m.latency_us, w.latency_us);
        assert_eq!(merged.summary.requests, 1300);
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn registry_urls_must_be_plain_http_with_a_port() {
        assert_eq!(
            registry_address("http://127.0.0.1:5000/").unwrap(),
            "127.0.0.1:5000"
        );
        for bad in [
            "127.0.0.1:5000",
            "ftp://h:1",
            "https://h:443",
            "http://h",
            "http://h:1/v2",
        ] {
            assert!(registry_address(bad).is_err(), "{bad}");
        }
    }
}
