//! `ferry serve`: configuration checked, listeners bound, the app built, then the serving
//! lifecycle of `ferry_server::run` until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::DataArgs;
use super::open_store;
use super::preload::{ImportOptions, import_archives, run_preload};
use crate::config::{self, Config};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FERRY_LISTEN", value_name = "IP:PORT", value_parser = socket_addr)]
    pub listen: Option<SocketAddr>,
    /// Refuse DELETE of manifests, tags and blobs.
    #[arg(long)]
    pub no_delete: bool,
    /// Accept manifests whose blobs have not been pushed (some migration tools push manifests first).
    #[arg(long)]
    pub relaxed_manifests: bool,
    /// Connections served at once.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Mirror this registry (repeatable): `http(s)://host[:port]`; its `host[:port]` is the name
    /// requests route by (`?ns=`, `X-Registry`, `/v2/<host:port>/…`). A single upstream is also the
    /// default.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// The upstream for requests that name none.
    #[arg(long, value_name = "NAME")]
    pub default_upstream: Option<String>,
    /// A repository prefix that is ferry's own, pushable, when a default upstream takes every
    /// other name (repeatable), e.g. `--local-namespace team`.
    #[arg(long = "local-namespace", value_name = "PREFIX")]
    pub local_namespaces: Vec<String>,
    /// Never contact upstreams; serve only what is cached.
    #[arg(long)]
    pub offline: bool,
    /// Pull the references listed in FILE through this server once it listens, or import FILE if it
    /// is an image archive (docker save, OCI layout, oci-archive; before listening) (repeatable).
    #[arg(long, value_name = "FILE")]
    pub preload: Vec<PathBuf>,
    /// Serve Prometheus/OpenMetrics series at http://ADDR/metrics.
    #[arg(long = "metrics", value_name = "IP:PORT", env = "FERRY_METRICS", value_parser = socket_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Record every request as a JSON line in the registry traces' format (`ferry trace analyze`
    /// and `simulate` read it), rotated to FILE.1 past access_log_max_size (1GiB).
    #[arg(long, value_name = "FILE", env = "FERRY_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,
    /// Another ferry node to share blobs with (repeatable): `http(s)://host[:port]`, its registry
    /// endpoint. Blobs this mirror lacks are asked of peers (verified) before the upstream.
    #[arg(long = "peer", value_name = "URL")]
    pub peers: Vec<String>,
    /// Find peers through a DHT on the peer port (--p2p-listen): this node announces a blob as
    /// its fill starts, and nodes missing it stream it from here instead of the upstream.
    #[arg(long, env = "FERRY_P2P")]
    pub p2p: bool,
    /// The DHT's peer port [default: 0.0.0.0:5001].
    #[arg(long, value_name = "IP:PORT", env = "FERRY_P2P_LISTEN", value_parser = socket_addr)]
    pub p2p_listen: Option<SocketAddr>,
    /// Where to find the first peers (repeatable): `HOST:PORT`, `IP:PORT`, `/ip4/ADDR/tcp/PORT`
    /// or `/dns4/NAME/tcp/PORT`; a name resolving to many addresses (a Kubernetes headless
    /// Service) finds every node, and is resolved again every peers.rediscover_secs.
    #[arg(
        long = "p2p-bootstrap",
        visible_alias = "peers",
        value_name = "ADDR",
        value_delimiter = ',',
        env = "FERRY_P2P_BOOTSTRAP"
    )]
    pub p2p_bootstrap: Vec<String>,
    /// Serve TLS with this certificate chain (PEM, leaf first); needs --tls-key. Clients that
    /// offer HTTP/2 get it. Reloaded when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE", env = "FERRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); refused if group- or world-readable.
    #[arg(long, value_name = "FILE", env = "FERRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Users who log in with basic credentials: an htpasswd file of bcrypt entries
    /// (`htpasswd -B`). Turns authentication on; access rules are `[[auth.access]]` tables (docs/security.md).
    #[arg(long, value_name = "FILE", env = "FERRY_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,
    /// Ask clients for certificates chaining to these CAs (mutual TLS); the subject's common
    /// name is the user for access control.
    #[arg(long, value_name = "FILE", env = "FERRY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Issue bearer tokens at /token (Docker token specification) and challenge clients with
    /// them; basic credentials keep working on every request.
    #[arg(long, env = "FERRY_TOKEN_AUTH")]
    pub token_auth: bool,
    /// The ES256 key (PKCS#8 PEM) tokens are signed with [default: DATA_DIR/auth/token-signing.key,
    /// made at first start]; replicas behind one name share one.
    #[arg(long, value_name = "FILE", env = "FERRY_TOKEN_SIGNING_KEY")]
    pub token_signing_key: Option<PathBuf>,
    /// Whether clients must present a certificate when --tls-client-ca is given.
    #[arg(long, value_name = "MODE", value_enum)]
    pub tls_client_auth: Option<config::ClientAuthMode>,
    /// Only nodes holding this cluster key take part (go-libp2p swarm.key, or 64 hex digits).
    #[arg(long, value_name = "FILE", env = "FERRY_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
}

impl ServeArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = self.data.config()?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if self.no_delete {
            c.registry.delete_enabled = false;
        }
        if self.relaxed_manifests {
            c.registry.check_manifest_references = false;
        }
        if let Some(n) = self.max_connections {
            c.limits.max_connections = n;
        }
        for url in &self.upstreams {
            c.upstream.push(config::UpstreamConfig::from_url(url));
        }
        if let Some(d) = &self.default_upstream {
            c.default_upstream = Some(d.clone());
        }
        c.local_namespaces
            .extend(self.local_namespaces.iter().cloned());
        if self.offline {
            c.offline = true;
        }
        if let Some(m) = self.metrics_listen {
            c.metrics_listen = Some(m);
        }
        if let Some(l) = &self.access_log {
            c.access_log = Some(l.clone());
        }
        c.peers.nodes.extend(self.peers.iter().cloned());
        if self.p2p {
            c.peers.p2p = true;
        }
        if let Some(l) = self.p2p_listen {
            c.peers.listen = l;
        }
        c.peers.bootstrap.extend(self.p2p_bootstrap.iter().cloned());
        if let Some(k) = &self.cluster_key_file {
            c.peers.cluster_key_file = Some(k.clone());
        }
        if let Some(p) = &self.tls_cert {
            c.tls.cert_file = Some(p.clone());
        }
        if let Some(p) = &self.tls_key {
            c.tls.key_file = Some(p.clone());
        }
        if let Some(p) = &self.tls_client_ca {
            c.tls.client_ca_file = Some(p.clone());
        }
        if let Some(p) = &self.htpasswd {
            c.auth.htpasswd_file = Some(p.clone());
        }
        if self.token_auth {
            c.auth.token.issue = true;
        }
        if let Some(p) = &self.token_signing_key {
            c.auth.token.signing_key_file = Some(p.clone());
        }
        if let Some(m) = self.tls_client_auth {
            c.tls.client_auth = m;
        }
        c.validate_serving()?;
        Ok(c)
    }
}

/// An address to listen on, with an error that says what is wanted (the standard one says only
/// "invalid socket address syntax", e.g. for a bare port).
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        let hint = if s.parse::<u16>().is_ok() {
            format!(" (a port alone is not enough: 127.0.0.1:{s} or 0.0.0.0:{s})")
        } else {
            String::new()
        };
        format!("expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080{hint}")
    })
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps their
/// memory: under a prune-heavy load ferry's peak RSS was 66–71 MiB with the default and 31 MiB with
/// two arenas (docs/benchmarks/load.md). The setting is read only at process start, so `serve`
/// re-executes itself once with `MALLOC_ARENA_MAX=2` unless the variable is already set (set it to
/// anything, e.g. `8`, to keep glibc's default behaviour). Other C libraries ignore it.
pub fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // `exec` only returns on failure; then ferry runs on as it is.
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!("warning: could not re-execute with MALLOC_ARENA_MAX=2 ({err}); continuing");
}

/// Raises the open-file limit as far as allowed, and keeps the connection bound under it: each
/// connection may hold a socket and a file, and the store needs descriptors of its own.
fn fit_connections_to_fd_limit(c: &mut Config) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fit = (limit.saturating_sub(256) / 2).max(16) as usize;
    if c.limits.max_connections > fit {
        tracing::warn!(
            max_connections = c.limits.max_connections,
            open_file_limit = limit,
            using = fit,
            "max_connections exceeds what the open-file limit allows; lowering it (raise `ulimit -n` to serve more)"
        );
        c.limits.max_connections = fit;
    }
}

/// The peers of this node: its identity (kept in the data dir), the DHT joined when `p2p`.
async fn join_peers(c: &Config, registry_port: u16) -> anyhow::Result<ferry_server::Peers> {
    let key = c.data_dir.join("peer").join("identity.key");
    let identity = ferry_peer::NodeIdentity::load_or_create(&key)?;
    let discovery = if c.peers.p2p {
        if c.listen.ip().is_loopback() && !c.peers.listen.ip().is_loopback() {
            tracing::warn!(listen = %c.listen, peer_listen = %c.peers.listen, "the registry listens on loopback only, but peers on other hosts reach it at this host's address: listen on an address they can reach (e.g. --listen 0.0.0.0:5000)");
        }
        let options = c.network_options(identity.clone(), registry_port)?;
        Some(ferry_peer::Network::start(options).await?)
    } else {
        None
    };
    c.peers(identity, discovery)?
        .context("peers are configured but none could be set up")
}

/// Connections waiting to be accepted at most (what `TcpListener::bind` uses too).
const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr`, not listening yet: the port is ferry's (another server's port is
/// refused here) while connections are still refused.
fn reserve(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

pub async fn serve(
    mut c: Config,
    preload_refs: Vec<ferry_oci::Reference>,
    archives: Vec<PathBuf>,
) -> anyhow::Result<()> {
    fit_connections_to_fd_limit(&mut c);
    // Everything that can be wrong is found before anything changes on disk or is logged as
    // serving: the configuration first, then the ports.
    let mirror = c.mirror()?;
    let budget = c.cache.budget()?;
    let interval = std::time::Duration::from_secs(c.cache.maintenance_interval_secs);
    let access_log = match &c.access_log {
        Some(path) => {
            let max = ferry_server::units::parse_size(&c.access_log_max_size)
                .map_err(|e| anyhow::anyhow!("access_log_max_size: {e}"))?;
            Some(
                ferry_server::access_log::AccessLog::open(path, max)
                    .with_context(|| format!("cannot open the access log {}", path.display()))?,
            )
        }
        None => None,
    };
    let tls = c.tls.load()?.map(Arc::new);
    if tls.is_none() && !c.listen.ip().is_loopback() {
        tracing::warn!(listen = %c.listen, "serving plain HTTP on an address other hosts can reach: anyone who reaches it can pull and push; serve TLS (--tls-cert, --tls-key) and see docs/security.md");
    }
    // Checked now (a missing data-dir signing key is made once the data dir is ferry's).
    if c.auth(false)?.is_some() && tls.is_none() && !c.listen.ip().is_loopback() {
        tracing::warn!(
            "credentials are sent in the clear without TLS: serve TLS (--tls-cert, --tls-key) where others can listen"
        );
    }
    let admin_token = c.admin_token()?;
    let import = if archives.is_empty() {
        None
    } else {
        let m = mirror.as_ref().context(
            "--preload with an image archive needs the upstream its images belong to (--upstream or [[upstream]])",
        )?;
        let o = ImportOptions {
            platforms: &[],
            limits: c.archive_limits()?,
            name: None,
            jobs: 4,
            images: 2,
        };
        Some((m, o))
    };
    // The ports are taken now but listened on only once the archives are imported: a port in use
    // is found before the data directory is touched, and a client that connects is served.
    let listen_error = |addr: SocketAddr| {
        format!(
            "cannot listen on {addr} (is another server using the port? try --listen 127.0.0.1:<port>)"
        )
    };
    let socket = reserve(c.listen).with_context(|| listen_error(c.listen))?;
    let addr = socket.local_addr()?;
    let metrics_socket = match c.metrics_listen {
        Some(addr) => {
            Some(reserve(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?)
        }
        None => None,
    };
    let store = open_store(&c, ferry_store::LockMode::Exclusive).await?;
    let options = ferry_server::RegistryOptions {
        admin_token,
        access_log: access_log.clone(),
        auth: c.auth(true)?.map(Arc::new),
        ..c.registry_options()
    };
    if let Some((m, o)) = &import {
        // Imported before listening, so an air-gapped node never answers for images it is about
        // to have.
        if import_archives(&store, m, &archives, o, false).await {
            tracing::info!(archives = archives.len(), "archives imported");
        }
    }
    // Peers join once the data dir is this process's (the node identity lives there).
    let mirror = match mirror {
        Some(m) if c.peers.enabled() => Some(m.with_peers(join_peers(&c, addr.port()).await?)),
        m => m,
    };
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| listen_error(addr))?;
    let metrics = match metrics_socket {
        Some(s) => {
            let addr = s.local_addr()?;
            Some(
                s.listen(LISTEN_BACKLOG)
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            )
        }
        None => None,
    };
    if !preload_refs.is_empty() {
        // The listener is bound, so these requests wait in its queue until serving starts.
        let me = format!("http://{addr}");
        tokio::spawn(async move {
            let n = preload_refs.len();
            if run_preload(&me, preload_refs, &[], 4, 2, false).await {
                tracing::info!(images = n, "preload finished");
            }
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %addr, %scheme, data_dir = %c.data_dir.display(), "ferry serving the OCI distribution API");
    if let Some(m) = &mirror {
        let names: Vec<&str> = m.upstream_names().collect();
        tracing::info!(upstreams = %names.join(","), offline = c.offline, "mirroring");
    }
    if options.admin_token.is_some() {
        tracing::info!("admin API enabled under /admin/");
    }
    if let Some(l) = &metrics {
        tracing::info!(listen = %l.local_addr()?, "metrics at /metrics");
    }
    let app = Arc::new(ferry_server::App {
        store,
        options,
        mirror: mirror.map(Arc::new),
        metrics: Arc::default(),
    });
    if let Some(m) = app.mirror.clone() {
        // Beside serving: listing the repositories walks the data dir.
        tokio::spawn(warn_of_hidden_repositories(app.store.clone(), m));
    }
    // Installed before serving in every case: SIGHUP's default action would end the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP (the signal that reloads certificates)")?;
    let reloadable = Reloadable {
        tls: tls.clone(),
        htpasswd: app.options.auth.clone().zip(c.auth.htpasswd_file.clone()),
    };
    tokio::spawn(reload_on_change(
        reloadable,
        std::time::Duration::from_secs(c.tls.reload_interval_secs),
        hangup,
    ));
    let settings = ferry_server::RunSettings {
        serve: ferry_server::ServeOptions {
            tls,
            ..c.serve_options()
        },
        metrics_serve: ferry_server::ServeOptions {
            max_connections: 64,
            ..c.serve_options()
        },
        housekeeping_interval: interval,
        budget,
    };
    let served = ferry_server::run(app, listener, metrics, settings, shutdown_signal()).await;
    if let Some(log) = access_log {
        // What is queued is written before the process ends.
        tokio::task::spawn_blocking(move || log.close()).await?;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Pushed repositories that a default upstream now shadows are not served; says so once.
async fn warn_of_hidden_repositories(
    store: Arc<ferry_store::Store>,
    m: Arc<ferry_server::mirror::Mirror>,
) {
    let names = match store.repositories(None, None).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "listing the stored repositories failed");
            return;
        }
    };
    let hidden: Vec<String> = names
        .into_iter()
        .filter(|r| m.owns_namespace(r).is_none() && !m.serves_locally(r))
        .collect();
    if !hidden.is_empty() {
        tracing::warn!(
            count = hidden.len(),
            first = %hidden.iter().take(5).cloned().collect::<Vec<_>>().join(","),
            "pushed repositories are not served: their names route to the default upstream; list their prefixes in local_namespaces (--local-namespace) to serve them"
        );
    }
}

/// What SIGHUP and file changes reload.
struct Reloadable {
    tls: Option<Arc<ferry_server::tls::TlsServing>>,
    htpasswd: Option<(Arc<ferry_server::auth::Auth>, PathBuf)>,
}

impl Reloadable {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(t) = &self.tls {
            let f = t.files();
            files.extend(
                [Some(&f.cert), Some(&f.key), f.client_ca.as_ref()]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        if let Some((_, p)) = &self.htpasswd {
            files.push(p.clone());
        }
        files
    }
}

/// Reloads the TLS files and the htpasswd file when they change (checked every `interval`) or
/// on SIGHUP. What does not load (a key renamed into place before its certificate, a bad line)
/// leaves what is served as it was, with a warning; the next change or signal tries again.
async fn reload_on_change(
    what: Reloadable,
    interval: std::time::Duration,
    mut hangup: tokio::signal::unix::Signal,
) {
    let watched = what.files();
    let stamp = |path: &PathBuf| {
        std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.ino(), m.len(), m.mtime(), m.mtime_nsec())
        })
    };
    let mut seen: Vec<_> = watched.iter().map(stamp).collect();
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        let why = tokio::select! {
            _ = tick.tick() => "changed",
            Some(()) = hangup.recv() => "SIGHUP",
        };
        let now: Vec<_> = watched.iter().map(stamp).collect();
        let changed = |i: usize| why == "SIGHUP" || now[i] != seen[i];
        if why == "changed" && now == seen {
            continue;
        }
        if watched.is_empty() {
            tracing::info!("SIGHUP received: nothing to reload (no TLS or htpasswd configured)");
            continue;
        }
        let tls_files = what.tls.as_ref().map_or(0, |t| {
            let f = t.files();
            2 + usize::from(f.client_ca.is_some())
        });
        if let Some(tls) = &what.tls
            && (0..tls_files).any(changed)
        {
            match tls.reload() {
                Ok(()) => tracing::info!(trigger = why, "TLS certificate and key reloaded"),
                Err(e) => {
                    tracing::warn!(trigger = why, error = %e, "TLS files not reloaded; still serving the previous certificate")
                }
            }
        }
        if let Some((auth, path)) = &what.htpasswd
            && changed(tls_files)
        {
            match crate::config::read_htpasswd(path) {
                Ok(h) => {
                    let users = h.len();
                    auth.set_htpasswd(h);
                    tracing::info!(trigger = why, users, "htpasswd reloaded");
                }
                Err(e) => {
                    tracing::warn!(trigger = why, error = %e, "htpasswd not reloaded; the previous users stay")
                }
            }
        }
        seen = now;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
