//! Who a request comes from and what it may do: basic credentials checked against an htpasswd
//! file (cached, so bcrypt does not run per request), a bearer token (Docker token
//! specification: ferry's own from `/token`, or an external issuer's), the subject of a client
//! certificate, or anonymous; then the access rules per repository. The policy itself is in
//! `ferry-auth`; this is the HTTP side: challenges, envelopes, the token endpoint, metrics.
//!
//! Repository names are matched as the client wrote them in the path (what a token's scope names
//! too). Mirrored namespaces stay read-only whatever the rules grant: the routing refuses writes
//! there after this check.

use std::sync::{Arc, RwLock};

use axum::extract::Request;
use ferry_auth::{
    AccessPolicy, Action, Claims, CredentialCache, Htpasswd, Presented, TokenSigner, TokenVerifier,
    Who, parse_authorization,
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

/// Who sent a request and, if it came with a bearer token, what the token grants.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub identity: Identity,
    pub token: Option<Arc<Claims>>,
}

impl Caller {
    fn anonymous() -> Caller {
        Caller {
            identity: Identity::Anonymous,
            token: None,
        }
    }

    fn user(name: String) -> Caller {
        Caller {
            identity: Identity::User(name),
            token: None,
        }
    }
}

/// The last credentials one connection presented and who they proved: a keep-alive client sends
/// the same `Authorization` on every request, and checking it again (parse, HMAC, a locked
/// lookup; for a token, a signature) costs more than serving a small blob. Valid while the
/// htpasswd generation is unchanged and, for a token, until it expires; never shared between
/// connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMemo(Arc<std::sync::Mutex<Option<Memo>>>);

#[derive(Debug)]
struct Memo {
    authorization: http::HeaderValue,
    caller: Caller,
    generation: u64,
    until: u64,
}

impl ConnectionMemo {
    fn recall(
        &self,
        authorization: &http::HeaderValue,
        generation: u64,
        now: u64,
    ) -> Option<Caller> {
        let memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|m| {
                m.generation == generation && now < m.until && m.authorization == authorization
            })
            .map(|m| m.caller.clone())
    }

    fn keep(&self, memo: Memo) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(memo);
    }
}

/// Bearer tokens per the Docker token specification.
pub struct Tokens {
    /// Where clients ask for tokens; `None`: this server's `/token` as the client reached it.
    pub realm: Option<String>,
    /// The `service` (token audience) this registry is.
    pub service: String,
    /// The `iss` of the tokens accepted (and issued).
    pub issuer: String,
    /// Lifetime of issued tokens, seconds.
    pub ttl_secs: u64,
    /// The key ferry signs its own tokens with; `None`: tokens come from an external issuer.
    pub signer: Option<TokenSigner>,
    /// The keys tokens are verified with.
    pub verifier: TokenVerifier,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("issuing", &self.signer.is_some())
            .finish_non_exhaustive()
    }
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
    BadToken,
    Unsupported,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::BadToken => "invalid_token",
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
    tokens: Option<Tokens>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// How long a connection may go on without its basic credentials being checked again (a
/// password changed in the htpasswd file takes effect at once: the reload moves the generation).
const CONNECTION_MEMO_SECS: u64 = 60;

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
            tokens: None,
        })
    }

    /// Also bearer tokens: challenges send clients to the token realm.
    pub fn with_tokens(mut self, tokens: Tokens) -> Auth {
        self.tokens = Some(tokens);
        self
    }

    /// Whether this server answers `/token`.
    pub(crate) fn issues_tokens(&self) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.signer.is_some())
    }

    /// The realm a challenge names: the configured one, or `/token` on the host and scheme the
    /// client used (it can only misdirect itself).
    pub(crate) fn realm_for(&self, req: &Request) -> String {
        if let Some(realm) = self.tokens.as_ref().and_then(|t| t.realm.clone()) {
            return realm;
        }
        let scheme = if req.extensions().get::<TlsConnection>().is_some() {
            "https"
        } else {
            "http"
        };
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .filter(|h| !h.contains(['"', '\\', ' ']))
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{scheme}://{host}/token")
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

    /// The challenge a 401 carries: Bearer with the token realm, service, the scope wanted and
    /// why a token was refused; else Basic.
    fn challenge(&self, realm: &str, scope: Option<&str>, error: Option<&str>) -> String {
        let Some(tokens) = &self.tokens else {
            return format!("Basic realm=\"{}\"", self.realm.replace('"', ""));
        };
        let mut c = format!(
            "Bearer realm=\"{realm}\",service=\"{}\"",
            tokens.service.replace('"', "")
        );
        if let Some(scope) = scope {
            c.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            c.push_str(&format!(",error=\"{error}\""));
        }
        c
    }

    fn unauthorized(&self, realm: &str, message: &str) -> ApiError {
        self.unauthorized_for(realm, message, None, None)
    }

    fn unauthorized_for(
        &self,
        realm: &str,
        message: &str,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message).header(
            header::WWW_AUTHENTICATE,
            &self.challenge(realm, scope, error),
        )
    }

    /// Who sent `req`: credentials in `Authorization` first, then a client certificate's subject,
    /// else anonymous. Credentials that do not check out are a 401, never a fallback to
    /// anonymous.
    pub(crate) fn identify<'a>(
        &'a self,
        req: &Request,
        realm: &'a str,
    ) -> impl Future<Output = Result<Caller, (ApiError, Refusal)>> + Send + 'a {
        // Read before any await: a request (its body) is not `Sync`.
        let authorization = req.headers().get(header::AUTHORIZATION).cloned();
        let cert = req
            .extensions()
            .get::<TlsConnection>()
            .and_then(|t| t.client_certificate.clone());
        let memo = req.extensions().get::<ConnectionMemo>().cloned();
        async move {
            let Some(value) = authorization else {
                return self.identify_parts(None, cert, realm).await;
            };
            let generation = self.htpasswd_generation();
            let now = unix_now();
            if let Some(caller) = memo
                .as_ref()
                .and_then(|m| m.recall(&value, generation, now))
            {
                return Ok(caller);
            }
            let caller = self
                .identify_parts(Some(value.clone()), cert, realm)
                .await?;
            if let Some(m) = memo
                && caller.identity != Identity::Anonymous
            {
                let until = match &caller.token {
                    Some(claims) => claims.exp,
                    None => now.saturating_add(CONNECTION_MEMO_SECS),
                };
                m.keep(Memo {
                    authorization: value,
                    caller: caller.clone(),
                    generation,
                    until,
                });
            }
            Ok(caller)
        }
    }

    /// The htpasswd file's generation (moved by every reload), 0 without one.
    fn htpasswd_generation(&self) -> u64 {
        self.htpasswd
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |(_, g)| *g)
    }

    async fn identify_parts(
        &self,
        authorization: Option<http::HeaderValue>,
        cert: Option<Arc<[u8]>>,
        realm: &str,
    ) -> Result<Caller, (ApiError, Refusal)> {
        if let Some(value) = authorization
            && !empty_basic(value.as_bytes())
        {
            let presented = parse_authorization(value.as_bytes()).map_err(|e| {
                (
                    self.unauthorized(realm, &format!("malformed Authorization header: {e}")),
                    Refusal::Malformed,
                )
            })?;
            return match presented {
                Presented::Basic { user, password } => {
                    if self.check_basic(&user, password.expose()).await {
                        Ok(Caller::user(user))
                    } else {
                        Err((
                            self.unauthorized(realm, "invalid username or password"),
                            Refusal::BadCredentials,
                        ))
                    }
                }
                Presented::Bearer(token) => {
                    let Some(tokens) = &self.tokens else {
                        return Err((
                            self.unauthorized(
                                realm,
                                "bearer tokens are not accepted here; use basic credentials",
                            ),
                            Refusal::Unsupported,
                        ));
                    };
                    match tokens.verifier.verify(
                        token.expose(),
                        &tokens.issuer,
                        &tokens.service,
                        unix_now(),
                    ) {
                        Ok(claims) => Ok(Caller {
                            identity: if claims.sub.is_empty() {
                                Identity::Anonymous
                            } else {
                                Identity::User(claims.sub.clone())
                            },
                            token: Some(Arc::new(claims)),
                        }),
                        Err(e) => Err((
                            self.unauthorized_for(
                                realm,
                                &format!("invalid token: {e}"),
                                None,
                                Some("invalid_token"),
                            ),
                            Refusal::BadToken,
                        )),
                    }
                }
            };
        }
        if let Some(cn) = cert
            .as_deref()
            .and_then(ferry_auth::certificate_subject_common_name)
        {
            return Ok(Caller::user(cn));
        }
        Ok(Caller::anonymous())
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

    /// Whether `caller` may do everything `needs` lists; else the answer: a token lacking the
    /// scope is a 401 asking for one that has it (`insufficient_scope`); then the rules (for
    /// ferry's own tokens too, so a rule changed takes effect at once): 401 with a challenge for
    /// anonymous callers (they may log in), 403 for users the rules do not allow. An external
    /// issuer's token is its issuer's word.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        needs: &[(String, Action)],
        realm: &str,
    ) -> Result<(), ApiError> {
        if let Some(claims) = &caller.token {
            let lacking: Vec<&(String, Action)> = needs
                .iter()
                .filter(|(repo, action)| !claims.allows("repository", repo, action.as_str()))
                .collect();
            if let Some((repo, action)) = lacking.first() {
                return Err(self
                    .unauthorized_for(
                        realm,
                        &format!("the token does not grant {} on {repo}", action.as_str()),
                        Some(&scope_of(needs)),
                        Some("insufficient_scope"),
                    )
                    .detail(detail(&lacking)));
            }
            if !self.issues_tokens() {
                return Ok(());
            }
        }
        let policy = self.policy();
        let who = caller.identity.who();
        let missing: Vec<&(String, Action)> = needs
            .iter()
            .filter(|(repo, action)| !policy.allowed(&who, repo, *action))
            .collect();
        let Some((repo, action)) = missing.first() else {
            return Ok(());
        };
        Err(match &caller.identity {
            Identity::Anonymous => self
                .unauthorized_for(
                    realm,
                    &format!("authentication required to {} {repo}", action.as_str()),
                    Some(&scope_of(needs)),
                    None,
                )
                .detail(detail(&missing)),
            Identity::User(user) => ApiError::new(
                ErrorCode::Denied,
                format!("{user} may not {} {repo}", action.as_str()),
            )
            .detail(detail(&missing)),
        })
    }

    /// Whether a mount from `from` should ask for a token that can pull it: an anonymous
    /// caller's challenge names it from the start, as Distribution's does; a caller with one of
    /// ferry's tokens lacking it is asked again when the rules would grant it (otherwise the
    /// mount quietly becomes an ordinary upload).
    pub(crate) fn mount_wants_scope(&self, caller: &Caller, from: &str) -> bool {
        if !self.issues_tokens() {
            return false;
        }
        match &caller.token {
            // The first challenge names every scope the client will need.
            None => caller.identity == Identity::Anonymous,
            Some(claims) => {
                !claims.allows("repository", from, "pull")
                    && self
                        .policy()
                        .allowed(&caller.identity.who(), from, Action::Pull)
            }
        }
    }

    /// Whether `caller` may pull `repo` (catalog filtering).
    pub(crate) fn may_pull(&self, caller: &Caller, repo: &str) -> bool {
        match &caller.token {
            Some(claims) if !self.issues_tokens() => claims.allows("repository", repo, "pull"),
            Some(claims) => {
                claims.allows("repository", repo, "pull")
                    && self
                        .policy()
                        .allowed(&caller.identity.who(), repo, Action::Pull)
            }
            None => self
                .policy()
                .allowed(&caller.identity.who(), repo, Action::Pull),
        }
    }

    /// An answer for the base endpoint: anonymous callers without a token are challenged (how
    /// `docker login` learns where to send credentials), others pass.
    pub(crate) fn base(&self, caller: &Caller, realm: &str) -> Result<(), ApiError> {
        match (&caller.identity, &caller.token) {
            (Identity::Anonymous, None) => Err(self.unauthorized(realm, "authentication required")),
            _ => Ok(()),
        }
    }

    /// `GET /token` (basic credentials or none; `service`, `scope` repeated) and `POST /token`
    /// (OAuth2 form, `grant_type=password`): a short-lived token for what was asked and the rules
    /// grant (possibly nothing, which is not an error).
    pub(crate) async fn issue(&self, req: Request) -> Result<axum::response::Response, ApiError> {
        let Some(tokens) = self.tokens.as_ref().filter(|t| t.signer.is_some()) else {
            return Err(ApiError::new(ErrorCode::NotFound, "no token endpoint here"));
        };
        let method = req.method().clone();
        let authorization = req.headers().get(header::AUTHORIZATION).cloned();
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let (form, post) = if method == Method::POST {
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                .await
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::SizeInvalid,
                        "the token request form is too large",
                    )
                })?;
            (
                form_urlencoded::parse(&body)
                    .into_owned()
                    .collect::<Vec<_>>(),
                true,
            )
        } else if method == Method::GET {
            (query, false)
        } else {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                "the token endpoint takes GET or POST",
            ));
        };
        let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        if let Some(service) = get("service")
            && service != tokens.service
        {
            return Err(ApiError::new(
                ErrorCode::Denied,
                format!(
                    "this is the token service of {:?}, not {service:?}",
                    tokens.service
                ),
            ));
        }
        let caller = if post {
            match get("grant_type") {
                Some("password") => {
                    let (Some(user), Some(password)) = (get("username"), get("password")) else {
                        return Err(oauth_error(
                            "invalid_request",
                            "username and password are required",
                        ));
                    };
                    let password = ferry_auth::Secret::new(password);
                    if !self.check_basic(user, password.expose()).await {
                        return Err(self.unauthorized_basic("invalid username or password"));
                    }
                    Caller::user(user.to_owned())
                }
                _ => {
                    // containerd asks again with GET on this answer.
                    return Err(oauth_error(
                        "unsupported_grant_type",
                        "only grant_type=password is supported; or use GET with basic credentials",
                    ));
                }
            }
        } else {
            match authorization {
                Some(v) if !empty_basic(v.as_bytes()) => match parse_authorization(v.as_bytes()) {
                    Ok(Presented::Basic { user, password }) => {
                        if !self.check_basic(&user, password.expose()).await {
                            return Err(self.unauthorized_basic("invalid username or password"));
                        }
                        Caller::user(user)
                    }
                    Ok(Presented::Bearer(_)) | Err(_) => {
                        return Err(self.unauthorized_basic(
                            "the token endpoint takes basic credentials or none",
                        ));
                    }
                },
                _ => Caller::anonymous(),
            }
        };
        let scopes: Vec<ferry_auth::Scope> = form
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| ferry_auth::parse_scopes(v).unwrap_or_default())
            .collect();
        let access = self.policy().grant(&caller.identity.who(), &scopes);
        let now = unix_now();
        let sub = match &caller.identity {
            Identity::User(u) => u.clone(),
            Identity::Anonymous => String::new(),
        };
        let claims = Claims {
            iss: tokens.issuer.clone(),
            sub,
            aud: ferry_auth::Audience::One(tokens.service.clone()),
            exp: now + tokens.ttl_secs,
            nbf: Some(now),
            iat: Some(now),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            access,
        };
        let Some(signer) = &tokens.signer else {
            return Err(ApiError::new(ErrorCode::NotFound, "no token endpoint here"));
        };
        let token = signer
            .sign(&claims)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot sign a token: {e}")))?;
        let issued_at = httpdate_rfc3339(now);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": tokens.ttl_secs,
            "issued_at": issued_at,
        });
        let mut res = crate::api::json_response(
            http::StatusCode::OK,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Ok(res)
    }

    /// A 401 from the token endpoint: it takes basic credentials, whatever the registry's
    /// challenge.
    fn unauthorized_basic(&self, message: &str) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message).header(
            header::WWW_AUTHENTICATE,
            &format!("Basic realm=\"{}\"", self.realm.replace('"', "")),
        )
    }
}

/// An OAuth2 error answer (RFC 6749 §5.2), which containerd reads to fall back to GET.
fn oauth_error(error: &str, description: &str) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, description)
        .status(http::StatusCode::BAD_REQUEST)
        .detail(serde_json::json!({"error": error}))
}

/// `seconds` since the epoch as RFC 3339 (UTC).
fn httpdate_rfc3339(seconds: u64) -> String {
    ferry_oci::timestamp::format_timestamp(i64::try_from(seconds).unwrap_or(0) * 1_000_000)
}

/// The scope string a challenge names for `needs`: one resource per repository, `pull,push` for
/// a push (as docker asks), space-separated.
fn scope_of(needs: &[(String, Action)]) -> String {
    let mut by_repo: Vec<(&str, Vec<&str>)> = Vec::new();
    for (repo, action) in needs {
        let actions: &[&str] = match action {
            Action::Pull => &["pull"],
            Action::Push => &["pull", "push"],
            Action::Delete => &["delete"],
        };
        match by_repo.iter_mut().find(|(r, _)| r == repo) {
            Some((_, a)) => a.extend(
                actions
                    .iter()
                    .filter(|x| !a.contains(x))
                    .collect::<Vec<_>>(),
            ),
            None => by_repo.push((repo, actions.to_vec())),
        }
    }
    by_repo
        .iter()
        .map(|(repo, actions)| format!("repository:{repo}:{}", actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn detail(missing: &[&(String, Action)]) -> serde_json::Value {
    serde_json::Value::Array(
        missing
            .iter()
            .map(|(repo, action)| {
                serde_json::json!({"Type": "repository", "Name": repo, "Action": action.as_str()})
            })
            .collect(),
    )
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
