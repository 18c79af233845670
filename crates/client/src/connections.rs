//! The connection pool a process shares between its [`Registry`](crate::Registry) values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{ClientError, ErrorKind};
use crate::registry::RegistryOptions;

/// Open connections to registries, shared by every [`Registry`](crate::Registry) built with a
/// clone of this handle (through [`RegistryOptions::connections`]).
///
/// Two `Registry` values for one registry (a copy's source and destination on the same host, a
/// listing and the copies it starts, the same upstream reached under two names) then reuse each
/// other's idle connections (HTTP/1.1 keep-alive) and HTTP/2 sessions instead of each opening its
/// own, and a process holds one pool, not one per `Registry`. A binary makes one handle at start
/// and passes clones of it to every `Registry` it builds; cloning is cheap (a reference count).
///
/// TLS settings (trusted CAs, client identity, whether certificates are checked) and the connect
/// and read timeouts are fixed per underlying HTTP client, so the handle keeps one client per
/// distinct combination of them: connections are only ever shared between registries that would
/// have made them the same way. The default is a new, private pool.
#[derive(Clone, Default)]
pub struct Connections {
    clients: Arc<Mutex<HashMap<ClientConfig, reqwest::Client>>>,
}

impl Connections {
    /// A new, empty pool.
    pub fn new() -> Connections {
        Connections::default()
    }

    /// The HTTP client for `options`' connection settings, made on first use.
    pub(crate) fn client(&self, options: &RegistryOptions) -> Result<reqwest::Client, ClientError> {
        let config = ClientConfig::of(options);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&config) {
            return Ok(client.clone());
        }
        let client = config.build()?;
        clients.insert(config, client.clone());
        Ok(client)
    }
}

impl std::fmt::Debug for Connections {
    // The map's keys hold private keys (identity PEM): show only how many clients there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).len();
        f.debug_struct("Connections")
            .field("clients", &clients)
            .finish()
    }
}

/// What an HTTP client fixes at build time; connections are shared only between equal ones.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientConfig {
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    insecure_skip_verify: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl ClientConfig {
    fn of(options: &RegistryOptions) -> ClientConfig {
        ClientConfig {
            ca_pem: options.ca_pem.clone(),
            identity_pem: options.identity_pem.clone(),
            insecure_skip_verify: options.insecure_skip_verify,
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
        }
    }

    fn build(&self) -> Result<reqwest::Client, ClientError> {
        let bad = |m: String| ClientError::new(ErrorKind::Request, m);
        let mut b = reqwest::Client::builder()
            // Redirects are followed by `Registry::send_with`, which decides where credentials go.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            .danger_accept_invalid_certs(self.insecure_skip_verify);
        if let Some(pem) = &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bad(format!("CA certificates: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &self.identity_pem {
            b = b.identity(
                reqwest::Identity::from_pem(pem)
                    .map_err(|e| bad(format!("client certificate: {e}")))?,
            );
        }
        b.build().map_err(|e| bad(format!("HTTP client: {e}")))
    }
}
