//! ferry in this process, on 127.0.0.1:0, with no external binaries: [`Registry`] (the registry
//! API over a temporary store) and [`Mirrored`] (a ferry mirror pulling through a [`FaultProxy`]
//! from an upstream [`Registry`]), so tests reach the server's own state (store, metrics) while
//! they drive it over HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_oci::Digest;
use ferry_server::mirror::budget::CacheBudget;
use ferry_server::{
    App, Mirror, MirrorOptions, RegistryOptions, RunSettings, ServeOptions, Upstream,
};
use ferry_store::{Store, StoreOptions};
use reqwest::{Method, StatusCode};

use crate::faults::FaultProxy;
use crate::image::Image;

/// A running registry (no mirror) plus a client for it.
#[derive(Debug)]
pub struct Registry {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    /// The directory holding the store (under `data/`).
    pub dir: PathBuf,
    pub store: Arc<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Registry {
    /// A registry with default options over a fresh temporary directory.
    pub async fn start() -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Registry::start_in(tmp.path(), RegistryOptions::default()).await;
        r._tmp = Some(tmp);
        r
    }

    /// A registry with `options` over a fresh temporary directory.
    pub async fn start_with(options: RegistryOptions) -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Registry::start_in(tmp.path(), options).await;
        r._tmp = Some(tmp);
        r
    }

    /// A registry with `options` over `dir/data` (which may hold a store already).
    pub async fn start_in(dir: &Path, options: RegistryOptions) -> Registry {
        Registry::serving(dir, options, ServeOptions::default(), None).await
    }

    /// A registry serving TLS with `pki`'s server certificate (HTTP/2 offered by ALPN), with
    /// `serve`'s connection limits; its client trusts `pki`'s CA and speaks whatever ALPN gives.
    pub async fn start_tls(pki: &crate::tls::TestPki, mut serve: ServeOptions) -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        serve.tls = Some(Arc::new(tls_serving(pki, None)));
        let mut r =
            Registry::serving(tmp.path(), RegistryOptions::default(), serve, Some(pki)).await;
        r._tmp = Some(tmp);
        r
    }

    /// A registry with `options` and `serve` over `dir/data`; `https://` when `serve` has TLS
    /// (its client then trusts `pki`'s CA).
    pub async fn serving(
        dir: &Path,
        options: RegistryOptions,
        serve: ServeOptions,
        pki: Option<&crate::tls::TestPki>,
    ) -> Registry {
        let scheme = if serve.tls.is_some() { "https" } else { "http" };
        let mut client = reqwest::Client::builder().no_proxy();
        if let Some(pki) = pki {
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap());
        }
        let store = Store::open(dir.join("data"), StoreOptions::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Arc::new(App {
            store: store.clone(),
            options,
            mirror: None,
            metrics: Default::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            ferry_server::serve(listener, ferry_server::router(app), serve, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Registry {
            base: format!("{scheme}://{addr}"),
            client: client.build().unwrap(),
            dir: dir.to_owned(),
            store,
            shutdown: Some(tx),
            task: Some(task),
            _tmp: None,
        }
    }

    /// Stops the server and releases the data directory (its lock included).
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self._tmp.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.req(method, path).send().await.unwrap()
    }

    /// Monolithic upload; asserts 201.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        push_blob(&self.client, &self.base, repo, bytes).await
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        put_manifest(&self.client, &self.base, repo, reference, media_type, bytes).await
    }

    /// Pushes config, layers and manifest; asserts 201.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        push_image(&self.client, &self.base, repo, tag, image).await
    }

    /// [`Registry::push_image`] with a bearer token on every request.
    pub async fn push_image_with(&self, repo: &str, tag: &str, image: &Image, token: &str) {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .build()
            .unwrap();
        push_image(&client, &self.base, repo, tag, image).await
    }
}

/// TLS with `pki`'s server certificate (and client certificates from its CA, `client_auth`).
pub fn tls_serving(
    pki: &crate::tls::TestPki,
    client_auth: Option<ferry_server::tls::ClientAuth>,
) -> ferry_server::tls::TlsServing {
    ferry_server::tls::TlsServing::load(
        ferry_server::tls::TlsFiles {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
            client_ca: client_auth.map(|_| pki.ca.clone()),
            client_auth: client_auth.unwrap_or(ferry_server::tls::ClientAuth::Required),
            http2: true,
        },
        Arc::new(|p: &Path| {
            std::fs::read(p).map_err(|source| ferry_server::tls::TlsError::Read {
                path: p.to_owned(),
                source,
            })
        }),
    )
    .expect("load the test PKI")
}

/// Monolithic upload to the registry at `base`; asserts 201.
async fn push_blob(client: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256(bytes);
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    d
}

async fn put_manifest(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> reqwest::Response {
    client
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes config, layers and manifest to the registry at `base`; asserts 201.
async fn push_image(client: &reqwest::Client, base: &str, repo: &str, tag: &str, image: &Image) {
    for b in image.blobs() {
        push_blob(client, base, repo, &b.bytes).await;
    }
    let r = put_manifest(
        client,
        base,
        repo,
        tag,
        &image.manifest.media_type,
        &image.manifest.bytes,
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

/// The name the mirror knows its upstream by (`?ns=`, `X-Registry`, in-path namespace), and the
/// store prefix its cached repositories get.
pub const UPSTREAM: &str = "upstream.test";

/// How a [`Mirrored`] mirror is set up.
#[derive(Debug, Clone)]
pub struct MirrorSetup {
    /// Mirror behaviour (pinned patterns, local namespaces, …).
    pub options: MirrorOptions,
    /// The cache budget applied by housekeeping.
    pub budget: CacheBudget,
    /// Time between housekeeping rounds.
    pub housekeeping_interval: Duration,
    /// Registry behaviour (authentication, …).
    pub registry: RegistryOptions,
}

impl Default for MirrorSetup {
    fn default() -> MirrorSetup {
        MirrorSetup {
            // A test's disk may be nearly full; fills must not be refused for it.
            options: MirrorOptions {
                min_free_bytes: 0,
                ..MirrorOptions::default()
            },
            budget: CacheBudget::default(),
            // Rounds run only when a test asks for them with a short interval.
            housekeeping_interval: Duration::from_secs(3600),
            registry: RegistryOptions::default(),
        }
    }
}

/// A ferry mirror running [`ferry_server::run`] in this process, with a client for it.
#[derive(Debug)]
pub struct MirrorServer {
    /// `http://127.0.0.1:<port>` of the registry API.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the metrics listener.
    pub metrics_base: String,
    /// The server's state: store, mirror, metrics.
    pub app: Arc<App>,
    pub client: reqwest::Client,
    /// The data directory.
    pub dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ferry_server::RunError>>>,
    _tmp: tempfile::TempDir,
}

impl MirrorServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Pushes config, layers and manifest (to a local namespace); asserts 201.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        push_image(&self.client, &self.base, repo, tag, image).await
    }

    /// Stops the server and waits for its lifecycle to end (listeners drained, statistics
    /// flushed, temp files removed).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shut_down().await;
        self._tmp
    }

    async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// An upstream ferry registry, a [`FaultProxy`] in front of it, and a ferry mirror of it (routed
/// as [`UPSTREAM`], also its default upstream) behind the proxy.
#[derive(Debug)]
pub struct Mirrored {
    pub upstream: Registry,
    /// Between mirror and upstream: counts requests, injects faults.
    pub proxy: FaultProxy,
    pub mirror: MirrorServer,
}

impl Mirrored {
    /// Upstream, proxy and mirror with [`MirrorSetup::default`].
    pub async fn start() -> Mirrored {
        Mirrored::start_with(MirrorSetup::default()).await
    }

    /// Upstream, proxy and a mirror set up as `setup` says.
    pub async fn start_with(setup: MirrorSetup) -> Mirrored {
        let upstream = Registry::start().await;
        let proxy = FaultProxy::start(upstream.base.trim_start_matches("http://"));
        let client = ferry_client::Registry::new(ferry_client::RegistryOptions {
            endpoint: format!("http://{}", proxy.host()),
            ..ferry_client::RegistryOptions::default()
        })
        .expect("upstream client");
        let up = Upstream::new(UPSTREAM, client, Duration::from_secs(300), Vec::new())
            .expect("upstream");
        let mirror = Mirror::new(vec![up], Some(UPSTREAM), setup.options).expect("mirror");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = Store::open(&dir, StoreOptions::default()).await.unwrap();
        let app = Arc::new(App {
            store,
            options: setup.registry,
            mirror: Some(Arc::new(mirror)),
            metrics: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics_base = format!("http://{}", metrics.local_addr().unwrap());
        let settings = RunSettings {
            serve: ServeOptions::default(),
            metrics_serve: ServeOptions::default(),
            housekeeping_interval: setup.housekeeping_interval,
            budget: setup.budget,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::run(
            app.clone(),
            listener,
            Some(metrics),
            settings,
            async {
                let _ = rx.await;
            },
        ));
        Mirrored {
            upstream,
            proxy,
            mirror: MirrorServer {
                base,
                metrics_base,
                app,
                client: reqwest::Client::builder().no_proxy().build().unwrap(),
                dir,
                shutdown: Some(tx),
                task: Some(task),
                _tmp: tmp,
            },
        }
    }

    /// Pushes `image` to the upstream as `repo:tag`.
    pub async fn seed(&self, repo: &str, tag: &str, image: &Image) {
        self.upstream.push_image(repo, tag, image).await;
    }

    /// Stops the mirror, then the upstream, waiting for both.
    pub async fn stop(self) {
        self.mirror.stop().await;
        self.upstream.stop().await;
    }
}
