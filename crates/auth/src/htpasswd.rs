//! htpasswd files with bcrypt entries, read the way Distribution reads them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr as _;

/// Lowest bcrypt cost accepted: `htpasswd -B -C 4` is the fastest Apache writes.
pub const MIN_COST: u32 = 4;
/// Highest bcrypt cost accepted: cost 15 takes seconds per check on a small server.
pub const MAX_COST: u32 = 14;
/// bcrypt reads only this many bytes of a password.
pub const MAX_PASSWORD_LEN: usize = 72;

/// A valid bcrypt hash whose cost digits [`dummy_hash`] replaces; its salt and digest are
/// arbitrary, since it only exists to take the same time as a real check.
const DUMMY_HASH: &str = "$2b$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

/// Users and their bcrypt hashes.
#[derive(Clone)]
pub struct Htpasswd {
    entries: BTreeMap<String, String>,
    /// Checked for unknown users, at the file's most common cost.
    dummy: String,
}

/// Why an htpasswd file was refused. Names the line, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    /// A line without `:`.
    #[error("htpasswd line {line}: no ':' between user and hash")]
    NoColon {
        /// 1-based line number.
        line: usize,
    },
    /// `:hash`.
    #[error("htpasswd line {line}: empty user name")]
    EmptyUser {
        /// 1-based line number.
        line: usize,
    },
    /// MD5, SHA-1, crypt or plain text.
    #[error("htpasswd line {line}: only bcrypt (htpasswd -B) entries are supported")]
    NotBcrypt {
        /// 1-based line number.
        line: usize,
    },
    /// A `$2…$` prefix but not a well-formed 60-character hash.
    #[error("htpasswd line {line}: malformed bcrypt hash")]
    MalformedHash {
        /// 1-based line number.
        line: usize,
    },
    /// Cost outside [`MIN_COST`]..=[`MAX_COST`].
    #[error("htpasswd line {line}: bcrypt cost {cost} is outside 4..=14 (use htpasswd -B -C 10)")]
    Cost {
        /// 1-based line number.
        line: usize,
        /// The cost in the hash.
        cost: u32,
    },
    /// The same user twice.
    #[error("htpasswd line {line}: user already defined on line {first}")]
    Duplicate {
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first definition.
        first: usize,
    },
}

impl Htpasswd {
    /// Parses an htpasswd file: lines trimmed, empty lines and `#` comments skipped, each other
    /// line `user:hash` split at the first `:`. Only bcrypt (`$2a$`, `$2b$`, `$2y$`) with cost
    /// 4..=14; a user defined twice is an error (Distribution would silently keep the last).
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut entries = BTreeMap::new();
        let mut first_line = HashMap::new();
        let mut costs: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (user, hash) = trimmed
                .split_once(':')
                .ok_or(HtpasswdError::NoColon { line })?;
            if user.is_empty() {
                return Err(HtpasswdError::EmptyUser { line });
            }
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(HtpasswdError::NotBcrypt { line });
            }
            let parts = bcrypt::HashParts::from_str(hash)
                .map_err(|_| HtpasswdError::MalformedHash { line })?;
            let cost = parts.get_cost();
            if !(MIN_COST..=MAX_COST).contains(&cost) {
                return Err(HtpasswdError::Cost { line, cost });
            }
            if let Some(&first) = first_line.get(user) {
                return Err(HtpasswdError::Duplicate { line, first });
            }
            first_line.insert(user.to_owned(), line);
            *costs.entry(cost).or_default() += 1;
            entries.insert(user.to_owned(), hash.to_owned());
        }
        // Most common cost, the higher on a tie; 10 (htpasswd's default) for an empty file.
        let cost = costs
            .iter()
            .max_by_key(|&(&cost, &count)| (count, cost))
            .map_or(10, |(&cost, _)| cost);
        Ok(Htpasswd {
            entries,
            dummy: dummy_hash(cost),
        })
    }

    /// Whether `password` is `user`'s. An unknown user costs one bcrypt check against a dummy
    /// hash of the file's usual cost, so the time taken does not tell which users exist.
    ///
    /// A password longer than [`MAX_PASSWORD_LEN`] (72) bytes never verifies: bcrypt would
    /// compare only its first 72 bytes, so any longer password sharing them would pass too. This
    /// is decided before hashing; the length is visible on the wire anyway.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        match self.entries.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = std::hint::black_box(bcrypt::verify(password, &self.dummy));
                false
            }
        }
    }

    /// The user names, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no users (then nobody can log in).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes stay out of logs: offline cracking needs only them.
        f.debug_struct("Htpasswd")
            .field("users", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn dummy_hash(cost: u32) -> String {
    format!("$2b${cost:02}{}", &DUMMY_HASH[6..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `alice` / `password`, cost 4 (the bcrypt crate's own test vector).
    const ALICE: &str = "alice:$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

    fn file_with(user: &str, password: &str) -> Htpasswd {
        let hash = bcrypt::hash(password, 4).expect("hash");
        Htpasswd::parse(&format!("{user}:{hash}\n")).expect("parse")
    }

    #[test]
    fn parses_and_verifies() {
        let hash = bcrypt::hash("wonderland", 4).expect("hash");
        let text = format!("# users\n\n  alice:{hash}  \nbob:{}\n", dummy_hash(5));
        let file = Htpasswd::parse(&text).expect("parse");
        assert_eq!(file.users().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(file.len(), 2);
        assert!(file.verify("alice", "wonderland"));
        assert!(!file.verify("alice", "Wonderland"));
        assert!(!file.verify("carol", "wonderland"));
        assert!(!format!("{file:?}").contains("$2"));
    }

    #[test]
    fn dummy_hash_is_valid_at_every_cost() {
        for cost in MIN_COST..=MAX_COST {
            let hash = dummy_hash(cost);
            let parts = bcrypt::HashParts::from_str(&hash).expect("valid");
            assert_eq!(parts.get_cost(), cost);
        }
        let file = Htpasswd::parse(ALICE).expect("parse");
        assert_eq!(file.dummy, dummy_hash(4));
        assert!(file.verify("alice", "password"));
    }

    #[test]
    fn errors_name_the_line_and_never_the_content() {
        let md5 = "alice:$apr1$abcdefgh$0123456789abcdefghijkl";
        let cases = [
            ("# c\nnocolon", HtpasswdError::NoColon { line: 2 }),
            (":$2y$04$x", HtpasswdError::EmptyUser { line: 1 }),
            (md5, HtpasswdError::NotBcrypt { line: 1 }),
            ("alice:plaintext", HtpasswdError::NotBcrypt { line: 1 }),
            (
                "alice:$2y$04$short",
                HtpasswdError::MalformedHash { line: 1 },
            ),
        ];
        for (text, expected) in cases {
            let err = Htpasswd::parse(text).expect_err(text);
            assert_eq!(err, expected);
            let message = err.to_string();
            assert!(
                !message.contains("alice") && !message.contains('$'),
                "{message}"
            );
        }
        let cost3 = format!("a:{}", dummy_hash(4).replace("$04$", "$03$"));
        assert_eq!(
            Htpasswd::parse(&cost3).expect_err("cost 3"),
            HtpasswdError::Cost { line: 1, cost: 3 }
        );
        let cost15 = format!("\n\na:{}", dummy_hash(15));
        let err = Htpasswd::parse(&cost15).expect_err("cost 15");
        assert_eq!(err, HtpasswdError::Cost { line: 3, cost: 15 });
        assert!(err.to_string().contains("cost 15"));
        let duplicate = format!("{ALICE}\n#\n{ALICE}");
        assert_eq!(
            Htpasswd::parse(&duplicate).expect_err("duplicate"),
            HtpasswdError::Duplicate { line: 3, first: 1 }
        );
    }

    #[test]
    fn passwords_longer_than_72_bytes_never_verify() {
        let long = "x".repeat(MAX_PASSWORD_LEN);
        let file = file_with("u", &long);
        assert!(file.verify("u", &long));
        // bcrypt alone would accept this: it ignores byte 73 onwards.
        assert!(!file.verify("u", &format!("{long}y")));
    }

    #[test]
    fn empty_file_verifies_nobody() {
        let file = Htpasswd::parse("# nobody\n").expect("parse");
        assert!(file.is_empty());
        assert!(!file.verify("alice", "wonderland"));
    }

    /// bcrypt runs four times a case, so this runs at most 64 cases whatever `PROPTEST_CASES`
    /// says (proptest lets the variable override a `proptest_config`, hence the runner).
    #[test]
    fn verifies_exactly_the_password() {
        let mut runner = crate::capped_runner(64);
        let strategy = ("[a-z][a-z0-9_.-]{0,15}", "\\PC{0,18}", "\\PC{0,18}");
        let result = runner.run(&strategy, |(user, password, other)| {
            let file = file_with(&user, &password);
            prop_assert!(file.verify(&user, &password));
            prop_assert_eq!(file.verify(&user, &other), other == password);
            let stranger = format!("{user}x");
            prop_assert!(!file.verify(&stranger, &password));
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}\n{runner}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Htpasswd::parse(&text);
        }
    }
}
