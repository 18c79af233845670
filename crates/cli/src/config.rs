//! The effective configuration: built-in defaults, then the TOML file, then `FERRY_*` environment
//! variables, then command-line flags (clap merges env and flags; the file sits beneath both).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `ferry serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where blobs, manifests and uploads live.
    pub data_dir: PathBuf,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `ferry_server=debug,info`.
    pub log_level: String,
    /// File holding the admin API's bearer token (the API is off without one; `FERRY_ADMIN_TOKEN`
    /// works too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Where to serve `/metrics` (OpenMetrics), e.g. `127.0.0.1:2112`; off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Record every request as a JSON line in the registry traces' format (`ferry trace` reads
    /// it); off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// Size past which the access log is rotated to `FILE.1`, e.g. `"1GiB"`.
    pub access_log_max_size: String,
    /// The upstream used when a request names none (needed only with several upstreams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_upstream: Option<String>,
    /// Repository name prefixes that are ferry's own (pushable) when a default upstream takes
    /// every other name, e.g. `["team", "ci/builds"]`. Names routed to an upstream are read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_namespaces: Vec<String>,
    /// Never contact upstreams: serve what is cached, answer misses with 404 at once.
    pub offline: bool,
    /// Serve cached manifests when the upstream fails.
    pub serve_stale: bool,
    /// Registry behaviour.
    pub registry: RegistryConfig,
    /// Resource bounds.
    pub limits: LimitsConfig,
    /// The pull-through cache's budget.
    pub cache: CacheConfig,
    /// Other ferry nodes this mirror shares blobs with.
    pub peers: PeersConfig,
    /// Serving over TLS (and HTTP/2).
    pub tls: TlsConfig,
    /// Who may do what: basic credentials, client certificates, access rules.
    pub auth: AuthConfig,
    /// Upstream registries to mirror (`[[upstream]]` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<UpstreamConfig>,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// An htpasswd file of bcrypt entries (`htpasswd -B`): users log in with basic credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd_file: Option<PathBuf>,
    /// The realm named in challenges.
    pub realm: String,
    /// Group name → member user names, for `[[auth.access]]` rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Access rules: which users, groups or anonymous callers may `pull`, `push`, `delete` on
    /// which repositories. None: every authenticated user may do everything, anonymous nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<ferry_auth::Rule>,
    /// Bearer tokens (Docker token specification).
    pub token: TokenConfig,
}

/// `[auth.token]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Issue tokens at `/token` (basic credentials in, a short-lived JWT out) and challenge
    /// clients with `Bearer` (`--token-auth`).
    pub issue: bool,
    /// The service name (token audience).
    pub service: String,
    /// The issuer (`iss`) of tokens made and accepted.
    pub issuer: String,
    /// Lifetime of issued tokens, seconds (at least 60).
    pub ttl_secs: u64,
    /// Where clients ask for tokens; default: this server's `/token` as the client reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// The ES256 key (PKCS#8 PEM) ferry signs with; default: `<data_dir>/auth/token-signing.key`,
    /// made at first start. Share one between replicas behind one name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// An external issuer's keys (a JWKS file): tokens are verified with them and ferry issues
    /// none (`realm` names the issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// An external issuer's public keys (PEM `PUBLIC KEY` files), instead of or beside `jwks_file`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_key_files: Vec<PathBuf>,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            issue: false,
            service: "ferry".to_owned(),
            issuer: "ferry".to_owned(),
            ttl_secs: 300,
            realm: None,
            signing_key_file: None,
            jwks_file: None,
            public_key_files: Vec::new(),
        }
    }
}

impl TokenConfig {
    fn external(&self) -> bool {
        self.jwks_file.is_some() || !self.public_key_files.is_empty()
    }

    /// Whether bearer tokens are on (issued here or by an external issuer).
    pub fn enabled(&self) -> bool {
        self.issue || self.external()
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !(self.issue && self.external()),
            "auth.token.issue and an external issuer's keys (auth.token.jwks_file, public_key_files) exclude each other: ferry either issues tokens or accepts another's"
        );
        anyhow::ensure!(
            !self.external() || self.realm.is_some(),
            "auth.token.realm must name the external issuer's token endpoint when auth.token.jwks_file or public_key_files is set"
        );
        anyhow::ensure!(
            self.ttl_secs >= 60 && self.ttl_secs <= 86_400,
            "auth.token.ttl_secs must be between 60 and 86400"
        );
        Ok(())
    }

    /// The verifier of an external issuer's keys.
    fn external_verifier(&self) -> anyhow::Result<ferry_auth::TokenVerifier> {
        let mut verifier: Option<ferry_auth::TokenVerifier> = None;
        let mut add = |v: ferry_auth::TokenVerifier| {
            verifier = Some(match verifier.take() {
                Some(have) => have.merge(v),
                None => v,
            });
        };
        if let Some(p) = &self.jwks_file {
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read auth.token.jwks_file {}", p.display()))?;
            add(ferry_auth::TokenVerifier::from_jwks(&bytes)
                .map_err(|e| anyhow::anyhow!("auth.token.jwks_file {}: {e}", p.display()))?);
        }
        for p in &self.public_key_files {
            let bytes = std::fs::read(p).with_context(|| {
                format!("cannot read auth.token.public_key_files {}", p.display())
            })?;
            add(
                ferry_auth::TokenVerifier::from_public_key_pem(&bytes).map_err(|e| {
                    anyhow::anyhow!("auth.token.public_key_files {}: {e}", p.display())
                })?,
            );
        }
        verifier.context("no keys to verify tokens with")
    }

    /// The signing key: the configured file, or the data dir's (made now when `create`).
    fn signer(
        &self,
        data_dir: &Path,
        create: bool,
    ) -> anyhow::Result<Option<ferry_auth::TokenSigner>> {
        let (path, configured) = match &self.signing_key_file {
            Some(p) => (p.clone(), true),
            None => (data_dir.join("auth").join("token-signing.key"), false),
        };
        match ferry_auth::read_secret_file(&path) {
            Ok(pem) => ferry_auth::TokenSigner::from_pem(&pem)
                .map(Some)
                .map_err(|e| {
                    anyhow::anyhow!("auth.token.signing_key_file {}: {e}", path.display())
                }),
            Err(ferry_auth::SecretFileError::NotFound { .. }) if !configured => {
                if !create {
                    return Ok(None);
                }
                let (signer, der) = ferry_auth::TokenSigner::generate()
                    .map_err(|e| anyhow::anyhow!("cannot make a token signing key: {e}"))?;
                ferry_auth::write_secret_file(
                    &path,
                    ferry_auth::TokenSigner::pkcs8_pem(&der).as_bytes(),
                )
                .with_context(|| {
                    format!("cannot write the token signing key {}", path.display())
                })?;
                tracing::info!(path = %path.display(), kid = signer.kid(), "made a token signing key");
                Ok(Some(signer))
            }
            Err(e) => Err(anyhow::Error::new(e).context("auth.token.signing_key_file")),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            htpasswd_file: None,
            realm: "ferry".to_owned(),
            groups: BTreeMap::new(),
            access: Vec::new(),
            token: TokenConfig::default(),
        }
    }
}

impl Config {
    /// Whether requests are authenticated: an htpasswd file, client certificates, tokens or
    /// access rules turn it on.
    pub fn auth_enabled(&self) -> bool {
        self.auth.htpasswd_file.is_some()
            || self.tls.client_ca_file.is_some()
            || !self.auth.access.is_empty()
            || self.auth.token.enabled()
    }

    /// The rules checked (no file is read).
    pub fn access_policy(&self) -> anyhow::Result<ferry_auth::AccessPolicy> {
        ferry_auth::AccessPolicy::new(self.auth.access.clone(), self.auth.groups.clone())
            .map_err(|e| anyhow::anyhow!("auth.access: {e}"))
    }

    /// Authentication and access control, when on: the htpasswd file read (through the
    /// secret-file check) and parsed, the rules compiled, the token keys loaded. `create_key`:
    /// make the data dir's token signing key if there is none (once the data dir is ferry's);
    /// without it, a missing key is only checked for.
    pub fn auth(&self, create_key: bool) -> anyhow::Result<Option<ferry_server::auth::Auth>> {
        if !self.auth_enabled() {
            return Ok(None);
        }
        self.auth.token.check()?;
        let htpasswd = match &self.auth.htpasswd_file {
            Some(p) => Some(read_htpasswd(p)?),
            None => None,
        };
        let mut auth =
            ferry_server::auth::Auth::new(&self.auth.realm, htpasswd, self.access_policy()?)
                .map_err(|e| anyhow::anyhow!(e))?;
        let t = &self.auth.token;
        if t.external() {
            auth = auth.with_tokens(ferry_server::auth::Tokens {
                realm: t.realm.clone(),
                service: t.service.clone(),
                issuer: t.issuer.clone(),
                ttl_secs: t.ttl_secs,
                signer: None,
                verifier: t.external_verifier()?,
            });
        } else if t.issue {
            let Some(signer) = t.signer(&self.data_dir, create_key)? else {
                return Ok(Some(auth));
            };
            auth = auth.with_tokens(ferry_server::auth::Tokens {
                realm: t.realm.clone(),
                service: t.service.clone(),
                issuer: t.issuer.clone(),
                ttl_secs: t.ttl_secs,
                verifier: ferry_auth::TokenVerifier::from_signer(&signer),
                signer: Some(signer),
            });
        }
        Ok(Some(auth))
    }
}

/// An htpasswd file, permission-checked and parsed; errors name the file and line, never its
/// content.
pub fn read_htpasswd(path: &Path) -> anyhow::Result<ferry_auth::Htpasswd> {
    let bytes = ferry_auth::read_secret_file(path).context("auth.htpasswd_file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("auth.htpasswd_file {}: not UTF-8 text", path.display()))?;
    ferry_auth::Htpasswd::parse(&text)
        .map_err(|e| anyhow::anyhow!("auth.htpasswd_file {}: {e}", path.display()))
}

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM, leaf first); with `key_file`, ferry serves TLS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM); refused if group- or world-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to: mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// `required` (no certificate, no connection) or `optional` (clients without one are
    /// anonymous) when `client_ca_file` is set.
    pub client_auth: ClientAuthMode,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 is always offered).
    pub http2: bool,
    /// Seconds between checks of the certificate, key and CA files for changes (SIGHUP reloads
    /// at once).
    pub reload_interval_secs: u64,
}

/// `tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client without a valid certificate cannot connect.
    Required,
    /// A client without a certificate is served as anonymous.
    Optional,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuthMode::Required,
            http2: true,
            reload_interval_secs: 10,
        }
    }
}

impl TlsConfig {
    /// The files to serve, when TLS is on; an error when only one of certificate and key is set.
    pub fn files(&self) -> anyhow::Result<Option<ferry_server::tls::TlsFiles>> {
        let (cert, key) = match (&self.cert_file, &self.key_file) {
            (None, None) => {
                anyhow::ensure!(
                    self.client_ca_file.is_none(),
                    "tls.client_ca_file is set without tls.cert_file and tls.key_file: client certificates need TLS (add --tls-cert and --tls-key)"
                );
                return Ok(None);
            }
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (Some(_), None) => anyhow::bail!(
                "tls.cert_file is set without tls.key_file: give both (--tls-cert FILE --tls-key FILE)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "tls.key_file is set without tls.cert_file: give both (--tls-cert FILE --tls-key FILE)"
            ),
        };
        Ok(Some(ferry_server::tls::TlsFiles {
            cert,
            key,
            client_ca: self.client_ca_file.clone(),
            client_auth: match self.client_auth {
                ClientAuthMode::Required => ferry_server::tls::ClientAuth::Required,
                ClientAuthMode::Optional => ferry_server::tls::ClientAuth::Optional,
            },
            http2: self.http2,
        }))
    }

    /// The TLS material loaded (the key through the secret-file check), when TLS is on.
    pub fn load(&self) -> anyhow::Result<Option<ferry_server::tls::TlsServing>> {
        let Some(files) = self.files()? else {
            return Ok(None);
        };
        let read_key: ferry_server::tls::KeyReader = std::sync::Arc::new(|path: &Path| {
            ferry_auth::read_secret_file(path).map_err(|e| ferry_server::tls::TlsError::Read {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })
        });
        Ok(Some(
            ferry_server::tls::TlsServing::load(files, read_key).context("tls")?,
        ))
    }
}

/// `[peers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// Other ferry nodes' registry endpoints, `http(s)://host[:port]`: a blob this mirror lacks
    /// is asked of them (by digest, verified before use) before the upstream, and they are served
    /// what this node holds or is fetching. Empty: no sharing.
    pub nodes: Vec<String>,
    /// Blob transfers served to peers at once; more are answered 429 at once, so the asker goes
    /// to another source.
    pub max_uploads: usize,
    /// Seconds a peer may take to answer before the next source is asked.
    pub first_byte_timeout_secs: u64,
    /// Find peers through a DHT (libp2p Kademlia) on the peer port: a node announces a blob as
    /// its fill starts, and nodes missing it stream it from there (`--p2p`).
    pub p2p: bool,
    /// The DHT's peer port.
    pub listen: SocketAddr,
    /// Where to find the first peers: `/ip4/ADDR/tcp/PORT`, `IP:PORT`, `HOST:PORT` or
    /// `/dns4/NAME/tcp/PORT`; names are resolved again every `rediscover_secs` (a headless
    /// Service's name finds every node).
    pub bootstrap: Vec<String>,
    /// Peer ids allowed to take part (empty: any node with the cluster key, or any node at all).
    pub allow: Vec<String>,
    /// Seconds other nodes keep this node's provider records.
    pub provider_ttl_secs: u64,
    /// Seconds between announcements of everything the store holds (less than the TTL).
    pub reannounce_secs: u64,
    /// Seconds between resolutions of the bootstrap names.
    pub rediscover_secs: u64,
    /// Milliseconds a DHT lookup may take before the fill goes on without it.
    pub lookup_timeout_ms: u64,
    /// Connections the DHT keeps at most.
    pub max_connections: u32,
    /// Digests of provider records held at most.
    pub max_records: usize,
    /// File holding the cluster key (go-libp2p `swarm.key`, or 64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key_file: Option<PathBuf>,
    /// The registry port peers are told to use (default: the port `listen` serves on; set it when
    /// a node's registry is reached through another port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_port: Option<u16>,
}

impl Default for PeersConfig {
    fn default() -> PeersConfig {
        PeersConfig {
            nodes: Vec::new(),
            max_uploads: 32,
            first_byte_timeout_secs: 2,
            p2p: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 5001)),
            bootstrap: Vec::new(),
            allow: Vec::new(),
            provider_ttl_secs: 30 * 60,
            reannounce_secs: 10 * 60,
            rediscover_secs: 30,
            lookup_timeout_ms: 800,
            max_connections: 512,
            max_records: 1 << 18,
            cluster_key_file: None,
            advertise_port: None,
        }
    }
}

impl PeersConfig {
    /// Who may take part: the cluster key read, the allow-list parsed.
    pub fn membership(&self) -> anyhow::Result<ferry_peer::Membership> {
        let key = match &self.cluster_key_file {
            Some(path) => Some(ferry_peer::ClusterKey::read(path)?),
            None => None,
        };
        let allow = self
            .allow
            .iter()
            .map(|id| {
                id.parse::<ferry_peer::PeerId>().map_err(|e| {
                    anyhow::anyhow!(
                        "peers.allow: {id:?} is not a peer id ({e}); a node logs its own at start (\"joined the peer network\", peer_id=…)"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ferry_peer::Membership { key, allow })
    }

    /// The bootstrap entries, parsed.
    pub fn bootstrap(&self) -> anyhow::Result<Vec<ferry_peer::Bootstrap>> {
        self.bootstrap
            .iter()
            .map(|b| {
                b.parse()
                    .map_err(|e| anyhow::anyhow!("peers.bootstrap: {e}"))
            })
            .collect()
    }

    /// Whether this node shares blobs with peers at all.
    pub fn enabled(&self) -> bool {
        self.p2p || !self.nodes.is_empty()
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Store size above which least recently pulled cached images are evicted, e.g. `"50GiB"`;
    /// unset means no limit. Images pushed to ferry itself are never evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
    /// The replacement policy that chooses which cached images go when the store is over
    /// `max_size`: `"lru"` (least recently pulled first), `"lfu"` (least often pulled first) or
    /// `"s3-fifo"` (images pulled once leave before images pulled again). The same code as
    /// `ferry trace simulate --policy`, so a simulation of this mirror's access log predicts it.
    pub policy: String,
    /// `repository:tag` patterns (`*` wildcard) of cached images never evicted, e.g.
    /// `["docker.io/library/*"]`.
    pub pinned: Vec<String>,
    /// Space kept free on the data directory's filesystem: a pull-through fill that would eat
    /// into it is refused (507), e.g. `"512MiB"`.
    pub min_free_space: String,
    /// Seconds between housekeeping rounds (pull statistics written, prune rules and budget
    /// enforced).
    pub maintenance_interval_secs: u64,
    /// Standing prune rules (`[[cache.prune]]`), applied to cached images every round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<PruneConfig>,
}

/// One `[[cache.prune]]` rule: cached images meeting all its criteria are removed (pinned ones
/// never), as `ferry prune` would.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// Not pulled for this long, e.g. `"30d"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessed_before: Option<String>,
    /// Stored this long ago, e.g. `"90d"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    /// Regular expression `repository:tag` must match (repository as cached, e.g.
    /// `^docker.io/library/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

impl PruneConfig {
    fn rule(&self, n: usize) -> anyhow::Result<ferry_server::mirror::budget::ExpiryRule> {
        let age = |v: &Option<String>, key: &str| -> anyhow::Result<Option<Duration>> {
            v.as_deref()
                .map(|s| {
                    ferry_server::units::parse_age(s)
                        .map(Duration::from_secs)
                        .map_err(|e| anyhow::anyhow!("cache.prune[{n}].{key}: {e}"))
                })
                .transpose()
        };
        let rule = ferry_server::mirror::budget::ExpiryRule {
            accessed_before: age(&self.accessed_before, "accessed_before")?,
            created_before: age(&self.created_before, "created_before")?,
            pattern: self
                .pattern
                .as_deref()
                .map(|p| {
                    regex_lite::Regex::new(p)
                        .map_err(|e| anyhow::anyhow!("cache.prune[{n}].pattern: {e}"))
                })
                .transpose()?,
        };
        anyhow::ensure!(
            rule.accessed_before.is_some() || rule.created_before.is_some(),
            "cache.prune[{n}] needs accessed_before or created_before (a pattern alone would empty the cache every round)"
        );
        Ok(rule)
    }
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            max_size: None,
            policy: "lru".to_owned(),
            pinned: Vec::new(),
            min_free_space: "512MiB".to_owned(),
            maintenance_interval_secs: 60,
            prune: Vec::new(),
        }
    }
}

impl CacheConfig {
    /// The budget in server terms.
    pub fn budget(&self) -> anyhow::Result<ferry_server::mirror::budget::CacheBudget> {
        let max_bytes = match &self.max_size {
            Some(s) => ferry_server::units::parse_size(s)
                .map_err(|e| anyhow::anyhow!("cache.max_size: {e}"))?,
            None => 0,
        };
        let budget = ferry_server::mirror::budget::CacheBudget {
            max_bytes,
            policy: self.policy.clone(),
            pinned: self.pinned.clone(),
            expiry: self
                .prune
                .iter()
                .enumerate()
                .map(|(n, p)| p.rule(n))
                .collect::<anyhow::Result<_>>()?,
        };
        budget
            .state()
            .map_err(|e| anyhow::anyhow!("cache.policy: {e}"))?;
        Ok(budget)
    }
}

/// One `[[upstream]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http(s)://host[:port]` of the registry API.
    pub url: String,
    /// The registry name requests use to select it; defaults to the URL's `host[:port]`
    /// (`docker.io` for Docker Hub's endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User name for basic auth or token requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (prefer `password_env` or `docker_config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A docker `config.json` whose `auths` / credential helpers supply credentials for this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_config: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Skip certificate verification (never in production).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Send this upstream's credentials to a token realm on another host over plain HTTP (the
    /// registry names the realm; by default such a realm gets nothing).
    #[serde(default)]
    pub allow_plain_http_realm: bool,
    /// Seconds a tag is served from cache before it is revalidated upstream.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl_secs: u64,
    /// Tag patterns (`*` wildcard) revalidated on every pull, e.g. `["latest"]`.
    #[serde(default)]
    pub always_revalidate: Vec<String>,
    /// Connection timeout in seconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Timeout for manifest and token requests in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Longest silence while receiving a blob, in seconds.
    #[serde(default = "default_request_timeout")]
    pub read_timeout_secs: u64,
    /// Slowest average blob transfer tolerated after `min_transfer_grace_secs`, e.g. `"16KiB"`
    /// (per second; `"0"` turns the check off). A slower fill is abandoned with a clean error so a
    /// trickling upstream cannot hold clients forever.
    #[serde(default = "default_min_transfer_rate")]
    pub min_transfer_rate: String,
    /// Seconds a blob transfer may take to get going before `min_transfer_rate` applies.
    #[serde(default = "default_min_transfer_grace")]
    pub min_transfer_grace_secs: u64,
    /// Fetch an image's blobs as soon as its manifest is fetched, before clients ask for them
    /// (at most 8 prefetches in flight across images).
    #[serde(default)]
    pub prefetch_blobs_on_manifest: bool,
    /// Largest blob fetched when no manifest ferry has seen gives its size, e.g. `"64GiB"`.
    #[serde(default = "default_max_blob_size")]
    pub max_blob_size: String,
}

fn default_max_blob_size() -> String {
    "64GiB".to_owned()
}

fn default_min_transfer_rate() -> String {
    "16KiB".to_owned()
}
fn default_min_transfer_grace() -> u64 {
    30
}

fn default_tag_ttl() -> u64 {
    300
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}

impl UpstreamConfig {
    /// An upstream from just a URL, with defaults for everything else.
    pub fn from_url(url: &str) -> UpstreamConfig {
        UpstreamConfig {
            url: url.to_owned(),
            name: None,
            username: None,
            password: None,
            password_env: None,
            docker_config: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            insecure_skip_verify: false,
            allow_plain_http_realm: false,
            tag_ttl_secs: default_tag_ttl(),
            always_revalidate: Vec::new(),
            connect_timeout_secs: default_connect_timeout(),
            request_timeout_secs: default_request_timeout(),
            read_timeout_secs: default_request_timeout(),
            min_transfer_rate: default_min_transfer_rate(),
            min_transfer_grace_secs: default_min_transfer_grace(),
            prefetch_blobs_on_manifest: false,
            max_blob_size: default_max_blob_size(),
        }
    }

    /// The routing name: explicit, or the URL's `host[:port]`.
    pub fn routing_name(&self) -> anyhow::Result<String> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .with_context(|| {
                format!(
                    "upstream url {:?} must start with http:// or https://",
                    self.url
                )
            })?;
        let host = rest.trim_end_matches('/');
        anyhow::ensure!(
            !host.is_empty() && !host.contains('/'),
            "upstream url {:?} must be http(s)://host[:port] with no path",
            self.url
        );
        Ok(host.to_owned())
    }

    /// Builds the upstream: credentials, TLS material and a client whose connections come from
    /// `connections` (the process's one pool).
    pub fn build(
        &self,
        connections: &ferry_client::Connections,
    ) -> anyhow::Result<ferry_server::Upstream> {
        let name = self.routing_name()?;
        let client = self.client(connections)?;
        let bytes_per_sec = ferry_server::units::parse_size(&self.min_transfer_rate)
            .map_err(|e| anyhow::anyhow!("upstream {name}: min_transfer_rate: {e}"))?;
        let mut upstream = ferry_server::Upstream::new(
            &name,
            client,
            Duration::from_secs(self.tag_ttl_secs),
            self.always_revalidate.clone(),
        )?;
        upstream.min_transfer = ferry_server::TransferFloor {
            bytes_per_sec,
            grace: Duration::from_secs(self.min_transfer_grace_secs),
        };
        upstream.prefetch_blobs = self.prefetch_blobs_on_manifest;
        upstream.max_blob_bytes = ferry_server::units::parse_size(&self.max_blob_size)
            .map_err(|e| anyhow::anyhow!("upstream {name}: max_blob_size: {e}"))?;
        Ok(upstream)
    }

    /// The client for this upstream: its URL, credentials, TLS material and timeouts, its
    /// connections from `connections`.
    pub fn client(
        &self,
        connections: &ferry_client::Connections,
    ) -> anyhow::Result<ferry_client::Registry> {
        use ferry_client::{Credentials, DockerConfig, Registry, RegistryOptions};
        let name = self.routing_name()?;
        let read = |p: &Option<PathBuf>, what: &str| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| {
                        format!("upstream {name}: cannot read {what} {}", p.display())
                    })
                })
                .transpose()
        };
        let password = match (&self.password, &self.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .with_context(|| format!("upstream {name}: password_env {var} is not set"))?,
            ),
            (None, None) => None,
        };
        let credentials = match (&self.username, password, &self.docker_config) {
            (Some(u), Some(p), _) => Credentials::Basic {
                username: u.clone(),
                password: p,
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                anyhow::bail!("upstream {name}: give both username and password (or password_env)")
            }
            (None, None, Some(path)) => DockerConfig::load(path)
                .and_then(|c| c.credentials_for(&name))
                .map_err(|e| anyhow::anyhow!("upstream {name}: {e}"))?,
            (None, None, None) => Credentials::Anonymous,
        };
        let identity = match (
            read(&self.client_cert_file, "client certificate")?,
            read(&self.client_key_file, "client key")?,
        ) {
            (Some(mut cert), Some(key)) => {
                cert.extend_from_slice(&key);
                Some(cert)
            }
            (None, None) => None,
            _ => anyhow::bail!("upstream {name}: client_cert_file and client_key_file go together"),
        };
        Registry::new(RegistryOptions {
            endpoint: self.url.clone(),
            credentials,
            ca_pem: read(&self.ca_file, "CA file")?,
            identity_pem: identity,
            insecure_skip_verify: self.insecure_skip_verify,
            allow_plain_http_realm: self.allow_plain_http_realm,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            connections: connections.clone(),
            ..RegistryOptions::default()
        })
        .map_err(|e| anyhow::anyhow!("upstream {name}: {e}"))
    }
}

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Allow DELETE of manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Refuse manifests whose blobs are not pushed yet.
    pub check_manifest_references: bool,
    /// Answer a mount without `from` with 201 when the blob exists in any repository.
    pub auto_mount: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Bytes of pushed manifests held in memory at once across all requests; a push beyond it
    /// gets 429 and retries.
    pub max_buffered_manifest_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Seconds a client has to send its request headers.
    pub header_read_timeout_secs: u64,
    /// Seconds an upload body may stay silent before it is aborted.
    pub body_idle_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Hours an unfinished upload session is kept.
    pub upload_ttl_hours: u64,
    /// Upload sessions open at once; more get 429.
    pub max_uploads: usize,
    /// Upload sessions one client address may hold open; more get 429.
    pub max_uploads_per_client: usize,
    /// Seconds after which an upload session that never received a byte is abandoned.
    pub empty_upload_ttl_secs: u64,
    /// Blobs, manifests and tags the in-memory index holds at most (~190 bytes each); the
    /// repositories least recently used are dropped past it and read again when asked for.
    pub index_entries: usize,
    /// Memory for small blobs and manifests (64 KiB or less) served without touching their
    /// files, e.g. `"16MiB"`; `"0"` keeps none.
    pub small_blob_cache: String,
    /// Connections one client address may hold at once; more are answered 429 and closed.
    pub max_connections_per_client: usize,
    /// The slowest a client may send a request body or take a response, e.g. `"1KiB"` (per
    /// second, averaged over `client_rate_window_secs`); `"0"` still requires some progress.
    pub min_client_rate: String,
    /// Seconds over which `min_client_rate` is averaged; also the longest a transfer may stall.
    pub client_rate_window_secs: u64,
    /// Largest decompressed copy of a gzip image archive that `ferry preload` or `serve --preload`
    /// imports, e.g. `"50GiB"`; unset: 100 times the archive's size, at least 64 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unpacked_archive: Option<String>,
    /// Requests a second one client may make on average (a token bucket per user when
    /// authenticated, else per address); 0: no limit.
    pub rate_per_client: f64,
    /// Requests one client may make at once above its rate.
    pub rate_burst: u32,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Seconds between HTTP/2 pings on a connection (a vanished client is noticed within this
    /// plus 20 seconds).
    pub h2_keepalive_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            admin_token_file: None,
            metrics_listen: None,
            access_log: None,
            access_log_max_size: "1GiB".to_owned(),
            default_upstream: None,
            local_namespaces: Vec::new(),
            offline: false,
            serve_stale: true,
            registry: RegistryConfig::default(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            peers: PeersConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            upstream: Vec::new(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            delete_enabled: true,
            check_manifest_references: true,
            auto_mount: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_buffered_manifest_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            shutdown_grace_secs: 30,
            upload_ttl_hours: 24 * 7,
            max_uploads: 10_000,
            max_uploads_per_client: 1_000,
            empty_upload_ttl_secs: 300,
            index_entries: 200_000,
            small_blob_cache: "16MiB".into(),
            max_connections_per_client: 512,
            min_client_rate: "1KiB".to_owned(),
            client_rate_window_secs: 120,
            max_unpacked_archive: None,
            rate_per_client: 0.0,
            rate_burst: 200,
            max_streams_per_connection: 100,
            h2_keepalive_secs: 30,
        }
    }
}

/// `text` cut before each table header (`[x]`, `[[x]]`); the first piece holds the top-level keys.
fn sections(text: &str) -> Vec<&str> {
    let mut starts = vec![0];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if at > 0 && line.starts_with('[') {
            starts.push(at);
        }
        at += line.len();
    }
    starts.push(text.len());
    starts
        .windows(2)
        .map(|w| &text[w[0]..w[1]])
        .filter(|c| !c.trim().is_empty())
        .collect()
}

/// Optional keys of each table, with what they mean and an example value: `config print` shows
/// them commented out when unset.
const OPTIONAL_KEYS: &[(&str, &str, &str, &str)] = &[
    (
        "auth.token",
        "realm",
        "Where clients get tokens (default: this server's /token); required for an external issuer",
        "\"https://auth.example.com/token\"",
    ),
    (
        "auth.token",
        "signing_key_file",
        "ES256 key (PKCS#8 PEM) ferry signs tokens with (default: <data_dir>/auth/token-signing.key)",
        "\"/etc/ferry/token-signing.key\"",
    ),
    (
        "auth.token",
        "jwks_file",
        "An external issuer's keys (JWKS): tokens are verified with them, ferry issues none",
        "\"/etc/ferry/issuer-jwks.json\"",
    ),
    (
        "auth",
        "htpasswd_file",
        "Users who log in with basic credentials: bcrypt entries (htpasswd -B), not group- or world-readable",
        "\"/etc/ferry/htpasswd\"",
    ),
    (
        "tls",
        "cert_file",
        "Serve TLS with this certificate chain (PEM, leaf first) and key_file",
        "\"/etc/ferry/tls/tls.crt\"",
    ),
    (
        "tls",
        "key_file",
        "The certificate's private key (PEM, not group- or world-readable)",
        "\"/etc/ferry/tls/tls.key\"",
    ),
    (
        "tls",
        "client_ca_file",
        "Ask clients for certificates chaining to these CAs (mutual TLS); their subject's CN names the user",
        "\"/etc/ferry/tls/clients-ca.crt\"",
    ),
    (
        "peers",
        "cluster_key_file",
        "File holding the cluster key (go-libp2p swarm.key, or 64 hex digits): only nodes with it take part",
        "\"/etc/ferry/cluster.key\"",
    ),
    (
        "peers",
        "advertise_port",
        "The registry port peers are told to use (default: the port ferry listens on)",
        "5000",
    ),
    (
        "",
        "admin_token_file",
        "File holding the admin API's bearer token (16+ characters); the API is off without one",
        "\"/etc/ferry/admin-token\"",
    ),
    (
        "",
        "metrics_listen",
        "Where to serve /metrics (OpenMetrics); off when unset",
        "\"127.0.0.1:2112\"",
    ),
    (
        "",
        "access_log",
        "Record every request as a JSON line in the registry traces' format (ferry trace reads it)",
        "\"/var/log/ferry/access.jsonl\"",
    ),
    (
        "",
        "default_upstream",
        "The upstream used when a request names none (needed only with several upstreams)",
        "\"docker.io\"",
    ),
    (
        "",
        "local_namespaces",
        "Repository prefixes that stay ferry's own (pushable) when a default upstream takes the rest",
        "[\"team\", \"ci/builds\"]",
    ),
    (
        "limits",
        "max_unpacked_archive",
        "Largest decompressed gzip image archive imported; unset: 100 x the archive, at least 64 MiB",
        "\"50GiB\"",
    ),
    (
        "cache",
        "max_size",
        "Store size above which least recently pulled cached images are evicted; unset: no limit",
        "\"50GiB\"",
    ),
    (
        "cache.prune",
        "accessed_before",
        "Remove cached images not pulled for this long",
        "\"30d\"",
    ),
    (
        "cache.prune",
        "created_before",
        "Remove cached images stored this long ago",
        "\"90d\"",
    ),
    (
        "cache.prune",
        "pattern",
        "Only images whose repository:tag matches this regular expression",
        "\"^docker.io/library/\"",
    ),
    (
        "upstream",
        "name",
        "The registry name requests select it by; default: the URL's host[:port]",
        "\"docker.io\"",
    ),
    (
        "upstream",
        "username",
        "User name for basic auth or token requests",
        "\"robot\"",
    ),
    (
        "upstream",
        "password_env",
        "Environment variable holding the password",
        "\"FERRY_UPSTREAM_PASSWORD\"",
    ),
    (
        "upstream",
        "password",
        "The password itself (prefer password_env or docker_config)",
        "\"secret\"",
    ),
    (
        "upstream",
        "docker_config",
        "A docker config.json whose auths / credential helpers supply credentials",
        "\"/root/.docker/config.json\"",
    ),
    (
        "upstream",
        "ca_file",
        "Extra CA certificates (PEM) to trust",
        "\"/etc/ferry/upstream-ca.pem\"",
    ),
    (
        "upstream",
        "client_cert_file",
        "Client certificate (PEM) for mutual TLS",
        "\"/etc/ferry/client.pem\"",
    ),
    (
        "upstream",
        "client_key_file",
        "Client key (PEM) for mutual TLS",
        "\"/etc/ferry/client-key.pem\"",
    ),
];

/// Commented-out examples of the optional keys of `section` that `chunk` does not set.
fn unset_examples(section: &str, chunk: &str) -> String {
    let set = |key: &str| {
        chunk
            .lines()
            .any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    };
    OPTIONAL_KEYS
        .iter()
        .filter(|(s, key, _, _)| *s == section && !set(key))
        .map(|(_, key, meaning, example)| format!("# {meaning}:\n# {key} = {example}\n"))
        .collect()
}

/// What `config print` shows for a secret.
pub const REDACTED: &str = "<redacted>";

/// `~/.local/share/ferry` (the platform's data dir), or `./ferry-data` when there is no home.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("ferry"))
        .unwrap_or_else(|| PathBuf::from("ferry-data"))
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| {
            format!(
                "config file {} is invalid (`ferry config print` shows every key with its default)",
                path.display()
            )
        })
    }

    /// Parses TOML text over the defaults.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// [`Config::validate`], and what only the whole configuration of `serve` (file, environment
    /// and flags together) can tell.
    pub fn validate_serving(&self) -> anyhow::Result<()> {
        self.validate()?;
        anyhow::ensure!(
            !self.peers.enabled() || !self.upstream.is_empty(),
            "peers.nodes or peers.p2p is set but no [[upstream]] is configured: peers share what mirrors fetch (add --upstream URL)"
        );
        Ok(())
    }

    /// Rejects values that would make the server misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.limits.max_connections > 0,
            "limits.max_connections must be at least 1"
        );
        if self.peers.p2p {
            let p = &self.peers;
            anyhow::ensure!(
                p.reannounce_secs > 0 && p.reannounce_secs < p.provider_ttl_secs,
                "peers.reannounce_secs ({}) must be at least 1 and less than peers.provider_ttl_secs ({}), or this node's records lapse while it holds the blobs",
                p.reannounce_secs,
                p.provider_ttl_secs
            );
            anyhow::ensure!(
                p.rediscover_secs > 0
                    && p.lookup_timeout_ms >= 50
                    && p.max_connections >= 8
                    && p.max_records >= 1024,
                "peers.rediscover_secs must be at least 1, peers.lookup_timeout_ms at least 50, peers.max_connections at least 8 and peers.max_records at least 1024"
            );
            p.bootstrap()?;
            p.membership()?;
        } else {
            anyhow::ensure!(
                self.peers.bootstrap.is_empty(),
                "peers.bootstrap is set but peers.p2p is off: bootstrap addresses are the DHT's (add --p2p)"
            );
        }
        anyhow::ensure!(
            self.peers.max_uploads > 0 && self.peers.first_byte_timeout_secs > 0,
            "peers.max_uploads and peers.first_byte_timeout_secs must be at least 1"
        );
        anyhow::ensure!(
            self.limits.max_manifest_bytes >= 1024,
            "limits.max_manifest_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.limits.header_read_timeout_secs > 0 && self.limits.body_idle_timeout_secs > 0,
            "timeouts must be at least 1 second"
        );
        anyhow::ensure!(
            self.limits.max_buffered_manifest_bytes
                >= self
                    .limits
                    .max_manifest_bytes
                    .saturating_mul(ferry_server::MANIFEST_PARSE_FACTOR),
            "limits.max_buffered_manifest_bytes must be at least {} × limits.max_manifest_bytes (what parsing the largest manifest takes)",
            ferry_server::MANIFEST_PARSE_FACTOR
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.limits.client_rate_window_secs)
                && self.limits.empty_upload_ttl_secs > 0,
            "limits.client_rate_window_secs must be between 1 and 86400, limits.empty_upload_ttl_secs at least 1"
        );
        anyhow::ensure!(
            self.limits.max_connections_per_client > 0 && self.limits.max_uploads_per_client > 0,
            "limits.max_connections_per_client and limits.max_uploads_per_client must be at least 1"
        );
        self.client_floor()?;
        self.small_blob_cache()?;
        anyhow::ensure!(
            self.limits.max_streams_per_connection > 0 && self.limits.h2_keepalive_secs > 0,
            "limits.max_streams_per_connection and limits.h2_keepalive_secs must be at least 1"
        );
        anyhow::ensure!(
            self.limits.rate_per_client >= 0.0
                && self.limits.rate_per_client.is_finite()
                && (self.limits.rate_per_client == 0.0 || self.limits.rate_burst >= 1),
            "limits.rate_per_client must be 0 (off) or a positive number of requests per second, with limits.rate_burst at least 1"
        );
        self.tls.files()?;
        self.access_policy()?;
        self.auth.token.check()?;
        anyhow::ensure!(
            self.tls.reload_interval_secs > 0,
            "tls.reload_interval_secs must be at least 1"
        );
        anyhow::ensure!(
            self.cache.maintenance_interval_secs > 0,
            "cache.maintenance_interval_secs must be at least 1"
        );
        // Budget and prune rules are checked here, so a bad value stops `ferry serve` at start.
        self.cache.budget()?;
        self.archive_limits()?;
        Ok(())
    }

    /// Bounds on reading image archives.
    pub fn archive_limits(&self) -> anyhow::Result<ferry_copy::archive::ArchiveLimits> {
        let max_unpacked = self
            .limits
            .max_unpacked_archive
            .as_deref()
            .map(|s| {
                ferry_server::units::parse_size(s)
                    .map_err(|e| anyhow::anyhow!("limits.max_unpacked_archive: {e}"))
            })
            .transpose()?;
        Ok(ferry_copy::archive::ArchiveLimits { max_unpacked })
    }

    /// The effective configuration as TOML: every key, the optional ones that are unset as
    /// commented-out examples with their meaning, so the output is a complete template.
    pub fn to_toml(&self) -> String {
        // Secrets are never printed: a password shows as redacted (the files holding other
        // secrets are named, not read).
        let mut shown = self.clone();
        for u in &mut shown.upstream {
            if u.password.is_some() {
                u.password = Some(REDACTED.to_owned());
            }
        }
        let text = toml::to_string_pretty(&shown).unwrap_or_default();
        let mut out = String::new();
        for chunk in sections(&text) {
            let header = chunk.lines().next().unwrap_or_default().trim();
            let section = header.trim_matches(|c| c == '[' || c == ']');
            let section = if header.starts_with('[') { section } else { "" };
            out.push_str(chunk.trim_end());
            out.push('\n');
            out.push_str(&unset_examples(section, chunk));
            out.push('\n');
        }
        if self.cache.prune.is_empty() {
            out.push_str("# Standing prune rules, applied to cached images every housekeeping round:\n# [[cache.prune]]\n");
            out.push_str(&unset_examples("cache.prune", ""));
            out.push('\n');
        }
        if self.upstream.is_empty() {
            out.push_str("# An upstream registry to mirror (repeat the table for more):\n");
            let example =
                toml::to_string_pretty(&UpstreamConfig::from_url("https://registry-1.docker.io"))
                    .unwrap_or_default();
            out.push_str("# [[upstream]]\n");
            for line in example.lines() {
                out.push_str(&format!("# {line}\n"));
            }
            out.push_str(&unset_examples("upstream", &example));
        }
        out.trim_end().to_owned() + "\n"
    }

    /// Store tunables.
    pub fn store_options(&self) -> ferry_store::StoreOptions {
        ferry_store::StoreOptions {
            upload_ttl: Duration::from_secs(self.limits.upload_ttl_hours.saturating_mul(3600)),
            max_manifest_bytes: self.limits.max_manifest_bytes,
            max_uploads: self.limits.max_uploads,
            max_uploads_per_client: self.limits.max_uploads_per_client,
            empty_upload_ttl: Duration::from_secs(self.limits.empty_upload_ttl_secs),
            index_entries: self.limits.index_entries.max(1),
            // Checked when the config is validated.
            small_blob_cache: self.small_blob_cache().unwrap_or(0),
        }
    }

    fn small_blob_cache(&self) -> anyhow::Result<usize> {
        let n = ferry_server::units::parse_size(&self.limits.small_blob_cache)
            .map_err(|e| anyhow::anyhow!("limits.small_blob_cache: {e}"))?;
        usize::try_from(n).map_err(|_| anyhow::anyhow!("limits.small_blob_cache: too large"))
    }

    /// The admin token: from `admin_token_file`, else `FERRY_ADMIN_TOKEN`; refused if short. An
    /// error names where the token came from: the file or the variable.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let (token, source) = match &self.admin_token_file {
            Some(p) => (
                String::from_utf8(ferry_auth::read_secret_file(p).context("admin_token_file")?)
                    .map_err(|_| {
                        anyhow::anyhow!("admin_token_file {}: not valid UTF-8", p.display())
                    })?
                    .trim()
                    .to_owned(),
                format!("admin_token_file {}", p.display()),
            ),
            None => match std::env::var("FERRY_ADMIN_TOKEN") {
                Ok(t) => (t.trim().to_owned(), "FERRY_ADMIN_TOKEN".to_owned()),
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("FERRY_ADMIN_TOKEN: the admin token is not valid UTF-8")
                }
            },
        };
        anyhow::ensure!(
            token.len() >= 16,
            "{source}: the admin token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
        );
        Ok(Some(token))
    }

    /// Registry API switches.
    pub fn registry_options(&self) -> ferry_server::RegistryOptions {
        ferry_server::RegistryOptions {
            delete_enabled: self.registry.delete_enabled,
            check_manifest_references: self.registry.check_manifest_references,
            auto_mount: self.registry.auto_mount,
            body_idle_timeout: Duration::from_secs(self.limits.body_idle_timeout_secs),
            min_receive: self.client_floor().unwrap_or_default(),
            manifest_buffers: ferry_server::BufferBudget::new(
                self.limits.max_buffered_manifest_bytes,
            ),
            admin_token: None,
            access_log: None,
            auth: None,
            rate: (self.limits.rate_per_client > 0.0).then(|| {
                std::sync::Arc::new(ferry_server::rate::RateLimits::new(
                    self.limits.rate_per_client,
                    f64::from(self.limits.rate_burst),
                ))
            }),
        }
    }

    /// The pull-through mirror, if any upstream is configured.
    pub fn mirror(&self) -> anyhow::Result<Option<ferry_server::Mirror>> {
        if self.upstream.is_empty() {
            anyhow::ensure!(
                self.default_upstream.is_none(),
                "default_upstream is set but no [[upstream]] is configured"
            );
            return Ok(None);
        }
        let connections = ferry_client::Connections::new();
        let upstreams = self
            .upstream
            .iter()
            .map(|u| u.build(&connections))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options = ferry_server::MirrorOptions {
            offline: self.offline,
            serve_stale: self.serve_stale,
            max_manifest_bytes: self.limits.max_manifest_bytes,
            pinned: self.cache.pinned.clone(),
            local_namespaces: self.local_namespaces.clone(),
            min_free_bytes: ferry_server::units::parse_size(&self.cache.min_free_space)
                .map_err(|e| anyhow::anyhow!("cache.min_free_space: {e}"))?,
        };
        let mirror =
            ferry_server::Mirror::new(upstreams, self.default_upstream.as_deref(), options)?;
        Ok(Some(mirror))
    }

    /// The peers a mirror shares blobs with (`None` when it shares none): the static nodes and,
    /// with `p2p`, the DHT `discovery`; `identity` names this node to them.
    pub fn peers(
        &self,
        identity: ferry_peer::NodeIdentity,
        discovery: Option<ferry_peer::Network>,
    ) -> anyhow::Result<Option<ferry_server::Peers>> {
        if !self.peers.enabled() {
            return Ok(None);
        }
        let peers = ferry_server::Peers::new(ferry_server::PeerOptions {
            endpoints: self.peers.nodes.clone(),
            max_uploads: self.peers.max_uploads,
            first_byte_timeout: Duration::from_secs(self.peers.first_byte_timeout_secs),
            identity: Some(identity),
            membership: self.peers.membership()?,
            discovery,
            reannounce: Duration::from_secs(self.peers.reannounce_secs),
            ..ferry_server::PeerOptions::default()
        })
        .map_err(|e| anyhow::anyhow!("peers.nodes: {e}"))?;
        Ok(Some(peers))
    }

    /// The DHT options of a node whose registry serves on `registry_port`.
    pub fn network_options(
        &self,
        identity: ferry_peer::NodeIdentity,
        registry_port: u16,
    ) -> anyhow::Result<ferry_peer::NetworkOptions> {
        let p = &self.peers;
        let mut o = ferry_peer::NetworkOptions::new(
            p.listen,
            identity,
            p.advertise_port.unwrap_or(registry_port),
        );
        // Peers fetch from this node's registry over what it serves.
        if self.tls.cert_file.is_some() {
            o.registry_scheme = "https";
        }
        o.bootstrap = p.bootstrap()?;
        o.membership = p.membership()?;
        o.provider_ttl = Duration::from_secs(p.provider_ttl_secs);
        o.rediscover = Duration::from_secs(p.rediscover_secs);
        o.lookup_timeout = Duration::from_millis(p.lookup_timeout_ms);
        o.max_connections = p.max_connections;
        o.max_records = p.max_records;
        Ok(o)
    }

    /// The floor under clients' transfer rates.
    pub fn client_floor(&self) -> anyhow::Result<ferry_server::RateFloor> {
        Ok(ferry_server::RateFloor {
            bytes_per_sec: ferry_server::units::parse_size(&self.limits.min_client_rate)
                .map_err(|e| anyhow::anyhow!("limits.min_client_rate: {e}"))?,
            window: Duration::from_secs(self.limits.client_rate_window_secs),
        })
    }

    /// Connection limits.
    pub fn serve_options(&self) -> ferry_server::ServeOptions {
        ferry_server::ServeOptions {
            max_connections: self.limits.max_connections,
            max_connections_per_client: self.limits.max_connections_per_client,
            min_send: self.client_floor().unwrap_or_default(),
            header_read_timeout: Duration::from_secs(self.limits.header_read_timeout_secs),
            shutdown_grace: Duration::from_secs(self.limits.shutdown_grace_secs),
            max_streams_per_connection: self.limits.max_streams_per_connection,
            h2_keepalive: Duration::from_secs(self.limits.h2_keepalive_secs),
            ..ferry_server::ServeOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_roundtrip_through_toml() {
        let c = Config::default();
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
    }

    /// Every key the parser accepts in `section`, from serde's own list of the struct's fields
    /// (the error for an unknown key names them all), so a new key cannot be missed.
    fn accepted_keys(section: &str) -> Vec<String> {
        let probe = match section {
            "" => "zz_unknown = 1\n".to_owned(),
            "upstream" => "[[upstream]]\nurl = \"http://x\"\nzz_unknown = 1\n".to_owned(),
            "cache.prune" => "[[cache.prune]]\nzz_unknown = 1\n".to_owned(),
            s => format!("[{s}]\nzz_unknown = 1\n"),
        };
        let err = format!("{:#}", Config::parse(&probe).unwrap_err());
        let expected = err
            .split_once("expected one of")
            .unwrap_or_else(|| panic!("{err}"))
            .1;
        let keys: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(keys.len() > 2, "{err}");
        keys
    }

    /// `(table, key)` of every key line in `text`, commented out or not.
    fn printed_keys(text: &str) -> Vec<(String, String)> {
        let mut table = String::new();
        let mut keys = Vec::new();
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if line.starts_with('[') {
                table = line.trim_matches(|c| c == '[' || c == ']').to_owned();
                // A table is a key of its parent.
                let (parent, name) = table.rsplit_once('.').unwrap_or(("", &table));
                keys.push((parent.to_owned(), name.to_owned()));
            } else if let Some((k, _)) = line.split_once(" = ") {
                keys.push((table.clone(), k.to_owned()));
            }
        }
        keys
    }

    #[test]
    fn config_print_redacts_upstream_passwords() {
        let c = Config::parse(
            "[[upstream]]\nurl = \"https://r.example\"\nusername = \"robot\"\npassword = \"hunter2-very-secret\"\n",
        )
        .unwrap();
        let printed = c.to_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("password = \"<redacted>\""), "{printed}");
        // What is printed still parses.
        Config::parse(&printed).unwrap();
    }

    #[test]
    fn config_print_shows_every_key_the_parser_accepts() {
        let with_upstream = Config::parse(
            "[[upstream]]\nurl = \"http://127.0.0.1:5000\"\n[[cache.prune]]\naccessed_before = \"30d\"\n",
        )
        .unwrap();
        for config in [Config::default(), with_upstream] {
            let text = config.to_toml();
            // Still the configuration it prints.
            assert_eq!(Config::parse(&text).unwrap().to_toml(), text);
            let printed = printed_keys(&text);
            for table in [
                "",
                "registry",
                "limits",
                "cache",
                "cache.prune",
                "peers",
                "upstream",
            ] {
                for key in accepted_keys(table) {
                    assert!(
                        printed.contains(&(table.to_owned(), key.clone())),
                        "[{table}] {key} is missing from `config print`:\n{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let c =
            Config::parse("listen = \"127.0.0.1:9999\"\n[limits]\nmax_connections = 7\n").unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.limits.max_connections, 7);
        assert!(c.registry.delete_enabled);
        let err = Config::parse("listn = \"x\"").unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        assert!(Config::parse("[limits]\nmax_connections = 0").is_err());
        assert!(Config::parse("listen = \"not an address\"").is_err());
    }

    #[test]
    fn archive_unpack_limit_is_a_size() {
        assert_eq!(
            Config::default().archive_limits().unwrap().max_unpacked,
            None
        );
        let c = Config::parse("[limits]\nmax_unpacked_archive = \"2GiB\"").unwrap();
        assert_eq!(c.archive_limits().unwrap().max_unpacked, Some(2 << 30));
        let err = Config::parse("[limits]\nmax_unpacked_archive = \"lots\"").unwrap_err();
        assert!(
            format!("{err:#}").contains("limits.max_unpacked_archive"),
            "{err:#}"
        );
    }

    #[test]
    fn the_cache_policy_is_one_the_budget_can_evict_with() {
        assert_eq!(Config::default().cache.budget().unwrap().policy, "lru");
        let c = Config::parse("[cache]\nmax_size = \"1GiB\"\npolicy = \"s3-fifo\"").unwrap();
        assert_eq!(c.cache.budget().unwrap().policy, "s3-fifo");
        let err = Config::parse("[cache]\npolicy = \"arc\"").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cache.policy: unknown cache policy \"arc\": use lru, lfu or s3-fifo"
        );
    }
}
