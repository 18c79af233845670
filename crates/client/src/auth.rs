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

/// `key=value` or `key="quoted, value"` pairs separated by commas.
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
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
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
        #[test]
        fn challenge_parse_never_panics(s in "\\PC{0,200}") {
            let _ = Challenge::parse(&s);
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
