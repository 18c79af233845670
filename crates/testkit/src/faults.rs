//! A fault-injecting HTTP proxy between ferry and a real upstream, for testing what ferry does when
//! an upstream misbehaves. Each connection carries one request (`Connection: close`); faults are
//! queued per kind of request and each is used once, so "the next pull succeeds when the fault is
//! gone" is just an empty queue.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What to do to one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send half the body, then reset the connection.
    ResetMidBody,
    /// Promise the whole length, send half, then close cleanly.
    TruncateBody,
    /// Send the right length with one byte flipped.
    WrongBytes,
    /// Answer this status instead, with an optional `Retry-After`.
    Status(u16, Option<u64>),
    /// Send the head, then the body one byte per second (until the client gives up).
    Stall,
    /// Hold the request until [`FaultProxy::release`], then forward it as is.
    Held,
    /// Send the head and half the body, then the rest once [`FaultProxy::release`] is called: a
    /// transfer caught in the middle for as long as a test needs.
    PauseMidBody,
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `GET …/blobs/…`
    Blob,
    /// `GET/HEAD …/manifests/…`
    Manifest,
}

#[derive(Debug, Default)]
struct Faults {
    blob: VecDeque<Fault>,
    manifest: VecDeque<Fault>,
    /// Requests received, by `METHOD path` (the only record that cannot include another proxy's
    /// late arrivals, unlike an upstream's access log).
    seen: HashMap<String, usize>,
    /// `Range` headers received, by `METHOD path`, in arrival order.
    ranges: HashMap<String, Vec<String>>,
    /// Whether held requests may go on.
    released: bool,
}

/// The proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    faults: Arc<Mutex<Faults>>,
    /// Wakes held requests.
    gate: Arc<Condvar>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<free port>` to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let gate: Arc<Condvar> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, g, s, up) = (
            faults.clone(),
            gate.clone(),
            stop.clone(),
            upstream.to_owned(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, g, up) = (f.clone(), g.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &f, &g);
                });
            }
        });
        FaultProxy {
            port,
            faults,
            gate,
            stop,
        }
    }

    /// `host:port` of the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queues `fault` for the next `times` requests of `target`.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let q = match target {
            Target::Blob => &mut f.blob,
            Target::Manifest => &mut f.manifest,
        };
        q.extend(std::iter::repeat_n(fault, times));
    }

    /// Forgets every queued fault.
    pub fn clear(&self) {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.blob.clear();
        f.manifest.clear();
    }

    /// Lets every request held by [`Fault::Held`] (now or later) go on.
    pub fn release(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .released = true;
        self.gate.notify_all();
    }

    /// Holds requests again after [`FaultProxy::release`]: [`Fault::Held`] and
    /// [`Fault::PauseMidBody`] wait for the next release.
    pub fn hold_again(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .released = false;
    }

    /// The `Range` headers of the `method` requests for exactly `path`, in arrival order (requests
    /// without one are not listed).
    pub fn ranges(&self, method: &str, path: &str) -> Vec<String> {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.ranges
            .get(&format!("{method} {path}"))
            .cloned()
            .unwrap_or_default()
    }

    /// How many `method` requests for exactly `path` this proxy has received.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.seen
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

fn handle(
    mut client: TcpStream,
    upstream: &str,
    faults: &Mutex<Faults>,
    gate: &Condvar,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or("").to_owned();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let fault = {
        let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
        *f.seen.entry(format!("{method} {path}")).or_default() += 1;
        if let Some(range) = text.split("\r\n").find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
                .map(|(_, v)| v.trim().to_owned())
        }) {
            f.ranges
                .entry(format!("{method} {path}"))
                .or_default()
                .push(range);
        }
        if method == "GET" && path.contains("/blobs/") && !path.contains("/uploads") {
            f.blob.pop_front()
        } else if (method == "GET" || method == "HEAD") && path.contains("/manifests/") {
            f.manifest.pop_front()
        } else {
            None
        }
    };
    if fault == Some(Fault::Held) {
        let f = faults.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            gate.wait_while(f, |f| !f.released)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
    if let Some(Fault::Status(code, retry_after)) = &fault {
        let retry = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}"#;
        write!(
            client,
            "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    // Forward the request as is, but one request per connection.
    let mut forwarded = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() || line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
        if i == 0 {
            forwarded.push_str("Connection: close\r\n");
        }
    }
    forwarded.push_str("\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(forwarded.as_bytes())?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let (resp_head, body) = response.split_at(split);
    let mut body = body.to_vec();
    let resp_head =
        String::from_utf8_lossy(resp_head).replace("Connection: keep-alive", "Connection: close");
    match fault {
        Some(Fault::PauseMidBody) => {
            client.write_all(resp_head.as_bytes())?;
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            let f = faults.lock().unwrap_or_else(|e| e.into_inner());
            drop(
                gate.wait_while(f, |f| !f.released)
                    .unwrap_or_else(|e| e.into_inner()),
            );
            client.write_all(&body[body.len() / 2..])?;
        }
        None | Some(Fault::Status(..) | Fault::Held) => {
            client.write_all(resp_head.as_bytes())?;
            client.write_all(&body)?;
        }
        Some(Fault::WrongBytes) => {
            let mid = body.len() / 2;
            if let Some(b) = body.get_mut(mid) {
                *b ^= 0xff;
            }
            client.write_all(resp_head.as_bytes())?;
            client.write_all(&body)?;
        }
        Some(Fault::TruncateBody) => {
            client.write_all(resp_head.as_bytes())?;
            client.write_all(&body[..body.len() / 2])?;
        }
        Some(Fault::ResetMidBody) => {
            client.write_all(resp_head.as_bytes())?;
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            // Dropping with unread input makes the kernel send RST rather than FIN.
            let _ = client.set_nonblocking(true);
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(Fault::Stall) => {
            client.write_all(resp_head.as_bytes())?;
            for b in body.iter().take(30) {
                client.write_all(&[*b])?;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Ok(())
}
