//! `ferry trace analyze`: the characterization of a trace, as the FAST'18 paper reports it: the
//! request mix, object sizes, how skewed popularity is, how soon objects are asked for again, how
//! requests arrive, who asks, and reads against writes over time. One pass; what it keeps grows
//! with the distinct objects, clients and repositories, not with the requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::request::{Kind, Method, Request};

/// What is known of one object (a blob or manifest URI) so far.
#[derive(Debug)]
struct Object {
    kind: Kind,
    gets: u64,
    size: Option<u64>,
    /// Position among cacheable GETs, and time, of its last GET.
    last: (u64, Option<i64>),
}

/// Accumulates a trace's characterization, one request at a time.
#[derive(Debug)]
pub struct Analyzer {
    requests: u64,
    methods: BTreeMap<&'static str, u64>,
    kinds: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<u16, u64>,
    objects: HashMap<String, Object>,
    clients: HashMap<Arc<str>, u64>,
    repositories: HashMap<String, u64>,
    first_us: Option<i64>,
    last_us: Option<i64>,
    inter_arrival_us: Histogram<u64>,
    reuse_requests: Histogram<u64>,
    reuse_us: Histogram<u64>,
    cacheable: u64,
    /// Reads and writes per hour since the first request.
    hours: BTreeMap<i64, (u64, u64)>,
}

impl Default for Analyzer {
    fn default() -> Analyzer {
        let histogram = || Histogram::new(3).expect("3 significant digits is a valid histogram");
        Analyzer {
            requests: 0,
            methods: BTreeMap::new(),
            kinds: BTreeMap::new(),
            statuses: BTreeMap::new(),
            objects: HashMap::new(),
            clients: HashMap::new(),
            repositories: HashMap::new(),
            first_us: None,
            last_us: None,
            inter_arrival_us: histogram(),
            reuse_requests: histogram(),
            reuse_us: histogram(),
            cacheable: 0,
            hours: BTreeMap::new(),
        }
    }
}

/// Percentiles of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of_histogram(h: &Histogram<u64>, scale: f64) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5) as f64 * scale,
            p90: h.value_at_quantile(0.9) as f64 * scale,
            p99: h.value_at_quantile(0.99) as f64 * scale,
            max: h.max() as f64 * scale,
            mean: h.mean() * scale,
        })
    }

    /// Exact percentiles (nearest rank) of `values`, sorted here.
    fn of_values(values: &mut [u64]) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1] as f64
        };
        Some(Percentiles {
            count: values.len() as u64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values[values.len() - 1] as f64,
            mean: values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64,
        })
    }
}

/// Sizes of the distinct objects of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizes {
    /// Percentiles, in bytes.
    pub bytes: Option<Percentiles>,
    /// Share of the objects smaller than 1 MB (10^6 bytes).
    pub under_1mb: f64,
    /// Share of the objects smaller than 10 MB.
    pub under_10mb: f64,
}

/// How requests spread over objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Popularity {
    /// Distinct objects GET.
    pub objects: u64,
    /// Share of GETs that went to the most requested 1% of objects (at least one object).
    pub top_1pct_share: f64,
    /// The same for the top 10%.
    pub top_10pct_share: f64,
    /// Share of objects GET exactly once.
    pub requested_once: f64,
}

/// Who is active.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    /// Distinct values.
    pub distinct: u64,
    /// Share of requests from the most active one.
    pub top_share: f64,
    /// Median requests per one.
    pub median_requests: f64,
}

/// Reads and writes in one hour of the trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hour {
    /// Hours since the trace's first request.
    pub hour: i64,
    /// GET and HEAD requests.
    pub reads: u64,
    /// PUT, PATCH and POST requests.
    pub writes: u64,
}

/// A trace's characterization.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Characterization {
    /// Requests read.
    pub requests: u64,
    /// GETs of blobs and manifests: what a cache serves.
    pub cacheable_gets: u64,
    /// Seconds from the first request to the last (when the trace has times).
    pub span_seconds: Option<f64>,
    /// Requests by method.
    pub methods: BTreeMap<&'static str, u64>,
    /// Requests by what the URI addresses.
    pub kinds: BTreeMap<&'static str, u64>,
    /// Requests by response status.
    pub statuses: BTreeMap<u16, u64>,
    /// Sizes of the distinct blobs GET (their largest response).
    pub blob_sizes: Sizes,
    /// Sizes of the distinct manifests GET.
    pub manifest_sizes: Sizes,
    /// How skewed GETs are over objects.
    pub popularity: Popularity,
    /// Cacheable GETs between two GETs of one object.
    pub reuse_distance_requests: Option<Percentiles>,
    /// Seconds between two GETs of one object.
    pub reuse_seconds: Option<Percentiles>,
    /// Milliseconds between consecutive requests.
    pub inter_arrival_ms: Option<Percentiles>,
    /// Requests per client.
    pub clients: Activity,
    /// Requests per repository.
    pub repositories: Activity,
    /// Reads (GET, HEAD) per write (PUT, PATCH, POST); `None` without writes.
    pub read_write_ratio: Option<f64>,
    /// Reads and writes per hour.
    pub hours: Vec<Hour>,
}

fn activity(counts: impl Iterator<Item = u64>, total: u64) -> Activity {
    let mut v: Vec<u64> = counts.collect();
    let distinct = v.len() as u64;
    let top = v.iter().copied().max().unwrap_or(0);
    Activity {
        distinct,
        top_share: share(top, total),
        median_requests: Percentiles::of_values(&mut v).map_or(0.0, |p| p.p50),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Analyzer {
    /// Counts one request in.
    pub fn add(&mut self, r: &Request) {
        self.requests += 1;
        *self.methods.entry(r.method.as_str()).or_default() += 1;
        *self.kinds.entry(r.kind.as_str()).or_default() += 1;
        if let Some(s) = r.status {
            *self.statuses.entry(s).or_default() += 1;
        }
        if let Some(c) = &r.client {
            *self.clients.entry(c.clone()).or_default() += 1;
        }
        if let Some(repo) = &r.repo {
            match self.repositories.get_mut(repo) {
                Some(n) => *n += 1,
                None => {
                    self.repositories.insert(repo.clone(), 1);
                }
            }
        }
        if let Some(t) = r.time_us {
            if let Some(prev) = self.last_us {
                let _ = self.inter_arrival_us.record((t - prev).max(0) as u64);
            }
            self.first_us = Some(self.first_us.map_or(t, |f| f.min(t)));
            self.last_us = Some(self.last_us.map_or(t, |l| l.max(t)));
            let hour = (t - self.first_us.unwrap_or(t)).div_euclid(3_600_000_000);
            let entry = self.hours.entry(hour).or_default();
            match r.method {
                Method::Get | Method::Head => entry.0 += 1,
                Method::Put | Method::Patch | Method::Post => entry.1 += 1,
                _ => {}
            }
        }
        if !r.is_cacheable() {
            return;
        }
        self.cacheable += 1;
        let key = r.uri.split('?').next().unwrap_or(&r.uri);
        let ok_size = r.size.filter(|_| r.status.is_none_or(|s| s == 200));
        let now = (self.cacheable, r.time_us);
        match self.objects.get_mut(key) {
            Some(o) => {
                let _ = self.reuse_requests.record(now.0 - o.last.0 - 1);
                if let (Some(t), Some(before)) = (now.1, o.last.1) {
                    let _ = self.reuse_us.record((t - before).max(0) as u64);
                }
                o.gets += 1;
                o.size = o.size.max(ok_size);
                o.last = now;
            }
            None => {
                self.objects.insert(
                    key.to_owned(),
                    Object {
                        kind: r.kind,
                        gets: 1,
                        size: ok_size,
                        last: now,
                    },
                );
            }
        }
    }

    /// Sizes of the distinct objects of `kind` that have one, ascending.
    fn sizes_of(&self, kind: Kind) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .objects
            .values()
            .filter(|o| o.kind == kind)
            .filter_map(|o| o.size)
            .collect();
        v.sort_unstable();
        v
    }

    fn sizes(&self, kind: Kind) -> Sizes {
        let mut v = self.sizes_of(kind);
        let n = v.len() as u64;
        let under = |limit: u64| share(v.iter().filter(|&&s| s < limit).count() as u64, n);
        let (under_1mb, under_10mb) = (under(1_000_000), under(10_000_000));
        Sizes {
            bytes: Percentiles::of_values(&mut v),
            under_1mb,
            under_10mb,
        }
    }

    fn popularity(&self) -> Popularity {
        let mut gets: Vec<u64> = self.objects.values().map(|o| o.gets).collect();
        gets.sort_unstable_by(|a, b| b.cmp(a));
        let n = gets.len();
        let top = |fraction: f64| {
            let k = ((n as f64 * fraction).ceil() as usize).clamp(usize::from(n > 0), n);
            share(gets[..k].iter().sum(), self.cacheable)
        };
        Popularity {
            objects: n as u64,
            top_1pct_share: top(0.01),
            top_10pct_share: top(0.10),
            requested_once: share(gets.iter().filter(|&&g| g == 1).count() as u64, n as u64),
        }
    }

    /// What the plots of a characterization draw: sizes of the distinct blobs and manifests
    /// (ascending), GETs per object by popularity rank (descending), reads and writes per hour.
    pub fn distributions(&self) -> Distributions {
        let mut gets: Vec<u64> = self.objects.values().map(|o| o.gets).collect();
        gets.sort_unstable_by(|a, b| b.cmp(a));
        Distributions {
            blob_sizes: self.sizes_of(Kind::Blob),
            manifest_sizes: self.sizes_of(Kind::Manifest),
            gets_by_rank: gets,
            hours: self.finish_hours(),
        }
    }

    fn finish_hours(&self) -> Vec<Hour> {
        self.hours
            .iter()
            .map(|(&hour, &(reads, writes))| Hour {
                hour,
                reads,
                writes,
            })
            .collect()
    }

    /// The characterization of what was added.
    pub fn finish(&self) -> Characterization {
        let reads = self.methods.get("GET").copied().unwrap_or(0)
            + self.methods.get("HEAD").copied().unwrap_or(0);
        let writes: u64 = ["PUT", "PATCH", "POST"]
            .iter()
            .map(|m| self.methods.get(m).copied().unwrap_or(0))
            .sum();
        Characterization {
            requests: self.requests,
            cacheable_gets: self.cacheable,
            span_seconds: self
                .first_us
                .zip(self.last_us)
                .map(|(f, l)| (l - f) as f64 / 1e6),
            methods: self.methods.clone(),
            kinds: self.kinds.clone(),
            statuses: self.statuses.clone(),
            blob_sizes: self.sizes(Kind::Blob),
            manifest_sizes: self.sizes(Kind::Manifest),
            popularity: self.popularity(),
            reuse_distance_requests: Percentiles::of_histogram(&self.reuse_requests, 1.0),
            reuse_seconds: Percentiles::of_histogram(&self.reuse_us, 1e-6),
            inter_arrival_ms: Percentiles::of_histogram(&self.inter_arrival_us, 1e-3),
            clients: activity(self.clients.values().copied(), self.requests),
            repositories: activity(self.repositories.values().copied(), self.requests),
            read_write_ratio: (writes > 0).then(|| reads as f64 / writes as f64),
            hours: self.finish_hours(),
        }
    }
}

/// The distributions behind a characterization, for plotting.
#[derive(Debug, Clone, PartialEq)]
pub struct Distributions {
    /// Sizes of the distinct blobs GET, ascending.
    pub blob_sizes: Vec<u64>,
    /// Sizes of the distinct manifests GET, ascending.
    pub manifest_sizes: Vec<u64>,
    /// GETs of each object, most requested first.
    pub gets_by_rank: Vec<u64>,
    /// Reads and writes per hour since the first request.
    pub hours: Vec<Hour>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.2} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

impl Characterization {
    /// The characterization as a person reads it: one line per figure.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<28} {v}\n"));
        line("requests", self.requests.to_string());
        line(
            "cacheable GETs",
            format!("{} (blobs and manifests)", self.cacheable_gets),
        );
        if let Some(s) = self.span_seconds {
            line(
                "span",
                format!(
                    "{s:.1} s ({:.2} requests/s)",
                    self.requests as f64 / s.max(1e-6)
                ),
            );
        }
        let mix = |m: &BTreeMap<&str, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v} ({})", pct(share(*v, self.requests))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("methods", mix(&self.methods));
        line("kinds", mix(&self.kinds));
        line(
            "statuses",
            self.statuses
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for (what, s) in [
            ("blob", &self.blob_sizes),
            ("manifest", &self.manifest_sizes),
        ] {
            if let Some(p) = &s.bytes {
                line(
                    &format!("{what} sizes ({} distinct)", p.count),
                    format!(
                        "p50 {}, p90 {}, p99 {}, max {}; {} under 1 MB, {} under 10 MB",
                        bytes(p.p50),
                        bytes(p.p90),
                        bytes(p.p99),
                        bytes(p.max),
                        pct(s.under_1mb),
                        pct(s.under_10mb)
                    ),
                );
            }
        }
        let p = &self.popularity;
        line(
            "popularity",
            format!(
                "{} objects; top 1% get {}, top 10% get {} of GETs; {} requested once",
                p.objects,
                pct(p.top_1pct_share),
                pct(p.top_10pct_share),
                pct(p.requested_once)
            ),
        );
        let dist = |p: &Percentiles, unit: &str| {
            format!(
                "p50 {:.1}{unit}, p90 {:.1}{unit}, p99 {:.1}{unit}, max {:.1}{unit}",
                p.p50, p.p90, p.p99, p.max
            )
        };
        if let Some(r) = &self.reuse_distance_requests {
            line("reuse distance (requests)", dist(r, ""));
        }
        if let Some(r) = &self.reuse_seconds {
            line("reuse time", dist(r, " s"));
        }
        if let Some(r) = &self.inter_arrival_ms {
            line("inter-arrival", dist(r, " ms"));
        }
        for (what, a) in [
            ("clients", &self.clients),
            ("repositories", &self.repositories),
        ] {
            line(
                what,
                format!(
                    "{} distinct; the most active sends {}; median {} requests",
                    a.distinct,
                    pct(a.top_share),
                    a.median_requests
                ),
            );
        }
        line(
            "reads per write",
            self.read_write_ratio
                .map_or("no writes".to_owned(), |r| format!("{r:.2}")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, size: u64, second: i64) -> Request {
        let mut r = Request::new(Method::Get, uri.to_owned());
        r.size = Some(size);
        r.status = Some(200);
        r.time_us = Some(second * 1_000_000);
        r.client = Some(Arc::from(if second % 2 == 0 { "even" } else { "odd" }));
        r
    }

    #[test]
    fn a_small_trace_is_characterized_as_computed_by_hand() {
        let (a, b, c) = ("v2/r/blobs/a", "v2/r/blobs/b", "v2/s/blobs/c");
        let mut trace = vec![
            get(a, 10, 0),
            get(b, 2_000_000, 1),
            get(a, 10, 2),
            get(c, 20_000_000, 3),
            get(a, 10, 4),
            get(b, 2_000_000, 10),
        ];
        let mut head = Request::new(Method::Head, "v2/r/manifests/v1".to_owned());
        head.time_us = Some(11_000_000);
        let mut put = Request::new(Method::Put, "v2/r/blobs/uploads/u1".to_owned());
        put.time_us = Some(12_000_000);
        trace.extend([head, put]);
        let mut analyzer = Analyzer::default();
        for r in &trace {
            analyzer.add(r);
        }
        let c = analyzer.finish();
        assert_eq!((c.requests, c.cacheable_gets), (8, 6));
        assert_eq!(c.span_seconds, Some(12.0));
        assert_eq!(c.kinds.get("blob"), Some(&6));
        assert_eq!(c.kinds.get("upload"), Some(&1));
        assert_eq!(c.popularity.objects, 3);
        assert_eq!(c.popularity.top_1pct_share, 0.5, "a: 3 of 6 GETs");
        assert!((c.popularity.requested_once - 1.0 / 3.0).abs() < 1e-12);
        let reuse = c.reuse_distance_requests.unwrap();
        assert_eq!((reuse.count, reuse.p50, reuse.max), (3, 1.0, 3.0));
        let reuse_s = c.reuse_seconds.unwrap();
        // Times go through an HDR histogram of 3 significant digits: within 0.1%.
        assert!((reuse_s.p50 / 2.0 - 1.0).abs() < 1e-3, "{reuse_s:?}");
        assert!((reuse_s.max / 9.0 - 1.0).abs() < 1e-3, "{reuse_s:?}");
        let sizes = &c.blob_sizes;
        assert_eq!(sizes.bytes.unwrap().count, 3);
        assert!((sizes.under_1mb - 1.0 / 3.0).abs() < 1e-12);
        assert!((sizes.under_10mb - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.read_write_ratio, Some(7.0));
        assert_eq!(c.clients.distinct, 2);
        assert_eq!(c.repositories.distinct, 2);
        assert_eq!(c.hours.len(), 1);
        assert_eq!((c.hours[0].reads, c.hours[0].writes), (7, 1));
        assert!(c.render().contains("top 1% get 50.0%"), "{}", c.render());
    }
}
