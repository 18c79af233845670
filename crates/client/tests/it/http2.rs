//! HTTP/2 over TLS: docker-registry with a test CA, a counting forwarder in front; concurrent blob
//! reads share one connection.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_client::{Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_testkit::peers::{Process, accepting, free_port, require, wait_until};

use crate::common::content;

/// A test CA and a certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`:
/// (CA PEM, certificate path, key path).
fn test_pki(openssl: &Path, dir: &Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new(openssl)
            .args(args)
            .current_dir(dir)
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
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
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
    (
        std::fs::read(dir.join("ca.pem")).unwrap(),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// docker-registry serving TLS with `cert` and `key` on a free port.
fn tls_registry(bin: &Path, dir: &Path, cert: &Path, key: &Path) -> (Process, u16) {
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
        dir.join("data").display(),
        cert.display(),
        key.display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg(dir.join("config.yml"));
    let mut process = Process::spawn("docker-registry", cmd, &dir.join("registry.log"));
    let up = wait_until(Duration::from_secs(30), || {
        accepting(port) || !process.running()
    });
    assert!(
        up && process.running(),
        "docker-registry: {}",
        process.log()
    );
    (process, port)
}

/// A TCP forwarder on 127.0.0.1 to `port` that counts the connections it accepts.
async fn counting_forwarder(port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (own, accepted)
}

#[tokio::test]
async fn blobs_read_concurrently_over_tls_share_one_http2_connection() {
    let (Some(openssl), Some(bin)) = (require("openssl"), require("docker-registry")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(&openssl, dir.path());
    let (_registry, port) = tls_registry(&bin, dir.path(), &cert, &key);
    let client = |port: u16| {
        Registry::new(RegistryOptions {
            endpoint: format!("https://127.0.0.1:{port}"),
            ca_pem: Some(ca.clone()),
            ..Default::default()
        })
        .unwrap()
    };
    let repo = RepoName::new("team/h2").unwrap();
    let blobs: Vec<Vec<u8>> = (0..6)
        .map(|i| content(200_000 + i * 1000, i as u8))
        .collect();
    let direct = client(port);
    for b in &blobs {
        direct
            .push_blob(&repo, &Digest::sha256(b), Bytes::from(b.clone()))
            .await
            .unwrap();
    }

    let (forwarder, accepted) = counting_forwarder(port).await;
    let registry = Arc::new(client(forwarder));
    // The first request opens the connection (whose protocol ALPN decides); the rest, all at
    // once, ride on it.
    let first = registry
        .get_blob(&repo, &Digest::sha256(&blobs[0]), 0)
        .await
        .unwrap();
    assert_eq!(first.http_version(), reqwest::Version::HTTP_2);
    drop(first);
    let dir_path = dir.path().to_owned();
    let reads: Vec<_> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (registry, repo, b, path) = (
                registry.clone(),
                repo.clone(),
                b.clone(),
                dir_path.join(format!("blob{i}")),
            );
            tokio::spawn(async move {
                registry
                    .fetch_blob_to(&repo, &Digest::sha256(&b), Some(b.len() as u64), &path)
                    .await
                    .unwrap();
                assert!(std::fs::read(&path).unwrap() == b);
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
