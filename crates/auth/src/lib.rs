//! # ferry-auth
//!
//! Who may do what on `ferry serve`: the pure logic behind TLS client names, basic auth,
//! Docker-token-spec bearer tokens, per-repository access rules and per-client rate limits. The
//! HTTP glue lives in the server crate; nothing here does network I/O or reads a clock — times
//! are arguments (unix seconds, or milliseconds for rate limits) — so every decision is
//! deterministic and property-tested. Reading a secret file is the one I/O.
//!
//! | module | what |
//! | --- | --- |
//! | [`secret`] | [`Secret`] (never printed, constant-time `==`); [`read_secret_file`] refuses files others can read |
//! | [`authorization`] | [`parse_authorization`]: `Basic` or `Bearer`, bounded, errors that never echo |
//! | [`htpasswd`] | [`Htpasswd`]: bcrypt-only files, as Distribution reads them; timing that hides which users exist |
//! | [`credential_cache`] | [`CredentialCache`]: bcrypt successes remembered by HMAC, bounded, per htpasswd generation |
//! | [`scope`] | [`parse_scopes`]: `repository:name:pull,push`; [`Access`], the token's `access` claim |
//! | [`rules`] | [`AccessPolicy`]: union of `[[access]]` rules over users, groups and anonymous |
//! | [`jwt`] | [`TokenSigner`] (ferry's ES256 issuer key) and [`TokenVerifier`] (own or external issuers) |
//! | [`bucket`] | [`TokenBucket`] and [`RateLimiter`]: per-client limits, bounded memory |
//! | [`der`] | [`certificate_subject_common_name`] of a client certificate |
//!
//! ## What the HTTP glue must do
//!
//! - Basic auth: check [`CredentialCache::get`] first, then [`Htpasswd::verify`] (on a blocking
//!   thread: bcrypt takes 50–100 ms at cost 10), then [`CredentialCache::insert`] only on
//!   success. Bump the generation passed to both whenever the htpasswd file is reloaded.
//! - Refuse with the same 401 whether the user is unknown or the password wrong; log
//!   [`Malformed`], [`TokenError`] and the like freely — their text never holds credentials —
//!   but never the header value.
//! - `/token`: authenticate, parse the `scope` parameters with [`parse_scopes`], give
//!   [`AccessPolicy::grant`]'s result as the `access` claim (scopes granted nothing are left
//!   out, as are non-`repository` scopes such as `registry:catalog:*`), and sign with
//!   [`TokenSigner::sign`]. Serve [`TokenSigner::jwks`] so others can verify.
//! - Per request with a bearer token: [`TokenVerifier::verify`] with the configured issuer and
//!   service, then [`Claims::allows`]`("repository", name, "pull" | "push" | "delete")`; the
//!   token's `sub` is the user. Tokens are checked against the rules when issued, not again.
//! - With no `[[access]]` rules every authenticated user may do everything and anonymous
//!   clients nothing; anonymous access needs a rule with `anonymous = true`.
//! - Passwords longer than 72 bytes never verify (bcrypt would ignore the rest).
//! - Rate limits: [`RateLimiter::check`] per client key with the time in milliseconds; answer
//!   429 with `Retry-After` from [`RetryAfter`]; call [`RateLimiter::sweep`] periodically and
//!   export [`RateLimiter::overflow_uses`].

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
pub use secret::{Secret, SecretFileError, read_secret_file, write_secret_file};

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
