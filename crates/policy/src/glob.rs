//! Name patterns where `*` is the only wildcard: pinned images and always-revalidated tags.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        assert!(glob_match("latest", "latest"));
        assert!(!glob_match("latest", "latest2"));
        assert!(glob_match("v*", "v1.2"));
        assert!(glob_match("*-dev", "1.0-dev"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
    }

    /// The obvious reading of a glob: every `*` is `.*`, everything else is literal, anchored.
    fn as_regex(pattern: &str) -> regex_lite::Regex {
        let body: Vec<String> = pattern.split('*').map(regex_lite::escape).collect();
        regex_lite::Regex::new(&format!("(?s)^{}$", body.join(".*"))).expect("escaped pattern")
    }

    proptest! {
        #[test]
        fn glob_star_matches_everything_and_literals_match_themselves(t in "[a-zA-Z0-9._-]{0,30}") {
            prop_assert!(glob_match("*", &t));
            prop_assert!(glob_match(&t, &t));
            let prefixed = format!("{t}*");
            let longer = format!("{t}x");
            prop_assert!(glob_match(&prefixed, &longer));
        }

        // A small alphabet (with a regex metacharacter and a multi-byte character) makes matches
        // and near misses both common.
        #[test]
        fn glob_agrees_with_the_regex_reading(pattern in "[ab.*é]{0,8}", text in "[ab.é]{0,10}") {
            prop_assert_eq!(glob_match(&pattern, &text), as_regex(&pattern).is_match(&text));
        }
    }
}
