//! Token scopes as the Docker token spec writes them (`repository:library/alpine:pull,push`) and
//! the `access` claim they become.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest scope accepted; repository names are at most a few hundred bytes.
pub const MAX_SCOPE_LEN: usize = 1024;

/// One resource scope: `type[(class)]:name:action[,action]*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Resource type without its class: `repository`, `registry`.
    pub kind: String,
    /// The optional class, as in `repository(plugin)`; kept only to print the scope back, it
    /// changes nothing about access.
    pub class: Option<String>,
    /// Resource name; may start with `host:port/`.
    pub name: String,
    /// Requested actions, in order. Unknown actions are kept but grant nothing.
    pub actions: Vec<String>,
}

/// Why a scope was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Longer than [`MAX_SCOPE_LEN`].
    #[error("scope is longer than 1024 bytes")]
    TooLong,
    /// Fewer than three `:`-separated parts.
    #[error("scope is not of the form type:name:actions")]
    MissingParts,
    /// A type (or class) outside `[a-z0-9]+`.
    #[error("scope resource type is not [a-z0-9]+ with an optional (class)")]
    BadType,
    /// An empty name, a character outside `[A-Za-z0-9._/:-]`, or a `:` outside a leading
    /// `host:port/`.
    #[error("scope resource name is malformed")]
    BadName,
    /// An action that is neither `[a-z]+` nor `*`.
    #[error("scope action is neither [a-z]+ nor *")]
    BadAction,
}

/// Parses one scope. The type ends at the first `:` and the actions start after the last, so a
/// name may hold a registry's port.
pub fn parse_scope(text: &str) -> Result<Scope, ScopeError> {
    if text.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::TooLong);
    }
    let (resource_type, rest) = text.split_once(':').ok_or(ScopeError::MissingParts)?;
    let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::MissingParts)?;
    let (kind, class) = match resource_type.split_once('(') {
        Some((kind, class)) => {
            let class = class.strip_suffix(')').ok_or(ScopeError::BadType)?;
            (kind, Some(class))
        }
        None => (resource_type, None),
    };
    let type_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !type_ok(kind) || !class.is_none_or(type_ok) {
        return Err(ScopeError::BadType);
    }
    if !name_ok(name) {
        return Err(ScopeError::BadName);
    }
    let actions: Vec<String> = if actions.is_empty() {
        Vec::new()
    } else {
        actions.split(',').map(str::to_owned).collect()
    };
    let action_ok =
        |a: &String| a == "*" || (!a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase()));
    if !actions.iter().all(action_ok) {
        return Err(ScopeError::BadAction);
    }
    Ok(Scope {
        kind: kind.to_owned(),
        class: class.map(str::to_owned),
        name: name.to_owned(),
        actions,
    })
}

fn name_ok(name: &str) -> bool {
    let chars_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/:-".contains(&b));
    // A `:` only as the port of a leading host component: `localhost:5000/foo`.
    let colon_ok = match name.split_once(':') {
        None => true,
        Some((host, rest)) => {
            !host.is_empty()
                && !host.contains('/')
                && rest
                    .split_once('/')
                    .is_some_and(|(port, path)| is_port(port) && !path.is_empty())
                && !rest.contains(':')
        }
    };
    chars_ok && colon_ok
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses space-separated scopes, as in the `scope` parameter of `GET`/`POST /token`.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, ScopeError> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(parse_scope)
        .collect()
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

/// One element of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Resource type, e.g. `repository`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource name, e.g. `library/alpine`.
    pub name: String,
    /// Granted actions, e.g. `["pull"]`; `*` means all. `null` (as Go issuers write an empty
    /// list) reads as none.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub actions: Vec<String>,
}

/// `null` as an empty list: Go issuers marshal an empty slice as `null`.
pub(crate) fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope(kind: &str, class: Option<&str>, name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: kind.into(),
            class: class.map(Into::into),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn spec_examples() {
        assert_eq!(
            parse_scope("repository:samalba/my-app:pull,push"),
            Ok(scope(
                "repository",
                None,
                "samalba/my-app",
                &["pull", "push"]
            ))
        );
        assert_eq!(
            parse_scope("repository(plugin):foo/bar:pull"),
            Ok(scope("repository", Some("plugin"), "foo/bar", &["pull"]))
        );
        assert_eq!(
            parse_scope("repository:localhost:5000/foo/bar:pull"),
            Ok(scope(
                "repository",
                None,
                "localhost:5000/foo/bar",
                &["pull"]
            ))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Ok(scope("registry", None, "catalog", &["*"]))
        );
        assert_eq!(
            parse_scope("repository:foo:"),
            Ok(scope("repository", None, "foo", &[]))
        );
        assert_eq!(
            parse_scopes(" repository:a:pull  repository:b:push ").map(|s| s.len()),
            Ok(2)
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("repository", ScopeError::MissingParts),
            ("repository:foo", ScopeError::MissingParts),
            ("Repository:foo:pull", ScopeError::BadType),
            ("repository(plugin:foo:pull", ScopeError::BadType),
            ("repository():foo:pull", ScopeError::BadType),
            ("repository::pull", ScopeError::BadName),
            ("repository:foo bar:pull", ScopeError::BadName),
            ("repository:foo/bar:baz:pull", ScopeError::BadName),
            ("repository:host:port/x:pull", ScopeError::BadName),
            ("repository:host:5000:pull", ScopeError::BadName),
            ("repository:foo:pull,,push", ScopeError::BadAction),
            ("repository:foo:PULL", ScopeError::BadAction),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_scope(text), Err(expected), "{text}");
        }
        assert_eq!(
            parse_scope(&format!("repository:{}:pull", "a".repeat(MAX_SCOPE_LEN))),
            Err(ScopeError::TooLong)
        );
    }

    #[test]
    fn access_claim_json() {
        let access: Access =
            serde_json::from_str(r#"{"type":"repository","name":"a/b","actions":null}"#)
                .expect("null actions");
        assert!(access.actions.is_empty());
        let json = serde_json::to_string(&Access {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        })
        .expect("serialize");
        assert_eq!(
            json,
            r#"{"type":"repository","name":"a/b","actions":["pull"]}"#
        );
        assert!(
            serde_json::from_str::<Access>(r#"{"type":"repository","name":"a","actions":"pull"}"#)
                .is_err()
        );
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        (
            "[a-z0-9]{1,10}",
            proptest::option::of("[a-z0-9]{1,8}"),
            "([a-z0-9-]{1,10}(\\.[a-z0-9]{1,5})*(:[0-9]{1,5})?/)?[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,10}){0,3}",
            proptest::collection::vec("pull|push|delete|\\*|[a-z]{1,8}", 0..4),
        )
            .prop_map(|(kind, class, name, actions)| Scope {
                kind,
                class,
                name,
                actions,
            })
    }

    proptest! {
        #[test]
        fn display_round_trips(scopes in proptest::collection::vec(arb_scope(), 1..4)) {
            let text = scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(parse_scopes(&text), Ok(scopes));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            if let Ok(scope) = parse_scope(&text) {
                prop_assert_eq!(parse_scope(&scope.to_string()), Ok(scope));
            }
        }
    }
}
