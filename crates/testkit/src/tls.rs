//! TLS for tests: a throwaway CA made in the test (rcgen), a certificate for 127.0.0.1 signed by
//! it, client certificates, and a TCP forwarder that counts the connections it carries (to show
//! that HTTP/2 shares one).

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A test CA and a server certificate for `IP:127.0.0.1` and `localhost` signed by it, in a
/// temp dir. Keys are written 0600, as ferry wants its secret files.
pub struct TestPki {
    /// The CA certificate (PEM), to trust.
    pub ca_pem: Vec<u8>,
    /// The CA certificate's file.
    pub ca: PathBuf,
    /// The server certificate's file (PEM).
    pub cert: PathBuf,
    /// The server key's file (PEM).
    pub key: PathBuf,
    ca_cert: Certificate,
    ca_key: KeyPair,
    serial: AtomicU64,
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes a CA and a server certificate for 127.0.0.1.
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_cert, ca_key) = new_ca("ferry test CA");
        let ca = dir.path().join("ca.pem");
        write_file(&ca, ca_cert.pem().as_bytes(), 0o644);
        let pki = TestPki {
            ca_pem: ca_cert.pem().into_bytes(),
            ca,
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca_cert,
            ca_key,
            serial: AtomicU64::new(1000),
            dir,
        };
        pki.reissue_server();
        pki
    }

    /// Issues a new server certificate (new key, new serial) and replaces the files at
    /// [`TestPki::cert`] and [`TestPki::key`], each written whole and renamed into place, as a
    /// certificate manager rotates them. Returns the new certificate's serial.
    pub fn reissue_server(&self) -> u64 {
        let serial = self.serial.fetch_add(1, Ordering::SeqCst);
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign server certificate");
        replace_file(&self.key, key.serialize_pem().as_bytes(), 0o600);
        replace_file(&self.cert, cert.pem().as_bytes(), 0o644);
        serial
    }

    /// A client certificate whose subject's common name is `cn` (for mutual TLS), written as
    /// `<cn>.pem` and `<cn>.key` beside the CA: returns (certificate, key) paths.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        issue_client(&self.ca_cert, &self.ca_key, cn, self.dir.path(), "")
    }

    /// A client certificate for `cn` from another CA, which a server trusting this one refuses.
    pub fn foreign_client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let (ca_cert, ca_key) = new_ca("another CA");
        issue_client(&ca_cert, &ca_key, cn, self.dir.path(), "foreign-")
    }

    /// A containers-style certs.d directory under `parent` trusting this CA (`ca.crt`).
    pub fn cert_dir(&self, parent: &Path) -> PathBuf {
        let dir = parent.join("certs.d");
        std::fs::create_dir_all(&dir).expect("create certs.d");
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).expect("write ca.crt");
        dir
    }
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn new_ca(name: &str) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

fn issue_client(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    cn: &str,
    dir: &Path,
    prefix: &str,
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(Vec::new()).expect("client params");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ferry tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("client key");
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .expect("sign client certificate");
    let (cert_path, key_path) = (
        dir.join(format!("{prefix}{cn}.pem")),
        dir.join(format!("{prefix}{cn}.key")),
    );
    write_file(&cert_path, cert.pem().as_bytes(), 0o644);
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600);
    (cert_path, key_path)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    std::io::Write::write_all(&mut f, bytes).expect("write PKI file");
}

fn replace_file(path: &Path, bytes: &[u8], mode: u32) {
    let tmp = path.with_extension("tmp");
    write_file(&tmp, bytes, mode);
    std::fs::rename(&tmp, path).expect("rename PKI file into place");
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
