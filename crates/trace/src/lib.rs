//! # ferry-trace
//!
//! The trace lab's foundation: production registry traces read as typed requests.
//!
//! The IBM registry traces (Anwar et al., FAST'18: 75 days, 7 availability zones, ~38 M requests)
//! come as JSON arrays of flat records whose keys have literal dots (`http.request.uri`,
//! `http.response.written`, `timestamp`, …), one file per zone and day part; exports of them come
//! as CSV; some tools pass a plain list of URIs. [`Trace`] reads any of these — files, directories
//! of zone directories, globs; plain, gzip or zstd — one record at a time and merges the files in
//! timestamp order. Each record becomes a [`Request`]: time, client, method, what the URI addresses
//! ([`Kind`]: blob, manifest, ping, upload, …, by [`classify`]), repository, reference, size,
//! status, duration. A record that cannot be read is an error item naming its file and position
//! ([`TraceError::Record`]), never silently dropped; the reader goes on.
//!
//! [`replay`] warms registries up from a trace and replays its GETs against them.
//!
//! Architecture invariant: reading never holds more than one record per open file (memory does
//! not grow with the trace), and knows nothing of registries or HTTP clients (only `replay`
//! talks to registries).

pub mod analyze;
mod error;
pub mod generate;
mod read;
pub mod replay;
mod request;
pub mod simulate;

pub use error::{Position, TraceError};
pub use ferry_oci::timestamp::{format_timestamp, parse_timestamp};
pub use read::{Format, MAX_FILES, Trace, open_file, trace_files, zone_of};
pub use request::{Kind, Method, Request, Target, classify};
