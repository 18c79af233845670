//! Human units in the configuration, on the command line and in admin queries: sizes (`20GiB`,
//! `500MB`, `1024`) and ages (`30d`, `12h`, `90m`, `45s`, `2w`).

use std::fmt;

/// What was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A byte count.
    Size,
    /// A duration.
    Age,
}

impl Quantity {
    fn hint(self) -> &'static str {
        match self {
            Quantity::Size => "use a number with an optional unit, e.g. 500MB or 20GiB",
            Quantity::Age => "use a number and a unit, e.g. 45s, 90m, 12h, 30d or 2w",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Size => "size",
            Quantity::Age => "age",
        })
    }
}

/// A size or age the user wrote that does not parse; always the writer's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Nothing but whitespace.
    #[error("invalid {quantity} {input:?}: it is empty; {}", .quantity.hint())]
    Empty {
        /// What was being read.
        quantity: Quantity,
        /// The text as given.
        input: String,
    },
    /// The number is missing or not a whole non-negative number.
    #[error("invalid {quantity} {input:?}: {}; {}", number_problem(.number), .quantity.hint())]
    BadNumber {
        /// What was being read.
        quantity: Quantity,
        /// The text as given.
        input: String,
        /// What stood where the number belongs.
        number: String,
    },
    /// An age without its unit.
    #[error("invalid {quantity} {input:?}: the unit is missing; {}", .quantity.hint())]
    MissingUnit {
        /// What was being read.
        quantity: Quantity,
        /// The text as given.
        input: String,
    },
    /// A unit not in the list.
    #[error("invalid {quantity} {input:?}: unknown unit {unit:?}; {}", .quantity.hint())]
    UnknownUnit {
        /// What was being read.
        quantity: Quantity,
        /// The text as given.
        input: String,
        /// The unit as given.
        unit: String,
    },
    /// More than 64 bits can hold (bytes, or seconds).
    #[error("{quantity} {input:?} is too large")]
    TooLarge {
        /// What was being read.
        quantity: Quantity,
        /// The text as given.
        input: String,
    },
}

fn number_problem(number: &str) -> String {
    if number.is_empty() {
        "the number is missing".to_owned()
    } else {
        format!("{number:?} is not a whole number")
    }
}

/// The leading decimal digits of `t`, and the rest; an error when what stands before the first
/// letter or space is not all digits (a sign, a decimal point, a missing number).
fn split_number<'a>(
    quantity: Quantity,
    input: &str,
    t: &'a str,
) -> Result<(&'a str, &'a str), UnitError> {
    if t.is_empty() {
        return Err(UnitError::Empty {
            quantity,
            input: input.to_owned(),
        });
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let token = t
        .find(|c: char| c.is_alphabetic() || c.is_whitespace())
        .unwrap_or(t.len());
    if digits == 0 || digits != token {
        return Err(UnitError::BadNumber {
            quantity,
            input: input.to_owned(),
            number: t[..token].to_owned(),
        });
    }
    Ok(t.split_at(digits))
}

/// Bytes from `<number>[unit]`; units B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB
/// (powers of 1024), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let quantity = Quantity::Size;
    let (num, unit) = split_number(quantity, s, s.trim())?;
    let too_large = || UnitError::TooLarge {
        quantity,
        input: s.to_owned(),
    };
    if num.len() > 20 {
        return Err(too_large());
    }
    // Digits only: parsing fails only by overflow.
    let n: u64 = num.parse().map_err(|_| too_large())?;
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
        _ => {
            return Err(UnitError::UnknownUnit {
                quantity,
                input: s.to_owned(),
                unit: unit.trim().to_owned(),
            });
        }
    };
    n.checked_mul(mult).ok_or_else(too_large)
}

/// Seconds from `<number><unit>` with unit s, m, h, d or w.
pub fn parse_age(s: &str) -> Result<u64, UnitError> {
    let quantity = Quantity::Age;
    let (num, unit) = split_number(quantity, s, s.trim())?;
    let too_large = || UnitError::TooLarge {
        quantity,
        input: s.to_owned(),
    };
    let mult = match unit {
        "" => {
            return Err(UnitError::MissingUnit {
                quantity,
                input: s.to_owned(),
            });
        }
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(UnitError::UnknownUnit {
                quantity,
                input: s.to_owned(),
                unit: unit.to_owned(),
            });
        }
    };
    // Longer numbers overflow with most units.
    if num.len() > 15 {
        return Err(too_large());
    }
    let n: u64 = num.parse().map_err(|_| too_large())?;
    n.checked_mul(mult).ok_or_else(too_large)
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

    #[test]
    fn errors_say_what_was_wrong() {
        let msg = |r: Result<u64, UnitError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(parse_size(" ")),
            "invalid size \" \": it is empty; use a number with an optional unit, e.g. 500MB or 20GiB"
        );
        assert_eq!(
            msg(parse_size("1.5GB")),
            "invalid size \"1.5GB\": \"1.5\" is not a whole number; use a number with an optional unit, e.g. 500MB or 20GiB"
        );
        assert_eq!(
            msg(parse_size("GiB")),
            "invalid size \"GiB\": the number is missing; use a number with an optional unit, e.g. 500MB or 20GiB"
        );
        assert_eq!(
            msg(parse_size("10 parsecs")),
            "invalid size \"10 parsecs\": unknown unit \"parsecs\"; use a number with an optional unit, e.g. 500MB or 20GiB"
        );
        assert_eq!(
            msg(parse_size("99999999999999999999999TB")),
            "size \"99999999999999999999999TB\" is too large"
        );
        assert_eq!(
            msg(parse_age("30")),
            "invalid age \"30\": the unit is missing; use a number and a unit, e.g. 45s, 90m, 12h, 30d or 2w"
        );
        assert_eq!(
            msg(parse_age("3y")),
            "invalid age \"3y\": unknown unit \"y\"; use a number and a unit, e.g. 45s, 90m, 12h, 30d or 2w"
        );
        assert_eq!(
            msg(parse_age("-2d")),
            "invalid age \"-2d\": \"-2\" is not a whole number; use a number and a unit, e.g. 45s, 90m, 12h, 30d or 2w"
        );
        assert!(matches!(
            parse_age("999999999999999w"),
            Err(UnitError::TooLarge { .. })
        ));
    }

    /// The accepted sizes as a pattern: up to 20 digits, optional spaces, an optional unit.
    fn size_form() -> regex_lite::Regex {
        regex_lite::Regex::new(r"(?i)^\s*([0-9]{1,20})\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$")
            .unwrap()
    }

    fn size_unit(u: &str) -> u128 {
        match u.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => 1 << 40,
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,30}") {
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

        // Inputs near the accepted forms: every size the pattern describes parses to its value
        // (unless it overflows), everything else is refused.
        #[test]
        fn sizes_are_exactly_the_documented_form(s in "[ \t]?[-.0-9]{0,22}[ ]?(b|KB|mb|Gb|tib|TiB|x|kib )?[ ]?") {
            let expected = size_form().captures(&s).and_then(|c| {
                let n: u128 = c[1].parse().ok()?;
                let v = n * size_unit(c.get(2).map_or("", |u| u.as_str()));
                u64::try_from(v).ok()
            });
            prop_assert_eq!(parse_size(&s).ok(), expected);
        }

        #[test]
        fn ages_are_exactly_the_documented_form(s in "[ ]?[-.0-9]{0,17}[ ]?[smhdwy]?[ ]?") {
            let expected = regex_lite::Regex::new(r"^\s*([0-9]{1,15})([smhdw])\s*$").unwrap().captures(&s).and_then(|c| {
                let n: u128 = c[1].parse().ok()?;
                let mult = match &c[2] { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400, _ => 604_800 };
                u64::try_from(n * mult).ok()
            });
            prop_assert_eq!(parse_age(&s).ok(), expected);
        }
    }
}
