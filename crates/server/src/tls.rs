//! TLS for the registry listener (rustls on ring): the certificate and key, optional client
//! certificates, ALPN offering `h2` and `http/1.1`, and reloading without dropping connections.
//!
//! A reload swaps what the next handshake sees: live connections keep their session. The
//! certificate and key sit in one slot that a resolver reads per handshake; a change of the
//! client CA builds a new server configuration around the same slot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Whether clients must present a certificate signed by the client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A handshake without a valid client certificate fails.
    Required,
    /// A client without a certificate is served as anonymous; one with a certificate from an
    /// unknown CA still fails the handshake.
    Optional,
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required when `client_ca` is set.
    pub client_auth: ClientAuth,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 is always offered).
    pub http2: bool,
}

/// Why TLS material could not be loaded. Messages name the file and never quote its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the kind wanted.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        what: String,
    },
    /// The key does not belong to the certificate, or rustls refused the configuration.
    #[error("{0}")]
    Config(String),
}

/// The loaded material: what the next handshake uses, swappable while serving.
pub struct TlsServing {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    slot: Arc<CertSlot>,
    config: RwLock<Arc<ServerConfig>>,
    /// Read key file bytes through this (the permission check for secret files).
    read_key: KeyReader,
}

/// Reads a private key file: the caller's check of its permissions comes first.
pub type KeyReader = Arc<dyn Fn(&Path) -> Result<Vec<u8>, TlsError> + Send + Sync>;

impl std::fmt::Debug for TlsServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServing")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The certificate and key every new handshake gets.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl TlsServing {
    /// Loads `files`, reading the key through `read_key` (e.g. one that refuses a key file others
    /// can read).
    pub fn load(files: TlsFiles, read_key: KeyReader) -> Result<TlsServing, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&files, &provider, &read_key)?;
        let slot = Arc::new(CertSlot(RwLock::new(Arc::new(key))));
        let config = server_config(&files, &provider, &slot)?;
        Ok(TlsServing {
            files,
            provider,
            slot,
            config: RwLock::new(Arc::new(config)),
            read_key,
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The files being served.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads the files again and, if they make a whole and matching set, serves them to new
    /// handshakes; otherwise keeps what is served and says why (a certificate and key renamed
    /// into place one after the other mismatch for a moment: the next reload takes them).
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files, &self.provider, &self.read_key)?;
        // A new configuration picks up a changed client CA; the slot carries the certificate.
        let config = server_config(&self.files, &self.provider, &self.slot)?;
        *self.slot.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The leaf certificate served now (DER).
    pub fn current_certificate(&self) -> Vec<u8> {
        let key = self
            .slot
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        key.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what:
                "no \"BEGIN CERTIFICATE\" block found; expected a PEM certificate chain, leaf first"
                    .into(),
        });
    }
    Ok(certs)
}

fn certified_key(
    files: &TlsFiles,
    provider: &Arc<CryptoProvider>,
    read_key: &KeyReader,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&files.cert)?;
    let key_bytes = read_key(&files.key)?;
    // The parse error's text is rustls's own and never quotes the file.
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| TlsError::Pem {
        path: files.key.clone(),
        what: "no private key found; expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block".into(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::Config(format!(
            "the key in {} does not fit the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })
}

fn server_config(
    files: &TlsFiles,
    provider: &Arc<CryptoProvider>,
    slot: &Arc<CertSlot>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    what: format!("not a usable CA certificate ({e})"),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match files.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(slot.clone());
    config.alpn_protocols = if files.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(config)
}
