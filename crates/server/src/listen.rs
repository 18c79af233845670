//! The accept loop: bounded connections (in total and per client address), header-read timeout,
//! a floor under the rate at which a client takes its responses, graceful drain.
//!
//! HTTP/1.1 only: every registry client (containerd, docker, skopeo, crane) speaks it on plain HTTP,
//! and hyper's HTTP/1 timer bounds both a slow first request and an idle keep-alive connection,
//! whereas sniffing for h2c prior knowledge would read the first bytes with no timeout at all.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The client a request came from, as a request extension (per-client limits key on it): its
/// address, or for IPv6 its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Refused connections answered at once at most; beyond, they are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Unsent bytes below which a socket reports itself writable (`TCP_NOTSENT_LOWAT`).
const NOTSENT_LOWAT: u32 = 1024 * 1024;

/// The key per-client limits count under: the address, or for IPv6 its /64 (what one host or
/// site is usually given, so a client cannot take a fresh bucket per address).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are answered 429 and closed, so
    /// one host cannot take every slot.
    pub max_connections_per_client: usize,
    /// A client must finish sending request headers within this time.
    pub header_read_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Largest request head (request line plus headers) accepted.
    pub max_header_bytes: usize,
    /// The slowest a client may take response bytes: a connection that keeps ferry waiting to
    /// write is closed when it is below the floor.
    pub min_send: RateFloor,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 4096,
            max_connections_per_client: 512,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            min_send: RateFloor::default(),
        }
    }
}

/// A floor under a client's transfer rate: in every `window` of time that ferry spends waiting on
/// the client, the client must move at least `bytes_per_sec × window` bytes, and always at least
/// one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateFloor {
    /// Minimum rate; 0 still requires progress within each window.
    pub bytes_per_sec: u64,
    /// How long the rate is averaged over (and the longest a client may stall).
    pub window: Duration,
}

impl Default for RateFloor {
    fn default() -> RateFloor {
        RateFloor {
            bytes_per_sec: 1024,
            window: Duration::from_secs(120),
        }
    }
}

impl RateFloor {
    /// Whether `moved` bytes in one full window meet the floor.
    pub fn met(&self, moved: u64) -> bool {
        moved > 0 && moved as u128 >= self.bytes_per_sec as u128 * self.window.as_millis() / 1000
    }
}

/// Open connections per client address.
#[derive(Debug, Default)]
struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.clients.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets open
/// requests finish for up to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    let graceful = GracefulShutdown::new();
    // Why a semaphore: every connection holds buffers and a task; an unbounded count lets a client
    // flood exhaust memory or file descriptors.
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    // Refusals get slots of their own: a refused connection must not hold one of the server's.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Writes wake only when little is left unsent, so bytes accepted track what the client
        // really takes (the rate floor's measure), not what the kernel buffers for it.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let ip = client_key(peer.ip());
        let Some(client_slot) = per_client.take(ip, options.max_connections_per_client.max(1))
        else {
            drop(permit);
            tracing::debug!(%peer, "too many connections from this address; refused");
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(r);
                });
            }
            continue;
        };
        let inner = TowerToHyperService::new(app.clone());
        let svc = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(ClientAddr(ip));
            inner.call(req)
        });
        let io = TokioIo::new(Paced::new(stream, options.min_send));
        let conn = graceful.watch(builder.serve_connection(io, svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(client_slot);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(grace_secs = options.shutdown_grace.as_secs(), "connections still open after the grace period; closing");
        }
    }
    Ok(())
}

/// Answers a connection over its address's limit with a 429 envelope and closes it, within five
/// seconds: after reading its request head, and reading on a moment after so the close is not a
/// reset that loses the answer.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many connections from this address; close some or retry later","detail":null}]}"#;
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\ndocker-distribution-api-version: registry/2.0\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        // Answer after the request head (bounded), as clients expect a response to a request.
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        while seen.len() < 16 * 1024 && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            seen.extend_from_slice(&buf[..n]);
        }
        stream.write_all(head.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
            if n == 0 {
                break;
            }
            left -= n.min(left);
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// A connection whose writes are held to a [`RateFloor`]: time spent waiting for the client to
/// take bytes is counted in windows, and a window in which the client took too little fails the
/// write, which ends the connection. A client that stops reading mid-blob, or reads a byte now and
/// then, cannot hold a connection slot forever. Idle keep-alive time is not counted (nothing is
/// being written); hyper's header timer bounds that.
struct Paced {
    inner: TcpStream,
    floor: RateFloor,
    /// Start of the current stretch in which a write is waiting on the client.
    waiting_since: Option<Instant>,
    /// Time spent waiting in earlier stretches of this window.
    waited: Duration,
    /// Bytes written since this window began.
    moved: u64,
    /// Whether a window is being measured (it begins at the first wait).
    measuring: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(inner: TcpStream, floor: RateFloor) -> Paced {
        Paced {
            inner,
            floor,
            waiting_since: None,
            waited: Duration::ZERO,
            moved: 0,
            measuring: false,
            timer: None,
        }
    }

    /// Accounts for one write attempt's outcome.
    fn account(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if let Some(since) = self.waiting_since.take() {
                    self.waited += since.elapsed();
                }
                self.timer = None;
                if self.measuring {
                    self.moved += n as u64;
                    if self.waited >= self.floor.window {
                        // The window is over; the bytes this write moved count for it.
                        if !self.floor.met(self.moved) {
                            return Poll::Ready(Err(self.too_slow()));
                        }
                        self.reset();
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let now = Instant::now();
                if !self.measuring {
                    self.reset();
                    self.measuring = true;
                }
                let since = *self.waiting_since.get_or_insert(now);
                let mut waited = self.waited + now.saturating_duration_since(since);
                if waited >= self.floor.window {
                    if !self.floor.met(self.moved) {
                        return Poll::Ready(Err(self.too_slow()));
                    }
                    // The floor was met; a new window begins, still waiting.
                    self.reset();
                    self.measuring = true;
                    self.waiting_since = Some(now);
                    waited = Duration::ZERO;
                }
                // Wake when the window would run out, to judge it even if the client never
                // reads again.
                let deadline = tokio::time::Instant::from(now + (self.floor.window - waited));
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn reset(&mut self) {
        self.measuring = false;
        self.moved = 0;
        self.waited = Duration::ZERO;
        self.waiting_since = None;
    }

    fn too_slow(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "client took {} bytes in {}s, below the floor of {} bytes/s",
                self.moved,
                self.floor.window.as_secs(),
                self.floor.bytes_per_sec
            ),
        )
    }
}

impl AsyncRead for Paced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Paced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.account(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.account(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(Pin::new(&mut self.get_mut().inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}
