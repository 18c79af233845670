//! What can go wrong reading a trace.

use std::path::PathBuf;

/// Where in a file a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The n-th record (1-based) of a JSON file.
    Record(u64),
    /// A line (1-based) of a CSV file or URI list.
    Line(u64),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Record(n) => write!(f, "record {n}"),
            Position::Line(n) => write!(f, "line {n}"),
        }
    }
}

/// Why reading a trace failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// One record could not be read; the others can (counted and reported, fatal with `--strict`).
    #[error("{}: {position}: {why}", .file.display())]
    Record {
        /// The file.
        file: PathBuf,
        /// Where in it.
        position: Position,
        /// What is wrong with the record.
        why: String,
    },
    /// A file could not be read at all, or not past some point (the rest of it is lost).
    #[error("{}: {why}", .file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The operating system refused.
    #[error("{}: {source}", .file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The paths given name no trace file.
    #[error(
        "{0}: no trace files (.json, .jsonl, .csv, .txt or .uris, each optionally .gz or .zst)"
    )]
    NoFiles(String),
}

impl TraceError {
    /// Whether only one record is lost (the reader goes on).
    pub fn is_record(&self) -> bool {
        matches!(self, TraceError::Record { .. })
    }
}
