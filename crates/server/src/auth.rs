//! Who a request comes from and what it may do: basic credentials checked against an htpasswd
//! file (cached, so bcrypt does not run per request), the subject of a client certificate, or
//! anonymous; then the access rules per repository. The policy itself is in `ferry-auth`; this is
//! the HTTP side: challenges, envelopes, metrics.
//!
//! Repository names are matched as the client wrote them in the path (what a token's scope names
//! too). Mirrored namespaces stay read-only whatever the rules grant: the routing refuses writes
//! there after this check.

use std::sync::{Arc, RwLock};

use axum::extract::Request;
use ferry_auth::{
    AccessPolicy, Action, CredentialCache, Htpasswd, Presented, Who, parse_authorization,
};
use ferry_oci::{ErrorCode, Route};
use http::{Method, header};
use tokio::sync::Semaphore;

use crate::ApiError;
use crate::listen::TlsConnection;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// Authenticated, by basic credentials or a client certificate.
    User(String),
}

impl Identity {
    fn who(&self) -> Who {
        match self {
            Identity::Anonymous => Who::Anonymous,
            Identity::User(u) => Who::User(u.clone()),
        }
    }
}

/// Why credentials were refused; a closed set, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    BadCredentials,
    Unsupported,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::Unsupported => "unsupported_scheme",
        }
    }
}

/// Authentication and access control of the registry API.
pub struct Auth {
    realm: String,
    htpasswd: RwLock<Option<(Arc<Htpasswd>, u64)>>,
    policy: RwLock<Arc<AccessPolicy>>,
    cache: CredentialCache,
    /// bcrypt checks at once: each takes tens of milliseconds of a core.
    bcrypt: Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// An unknown-state clock reading for the credential cache (seconds since the epoch).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    /// Basic auth against `htpasswd` (if given) and `policy`'s rules, in `realm`.
    pub fn new(
        realm: impl Into<String>,
        htpasswd: Option<Htpasswd>,
        policy: AccessPolicy,
    ) -> Result<Auth, String> {
        let cache = CredentialCache::with_defaults()
            .map_err(|e| format!("cannot set up the credential cache: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            realm: realm.into(),
            htpasswd: RwLock::new(htpasswd.map(|h| (Arc::new(h), 0))),
            policy: RwLock::new(Arc::new(policy)),
            cache,
            bcrypt: Semaphore::new(cores),
        })
    }

    /// Replaces the htpasswd entries (a reload); credentials cached under the old ones no longer
    /// count.
    pub fn set_htpasswd(&self, htpasswd: Htpasswd) {
        let mut slot = self.htpasswd.write().unwrap_or_else(|e| e.into_inner());
        let generation = slot.as_ref().map_or(0, |(_, g)| g + 1);
        *slot = Some((Arc::new(htpasswd), generation));
    }

    /// Replaces the access rules (a reload).
    pub fn set_policy(&self, policy: AccessPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    fn policy(&self) -> Arc<AccessPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The challenge a 401 carries.
    fn challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm.replace('"', ""))
    }

    fn unauthorized(&self, message: &str) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
            .header(header::WWW_AUTHENTICATE, &self.challenge())
    }

    /// Who sent `req`: credentials in `Authorization` first, then a client certificate's subject,
    /// else anonymous. Credentials that do not check out are a 401, never a fallback to
    /// anonymous.
    pub(crate) fn identify(
        &self,
        req: &Request,
    ) -> impl Future<Output = Result<Identity, (ApiError, Refusal)>> + Send + '_ {
        // Read before any await: a request (its body) is not `Sync`.
        let authorization = req.headers().get(header::AUTHORIZATION).cloned();
        let cert = req
            .extensions()
            .get::<TlsConnection>()
            .and_then(|t| t.client_certificate.clone());
        self.identify_parts(authorization, cert)
    }

    async fn identify_parts(
        &self,
        authorization: Option<http::HeaderValue>,
        cert: Option<Arc<[u8]>>,
    ) -> Result<Identity, (ApiError, Refusal)> {
        if let Some(value) = authorization
            && !empty_basic(value.as_bytes())
        {
            let presented = parse_authorization(value.as_bytes()).map_err(|e| {
                (
                    self.unauthorized(&format!("malformed Authorization header: {e}")),
                    Refusal::Malformed,
                )
            })?;
            return match presented {
                Presented::Basic { user, password } => {
                    if self.check_basic(&user, password.expose()).await {
                        Ok(Identity::User(user))
                    } else {
                        Err((
                            self.unauthorized("invalid username or password"),
                            Refusal::BadCredentials,
                        ))
                    }
                }
                Presented::Bearer(_) => Err((
                    self.unauthorized("bearer tokens are not accepted here; use basic credentials"),
                    Refusal::Unsupported,
                )),
            };
        }
        if let Some(cn) = cert
            .as_deref()
            .and_then(ferry_auth::certificate_subject_common_name)
        {
            return Ok(Identity::User(cn));
        }
        Ok(Identity::Anonymous)
    }

    /// Checks basic credentials: from the cache, else bcrypt on a blocking thread (bounded).
    async fn check_basic(&self, user: &str, password: &str) -> bool {
        let Some((htpasswd, generation)) = self
            .htpasswd
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return false;
        };
        let now = unix_now();
        if self.cache.get(user, password, generation, now) {
            return true;
        }
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        let (u, p) = (user.to_owned(), ferry_auth::Secret::new(password));
        let ok = tokio::task::spawn_blocking(move || htpasswd.verify(&u, p.expose()))
            .await
            .unwrap_or(false);
        if ok {
            self.cache.insert(user, password, generation, now);
        }
        ok
    }

    /// Whether `who` may do everything `needs` lists; else the answer: 401 with a challenge for
    /// anonymous callers (they may log in), 403 for users the rules do not allow.
    pub(crate) fn authorize(
        &self,
        who: &Identity,
        needs: &[(String, Action)],
    ) -> Result<(), ApiError> {
        let policy = self.policy();
        let missing: Vec<&(String, Action)> = needs
            .iter()
            .filter(|(repo, action)| !policy.allowed(&who.who(), repo, *action))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let detail = serde_json::Value::Array(
            missing
                .iter()
                .map(|(repo, action)| {
                    serde_json::json!({"Type": "repository", "Name": repo, "Action": action.as_str()})
                })
                .collect(),
        );
        let (repo, action) = missing[0];
        Err(match who {
            Identity::Anonymous => self
                .unauthorized(&format!(
                    "authentication required to {} {repo}",
                    action.as_str()
                ))
                .detail(detail),
            Identity::User(user) => ApiError::new(
                ErrorCode::Denied,
                format!("{user} may not {} {repo}", action.as_str()),
            )
            .detail(detail),
        })
    }

    /// Whether `who` may pull `repo` (catalog filtering).
    pub(crate) fn may_pull(&self, who: &Identity, repo: &str) -> bool {
        self.policy().allowed(&who.who(), repo, Action::Pull)
    }

    /// An answer for the base endpoint: anonymous callers are challenged (how `docker login`
    /// learns to send credentials), users pass.
    pub(crate) fn base(&self, who: &Identity) -> Result<(), ApiError> {
        match who {
            Identity::Anonymous => Err(self.unauthorized("authentication required")),
            Identity::User(_) => Ok(()),
        }
    }
}

/// `Basic` over an empty user and password (`:`), what containers/image clients (skopeo,
/// podman) send when a Basic challenge meets them without credentials: anonymous, not malformed.
fn empty_basic(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut parts = text.split_ascii_whitespace();
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(scheme), Some("Og==" | "Og"), None) if scheme.eq_ignore_ascii_case("basic")
    )
}

/// What a request needs: (repository, action) pairs, from its method and parsed path. The base
/// endpoint and the catalog need nothing here (they are answered per identity).
pub(crate) fn needs(method: &Method, route: &Route) -> Vec<(String, Action)> {
    let Some(repo) = route.repo() else {
        return Vec::new();
    };
    let action = match *method {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE => Action::Delete,
        _ => Action::Push,
    };
    vec![(repo.as_str().to_owned(), action)]
}

/// A mount request's query without `mount` and `from` when the caller may not pull `from` (or
/// names none, which would mount from anywhere): the upload then starts as an ordinary session,
/// as the spec says for a blob that cannot be mounted, and says nothing of what other
/// repositories hold.
pub(crate) fn mount_query(query: &str, may_pull: impl Fn(&str) -> bool) -> Option<String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, _)| k == "mount") {
        return None;
    }
    let from = pairs
        .iter()
        .find(|(k, _)| k == "from")
        .map(|(_, v)| v.as_str());
    if from.is_some_and(&may_pull) {
        return None;
    }
    let kept = pairs.iter().filter(|(k, _)| k != "mount" && k != "from");
    Some(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish(),
    )
}
