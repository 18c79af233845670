//! # ferry-auth
//!
//! Who may do what on `ferry serve`: the pure logic behind TLS client names, basic auth,
//! Docker-token-spec bearer tokens, per-repository access rules and per-client rate limits. The
//! HTTP glue lives in the server crate; nothing here does network I/O or reads a clock — times
//! are arguments — so every decision is deterministic and property-tested.

pub mod authorization;
pub mod bucket;
pub mod credential_cache;
pub mod der;
pub mod htpasswd;
pub mod jwt;
pub mod rules;
pub mod scope;
pub mod secret;

pub use authorization::{Malformed, Presented, parse_authorization};
pub use bucket::{Rate, RateLimiter, RetryAfter, TokenBucket};
pub use credential_cache::CredentialCache;
pub use der::certificate_subject_common_name;
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use jwt::{Audience, Claims, KeyError, TokenError, TokenSigner, TokenVerifier};
pub use rules::{AccessPolicy, Action, ActionSet, Groups, PolicyError, Rule, Who};
pub use scope::{Access, Scope, ScopeError, parse_scope, parse_scopes};
pub use secret::{Secret, SecretFileError, read_secret_file};

/// A property-test runner of at most `max` cases, for properties that run bcrypt: proptest lets
/// `PROPTEST_CASES` (10,000 in CI) override a `proptest_config`, but not a runner's own config.
#[cfg(test)]
fn capped_runner(max: u32) -> proptest::test_runner::TestRunner {
    let config = proptest::test_runner::Config::default();
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: config.cases.min(max),
        ..config
    })
}
