//! TLS for tests: a throwaway CA and a certificate for 127.0.0.1 made with `openssl`, and a TCP
//! forwarder that counts the connections it carries (to show that HTTP/2 shares one).

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::peers::require;

/// A test CA and a server certificate for `IP:127.0.0.1` signed by it, in a temp dir.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (PEM), to trust.
    pub ca_pem: Vec<u8>,
    /// The CA certificate's file.
    pub ca: PathBuf,
    /// The server certificate's file (PEM).
    pub cert: PathBuf,
    /// The server key's file (PEM).
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes one with `openssl`, or `None` if it is not installed (outside CI).
    pub fn generate() -> Option<TestPki> {
        let openssl = require("openssl")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=ferry test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ][..],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ][..],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let ca = dir.path().join("ca.pem");
        Some(TestPki {
            ca_pem: std::fs::read(&ca).expect("read ca.pem"),
            ca,
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        })
    }

    /// A containers-style certs.d directory under `parent` trusting this CA (`ca.crt`).
    pub fn cert_dir(&self, parent: &Path) -> PathBuf {
        let dir = parent.join("certs.d");
        std::fs::create_dir_all(&dir).expect("create certs.d");
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).expect("write ca.crt");
        dir
    }
}

/// A TCP forwarder on 127.0.0.1 to another local port, counting the connections it accepts.
/// Plain threads, so it needs no runtime; stops accepting when dropped.
#[derive(Debug)]
pub struct CountingForwarder {
    /// Its own port on 127.0.0.1.
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingForwarder {
    /// Forwards each connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> CountingForwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let port = listener.local_addr().expect("forwarder address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                pipe(&inbound, &outbound);
                pipe(&outbound, &inbound);
            }
        });
        CountingForwarder {
            port,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` on a thread; at end of stream passes the half-close on.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
