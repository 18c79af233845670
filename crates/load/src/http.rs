//! The driver's HTTP/1.1 client: hyper's connection API over explicit TCP connections, a few per
//! puller and never shared between pullers, so the driver adds no pool locks or queues of its own
//! to what it measures.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ferry_oci::{Algorithm, Digest};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Why a request failed, as counted in the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A non-success status (`http_404`, `http_500`, …).
    Status(u16),
    /// The connection could not be made.
    Connect,
    /// The connection broke during the exchange.
    Io,
    /// No answer in time.
    Timeout,
    /// Bytes that do not hash to the digest asked for.
    Digest,
    /// An answer that makes no sense (no digest header, unparsable manifest, …).
    Protocol,
}

impl Failure {
    /// The name results use.
    pub fn kind(&self) -> String {
        match self {
            Failure::Status(s) => format!("http_{s}"),
            Failure::Connect => "connect".into(),
            Failure::Io => "io".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Digest => "digest".into(),
            Failure::Protocol => "protocol".into(),
        }
    }
}

/// A response whose body was read whole (manifests) or hashed and counted (blobs).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body when kept.
    pub body: Bytes,
    /// Body bytes read.
    pub len: u64,
    /// Digest of the body when asked for.
    pub digest: Option<Digest>,
}

/// What to do with a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Keep it (manifests; bounded by the caller's `max`).
    Keep(usize),
    /// Hash it with this algorithm, keep nothing.
    Hash(Algorithm),
    /// Count it only.
    Drain,
}

/// Connections to one server for one puller.
#[derive(Debug)]
pub struct Http {
    addr: String,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
    timeout: Duration,
}

impl Http {
    /// A client for `addr` (`host:port`) whose exchanges each get `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Http {
        Http {
            addr: addr.to_owned(),
            idle: Mutex::default(),
            timeout,
        }
    }

    fn take(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn give_back(&self, c: SendRequest<Empty<Bytes>>) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One exchange on an idle connection (or a new one), the body used as `body` says.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: BodyUse,
    ) -> Result<Answer, Failure> {
        match tokio::time::timeout(
            self.timeout,
            self.exchange_inner(method, path, headers, body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn exchange_inner(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: BodyUse,
    ) -> Result<Answer, Failure> {
        let mut conn = match self.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        conn.ready().await.map_err(|_| Failure::Io)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, &self.addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).map_err(|_| Failure::Protocol)?;
        let resp = conn.send_request(req).await.map_err(|_| Failure::Io)?;
        let (parts, mut incoming) = resp.into_parts();
        let mut kept = Vec::new();
        let mut hasher = match body {
            BodyUse::Hash(a) => Some(a.hasher()),
            _ => None,
        };
        let mut len = 0u64;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| Failure::Io)?;
            if let Ok(data) = frame.into_data() {
                len += data.len() as u64;
                match body {
                    BodyUse::Keep(max) => {
                        if kept.len() + data.len() > max {
                            return Err(Failure::Protocol);
                        }
                        kept.extend_from_slice(&data);
                    }
                    BodyUse::Hash(_) => {
                        if let Some(h) = hasher.as_mut() {
                            h.update(&data);
                        }
                    }
                    BodyUse::Drain => {}
                }
            }
        }
        // A connection that finished its exchange cleanly serves the next one.
        self.give_back(conn);
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(kept),
            len,
            digest: hasher.map(|h| h.finish()),
        })
    }
}
