//! Reading traces: files, directories and globs of them, each JSON, CSV or a URI list, plain or
//! gzip/zstd-compressed, streamed (memory does not grow with the trace) and merged in timestamp
//! order.
//!
//! Formats, by the name with `.gz`/`.zst` removed, else by the first bytes:
//! - `.json`, `.jsonl`: the original files (a JSON array of flat objects with keys like
//!   `http.request.uri`), or one object per line (ferry's access log);
//! - `.csv`: the pandas export (a header naming those keys);
//! - `.txt`, `.uris`: one URI per line (`v2/...`), in request order, no times or sizes: GETs.

mod csv;
mod json;
mod record;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{Position, TraceError};
use crate::request::{Method, Request};

/// Longest line of a URI list.
const MAX_URI_LINE: usize = 64 << 10;
/// Most files one trace may be made of (each is open while the merge runs).
pub const MAX_FILES: usize = 4096;

type Records = Box<dyn Iterator<Item = Result<Request, TraceError>> + Send>;

/// The kinds of trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of records, or one record per line.
    Json,
    /// The pandas CSV export.
    Csv,
    /// One URI per line.
    Uris,
}

/// Whether `name` looks like a trace file, and its format if the name says.
fn format_of(name: &str) -> Option<Option<Format>> {
    let name = name.to_ascii_lowercase();
    let inner = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    match inner.rsplit_once('.').map(|(_, e)| e) {
        Some("json" | "jsonl") => Some(Some(Format::Json)),
        Some("csv") => Some(Some(Format::Csv)),
        Some("txt" | "uris") => Some(Some(Format::Uris)),
        _ => None,
    }
}

/// Guesses the format from the first bytes.
fn sniff(head: &[u8]) -> Format {
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[' | b'{') => Format::Json,
        _ if head
            .split(|&b| b == b'\n')
            .next()
            .is_some_and(|l| l.windows(16).any(|w| w == b"http.request.uri")) =>
        {
            Format::Csv
        }
        _ => Format::Uris,
    }
}

/// Opens one trace file: decompresses by its name, reads it as `format` (or as its name or first
/// bytes say).
pub fn open_file(path: &Path, format: Option<Format>) -> Result<Records, TraceError> {
    let io = |source| TraceError::Io {
        file: path.to_owned(),
        source,
    };
    // A file named explicitly may be a pipe (`/dev/stdin`); directories are walked, not read.
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(TraceError::File {
            file: path.to_owned(),
            why: "a directory, not a trace file".to_owned(),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let raw: Box<dyn std::io::Read + Send> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?)
    } else {
        Box::new(file)
    };
    let mut reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(256 << 10, raw));
    let format = match format.or_else(|| format_of(&name).flatten()) {
        Some(f) => f,
        None => sniff(reader.fill_buf().map_err(io)?),
    };
    let file = path.to_owned();
    Ok(match format {
        Format::Json => Box::new(json::JsonRecords::new(reader, file)),
        Format::Csv => Box::new(csv::CsvRecords::new(reader, file)),
        Format::Uris => Box::new(uri_lines(reader, file)),
    })
}

/// The requests of a URI list: a GET per line, blank lines and `#` comments skipped.
fn uri_lines(
    reader: Box<dyn BufRead + Send>,
    file: PathBuf,
) -> impl Iterator<Item = Result<Request, TraceError>> + Send {
    let mut reader = reader;
    let mut line = 0u64;
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if done {
                return None;
            }
            let mut buf = Vec::new();
            let n = match std::io::Read::take(&mut reader, MAX_URI_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
            {
                Ok(n) => n,
                Err(source) => {
                    done = true;
                    return Some(Err(TraceError::Io {
                        file: file.clone(),
                        source,
                    }));
                }
            };
            if n == 0 {
                done = true;
                return None;
            }
            line += 1;
            if buf.len() > MAX_URI_LINE {
                done = true;
                return Some(Err(TraceError::File {
                    file: file.clone(),
                    why: format!("line {line} is longer than {MAX_URI_LINE} bytes"),
                }));
            }
            let text = String::from_utf8_lossy(&buf);
            let uri = text.trim();
            if uri.is_empty() || uri.starts_with('#') {
                continue;
            }
            if uri.chars().any(char::is_whitespace) {
                return Some(Err(TraceError::Record {
                    file: file.clone(),
                    position: Position::Line(line),
                    why: format!("{uri:?} is not one URI"),
                }));
            }
            return Some(Ok(Request::new(Method::Get, uri.to_owned())));
        }
    })
}

/// The availability zone a trace file belongs to: `<zone>` of the IBM traces' names
/// (`<env>-<zone>-logstash-YYYY.MM.DD-N.json`), else the name of the directory it is in.
pub fn zone_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    let mut parts = name.split('-');
    if let (Some(_env), Some(zone), Some("logstash")) = (parts.next(), parts.next(), parts.next())
        && !zone.is_empty()
    {
        return Some(zone.to_owned());
    }
    let dir = path.parent()?.file_name()?.to_string_lossy();
    (!dir.is_empty()).then(|| dir.into_owned())
}

/// The trace files `paths` name: files as they are, directories walked (files with a trace's
/// name, in name order), and `*`/`?` wildcards in a path's last component.
pub fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TraceError> {
    let mut out = Vec::new();
    for p in paths {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        match name {
            Some(pattern) if pattern.contains(['*', '?']) && !p.exists() => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let mut matched: Vec<PathBuf> = read_dir(dir)?
                    .into_iter()
                    .filter(|f| {
                        f.file_name().is_some_and(|n| {
                            ferry_policy::wildcard_match(&pattern, &n.to_string_lossy())
                        })
                    })
                    .collect();
                matched.sort();
                if matched.is_empty() {
                    return Err(TraceError::NoFiles(p.display().to_string()));
                }
                out.extend(matched);
            }
            _ if p.is_dir() => {
                let before = out.len();
                walk(p, &mut out, 0)?;
                if out.len() == before {
                    return Err(TraceError::NoFiles(p.display().to_string()));
                }
            }
            _ => out.push(p.clone()),
        }
        if out.len() > MAX_FILES {
            return Err(TraceError::File {
                file: p.clone(),
                why: format!("more than {MAX_FILES} trace files; merge fewer at once"),
            });
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TraceError::Io {
        file: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| TraceError::Io {
            file: dir.to_owned(),
            source,
        })?;
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Zone directories hold trace files; deeper nesting than this is not a trace's layout.
const MAX_DEPTH: usize = 8;

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), TraceError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for p in read_dir(dir)? {
        if out.len() > MAX_FILES {
            return Ok(());
        }
        // Symbolic links are not followed: a loop would never end.
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            walk(&p, out, depth + 1)?;
        } else if meta.is_file()
            && p.file_name()
                .is_some_and(|n| format_of(&n.to_string_lossy()).is_some())
        {
            out.push(p);
        }
    }
    Ok(())
}

/// A trace: the requests of its files, merged in timestamp order (requests without a time keep
/// their file's order). Errors come as items: [`TraceError::Record`] when one record is lost,
/// others when the rest of a file is.
pub struct Trace {
    files: Vec<PathBuf>,
    sources: Vec<Records>,
    /// The next request of each source.
    heads: Vec<Option<Request>>,
    /// Sources by their next request's time, then by position in the file list.
    order: BinaryHeap<Reverse<(i64, usize)>>,
    errors: VecDeque<TraceError>,
    started: bool,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// Opens the trace `paths` name (see [`trace_files`]), each file's format from its name or
    /// content, or `format` for all.
    pub fn open(paths: &[PathBuf], format: Option<Format>) -> Result<Trace, TraceError> {
        let files = trace_files(paths)?;
        if files.is_empty() {
            return Err(TraceError::NoFiles(
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        let sources = files
            .iter()
            .map(|f| open_file(f, format))
            .collect::<Result<Vec<_>, _>>()?;
        let heads = (0..sources.len()).map(|_| None).collect();
        Ok(Trace {
            files,
            sources,
            heads,
            order: BinaryHeap::new(),
            errors: VecDeque::new(),
            started: false,
        })
    }

    /// The files read, in the order given.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Pulls source `i`'s next request into its head (errors on the way are queued).
    fn refill(&mut self, i: usize) {
        for item in self.sources[i].by_ref() {
            match item {
                Ok(r) => {
                    self.order.push(Reverse((r.time_us.unwrap_or(i64::MIN), i)));
                    self.heads[i] = Some(r);
                    return;
                }
                Err(e) => self.errors.push_back(e),
            }
        }
    }
}

impl Iterator for Trace {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.refill(i);
            }
        }
        if let Some(e) = self.errors.pop_front() {
            return Some(Err(e));
        }
        let Reverse((_, i)) = self.order.pop()?;
        let r = self.heads[i].take().expect("a queued source has a head");
        self.refill(i);
        Some(Ok(r))
    }
}
