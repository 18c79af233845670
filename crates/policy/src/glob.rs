//! Name patterns: `*` (pinned images, always-revalidated tags) and, for listing commands that
//! take shell-style patterns, `?` as well.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    matches(pattern, text, false)
}

/// Shell-style: `*` matches any run of characters, `?` exactly one; everything else matches
/// itself. (`ferry info` and wildcard copy sources; pins keep [`glob_match`], where `?` is
/// literal, so existing pin patterns keep their meaning.)
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    matches(pattern, text, true)
}

/// Whether `pattern` has a wildcard [`wildcard_match`] gives a meaning to.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// One left-to-right pass that backtracks only to the last `*`, so it is linear in practice and
/// never exponential. Works on characters, so `?` is one character, not one byte.
fn matches(pattern: &str, text: &str, any_char: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && (p[pi] == t[ti] || (any_char && p[pi] == '?')) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
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
    while pi < p.len() && p[pi] == '*' {
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
        // In a pin, `?` is literal.
        assert!(!glob_match("v?", "v1"));
        assert!(wildcard_match("v?", "v1"));
        assert!(!wildcard_match("v?", "v12"));
        assert!(!wildcard_match("v?", "v"));
        assert!(wildcard_match("a?*c", "abXc"));
        assert!(has_wildcard("a?") && has_wildcard("*") && !has_wildcard("latest"));
    }

    /// The obvious reading of a glob: every `*` is `.*`, everything else is literal, anchored.
    fn as_regex(pattern: &str) -> regex_lite::Regex {
        let body: Vec<String> = pattern.split('*').map(regex_lite::escape).collect();
        regex_lite::Regex::new(&format!("(?s)^{}$", body.join(".*"))).expect("escaped pattern")
    }

    /// The shell reading: `*` is `.*`, `?` is `.`, everything else is literal, anchored.
    fn as_shell_regex(pattern: &str) -> regex_lite::Regex {
        let body: String = pattern
            .chars()
            .map(|c| match c {
                '*' => ".*".to_owned(),
                '?' => ".".to_owned(),
                c => regex_lite::escape(&c.to_string()),
            })
            .collect();
        regex_lite::Regex::new(&format!("(?s)^{body}$")).expect("escaped pattern")
    }

    proptest! {
        #[test]
        fn wildcard_agrees_with_the_shell_regex_reading(pattern in "[ab.*?é]{0,8}", text in "[ab.?é]{0,10}") {
            prop_assert_eq!(wildcard_match(&pattern, &text), as_shell_regex(&pattern).is_match(&text));
        }

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
