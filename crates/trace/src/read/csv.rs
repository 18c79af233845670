//! The pandas CSV export of trace records (as in the shared sample): a header naming the original
//! keys, maybe index columns first, `written` as a float, timestamps without `T`/`Z`. Quoted fields
//! (RFC 4180, `""` inside) are read, across lines too.

use std::io::BufRead;
use std::path::PathBuf;

use crate::error::{Position, TraceError};
use crate::read::record::{Field, Fields};
use crate::request::Request;

/// Longest record read (a line, or lines joined by a quoted field).
const MAX_RECORD: usize = 1 << 20;

/// The requests of a CSV trace file.
pub(crate) struct CsvRecords {
    reader: Box<dyn BufRead + Send>,
    file: PathBuf,
    header: Option<Vec<String>>,
    /// Lines read so far.
    line: u64,
    done: bool,
}

impl CsvRecords {
    pub(crate) fn new(reader: Box<dyn BufRead + Send>, file: PathBuf) -> CsvRecords {
        CsvRecords {
            reader,
            file,
            header: None,
            line: 0,
            done: false,
        }
    }

    /// The next record's fields and the line it starts on; `None` at the end.
    fn record(&mut self) -> Result<Option<(u64, Vec<String>)>, TraceError> {
        let mut raw = Vec::new();
        let start = self.line + 1;
        loop {
            let before = raw.len();
            let limit = (MAX_RECORD + 1 - raw.len().min(MAX_RECORD)) as u64;
            let n = std::io::Read::take(&mut self.reader, limit)
                .read_until(b'\n', &mut raw)
                .map_err(|source| TraceError::Io {
                    file: self.file.clone(),
                    source,
                })?;
            if n == 0 {
                if raw.is_empty() {
                    return Ok(None);
                }
                return Err(TraceError::File {
                    file: self.file.clone(),
                    why: format!(
                        "line {start}: a quoted field is not closed by the end of the file"
                    ),
                });
            }
            self.line += 1;
            if raw.len() > MAX_RECORD {
                return Err(TraceError::File {
                    file: self.file.clone(),
                    why: format!("line {start}: longer than {MAX_RECORD} bytes"),
                });
            }
            let quotes = raw.iter().filter(|&&b| b == b'"').count();
            if quotes % 2 == 0 || raw[before..].last() != Some(&b'\n') {
                break;
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches(['\n', '\r']);
        Ok(Some((start, split(text))))
    }
}

/// The fields of one CSV record.
fn split(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

impl Iterator for CsvRecords {
    type Item = Result<Request, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let (line, fields) = match self.record() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if fields.len() == 1 && fields[0].trim().is_empty() {
                continue;
            }
            let Some(header) = &self.header else {
                if !fields.iter().any(|f| f == "http.request.uri") {
                    self.done = true;
                    return Some(Err(TraceError::File {
                        file: self.file.clone(),
                        why: "the CSV header names no http.request.uri column".to_owned(),
                    }));
                }
                self.header = Some(fields);
                continue;
            };
            if fields.len() != header.len() {
                return Some(Err(TraceError::Record {
                    file: self.file.clone(),
                    position: Position::Line(line),
                    why: format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        header.len()
                    ),
                }));
            }
            let mut record = Fields::default();
            for (name, value) in header.iter().zip(&fields) {
                if let Some(slot) = record.slot(name) {
                    *slot = Some(Field::Text(value.as_str().into()));
                }
            }
            return Some(record.request().map_err(|why| TraceError::Record {
                file: self.file.clone(),
                position: Position::Line(line),
                why,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        assert_eq!(
            split(r#"a,"b,c","d""e",,"#),
            vec!["a", "b,c", "d\"e", "", ""]
        );
    }
}
