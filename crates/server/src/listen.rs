//! The accept loop: bounded connections (in total and per client address), header-read timeout,
//! a floor under the rate at which a client takes its responses, graceful drain; TLS when
//! configured.
//!
//! Plain HTTP is HTTP/1.1 only: every registry client (containerd, docker, skopeo, crane) speaks
//! it, and hyper's HTTP/1 timer bounds both a slow first request and an idle keep-alive
//! connection, whereas sniffing for h2c prior knowledge would read the first bytes with no timeout
//! at all. Over TLS the version is what ALPN settled in the handshake (which is itself timed):
//! `h2` or HTTP/1.1, never sniffed; HTTP/2's own bounds are in [`crate::streams`].

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::streams::{FlooredBody, StreamWatch, Verdict};
use crate::tls::TlsServing;

/// The client a request came from, as a request extension (per-client limits key on it): its
/// address, or for IPv6 its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How a request's connection was secured, as a request extension on TLS listeners.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    /// The client's certificate (DER, leaf), verified against the client CA, if it sent one.
    pub client_certificate: Option<Arc<[u8]>>,
}

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
    /// Serve TLS (and HTTP/2 where ALPN settles on it) instead of plain HTTP/1.1.
    pub tls: Option<Arc<TlsServing>>,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_streams_per_connection: u32,
    /// Time between HTTP/2 pings on a connection, so a vanished client is noticed.
    pub h2_keepalive: Duration,
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
            tls: None,
            max_streams_per_connection: 100,
            h2_keepalive: Duration::from_secs(30),
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
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(options.max_streams_per_connection.max(1))
        .max_header_list_size(options.max_header_bytes.max(8192) as u32)
        // What hyper buffers per stream for a client that does not read: bounded so that
        // streams × buffer stays small per connection.
        .max_send_buf_size(256 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .keep_alive_interval(Some(options.h2_keepalive.max(Duration::from_secs(1))))
        .keep_alive_timeout(Duration::from_secs(20));
    let protocols = Arc::new(Protocols { h1, h2 });
    let stop = CancellationToken::new();
    let max_connections = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    // Why a semaphore: every connection holds buffers and a task; an unbounded count lets a client
    // flood exhaust memory or file descriptors. Draining waits for every slot to come back.
    let slots = Arc::new(Semaphore::new(max_connections));
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
            // A plaintext answer would be garbage to a TLS client: those are just closed.
            if options.tls.is_none()
                && let Ok(r) = refusals.clone().try_acquire_owned()
            {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(r);
                });
            }
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            ip,
            protocols: protocols.clone(),
            stop: stop.clone(),
            options: options.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = connection.serve(stream).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(client_slot);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; draining");
    stop.cancel();
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(grace_secs = options.shutdown_grace.as_secs(), "connections still open after the grace period; closing");
        }
    }
    Ok(())
}

/// The HTTP versions' connection settings, shared by every connection.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: Router,
    ip: IpAddr,
    protocols: Arc<Protocols>,
    stop: CancellationToken,
    options: ServeOptions,
}

impl Connection {
    async fn serve(
        self,
        stream: TcpStream,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Under TLS too the floor measures what the client's TCP takes (ciphertext).
        let paced = Paced::new(stream, self.options.min_send);
        let Some(tls) = self.options.tls.clone() else {
            let svc = self.service(None);
            let conn = self.protocols.h1.serve_connection(TokioIo::new(paced), svc);
            return Ok(drive(conn, &self.stop).await?);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        // The handshake is held to the header timeout: a client that connects and says nothing
        // (or trickles a ClientHello) holds a slot no longer than one that trickles headers.
        let stream = tokio::select! {
            r = tokio::time::timeout(self.options.header_read_timeout, acceptor.accept(paced)) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}").into()),
                Err(_) => return Err("TLS handshake not finished within the header timeout".into()),
            },
            () = self.stop.cancelled() => return Ok(()),
        };
        let (_, session) = stream.get_ref();
        let info = TlsConnection {
            client_certificate: session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::from(c.as_ref())),
        };
        if session.alpn_protocol() == Some(b"h2") {
            self.serve_h2(stream, info).await
        } else {
            let svc = self.service(Some(info));
            let conn = self
                .protocols
                .h1
                .serve_connection(TokioIo::new(stream), svc);
            Ok(drive(conn, &self.stop).await?)
        }
    }

    /// The app as a hyper service, with the client's address (and TLS session) on each request.
    fn service(
        &self,
        tls: Option<TlsConnection>,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + use<> {
        let inner = TowerToHyperService::new(self.app.clone());
        let ip = self.ip;
        let memo = crate::auth::ConnectionMemo::default();
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(ip));
            req.extensions_mut().insert(memo.clone());
            if let Some(t) = &tls {
                req.extensions_mut().insert(t.clone());
            }
            inner.call(req)
        })
    }

    /// HTTP/2: hyper's connection plus a watch on its streams (idle connections are told to go
    /// away, a stream whose client takes too little closes the connection).
    async fn serve_h2(
        &self,
        io: tokio_rustls::server::TlsStream<Paced>,
        info: TlsConnection,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (back, returned) = tokio::sync::oneshot::channel();
        let io = TokioIo::new(Returned {
            io: Some(io),
            back: Some(back),
        });
        let watch = StreamWatch::new(self.options.min_send, self.options.header_read_timeout);
        let inner = self.service(Some(info));
        let streams = watch.clone();
        let svc = hyper::service::service_fn(move |req| {
            let guard = streams.open();
            let call = inner.call(req);
            async move {
                let res = call.await?;
                Ok::<_, std::convert::Infallible>(res.map(|b| FlooredBody::new(b, guard)))
            }
        });
        // Boxed so it can be dropped (and the I/O returned) before this function ends.
        let mut conn = Box::pin(self.protocols.h2.serve_connection(io, svc));
        let mut tick = tokio::time::interval(watch.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut going_away: Option<Instant> = None;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    drop(conn);
                    // The client's window updates keep coming while it reads the last bytes;
                    // closing on them unread would reset the connection and lose that tail.
                    if let Ok(io) = returned.await {
                        linger(io).await;
                    }
                    return Ok(r?);
                }
                () = self.stop.cancelled(), if going_away.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    going_away = Some(Instant::now());
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    match watch.check(now) {
                        Verdict::TooSlow => {
                            return Err(format!(
                                "a stream's client took its response below the floor of {} bytes/s",
                                self.options.min_send.bytes_per_sec
                            )
                            .into());
                        }
                        Verdict::Idle if going_away.is_none() => {
                            conn.as_mut().graceful_shutdown();
                            going_away = Some(now);
                        }
                        _ => {}
                    }
                    // Told to go away and still not gone (a client that never reads the GOAWAY
                    // nor closes): closed after another idle limit.
                    if going_away.is_some_and(|t| {
                        now.saturating_duration_since(t) >= self.options.header_read_timeout
                            && watch.check(now) != Verdict::Fine
                    }) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Reads and discards what a client still sends after its connection is done, until it closes or
/// two seconds pass (nginx's lingering close), so the close is a FIN the client reads after its
/// last bytes, not a reset that discards them.
async fn linger(io: tokio_rustls::server::TlsStream<Paced>) {
    let (paced, _) = io.into_inner();
    let mut tcp = paced.inner;
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// An I/O object that goes back to its owner when hyper drops it.
struct Returned<T> {
    io: Option<T>,
    back: Option<tokio::sync::oneshot::Sender<T>>,
}

impl<T> Returned<T> {
    fn io(&mut self) -> Pin<&mut T>
    where
        T: Unpin,
    {
        // Present until drop; hyper never uses it after.
        Pin::new(self.io.as_mut().expect("I/O used after it was returned"))
    }
}

impl<T> Drop for Returned<T> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Returned<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.get_mut().io().poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Returned<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().io().poll_shutdown(cx)
    }
}

/// Serves one connection; when the server starts draining, the connection finishes what it has
/// in flight and closes (HTTP/2: GOAWAY).
async fn drive<C>(conn: C, stop: &CancellationToken) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
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
