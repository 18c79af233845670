//! The original trace files: one JSON array of flat objects whose keys have literal dots
//! (`http.request.uri`), and ferry's access log: the same objects, one per line. Read one object at
//! a time, so memory stays constant however long the file.

use std::io::BufRead;
use std::path::PathBuf;

use crate::error::{Position, TraceError};
use crate::read::record::Fields;
use crate::request::Request;

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

    /// The record at the read position when it is the rest of its line and well-formed JSON, as
    /// JSON lines and the original files have it (`{…}` or `{…},`), parsed in place: no scan for
    /// its end and no copy. `None` otherwise (it spans lines, shares its line, is cut by the end of
    /// the buffer, or is not JSON): [`JsonRecords::read_object`] reads it, and reports the error.
    fn line_record(&mut self) -> Option<Result<Request, String>> {
        let buf = self.reader.fill_buf().ok()?;
        let line = &buf[..memchr::memchr(b'\n', buf)?];
        let mut end = line.trim_ascii_end();
        if self.mode == Mode::Array {
            end = end.strip_suffix(b",").unwrap_or(end).trim_ascii_end();
        }
        if end.last() != Some(&b'}') {
            return None;
        }
        let parsed = serde_json::from_slice::<Fields>(end).ok()?.request();
        let take = end.len();
        self.reader.consume(take);
        Some(parsed)
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
                    if let Some(parsed) = self.line_record() {
                        self.index += 1;
                        return Some(parsed.map_err(|why| TraceError::Record {
                            file: self.file.clone(),
                            position: Position::Record(self.index),
                            why,
                        }));
                    }
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
                        serde_json::from_slice::<Fields>(&self.record)
                            .map_err(|e| e.to_string())
                            .and_then(|fields| fields.request())
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
