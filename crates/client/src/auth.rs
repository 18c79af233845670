//! `WWW-Authenticate` challenges and bearer tokens.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter, if any.
        service: Option<String>,
        /// `scope` parameter, if any.
        scope: Option<String>,
    },
    /// `Basic realm="…"`: send credentials directly.
    Basic,
}

impl Challenge {
    /// Parses a header value. Parameters may be quoted (with `\"` escapes) or bare tokens, in any
    /// order; unknown parameters are ignored. `None` for schemes other than Bearer and Basic or a
    /// Bearer challenge without a realm.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest)?;
        Some(Challenge::Bearer {
            realm: params.get("realm").filter(|r| !r.is_empty())?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// The parameters a challenge is read for; others are skipped without being kept, so what a
/// registry sends cannot grow ferry's memory beyond the header itself.
const KNOWN_PARAMS: [&str; 3] = ["realm", "service", "scope"];

/// `key=value` or `key="quoted, value"` pairs separated by commas; only [`KNOWN_PARAMS`] are kept.
fn parse_params(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c == ',' || c == '"' {
                return None;
            }
            key.push(c);
            chars.next();
        }
        chars.next()?; // '='
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if KNOWN_PARAMS.contains(&key.as_str()) {
            out.insert(key, value.trim().to_owned());
        }
    }
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Token {
    /// Parses a token endpoint's answer. Tokens are renewed a little before they expire.
    pub fn from_json(bytes: &[u8], now: Instant) -> Option<Token> {
        let r: TokenResponse = serde_json::from_slice(bytes).ok()?;
        let value = r.token.or(r.access_token).filter(|t| !t.is_empty())?;
        // The spec's default lifetime is 60 s; never trust one shorter than that less 10 s margin.
        let life = r.expires_in.unwrap_or(60).max(60);
        Some(Token {
            value,
            expires: now + Duration::from_secs(life - 10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"bearer scope="a:b:pull,push", realm=http://127.0.0.1:1/t"#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("a:b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse(r#"Bearer realm="unterminated"#), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn many_unknown_parameters_are_not_kept() {
        let header = format!(
            "Bearer realm=\"https://r/t\",{}",
            (0..10_000)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let params = parse_params(header.trim_start_matches("Bearer ")).unwrap();
        assert_eq!(params.len(), 1);
    }

    #[test]
    fn tokens() {
        let now = Instant::now();
        let t = Token::from_json(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.expires, now + Duration::from_secs(290));
        assert_eq!(
            Token::from_json(br#"{"access_token":"x"}"#, now)
                .unwrap()
                .value,
            "x"
        );
        assert!(Token::from_json(br#"{"token":""}"#, now).is_none());
        assert!(Token::from_json(b"nope", now).is_none());
    }

    proptest! {
        /// Whatever the header, parsing never panics and keeps no more text than the header has
        /// (its memory is bounded by the header size, which the HTTP client bounds).
        #[test]
        fn challenge_parse_keeps_at_most_the_header(s in "\\PC{0,300}") {
            if let Some(Challenge::Bearer { realm, service, scope }) = Challenge::parse(&s) {
                let kept = realm.len()
                    + service.map_or(0, |x| x.len())
                    + scope.map_or(0, |x| x.len());
                prop_assert!(kept <= s.len());
            }
        }


        #[test]
        fn quoted_values_roundtrip(realm in "[a-zA-Z0-9:/._,= -]{1,40}", scope in "[a-zA-Z0-9:/._,-]{0,40}") {
            let header = format!("Bearer realm=\"{realm}\",scope=\"{scope}\"");
            let parsed = Challenge::parse(&header);
            let want_realm = realm.trim().to_owned();
            if want_realm.is_empty() {
                prop_assert_eq!(parsed, None);
            } else {
                prop_assert_eq!(parsed, Some(Challenge::Bearer { realm: want_realm, service: None, scope: Some(scope.trim().to_owned()) }));
            }
        }
    }
}
