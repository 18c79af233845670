//! `ferry trace simulate`: a trace's cache requests replayed offline through replacement policies
//! over a sweep of capacities, on `ferry-policy`'s cache code, the code the mirror evicts with.
//!
//! Cache requests are the GETs of blobs and manifests. Each object is numbered in order of first
//! request and gets one size: the largest any of its responses reported (a trace without sizes
//! can only be simulated in objects). Hits are counted after a warm-up fraction of the requests.
//!
//! Prefetch on manifest (the FAST'18 paper's proposal, [`SimOptions::prefetch`]): a manifest GET
//! is followed by the admission of the layers the same repository had pulled, or pushed, within a
//! window before it, newest first, at most [`PREFETCH_MAX`]; a prefetch is not a request (neither
//! hit nor miss) and skips what is cached.
//!
//! Other simulators get the same input: [`Workload::write_requests`] writes it as `key,size`
//! lines, and [`PluginRequest`] is a cache request as one JSON line for a plugin program.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::time::Duration;

use ferry_policy::cache::{
    Arc as ArcCache, CachePolicy, Capacity, Lfu, Lru, S3Fifo, TwoTier, lru_sweep,
};
use serde::Serialize;

use crate::request::{Kind, Method, Request};

/// Layers one manifest GET prefetches at most.
pub const PREFETCH_MAX: usize = 64;

/// Recent layers remembered per repository for prefetching (the oldest go first).
const PREFETCH_MEMORY: usize = 1024;

/// Numbers a trace's objects as the simulator does: in order of first request, by URI without its
/// query. Memory grows with the distinct objects, not the requests.
#[derive(Debug, Default)]
pub struct ObjectKeys {
    ids: UriMap<u64>,
}

/// A map from URIs or repository names: foldhash, seeded per process (so a trace cannot choose
/// colliding names), costs a fraction of std's SipHash on strings this short.
type UriMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

impl ObjectKeys {
    /// The key of the object `r` asks for, and whether this is its first request; `None` when `r`
    /// is not a cache request.
    pub fn key(&mut self, r: &Request) -> Option<(u64, bool)> {
        if !r.is_cacheable() {
            return None;
        }
        let uri = r.uri.split('?').next().unwrap_or(&r.uri);
        if let Some(&key) = self.ids.get(uri) {
            return Some((key, false));
        }
        let key = self.ids.len() as u64;
        self.ids.insert(uri.to_owned(), key);
        Some((key, true))
    }
}

/// The cache requests of a trace.
#[derive(Debug, Default)]
pub struct Workload {
    keys: Vec<u64>,
    ids: ObjectKeys,
    /// By key: the largest size seen.
    sizes: Vec<Option<u64>>,
    /// By request: microseconds since the epoch (`None` in a URI list).
    times: Vec<Option<i64>>,
    /// By request: its repository's number, with [`MANIFEST`] set for a manifest GET.
    repos: Vec<u32>,
    repo_ids: UriMap<u32>,
    /// Blobs pushed with their digest in the URI: (requests before it, time, repository, blob URI).
    pushes: Vec<(usize, Option<i64>, u32, String)>,
}

/// Marks a manifest GET in [`Workload::repos`].
const MANIFEST: u32 = 1 << 31;
/// A request without a repository.
const NO_REPO: u32 = MANIFEST - 1;

impl Workload {
    fn repo_id(&mut self, repo: Option<&str>) -> u32 {
        let Some(repo) = repo else { return NO_REPO };
        if let Some(&id) = self.repo_ids.get(repo) {
            return id;
        }
        let next = u32::try_from(self.repo_ids.len())
            .unwrap_or(NO_REPO)
            .min(NO_REPO);
        self.repo_ids.insert(repo.to_owned(), next);
        next
    }

    /// Adds `r` if a cache would serve it (or, for a blob pushed with its digest in the URI, notes
    /// the push for prefetching).
    pub fn add(&mut self, r: &Request) {
        if r.method == Method::Put && r.kind == Kind::Upload {
            // `…/blobs/uploads/<session>?digest=<d>` completes the push of `…/blobs/<d>`.
            if let Some((path, query)) = r.uri.split_once('?')
                && let Some(digest) = query.split('&').find_map(|kv| kv.strip_prefix("digest="))
                && let Some(at) = path.rfind("/blobs/uploads")
            {
                let blob = format!("{}/blobs/{}", &path[..at], digest.replace("%3A", ":"));
                let repo = self.repo_id(r.repo.as_deref());
                self.pushes.push((self.keys.len(), r.time_us, repo, blob));
            }
            return;
        }
        let Some((key, first)) = self.ids.key(r) else {
            return;
        };
        let repo = self.repo_id(r.repo.as_deref());
        self.repos.push(if r.kind == Kind::Manifest {
            repo | MANIFEST
        } else {
            repo
        });
        self.times.push(r.time_us);
        if first {
            self.sizes.push(None);
        }
        let size = r.size.filter(|_| r.status.is_none_or(|s| s == 200));
        let slot = &mut self.sizes[key as usize];
        *slot = (*slot).max(size);
        self.keys.push(key);
    }

    /// Cache requests.
    pub fn requests(&self) -> usize {
        self.keys.len()
    }

    /// Distinct objects.
    pub fn objects(&self) -> usize {
        self.sizes.len()
    }

    /// Bytes of all distinct objects (the working set), if every size is known.
    pub fn working_set_bytes(&self) -> Option<u64> {
        self.sizes.iter().try_fold(0u64, |sum, s| Some(sum + (*s)?))
    }

    fn size(&self, key: u64) -> u64 {
        self.sizes[key as usize].unwrap_or(0)
    }

    /// What each manifest GET prefetches with a `window`: (request index, keys), in request order.
    /// Pushed blobs never requested in the trace have no size and are left out.
    pub fn prefetch_plan(&self, window: Duration) -> Result<Vec<(usize, Vec<u64>)>, SimulateError> {
        let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let mut recent: HashMap<u32, VecDeque<(i64, u64)>> = HashMap::new();
        let remember = |recent: &mut HashMap<u32, VecDeque<(i64, u64)>>, repo, t, key| {
            let q = recent.entry(repo).or_default();
            if q.len() == PREFETCH_MEMORY {
                q.pop_front();
            }
            q.push_back((t, key));
        };
        let mut pushes = self.pushes.iter().peekable();
        let mut plan = Vec::new();
        for (i, (&key, (&repo, &time))) in self
            .keys
            .iter()
            .zip(self.repos.iter().zip(&self.times))
            .enumerate()
        {
            let t = time.ok_or(SimulateError::NoTimes)?;
            while let Some((_, pt, prepo, uri)) = pushes.next_if(|p| p.0 <= i) {
                if let (Some(pt), Some(&pkey)) = (pt, self.ids.ids.get(uri))
                    && *prepo != NO_REPO
                {
                    remember(&mut recent, *prepo, *pt, pkey);
                }
            }
            let id = repo & !MANIFEST;
            if id == NO_REPO {
                continue;
            }
            if repo & MANIFEST == 0 {
                remember(&mut recent, id, t, key);
                continue;
            }
            let Some(q) = recent.get_mut(&id) else {
                continue;
            };
            while q
                .front()
                .is_some_and(|&(at, _)| at < t.saturating_sub(window))
            {
                q.pop_front();
            }
            let mut seen = HashSet::new();
            let keys: Vec<u64> = q
                .iter()
                .rev()
                .filter(|&&(at, k)| at <= t && seen.insert(k))
                .map(|&(_, k)| k)
                .take(PREFETCH_MAX)
                .collect();
            if !keys.is_empty() {
                plan.push((i, keys));
            }
        }
        Ok(plan)
    }

    /// Writes the requests as the simulator replays them, for another simulator: a `key,size`
    /// header, then one line a request with the object's key and its size (the largest the trace
    /// recorded for it; empty when the trace has none).
    pub fn write_requests(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(b"key,size\n")?;
        for &key in &self.keys {
            match self.sizes[key as usize] {
                Some(size) => writeln!(out, "{key},{size}")?,
                None => writeln!(out, "{key},")?,
            }
        }
        out.flush()
    }
}

/// How to run a simulation beyond its policies and capacities.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SimOptions {
    /// Fraction of the requests that only warms the cache up.
    pub warmup: f64,
    /// Prefetch on manifest GETs the layers of its repository requested or pushed within this
    /// window before it.
    pub prefetch: Option<Duration>,
}

/// A cache request as `ferry trace simulate --plugin` hands it to a plugin program, one JSON object
/// a line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginRequest<'a> {
    /// Arrival time as the traces write it (`2017-06-20T00:00:03.589Z`); `null` in a URI list.
    pub time: Option<String>,
    /// The (anonymized) client.
    pub client: Option<&'a str>,
    /// `GET`.
    pub method: &'static str,
    /// `blob` or `manifest`.
    pub kind: &'static str,
    /// The repository.
    pub repository: Option<&'a str>,
    /// The digest or tag.
    pub reference: Option<&'a str>,
    /// The object's number, as the simulator's own replay and `--export-requests` number it.
    pub key: u64,
    /// Bytes this response carried (the simulator gives each object the largest size of its
    /// successful responses).
    pub size: Option<u64>,
    /// The response status.
    pub status: Option<u16>,
}

impl<'a> PluginRequest<'a> {
    /// `r` as a plugin sees it, with the object key `key`.
    pub fn new(r: &'a Request, key: u64) -> PluginRequest<'a> {
        PluginRequest {
            time: r.time_us.map(crate::format_timestamp),
            client: r.client.as_deref(),
            method: r.method.as_str(),
            kind: r.kind.as_str(),
            repository: r.repo.as_deref(),
            reference: r.reference.as_deref(),
            key,
            size: r.size,
            status: r.status,
        }
    }
}

/// The replacement policies the simulator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Least recently used.
    Lru,
    /// Least frequently used (ties: least recent).
    Lfu,
    /// S3-FIFO: small, main and ghost FIFOs.
    S3Fifo,
    /// ARC: recency and frequency lists with ghosts (capacities in objects only).
    Arc,
    /// The FAST'18 paper's memory + SSD LRU: the capacity is the memory tier's, the SSD tier
    /// `ssd_ratio` times it, objects over `bypass_above` bytes skip memory.
    TwoTier {
        /// SSD tier ÷ memory tier.
        ssd_ratio: u64,
        /// Objects larger than this many bytes go to the SSD tier only.
        bypass_above: u64,
    },
}

/// The two-tier cache's SSD tier, in multiples of the memory tier, unless given.
pub const DEFAULT_SSD_RATIO: u64 = 10;
/// Objects above this size skip the two-tier cache's memory tier, unless given: 1 MB, under
/// which about two thirds of the sample's blobs fall.
pub const DEFAULT_BYPASS_ABOVE: u64 = 1_000_000;

impl Policy {
    /// Its name, as `--policy` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
            Policy::S3Fifo => "s3-fifo",
            Policy::Arc => "arc",
            Policy::TwoTier { .. } => "two-tier",
        }
    }

    /// The policy called `s`.
    pub fn parse(s: &str) -> Result<Policy, SimulateError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lru" => Ok(Policy::Lru),
            "lfu" => Ok(Policy::Lfu),
            "s3-fifo" | "s3fifo" => Ok(Policy::S3Fifo),
            "arc" => Ok(Policy::Arc),
            "two-tier" | "twotier" => Ok(Policy::TwoTier {
                ssd_ratio: DEFAULT_SSD_RATIO,
                bypass_above: DEFAULT_BYPASS_ABOVE,
            }),
            other => Err(SimulateError::UnknownPolicy(other.to_owned())),
        }
    }

    /// The policy at `capacity`, over the workload's keys (numbered densely from 0, so the
    /// policies index tables by them instead of hashing).
    fn build(self, capacity: Capacity) -> Result<Box<dyn CachePolicy>, SimulateError> {
        Ok(match self {
            Policy::Lru => Box::new(Lru::new(capacity).with_dense_keys()),
            Policy::Lfu => Box::new(Lfu::new(capacity).with_dense_keys()),
            Policy::S3Fifo => Box::new(S3Fifo::new(capacity).with_dense_keys()),
            Policy::Arc => Box::new(
                ArcCache::new(capacity)
                    .ok_or(SimulateError::ObjectsOnly(self.as_str()))?
                    .with_dense_keys(),
            ),
            Policy::TwoTier {
                ssd_ratio,
                bypass_above,
            } => Box::new(TwoTier::new(capacity, ssd_ratio, bypass_above)),
        })
    }
}

/// Why a simulation cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulateError {
    /// `--policy` names a policy the simulator does not have.
    #[error("unknown policy {0:?}; the simulator has: lru, lfu, s3-fifo, arc, two-tier")]
    UnknownPolicy(String),
    /// The policy is defined over objects, not bytes.
    #[error("{0} simulates capacities in objects (--objects), not bytes")]
    ObjectsOnly(&'static str),
    /// Byte capacities need sizes, and some cache request has none.
    #[error(
        "{0} objects have no size in the trace (a URI list has none): simulate capacities in objects (--objects)"
    )]
    NoSizes(usize),
    /// The warm-up fraction is not in [0, 1).
    #[error("the warm-up fraction must be at least 0 and below 1, not {0}")]
    Warmup(String),
    /// Prefetching looks back in time, and some request has no timestamp.
    #[error(
        "prefetching needs timestamps, and this trace has requests without (a URI list has none)"
    )]
    NoTimes,
}

/// One policy at one capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimResult {
    /// The policy.
    pub policy: &'static str,
    /// `objects` or `bytes`.
    pub unit: &'static str,
    /// The capacity in that unit.
    pub capacity: u64,
    /// Cache requests counted (after the warm-up).
    pub requests: u64,
    /// Of them, hits.
    pub hits: u64,
    /// hits ÷ requests.
    pub hit_ratio: f64,
    /// Bytes requested (counted requests).
    pub bytes: u64,
    /// Bytes of the hits.
    pub bytes_hit: u64,
    /// bytes_hit ÷ bytes (0 when the trace has no sizes).
    pub byte_hit_ratio: f64,
    /// Objects admitted by prefetching (counted requests' share; 0 without prefetch).
    pub prefetched: u64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Runs each of `policies` at each of `capacities` over `workload`, counting from the request at
/// `warmup` × its length. LRU over two or more object capacities takes one pass over stack distances for all of them;
/// the rest replay once per capacity.
pub fn simulate(
    workload: &Workload,
    policies: &[Policy],
    capacities: &[Capacity],
    warmup: f64,
) -> Result<Vec<SimResult>, SimulateError> {
    simulate_with(
        workload,
        policies,
        capacities,
        SimOptions {
            warmup,
            prefetch: None,
        },
    )
}

/// [`simulate`] with prefetching as `options` say (LRU then replays once per capacity too).
pub fn simulate_with(
    workload: &Workload,
    policies: &[Policy],
    capacities: &[Capacity],
    options: SimOptions,
) -> Result<Vec<SimResult>, SimulateError> {
    let warmup = options.warmup;
    if !(0.0..1.0).contains(&warmup) {
        return Err(SimulateError::Warmup(warmup.to_string()));
    }
    if capacities.iter().any(|c| matches!(c, Capacity::Bytes(_))) {
        let missing = workload.sizes.iter().filter(|s| s.is_none()).count();
        if missing > 0 {
            return Err(SimulateError::NoSizes(missing));
        }
    }
    let plan = match options.prefetch {
        Some(window) => Some(workload.prefetch_plan(window)?),
        None => None,
    };
    let from = (warmup * workload.keys.len() as f64) as usize;
    let counted = &workload.keys[from.min(workload.keys.len())..];
    let requests = counted.len() as u64;
    let bytes: u64 = counted.iter().map(|&k| workload.size(k)).sum();
    let result = |policy: Policy, capacity: Capacity, (hits, bytes_hit, prefetched)| SimResult {
        policy: policy.as_str(),
        unit: match capacity {
            Capacity::Objects(_) => "objects",
            Capacity::Bytes(_) => "bytes",
        },
        capacity: capacity.amount(),
        requests,
        hits,
        hit_ratio: ratio(hits, requests),
        bytes,
        bytes_hit,
        byte_hit_ratio: ratio(bytes_hit, bytes),
        prefetched,
    };
    let mut out = Vec::new();
    for &policy in policies {
        let objects: Vec<u64> = capacities
            .iter()
            .filter_map(|c| match c {
                Capacity::Objects(n) => Some(*n),
                Capacity::Bytes(_) => None,
            })
            .collect();
        // One pass over stack distances serves every capacity at O(log n) a request; a single
        // capacity replays faster through the policy itself.
        let swept: HashMap<u64, (u64, u64)> =
            if policy == Policy::Lru && objects.len() > 1 && plan.is_none() {
                let keys = &workload.keys;
                objects
                    .iter()
                    .copied()
                    .zip(lru_sweep(keys, |i| workload.size(keys[i]), &objects, from))
                    .collect()
            } else {
                HashMap::new()
            };
        for &capacity in capacities {
            let counts = match (capacity, swept.get(&capacity.amount())) {
                (Capacity::Objects(_), Some(&(hits, bytes_hit))) => (hits, bytes_hit, 0),
                _ => {
                    let mut cache = policy.build(capacity)?;
                    match &plan {
                        None => replay(workload, cache.as_mut(), from),
                        Some(plan) => replay_prefetching(workload, cache.as_mut(), from, plan),
                    }
                }
            };
            out.push(result(policy, capacity, counts));
        }
    }
    Ok(out)
}

/// (hits, bytes hit, 0) from request `from` on: the simulator's inner loop.
fn replay(workload: &Workload, cache: &mut dyn CachePolicy, from: usize) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for (i, &key) in workload.keys.iter().enumerate() {
        let size = workload.size(key);
        if cache.access(key, size) && i >= from {
            counts.0 += 1;
            counts.1 += size;
        }
    }
    counts
}

/// [`replay`], admitting each manifest GET's prefetches after it; the third count is prefetches
/// from request `from` on.
fn replay_prefetching(
    workload: &Workload,
    cache: &mut dyn CachePolicy,
    from: usize,
    plan: &[(usize, Vec<u64>)],
) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    let mut next = plan.iter().peekable();
    for (i, &key) in workload.keys.iter().enumerate() {
        let size = workload.size(key);
        if cache.access(key, size) && i >= from {
            counts.0 += 1;
            counts.1 += size;
        }
        if let Some((_, keys)) = next.next_if(|(at, _)| *at == i) {
            for &k in keys {
                if !cache.contains(k) {
                    cache.access(k, workload.size(k));
                    if i >= from {
                        counts.2 += 1;
                    }
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Method;

    fn get(uri: &str, size: u64) -> Request {
        let mut r = Request::new(Method::Get, uri.to_owned());
        r.size = Some(size);
        r
    }

    #[test]
    fn lru_over_a_small_trace_as_computed_by_hand() {
        let mut w = Workload::default();
        // A B A C B A, sizes 10, 20, 30; a PUT and a ping are not cache requests.
        for (uri, size) in [
            ("a", 10),
            ("b", 20),
            ("a", 10),
            ("c", 30),
            ("b", 20),
            ("a", 10),
        ] {
            w.add(&get(&format!("v2/r/blobs/{uri}"), size));
        }
        w.add(&Request::new(
            Method::Put,
            "v2/r/blobs/uploads/x".to_owned(),
        ));
        w.add(&Request::new(Method::Get, "v2/".to_owned()));
        assert_eq!(
            (w.requests(), w.objects(), w.working_set_bytes()),
            (6, 3, Some(60))
        );
        let r = simulate(
            &w,
            &[Policy::Lru],
            &[
                Capacity::Objects(2),
                Capacity::Objects(3),
                Capacity::Bytes(40),
            ],
            0.0,
        )
        .unwrap();
        // 2 objects: only the second A hits. 3 objects: A, B, A hit.
        assert_eq!((r[0].hits, r[0].bytes_hit), (1, 10));
        assert_eq!((r[1].hits, r[1].bytes_hit), (3, 40));
        // 40 bytes: A, B, A hits; C evicts B (A 10 + C 30 = 40 fits); B evicts A and C; A misses.
        assert_eq!((r[2].hits, r[2].bytes_hit), (1, 10));
        assert_eq!(r[0].requests, 6);
        assert_eq!(r[0].bytes, 100);
        assert!((r[1].byte_hit_ratio - 0.4).abs() < 1e-12);
        // Warm-up: the first half is not counted.
        let warm = simulate(&w, &[Policy::Lru], &[Capacity::Objects(3)], 0.5).unwrap();
        assert_eq!((warm[0].requests, warm[0].hits), (3, 2));
    }

    #[test]
    fn requests_are_exported_as_the_simulator_replays_them() {
        let mut w = Workload::default();
        // b's sizes: 20, then a smaller partial answer, then a failure: it keeps 20.
        let mut r = get("v2/r/blobs/a?x=1", 10);
        r.time_us = Some(1_497_916_803_589_000);
        w.add(&r);
        w.add(&get("v2/r/blobs/b", 20));
        w.add(&get("v2/r/blobs/a", 10));
        w.add(&get("v2/r/blobs/b", 5));
        let mut failed = get("v2/r/blobs/b", 900);
        failed.status = Some(500);
        w.add(&failed);
        w.add(&Request::new(Method::Get, "v2/r/blobs/c".to_owned()));
        let mut out = Vec::new();
        w.write_requests(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "key,size\n0,10\n1,20\n0,10\n1,20\n1,20\n2,\n"
        );

        let mut keys = ObjectKeys::default();
        assert_eq!(keys.key(&r), Some((0, true)));
        assert_eq!(keys.key(&get("v2/r/blobs/a", 10)), Some((0, false)));
        assert_eq!(keys.key(&Request::new(Method::Get, "v2/".to_owned())), None);
        let line = serde_json::to_string(&PluginRequest::new(&r, 0)).unwrap();
        assert_eq!(
            line,
            r#"{"time":"2017-06-20T00:00:03.589Z","client":null,"method":"GET","kind":"blob","repository":"r","reference":"a","key":0,"size":10,"status":null}"#
        );
    }

    #[test]
    fn bytes_without_sizes_and_unknown_policies_are_refused() {
        let mut w = Workload::default();
        w.add(&Request::new(Method::Get, "v2/r/blobs/a".to_owned()));
        assert_eq!(
            simulate(&w, &[Policy::Lru], &[Capacity::Bytes(10)], 0.0),
            Err(SimulateError::NoSizes(1))
        );
        assert!(simulate(&w, &[Policy::Lru], &[Capacity::Objects(1)], 0.0).is_ok());
        assert_eq!(Policy::parse("LRU"), Ok(Policy::Lru));
        assert_eq!(Policy::parse("s3fifo"), Ok(Policy::S3Fifo));
        assert_eq!(
            Policy::parse("two-tier"),
            Ok(Policy::TwoTier {
                ssd_ratio: DEFAULT_SSD_RATIO,
                bypass_above: DEFAULT_BYPASS_ABOVE
            })
        );
        let mut sized = Workload::default();
        let mut r = Request::new(Method::Get, "v2/r/blobs/a".to_owned());
        r.size = Some(5);
        sized.add(&r);
        assert_eq!(
            simulate(&sized, &[Policy::Arc], &[Capacity::Bytes(10)], 0.0),
            Err(SimulateError::ObjectsOnly("arc"))
        );
        assert!(Policy::parse("belady").is_err());
        assert!(simulate(&w, &[Policy::Lru], &[Capacity::Objects(1)], 1.0).is_err());
    }

    fn at(method: Method, uri: &str, size: u64, secs: i64) -> Request {
        let mut r = Request::new(method, uri.to_owned());
        r.size = Some(size);
        r.time_us = Some(secs * 1_000_000);
        r
    }

    /// Repository r pulls a and b, r2 pulls c, d, e (flushing a 3-object LRU), then r's manifest
    /// and a, b again; a is also pushed to r before everything.
    fn prefetch_workload() -> Workload {
        let mut w = Workload::default();
        for r in [
            at(Method::Put, "v2/r/blobs/uploads/u1?digest=sha256%3Ap", 0, 0),
            at(Method::Get, "v2/r/blobs/sha256:a", 10, 1),
            at(Method::Get, "v2/r/blobs/sha256:b", 10, 2),
            at(Method::Get, "v2/r2/blobs/sha256:c", 10, 3),
            at(Method::Get, "v2/r2/blobs/sha256:d", 10, 4),
            at(Method::Get, "v2/r2/blobs/sha256:e", 10, 5),
            at(Method::Get, "v2/r/manifests/latest", 1, 6),
            at(Method::Get, "v2/r/blobs/sha256:a", 10, 7),
            at(Method::Get, "v2/r/blobs/sha256:b", 10, 8),
            at(Method::Get, "v2/r/blobs/sha256:p", 10, 9),
        ] {
            w.add(&r);
        }
        w
    }

    #[test]
    fn a_manifest_get_prefetches_its_repositorys_recent_layers_newest_first() {
        let w = prefetch_workload();
        let (a, b, p) = (
            w.ids.ids["v2/r/blobs/sha256:a"],
            w.ids.ids["v2/r/blobs/sha256:b"],
            w.ids.ids["v2/r/blobs/sha256:p"],
        );
        // The manifest is request 5 (the push is not a request). Window 10 s: b, a and the pushed p.
        assert_eq!(
            w.prefetch_plan(Duration::from_secs(10)).unwrap(),
            vec![(5, vec![b, a, p])]
        );
        // 4.5 s back from t=6 reaches t=1.5: b only. A later manifest prefetches nothing of r2's.
        assert_eq!(
            w.prefetch_plan(Duration::from_millis(4500)).unwrap(),
            vec![(5, vec![b])]
        );
        assert_eq!(w.prefetch_plan(Duration::ZERO).unwrap(), Vec::new());
    }

    #[test]
    fn prefetching_turns_the_layers_after_a_manifest_into_hits() {
        let w = prefetch_workload();
        let run = |prefetch| {
            simulate_with(
                &w,
                &[Policy::Lru, Policy::S3Fifo],
                &[Capacity::Objects(3)],
                SimOptions {
                    warmup: 0.0,
                    prefetch,
                },
            )
            .unwrap()
        };
        let plain = run(None);
        assert_eq!((plain[0].hits, plain[0].prefetched), (0, 0));
        // Window 10 s: b, a, p admitted after the manifest (it stays too: b, a, p fill 3 slots,
        // evicting the manifest, c, d, e); then a, b and p hit.
        let lru = &run(Some(Duration::from_secs(10)))[0];
        assert_eq!((lru.hits, lru.prefetched), (3, 3), "{lru:?}");
        // Window 4.5 s: only b.
        let lru = &run(Some(Duration::from_millis(4500)))[0];
        assert_eq!((lru.hits, lru.prefetched), (1, 1), "{lru:?}");
    }

    #[test]
    fn prefetching_needs_timestamps() {
        let mut w = Workload::default();
        w.add(&get("v2/r/manifests/latest", 1));
        assert_eq!(
            w.prefetch_plan(Duration::from_secs(1)),
            Err(SimulateError::NoTimes)
        );
    }
}
