//! `ferry serve --access-log FILE`: one JSON line per request in the registry traces' own key
//! names (`http.request.uri`, `http.response.written`, …), so the trace lab reads a mirror's own
//! traffic like the IBM traces.
//!
//! Off the request path: a response's record is handed to a bounded queue when its body ends (or
//! is dropped), and one thread writes the queue out, buffered, flushing at least every second. A
//! full queue drops records (counted, and said in the log at most once a minute) rather than slow
//! requests. The file is rotated by size: past `max_bytes` it becomes `FILE.1` (replacing the
//! previous one) and a new `FILE` starts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

/// Records waiting to be written at most; beyond, records are dropped.
const QUEUE: usize = 65_536;
/// Longest user agent kept.
const MAX_USER_AGENT: usize = 256;

/// One request, as the trace records it.
#[derive(Debug)]
struct Record {
    /// Microseconds since the epoch at arrival.
    time_us: i64,
    method: String,
    uri: String,
    status: u16,
    written: u64,
    duration: Duration,
    client: String,
    user_agent: Option<String>,
}

/// The writer of an access log, shared by every request.
#[derive(Debug)]
pub struct AccessLog {
    queue: Mutex<Option<mpsc::SyncSender<Record>>>,
    dropped: AtomicU64,
    /// When a drop was last logged, in seconds since `started`.
    warned_at: AtomicU64,
    started: Instant,
    /// Mixed into client addresses before hashing, so the log does not hold them.
    salt: u64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Starts logging to `path` (appended to), rotated past `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Arc<AccessLog>> {
        let file = open_append(path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("ferry-access-log".to_owned())
            .spawn(move || write_records(rx, file, path, max_bytes.max(1 << 20)))?;
        Ok(Arc::new(AccessLog {
            queue: Mutex::new(Some(tx)),
            dropped: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            started: Instant::now(),
            salt: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                0u64,
            ),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes out what is queued and stops; later records are dropped. For shutdown.
    pub fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }

    fn send(&self, r: Record) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let sent = queue.as_ref().is_some_and(|q| q.try_send(r).is_ok());
        drop(queue);
        if !sent {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = self.started.elapsed().as_secs() + 60;
            let last = self.warned_at.load(Ordering::Relaxed);
            if now >= last + 60
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    dropped_total = n,
                    "the access log's queue is full: records are dropped (is its disk slow?)"
                );
            }
        }
    }

    /// An 8-hex-digit name for a client address, stable while the server runs.
    fn client(&self, addr: Option<std::net::IpAddr>) -> String {
        match addr {
            Some(ip) => {
                let d = ferry_oci::Digest::sha256(format!("{}{ip}", self.salt).as_bytes());
                d.hex()[..8].to_owned()
            }
            None => "unknown".to_owned(),
        }
    }

    /// Wraps a response's body so that its record is logged when the body ends or is dropped,
    /// with the bytes actually handed to the connection.
    pub(crate) fn wrap(
        self: &Arc<Self>,
        request: &RequestFacts,
        status: u16,
        body: axum::body::Body,
    ) -> axum::body::Body {
        axum::body::Body::new(LoggedBody {
            inner: body,
            written: 0,
            pending: Some(Record {
                time_us: request.time_us,
                method: request.method.clone(),
                uri: request.uri.clone(),
                status,
                written: 0,
                duration: Duration::ZERO,
                client: self.client(request.client),
                user_agent: request.user_agent.clone(),
            }),
            started: request.started,
            log: self.clone(),
        })
    }
}

/// What the log needs of a request, taken before the handler consumes it.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    time_us: i64,
    started: Instant,
    method: String,
    uri: String,
    client: Option<std::net::IpAddr>,
    user_agent: Option<String>,
}

impl RequestFacts {
    pub(crate) fn of(req: &axum::extract::Request, started: Instant) -> RequestFacts {
        let time_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        RequestFacts {
            time_us,
            started,
            method: req.method().as_str().to_owned(),
            uri: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned()),
            client: req
                .extensions()
                .get::<crate::listen::ClientAddr>()
                .map(|c| c.0),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(MAX_USER_AGENT).collect()),
        }
    }
}

struct LoggedBody {
    inner: axum::body::Body,
    written: u64,
    pending: Option<Record>,
    started: Instant,
    log: Arc<AccessLog>,
}

impl LoggedBody {
    fn finish(&mut self) {
        if let Some(mut r) = self.pending.take() {
            r.written = self.written;
            r.duration = self.started.elapsed();
            self.log.send(r);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.written += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The writer thread: until the queue closes, writes records as JSON lines, flushes when the
/// queue is idle for a second, rotates past `max_bytes`.
fn write_records(rx: mpsc::Receiver<Record>, file: std::fs::File, path: PathBuf, max_bytes: u64) {
    let mut size = file.metadata().map_or(0, |m| m.len());
    let mut out = std::io::BufWriter::with_capacity(256 << 10, file);
    let mut line = Vec::with_capacity(512);
    loop {
        let r = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        line.clear();
        let mut fields = serde_json::json!({
            "http.request.method": r.method,
            "http.request.uri": r.uri,
            "http.request.duration": r.duration.as_secs_f64(),
            "http.request.remoteaddr": r.client,
            "http.response.status": r.status,
            "http.response.written": r.written,
            "timestamp": ferry_oci::timestamp::format_timestamp(r.time_us),
        });
        if let Some(ua) = r.user_agent {
            fields["http.request.useragent"] = ua.into();
        }
        let _ = serde_json::to_writer(&mut line, &fields);
        line.push(b'\n');
        if size > 0 && size + line.len() as u64 > max_bytes {
            let _ = out.flush();
            let rotated = path.with_file_name(format!(
                "{}.1",
                path.file_name()
                    .map_or("access-log".into(), |n| n.to_string_lossy())
            ));
            match std::fs::rename(&path, &rotated).and_then(|()| open_append(&path)) {
                Ok(f) => {
                    out = std::io::BufWriter::with_capacity(256 << 10, f);
                    size = 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "rotating the access log failed; it keeps growing")
                }
            }
        }
        if let Err(e) = out.write_all(&line) {
            tracing::warn!(error = %e, path = %path.display(), "writing the access log failed");
        }
        size += line.len() as u64;
    }
    let _ = out.flush();
}
