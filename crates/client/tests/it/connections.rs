//! One connection pool per process: `Registry` values built with clones of one `Connections`
//! handle share their connections; with separate handles they do not.

use ferry_client::{Connections, Registry, RegistryOptions};
use ferry_oci::{Digest, RepoName};
use ferry_testkit::peers::DockerRegistry;
use ferry_testkit::tls::{CountingForwarder, TestPki};

/// Two `Registry` values for one registry (docker-registry over TLS, so HTTP/2, whose connection
/// is pooled as soon as it is open) each make a request, one after the other, through a forwarder
/// that counts connections.
async fn connections_for_two_registries(
    port: u16,
    ca: &[u8],
    first: Connections,
    second: Connections,
    second_verifies: bool,
) -> usize {
    let forwarder = CountingForwarder::start(port);
    let registry = |connections: Connections, verify: bool| {
        Registry::new(RegistryOptions {
            endpoint: format!("https://127.0.0.1:{}", forwarder.port),
            ca_pem: Some(ca.to_vec()),
            insecure_skip_verify: !verify,
            connections,
            ..Default::default()
        })
        .unwrap()
    };
    let (a, b) = (registry(first, true), registry(second, second_verifies));
    let repo = RepoName::new("team/pool").unwrap();
    let missing = Digest::sha256(b"not pushed");
    assert!(!a.blob_exists(&repo, &missing).await.unwrap());
    assert!(!b.blob_exists(&repo, &missing).await.unwrap());
    forwarder.accepted()
}

#[tokio::test]
async fn registries_sharing_a_connections_handle_share_one_connection() {
    let pki = TestPki::generate();
    let Some(tls_registry) = DockerRegistry::start_tls(&pki) else {
        return;
    };
    let process = Connections::new();
    let shared = connections_for_two_registries(
        tls_registry.port,
        &pki.ca_pem,
        process.clone(),
        process.clone(),
        true,
    )
    .await;
    assert_eq!(
        shared, 1,
        "one handle: the second registry reuses the connection"
    );
    let separate = connections_for_two_registries(
        tls_registry.port,
        &pki.ca_pem,
        Connections::new(),
        Connections::new(),
        true,
    )
    .await;
    assert_eq!(separate, 2, "two handles: one connection each");
    // TLS settings are fixed per connection: a registry that skips verification never rides on
    // a connection another one verified, even from one handle.
    let unlike = connections_for_two_registries(
        tls_registry.port,
        &pki.ca_pem,
        process.clone(),
        process,
        false,
    )
    .await;
    assert_eq!(unlike, 2, "different TLS settings: one connection each");
}
