//! `Range` request headers (blob reads) and `Content-Range` request headers (chunked uploads).

/// Why a range header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not parseable.
    #[error("malformed range {0:?}: expected bytes=START-END, bytes=START- or bytes=-SUFFIX")]
    Malformed(String),
    /// Parseable but outside the content.
    #[error("range not satisfiable for content of {len} bytes")]
    Unsatisfiable {
        /// Length of the content.
        len: u64,
    },
}

/// One byte range as requested, before the content length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` (inclusive).
    FromTo(u64, u64),
    /// `bytes=start-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// A range resolved against a content length: `start..=end`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

impl ResolvedRange {
    /// Number of bytes (saturating, so a hand-built inverted range is empty rather than a panic).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Always false: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` response value, e.g. `bytes 0-99/1000`.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, total)
    }
}

impl ByteRange {
    /// Parses a `Range` header. `Ok(None)` means "serve the whole content": a unit other than bytes
    /// or several ranges, both of which RFC 9110 lets a server ignore.
    pub fn parse_header(value: &str) -> Result<Option<ByteRange>, RangeError> {
        let bad = || RangeError::Malformed(value.chars().take(100).collect());
        let v = value.trim();
        let Some(spec) = v.strip_prefix("bytes=") else {
            return if v.contains('=') {
                Ok(None)
            } else {
                Err(bad())
            };
        };
        if spec.contains(',') {
            return Ok(None);
        }
        let (a, b) = spec.trim().split_once('-').ok_or_else(bad)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        match (a.is_empty(), b.is_empty()) {
            (true, true) => Err(bad()),
            (true, false) => Ok(Some(ByteRange::Suffix(num(b)?))),
            (false, true) => Ok(Some(ByteRange::From(num(a)?))),
            (false, false) => {
                let (s, e) = (num(a)?, num(b)?);
                if e < s {
                    return Err(bad());
                }
                Ok(Some(ByteRange::FromTo(s, e)))
            }
        }
    }

    /// Resolves against a content length (RFC 9110 §14.1.2: an end past the content is clamped).
    pub fn resolve(self, len: u64) -> Result<ResolvedRange, RangeError> {
        let unsat = RangeError::Unsatisfiable { len };
        match self {
            ByteRange::FromTo(s, e) if s < len && s <= e => Ok(ResolvedRange {
                start: s,
                end: e.min(len - 1),
            }),
            ByteRange::From(s) if s < len => Ok(ResolvedRange {
                start: s,
                end: len - 1,
            }),
            ByteRange::Suffix(n) if n > 0 && len > 0 => Ok(ResolvedRange {
                start: len - n.min(len),
                end: len - 1,
            }),
            _ => Err(unsat),
        }
    }
}

/// A chunk's position in an upload, from a PATCH `Content-Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the first byte.
    pub start: u64,
    /// Offset of the last byte, inclusive.
    pub end: u64,
}

impl ContentRange {
    /// Parses `START-END` (the distribution spec's form), also accepting `bytes START-END[/TOTAL]`
    /// and `bytes=START-END` as sent by some clients.
    pub fn parse(value: &str) -> Result<ContentRange, RangeError> {
        let bad = || RangeError::Malformed(value.chars().take(100).collect());
        let mut v = value.trim();
        v = v
            .strip_prefix("bytes=")
            .or_else(|| v.strip_prefix("bytes "))
            .unwrap_or(v);
        let v = v.split_once('/').map_or(v, |(r, total)| {
            let _ = total;
            r
        });
        let (a, b) = v.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (start, end) = (num(a)?, num(b)?);
        if end < start {
            return Err(bad());
        }
        Ok(ContentRange { start, end })
    }

    /// Bytes the chunk claims to carry (saturating; the parser never builds an inverted range).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Always false: a content range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_headers() {
        let r = |s: &str, len: u64| {
            ByteRange::parse_header(s).map(|o| o.map(|b| b.resolve(len).map(|x| (x.start, x.end))))
        };
        assert_eq!(r("bytes=0-9", 100), Ok(Some(Ok((0, 9)))));
        assert_eq!(r("bytes=90-200", 100), Ok(Some(Ok((90, 99)))));
        assert_eq!(r("bytes=50-", 100), Ok(Some(Ok((50, 99)))));
        assert_eq!(r("bytes=-10", 100), Ok(Some(Ok((90, 99)))));
        assert_eq!(r("bytes=-1000", 100), Ok(Some(Ok((0, 99)))));
        assert_eq!(
            r("bytes=100-", 100),
            Ok(Some(Err(RangeError::Unsatisfiable { len: 100 })))
        );
        assert_eq!(
            r("bytes=-0", 100),
            Ok(Some(Err(RangeError::Unsatisfiable { len: 100 })))
        );
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=5-1",
            "bytes=a-b",
            "0-1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert!(ByteRange::parse_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            ContentRange::parse("0-99"),
            Ok(ContentRange { start: 0, end: 99 })
        );
        assert_eq!(ContentRange::parse("bytes 5-9/10").map(|c| c.len()), Ok(5));
        assert_eq!(ContentRange::parse("bytes=5-9").map(|c| c.start), Ok(5));
        for bad in ["", "5", "9-5", "-5", "a-b", "5-"] {
            assert!(ContentRange::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn resolved_ranges_stay_inside(s in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 0u64..5000) {
            if let Ok(Some(r)) = ByteRange::parse_header(&s)
                && let Ok(x) = r.resolve(len) {
                    prop_assert!(x.start <= x.end && x.end < len);
                }
        }

        #[test]
        fn range_never_panics(s in "\\PC{0,80}", len in any::<u64>()) {
            if let Ok(Some(r)) = ByteRange::parse_header(&s) {
                let _ = r.resolve(len);
            }
            let _ = ContentRange::parse(&s);
        }
    }
}
