//! A TCP forwarder on 127.0.0.1 that adds network latency: the stand-in for `tc netem`, which these
//! machines do not have.
//!
//! Every chunk read from one side is written to the other `one_way` after it arrived, in order.
//! Chunks are queued with their due time rather than slept on one by one, so the delay is added to
//! each byte's trip without capping throughput: a bulk transfer keeps a window of `one_way` worth
//! of bytes in flight, as a long network does. A new connection also costs one round trip before
//! its first byte moves (the TCP handshake a real link would pay), which is what separates tools
//! that reuse connections from tools that open new ones.
//!
//! Optionally each connection also gets a window: at most that many bytes in flight per direction,
//! a byte leaving the window a one-way delay after it was delivered (when its acknowledgement
//! would be back). That bounds one connection to window ÷ RTT, as a TCP window does on a long
//! link; without it a single connection is as fast as loopback.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction; bounds memory (× at most [`READ_SIZE`]) far above what one
/// delay's worth of loopback traffic needs.
const QUEUE: usize = 8192;
const READ_SIZE: usize = 64 * 1024;

/// What the forwarder adds to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Added to every byte's trip in each direction (a round trip of twice that).
    pub one_way: Duration,
    /// Most bytes in flight per connection and direction; `None` for no limit.
    pub window: Option<usize>,
    /// Bytes per second the whole link carries, shared by every connection and both directions
    /// (a site's uplink to a remote registry); `None` for no limit.
    pub rate: Option<u64>,
}

/// When a rate-limited link is next free to start sending.
type Uplink = Arc<std::sync::Mutex<Instant>>;

/// A running delaying forwarder; stops accepting and drops its connections when dropped.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target` through `link`. Must be
    /// called within a tokio runtime, which keeps running the forwarder until it is dropped.
    pub async fn start(target: SocketAddr, link: Link) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let uplink: Uplink = Arc::new(std::sync::Mutex::new(Instant::now()));
        let accept = tokio::spawn(async move {
            // Connection tasks live in this set, so aborting the accept loop ends them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        conns.spawn(forward(client, target, link, uplink.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(DelayProxy { addr, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:port`, as image references spell a registry.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn forward(client: TcpStream, target: SocketAddr, link: Link, uplink: Uplink) {
    let accepted = Instant::now();
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    // Without Nagle's algorithm the only delay small messages see is the one added here.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // The handshake's round trip: nothing the client sends moves before it would have completed.
    let handshake_done = accepted + 2 * link.one_way;
    tokio::join!(
        pump(
            client_read,
            server_write,
            link,
            handshake_done,
            uplink.clone()
        ),
        pump(server_read, client_write, link, accepted, uplink),
    );
}

/// Copies `from` to `to`, each chunk written `one_way` after it was read (or after `not_before`,
/// whichever is later); end of stream is passed on the same way, as a write shutdown. With a
/// window, reading waits while a window's worth of bytes is in flight.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Link,
    not_before: Instant,
    uplink: Uplink,
) {
    let one_way = link.one_way;
    let window = link
        .window
        .map(|w| w.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)));
    let in_flight = window.map(|w| Arc::new(Semaphore::new(w)));
    let read_size = window.map_or(READ_SIZE, |w| w.min(READ_SIZE));
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>(QUEUE);
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<(Instant, usize)>();
    let reader_window = in_flight.clone();
    let writer_window = in_flight.clone();
    let read = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(read_size);
            let chunk = match (&mut from).take(read_size as u64).read_buf(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    if let Some(w) = &reader_window {
                        // n ≤ read_size ≤ the window, which fits in u32.
                        match w.acquire_many(n as u32).await {
                            Ok(permits) => permits.forget(),
                            Err(_) => break,
                        }
                    }
                    Some(buf.split().freeze())
                }
            };
            let end = chunk.is_none();
            let mut due = Instant::now().max(not_before) + one_way;
            if let (Some(rate), Some(c)) = (link.rate, &chunk) {
                // The chunk takes its turn on the shared link: sent once the link is free, for
                // len ÷ rate, arriving one way after it is all sent. Reading waits for the turn,
                // so a fast server is not read ahead without bound.
                let airtime = Duration::from_secs_f64(c.len() as f64 / rate.max(1) as f64);
                let start = {
                    let mut free = uplink.lock().unwrap_or_else(|e| e.into_inner());
                    let start = (*free).max(Instant::now());
                    *free = start + airtime;
                    start
                };
                due = due.max(start + airtime + one_way);
                tokio::time::sleep_until(start).await;
            }
            if tx.send((due, chunk)).await.is_err() || end {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        break;
                    }
                    // Its acknowledgement is back at the sender one way later.
                    let _ = acked_tx.send((Instant::now() + one_way, bytes.len()));
                }
                None => {
                    let _ = to.shutdown().await;
                    break;
                }
            }
        }
        // A reader waiting for window space would otherwise wait for acknowledgements forever.
        if let Some(w) = &writer_window {
            w.close();
        }
    };
    let ack = async move {
        while let Some((due, n)) = acked_rx.recv().await {
            tokio::time::sleep_until(due).await;
            if let Some(w) = &in_flight {
                w.add_permits(n);
            }
        }
    };
    tokio::join!(read, write, ack);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that reads a request of `request_len` bytes, then answers `response`.
    async fn responder(request_len: usize, response: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = vec![0; request_len];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(&response).await.unwrap();
            s.shutdown().await.unwrap();
        });
        addr
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_request_and_its_response_take_at_least_a_round_trip_and_arrive_intact() {
        let one_way = Duration::from_millis(40);
        let body = pattern(3 * 1024 * 1024 + 17);
        let server = responder(5, body.clone()).await;
        let proxy = DelayProxy::start(
            server,
            Link {
                one_way,
                window: None,
                rate: None,
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= 2 * one_way,
            "a request/response took {took:?} through a {one_way:?} one-way delay"
        );
        assert_eq!(got.len(), body.len());
        assert!(got == body, "the bytes arrived changed or out of order");
    }

    #[tokio::test]
    async fn a_window_bounds_a_connection_to_a_window_per_round_trip() {
        // 4 MiB in 256 KiB windows at a 50 ms round trip: 16 windows, the last sent after 15
        // round trips and delivered half a round trip later, so at least 775 ms.
        let link = Link {
            one_way: Duration::from_millis(25),
            window: Some(256 * 1024),
            rate: None,
        };
        let body = pattern(4 * 1024 * 1024);
        let server = responder(1, body.clone()).await;
        let proxy = DelayProxy::start(server, link).await.unwrap();
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        let took = started.elapsed();
        assert!(got == body, "the bytes arrived changed or out of order");
        assert!(
            took >= Duration::from_millis(775),
            "4 MiB took {took:?} through 256 KiB windows at a 50 ms round trip"
        );
    }

    #[tokio::test]
    async fn a_rate_is_shared_by_every_connection() {
        // Two connections of 2 MiB each over one 8 MiB/s link: the link carries 4 MiB, so at
        // least half a second, however the two interleave.
        let link = Link {
            one_way: Duration::from_millis(1),
            window: None,
            rate: Some(8 * 1024 * 1024),
        };
        let body = pattern(2 * 1024 * 1024);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = l.local_addr().unwrap();
        let served = body.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.unwrap();
                let body = served.clone();
                tokio::spawn(async move {
                    let mut req = [0u8; 1];
                    s.read_exact(&mut req).await.unwrap();
                    s.write_all(&body).await.unwrap();
                    s.shutdown().await.unwrap();
                });
            }
        });
        let proxy = DelayProxy::start(server, link).await.unwrap();
        let fetch = || async {
            let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        };
        let started = Instant::now();
        let (a, b) = tokio::join!(fetch(), fetch());
        let took = started.elapsed();
        assert!(
            a == body && b == body,
            "the bytes arrived changed or out of order"
        );
        assert!(
            took >= Duration::from_millis(490),
            "4 MiB took {took:?} over one 8 MiB/s link"
        );
    }

    #[tokio::test]
    async fn the_delay_does_not_cap_throughput() {
        // 64 MiB through a 50 ms delay: queued chunks move in a window, so this takes a few round
        // trips; sleeping per chunk would take at least 1024 × 50 ms.
        let one_way = Duration::from_millis(50);
        let body = pattern(64 * 1024 * 1024);
        let server = responder(1, body.clone()).await;
        let proxy = DelayProxy::start(
            server,
            Link {
                one_way,
                window: None,
                rate: None,
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut got = Vec::with_capacity(body.len());
        c.read_to_end(&mut got).await.unwrap();
        let took = started.elapsed();
        assert!(got == body, "the bytes arrived changed or out of order");
        assert!(
            took < Duration::from_secs(10),
            "64 MiB took {took:?} through a {one_way:?} delay: the proxy throttles"
        );
    }
}
