//! Human units on the command line and in the config: sizes (`20GiB`, `500MB`, `1024`) and ages
//! (`30d`, `12h`, `90m`, `45s`, `2w`).

/// Bytes from `<number>[unit]`; units B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB
/// (powers of 1024), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("invalid size {s:?}: use a number with an optional unit, e.g. 500MB or 20GiB");
    if num.is_empty() || num.len() > 20 {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Seconds from `<number><unit>` with unit s, m, h, d or w.
pub fn parse_age(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad =
        || format!("invalid age {s:?}: use a number and a unit, e.g. 45s, 90m, 12h, 30d or 2w");
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    if num.is_empty() || num.len() > 15 {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("age {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert_eq!(parse_size(" 3 KiB "), Ok(3072));
        for bad in [
            "",
            "GiB",
            "-1",
            "1.5GB",
            "10 parsecs",
            "99999999999999999999999TB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_age("30d"), Ok(30 * 86_400));
        assert_eq!(parse_age("90m"), Ok(5400));
        for bad in ["", "30", "d", "1.5h", "3y", "-2d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\\\PC{0,30}") {
            let _ = parse_size(&s);
            let _ = parse_age(&s);
        }

        #[test]
        fn sizes_roundtrip(n in 0u64..1_000_000, unit in prop_oneof![Just(("", 1u64)), Just(("KiB", 1024)), Just(("MB", 1_000_000)), Just(("GiB", 1 << 30))]) {
            prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Ok(n * unit.1));
        }

        #[test]
        fn ages_roundtrip(n in 0u64..100_000, unit in prop_oneof![Just(("s", 1u64)), Just(("m", 60)), Just(("h", 3600)), Just(("d", 86_400)), Just(("w", 604_800))]) {
            prop_assert_eq!(parse_age(&format!("{n}{}", unit.0)), Ok(n * unit.1));
        }
    }
}
