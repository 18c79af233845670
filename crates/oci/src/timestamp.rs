//! UTC timestamps as RFC 3339 writes them (`2017-06-20T02:41:18.399Z`: image configs, annotations,
//! registry traces) and with a space for the `T` (the traces' CSV export), as microseconds since
//! the Unix epoch. No time zone library: the civil-date arithmetic is a few lines. Pure: no clock.

/// Microseconds since the Unix epoch of a UTC timestamp `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z]`
/// (a fraction of up to 9 digits; digits past microseconds are dropped). `None` if it is not one.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let b = s.as_bytes();
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let micros = match s.get(19..)? {
        "" => 0,
        frac => {
            let digits = frac.strip_prefix('.')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            // Microseconds: the first six digits, zero-padded on the right.
            digits
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(6)
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        }
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// Formats microseconds since the epoch as the original traces do (`2017-06-20T02:41:18.399Z`,
/// milliseconds), for writing traces.
pub fn format_timestamp(us: i64) -> String {
    let days = us.div_euclid(86_400_000_000);
    let in_day = us.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let ms = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_trace_spellings_parse_to_the_same_instant() {
        let json = parse_timestamp("2017-06-20T02:41:18.399Z").unwrap();
        let csv = parse_timestamp("2017-06-20 02:41:18.399").unwrap();
        assert_eq!(json, csv);
        // 2017-06-20T00:00:00Z is 1497916800 s after the epoch.
        assert_eq!(
            parse_timestamp("2017-06-20T00:00:00Z"),
            Some(1_497_916_800_000_000)
        );
        assert_eq!(
            json,
            1_497_916_800_000_000 + (2 * 3600 + 41 * 60 + 18) * 1_000_000 + 399_000
        );
        assert_eq!(
            parse_timestamp("2017-06-20 00:00:03.123456789"),
            Some(1_497_916_803_123_456)
        );
        assert_eq!(format_timestamp(json), "2017-06-20T02:41:18.399Z");
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            "",
            "2017-06-20",
            "2017-13-01T00:00:00Z",
            "2017-02-29T00:00:00Z",
            "2017-06-20X00:00:00Z",
            "2017-06-20T24:00:00Z",
            "2017-06-20T00:00:00.Z",
            "2017-06-20T00:00:00.1234567890Z",
            "2017-06-20T00:00:00+02:00",
            "２017-06-20T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert!(parse_timestamp("2016-02-29T00:00:00Z").is_some());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = parse_timestamp(&s);
        }

        #[test]
        fn format_then_parse_round_trips(ms in 0i64..4_102_444_800_000) {
            let us = ms * 1000;
            prop_assert_eq!(parse_timestamp(&format_timestamp(us)), Some(us));
        }
    }
}
