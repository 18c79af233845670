//! The original trace files: one JSON array of flat objects whose keys have literal dots
//! (`http.request.uri`), and ferry's access log: the same objects, one per line. Read one object at
//! a time, so memory stays constant however long the file.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Position, TraceError};
use crate::request::{Method, Request};
use ferry_oci::timestamp::parse_timestamp;

/// Longest record read; the trace's records are a few hundred bytes.
const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Start,
    /// Inside `[...]`.
    Array,
    /// Objects separated by whitespace (JSON lines).
    Lines,
    Done,
}

/// The requests of a JSON trace file.
pub(crate) struct JsonRecords {
    reader: Box<dyn BufRead + Send>,
    file: PathBuf,
    mode: Mode,
    /// Records read so far.
    index: u64,
    record: Vec<u8>,
}

impl JsonRecords {
    pub(crate) fn new(reader: Box<dyn BufRead + Send>, file: PathBuf) -> JsonRecords {
        JsonRecords {
            reader,
            file,
            mode: Mode::Start,
            index: 0,
            record: Vec::new(),
        }
    }

    fn fail(&mut self, why: String) -> Option<Result<Request, TraceError>> {
        self.mode = Mode::Done;
        Some(Err(TraceError::File {
            file: self.file.clone(),
            why,
        }))
    }

    fn io(&mut self, e: std::io::Error) -> Option<Result<Request, TraceError>> {
        self.mode = Mode::Done;
        Some(Err(TraceError::Io {
            file: self.file.clone(),
            source: e,
        }))
    }

    /// The next byte that is not whitespace, not consumed; `None` at the end.
    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    let b = buf[i];
                    self.reader.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
    }

    /// Reads one object, from its `{` to the matching `}`, into `self.record`. `Ok(false)` if the
    /// file ends inside it.
    fn read_object(&mut self) -> Result<bool, String> {
        self.record.clear();
        let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
        loop {
            let buf = self.reader.fill_buf().map_err(|e| e.to_string())?;
            if buf.is_empty() {
                return Ok(false);
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_string {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(buf.len());
            if self.record.len() + take > MAX_RECORD {
                return Err(format!(
                    "record {} is longer than {MAX_RECORD} bytes; trace records are a few hundred",
                    self.index + 1
                ));
            }
            self.record.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if end.is_some() {
                return Ok(true);
            }
        }
    }
}

impl Iterator for JsonRecords {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let next = match self.peek() {
                Ok(b) => b,
                Err(e) => return self.io(e),
            };
            match (self.mode, next) {
                (Mode::Done, _) => return None,
                (Mode::Start, Some(b'[')) => {
                    self.reader.consume(1);
                    self.mode = Mode::Array;
                }
                (Mode::Start, Some(b'{')) => self.mode = Mode::Lines,
                (Mode::Start, None) => {
                    self.mode = Mode::Done;
                    return None;
                }
                (Mode::Start, Some(_)) => {
                    return self.fail(
                        "not a JSON trace: expected an array of objects or one object per line"
                            .to_owned(),
                    );
                }
                (Mode::Array, Some(b']')) | (Mode::Lines, None) => {
                    self.mode = Mode::Done;
                    return None;
                }
                (Mode::Array, Some(b',')) => self.reader.consume(1),
                (Mode::Array, None) => {
                    let why = format!(
                        "truncated after record {}: the array is not closed",
                        self.index
                    );
                    return self.fail(why);
                }
                (Mode::Array | Mode::Lines, Some(b'{')) => {
                    match self.read_object() {
                        Ok(true) => {}
                        Ok(false) => {
                            let why = format!("truncated inside record {}", self.index + 1);
                            return self.fail(why);
                        }
                        Err(why) => return self.fail(why),
                    }
                    self.index += 1;
                    let position = Position::Record(self.index);
                    return Some(
                        serde_json::from_slice::<Map<String, Value>>(&self.record)
                            .map_err(|e| e.to_string())
                            .and_then(|fields| request_from_fields(&fields))
                            .map_err(|why| TraceError::Record {
                                file: self.file.clone(),
                                position,
                                why,
                            }),
                    );
                }
                (Mode::Array | Mode::Lines, Some(b)) => {
                    let why = format!(
                        "after record {}: expected an object, found {:?}",
                        self.index,
                        char::from(b)
                    );
                    return self.fail(why);
                }
            }
        }
    }
}

/// A field as text: strings as they are, numbers as written.
fn text(fields: &Map<String, Value>, key: &str) -> Option<String> {
    match fields.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative whole number written as an integer, a float with no fraction (`72626.0`, as
/// the CSV export has it) or a string of either.
pub(crate) fn whole_number(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(63)).then_some(f as u64)
}

/// A request from a trace record's fields (the original key names), or why it cannot be one.
pub(crate) fn request_from_fields(fields: &Map<String, Value>) -> Result<Request, String> {
    request_from(|key| text(fields, key))
}

/// A request from a record whose field `key` is `get(key)`: the URI is required, the rest is
/// checked when present.
pub(crate) fn request_from(get: impl Fn(&str) -> Option<String>) -> Result<Request, String> {
    let uri = get("http.request.uri").ok_or("no http.request.uri")?;
    let method = match get("http.request.method") {
        Some(m) if !m.is_empty() => Method::parse(&m),
        _ => return Err("no http.request.method".to_owned()),
    };
    let mut r = Request::new(method, uri);
    if let Some(t) = get("timestamp").filter(|t| !t.is_empty()) {
        r.time_us = Some(
            parse_timestamp(&t)
                .ok_or_else(|| format!("timestamp {t:?} is not YYYY-MM-DDTHH:MM:SS[.fff]Z"))?,
        );
    }
    if let Some(w) = get("http.response.written").filter(|w| !w.is_empty()) {
        r.size = Some(
            whole_number(&w)
                .ok_or_else(|| format!("http.response.written {w:?} is not a byte count"))?,
        );
    }
    if let Some(s) = get("http.response.status").filter(|s| !s.is_empty()) {
        r.status = Some(
            whole_number(&s)
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| format!("http.response.status {s:?} is not an HTTP status"))?
                as u16,
        );
    }
    if let Some(d) = get("http.request.duration").filter(|d| !d.is_empty()) {
        let secs: f64 = d
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| format!("http.request.duration {d:?} is not a number of seconds"))?;
        r.duration_s = Some(secs);
    }
    r.client = get("http.request.remoteaddr")
        .filter(|c| !c.is_empty())
        .map(Arc::from);
    r.host = get("host").filter(|h| !h.is_empty()).map(Arc::from);
    Ok(r)
}
