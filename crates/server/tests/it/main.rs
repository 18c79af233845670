//! Registry API tests: a real ferry server on 127.0.0.1:0 in this process, driven over HTTP.
//! One binary for the crate (modules below) so linking stays cheap.

mod admin;
mod blobs;
mod errors;
mod listing;
mod manifests;
mod parse_memory;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_oci::Digest;
use ferry_server::{App, RegistryOptions, ServeOptions};
use ferry_store::{Store, StoreOptions};
use ferry_testkit::image::Image;
use reqwest::{Method, StatusCode};

/// A running registry plus a client for it.
#[derive(Debug)]
pub struct Registry {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub store: Arc<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Registry {
    pub async fn start() -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Registry::start_in(tmp.path(), RegistryOptions::default()).await;
        r._tmp = Some(tmp);
        r
    }

    pub async fn start_with(options: RegistryOptions) -> Registry {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Registry::start_in(tmp.path(), options).await;
        r._tmp = Some(tmp);
        r
    }

    pub async fn start_in(dir: &Path, options: RegistryOptions) -> Registry {
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
            ferry_server::serve(
                listener,
                ferry_server::router(app),
                ServeOptions::default(),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
        Registry {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
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
        let d = Digest::sha256(bytes);
        let r = self
            .req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
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

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> reqwest::Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes config, layers and manifest; asserts 201.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        for b in image.blobs() {
            self.push_blob(repo, &b.bytes).await;
        }
        let r = self
            .put_manifest(repo, tag, &image.manifest.media_type, &image.manifest.bytes)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
}

/// The envelope's first error code, asserting the body is an OCI error envelope.
pub async fn error_code(r: reqwest::Response) -> String {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.bytes().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    assert_eq!(ct.as_deref(), Some("application/json"));
    let code = v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {v}"));
    assert!(v["errors"][0]["message"].is_string(), "{v}");
    code.to_owned()
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}
