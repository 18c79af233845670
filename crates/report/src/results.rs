//! The results file of a load run: what `ferry load run --out` writes and `ferry load report`
//! reads. One set of types for both sides, so a writer cannot drift from its readers.
//!
//! [`SCHEMA_VERSION`] is bumped only for a change old readers would misread (a field removed,
//! renamed or given another meaning); adding a field does not bump it. Files written before the
//! version field existed are version 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A run's results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`] of the writer (absent, and so 1, in files older than the field).
    #[serde(default = "first_version")]
    pub schema_version: u32,
    /// What was measured (`host:port`).
    pub target: String,
    /// A label for charts and tables (defaults to the target).
    pub label: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// Pulls in closed (`closed`) or open (`open`) loop.
    pub mode: String,
    /// Totals.
    pub summary: Summary,
    /// Rate rows.
    pub tallies: Vec<Tally>,
    /// What a trace replay (`ferry trace run`) measured; absent from `ferry load` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

fn first_version() -> u32 {
    1
}

/// The run's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Images pulled completely.
    pub images: u64,
    /// Over the whole run.
    pub images_per_sec: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Body bytes.
    pub bytes: u64,
    /// Failed pulls.
    pub errors: u64,
    /// Failed pulls by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// Seconds.
    pub duration_secs: f64,
    /// Latency of whole image pulls (`image`), and of requests by type (`manifest_head`,
    /// `manifest`, `blob`).
    #[serde(default)]
    pub latency_ms: BTreeMap<String, Percentiles>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One tally row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Seconds since the start, at the end of the row's interval.
    pub t: f64,
    /// Pullers running at the end of the interval.
    pub pullers: usize,
    /// Images pulled in the interval.
    pub images: u64,
    /// Images per second.
    pub images_per_sec: f64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Body megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Failed pulls in the interval, by kind.
    pub errors: BTreeMap<String, u64>,
}

/// A trace replay's figures, by object kind (`blob`, `manifest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// How requests were timed: `recorded` (the trace's timestamps over `speed`) or `asap`.
    pub pace: String,
    /// The speed-up of `recorded` pace (1 at `asap`).
    pub speed: f64,
    /// The shard replayed (`i/N`), if the trace was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Requests not sent because the warmup map lacks their object, by kind.
    pub unmapped: BTreeMap<String, u64>,
    /// Requests of the trace that are not GETs of blobs or manifests (not replayed).
    pub skipped: u64,
    /// Requests that fell due while the in-flight cap was reached, and so went late.
    pub overflowed: u64,
    /// Requests sent to each registry.
    pub registries: BTreeMap<String, u64>,
    /// Figures by kind.
    pub kinds: BTreeMap<String, KindFigures>,
}

/// One kind's figures in a trace replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindFigures {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (an error status, a broken exchange, a wrong size or digest).
    pub errors: u64,
    /// Failures by kind (`http_404`, `size`, `digest`, `timeout`, …).
    pub error_kinds: BTreeMap<String, u64>,
    /// Body bytes received.
    pub bytes: u64,
    /// From sending a request to the end of its body.
    pub latency_ms: Percentiles,
    /// Schedule lag: when a request was sent less when it was due.
    pub lag_ms: Percentiles,
    /// The latency histogram in microseconds, as `[value, count]` pairs of its recorded
    /// buckets: what merging shards' results needs to be exact.
    #[serde(default)]
    pub latency_us: Vec<(u64, u64)>,
    /// The lag histogram, likewise.
    #[serde(default)]
    pub lag_us: Vec<(u64, u64)>,
}

/// Why bytes are not results this crate can read; the file's fault, or a newer writer's.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Not JSON, or not shaped like results.
    #[error("not a ferry load results file")]
    NotResults(#[source] serde_json::Error),
    /// Written by a ferry whose schema this one does not know.
    #[error(
        "results schema version {found}, and this ferry reads version {SCHEMA_VERSION}: read it with the ferry that wrote it"
    )]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
    },
}

impl Results {
    /// Parses a results file's bytes, refusing a schema version other than [`SCHEMA_VERSION`]
    /// before anything else (a newer file may not parse as these types at all).
    pub fn from_json(bytes: &[u8]) -> Result<Results, SchemaError> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default = "first_version")]
            schema_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(SchemaError::NotResults)?;
        if v.schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion {
                found: v.schema_version,
            });
        }
        serde_json::from_slice(bytes).map_err(SchemaError::NotResults)
    }
}

/// Why a results file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read (missing, unreadable): the file system's answer says why.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON shaped like results.
    #[error("{} is not a ferry load results file", path.display())]
    NotResults {
        /// The file.
        path: PathBuf,
        /// Where the parse failed.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a ferry whose schema this one does not know.
    #[error(
        "{} has results schema version {found}, and this ferry reads version {SCHEMA_VERSION}: read it with the ferry that wrote it",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// Reads a results file.
pub fn read(path: &Path) -> Result<Results, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    Results::from_json(&bytes).map_err(|e| match e {
        SchemaError::NotResults(source) => ReadError::NotResults {
            path: path.to_owned(),
            source,
        },
        SchemaError::UnsupportedVersion { found } => ReadError::UnsupportedVersion {
            path: path.to_owned(),
            found,
        },
    })
}
