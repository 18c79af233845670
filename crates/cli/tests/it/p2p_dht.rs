//! Mirrors finding each other through the DHT (`ferry serve --p2p`): real ferry processes on
//! 127.0.0.1, each with its own peer port, Distribution as the upstream behind a counting proxy.

use std::time::Duration;

use ferry_oci::Digest;
use ferry_testkit::image::image;
use ferry_testkit::peers::free_port;

use crate::client;
use crate::p2p::{Node, blob_path, pull, upstream};

/// A `--p2p` node's configuration: its peer port, the peer ports it bootstraps from, and `extra`
/// lines of `[peers]`.
pub(crate) fn dht(listen: u16, bootstrap: &[u16], extra: &str) -> String {
    let bootstrap: Vec<String> = bootstrap
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    format!(
        "[peers]\np2p = true\nlisten = \"127.0.0.1:{listen}\"\nbootstrap = [{}]\nrediscover_secs = 1\n{extra}",
        bootstrap.join(", ")
    )
}

/// Starts `n` nodes on the DHT, each bootstrapping from the first, and waits (bounded) until each
/// sees the others.
fn start_nodes(
    tmp: &std::path::Path,
    prefix: &str,
    upstream: &str,
    n: usize,
    extra: &str,
) -> Vec<Node> {
    let first = free_port();
    (0..n)
        .map(|i| {
            let listen = if i == 0 { first } else { free_port() };
            let bootstrap: &[u16] = if i == 0 { &[] } else { &[first] };
            Node::start_args(
                tmp,
                &format!("{prefix}{i}"),
                free_port(),
                Some(upstream),
                &[],
                &dht(listen, bootstrap, extra),
            )
        })
        .collect()
}

/// Waits (polling, bounded) until the series `name` of `node` is at least `at_least`.
async fn until_metric(node: &Node, name: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = node.metric(name).await;
        if v >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {v} after 30 s (wanted {at_least})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nodes on the DHT and their upstream, kept alive together.
struct Cluster {
    _tmp: tempfile::TempDir,
    _registry: ferry_testkit::peers::DockerRegistry,
    up: ferry_testkit::faults::FaultProxy,
    img: ferry_testkit::image::Image,
    nodes: Vec<Node>,
}

/// `n` nodes on the DHT, joined, mirroring a Distribution that holds `img` (behind a counting
/// proxy); `extra` gives `[peers]` lines, knowing the test's directory. `None`: a peer is missing
/// (skipped loudly, or a failure under CI).
async fn cluster(
    img: ferry_testkit::image::Image,
    n: usize,
    extra: impl FnOnce(&std::path::Path) -> String,
) -> Option<Cluster> {
    let tmp = tempfile::tempdir().unwrap();
    let (_registry, up) = upstream(tmp.path(), &img)?;
    let extra = extra(tmp.path());
    let nodes = start_nodes(tmp.path(), "n", &up.host(), n, &extra);
    joined(&nodes).await;
    Some(Cluster {
        _tmp: tmp,
        _registry,
        up,
        img,
        nodes,
    })
}

pub(crate) async fn joined(nodes: &[Node]) {
    for node in nodes {
        until_metric(node, "ferry_peer_members", (nodes.len() - 1) as f64).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_the_dht_take_a_blob_from_the_node_that_announced_it() {
    let Some(c) = cluster(image(81, 2, 300_000, "amd64"), 3, |_| String::new()).await else {
        return;
    };
    let Cluster { up, img, nodes, .. } = &c;
    for layer in &img.layers {
        pull(&nodes[0].blob_url(&layer.digest), &layer.digest).await;
    }
    for node in &nodes[1..] {
        for layer in &img.layers {
            pull(&node.blob_url(&layer.digest), &layer.digest).await;
        }
    }
    let layer_bytes: usize = img.layers.iter().map(|l| l.bytes.len()).sum();
    for layer in &img.layers {
        assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    }
    for node in &nodes[1..] {
        assert_eq!(
            node.metric("ferry_peer_fetched_bytes_total").await,
            layer_bytes as f64
        );
        // Found through provider records, not only by asking members.
        assert!(node.metric("ferry_peer_providers_found_total").await >= 2.0);
        assert!(node.metric("ferry_peer_lookups_total").await >= 2.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_rollout_over_the_dht_fetches_each_blob_from_the_upstream_once() {
    let Some(c) = cluster(image(82, 2, 1_000_000, "amd64"), 4, |_| String::new()).await else {
        return;
    };
    let Cluster { up, img, nodes, .. } = &c;
    // Every node misses every layer at once.
    let pulls = nodes.iter().flat_map(|node| {
        img.layers
            .iter()
            .map(move |l| async move { pull(&node.blob_url(&l.digest), &l.digest).await })
    });
    futures_util::future::join_all(pulls).await;
    for layer in &img.layers {
        assert_eq!(
            up.requests("GET", &blob_path(&layer.digest)),
            1,
            "{} went to the upstream more than once",
            layer.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_announces_what_its_store_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(83, 1, 300_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let (port, listen) = (free_port(), free_port());
    let a = Node::start_args(
        tmp.path(),
        "a",
        port,
        Some(&up.host()),
        &[],
        &dht(listen, &[], ""),
    );
    pull(&a.blob_url(&layer.digest), &layer.digest).await;
    drop(a);
    // The same data dir (identity and blobs), among nodes that never heard of it.
    let a = Node::start_args(
        tmp.path(),
        "a",
        port,
        Some(&up.host()),
        &[],
        &dht(listen, &[], ""),
    );
    let b = Node::start_args(
        tmp.path(),
        "b",
        free_port(),
        Some(&up.host()),
        &[],
        &dht(free_port(), &[listen], ""),
    );
    let nodes = [a, b];
    joined(&nodes).await;
    pull(&nodes[1].blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    assert_eq!(
        nodes[1].metric("ferry_peer_fetched_bytes_total").await,
        layer.bytes.len() as f64
    );
    // b is new, so only a's announcement at start can have named it.
    assert!(nodes[1].metric("ferry_peer_providers_found_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_of_the_cluster_are_served_by_peer_request() {
    let with_key = |dir: &std::path::Path| {
        let key = dir.join("cluster.key");
        std::fs::write(
            &key,
            "/key/swarm/psk/1.0.0/\n/base16/\n0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
        )
        .unwrap();
        format!("cluster_key_file = \"{}\"\n", key.display())
    };
    let Some(c) = cluster(image(84, 1, 300_000, "amd64"), 2, with_key).await else {
        return;
    };
    let Cluster { up, img, nodes, .. } = &c;
    let layer = &img.layers[0];
    pull(&nodes[0].blob_url(&layer.digest), &layer.digest).await;
    // A member (proof under the key) is served from the node that has the blob.
    pull(&nodes[1].blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    assert_eq!(
        nodes[1].metric("ferry_peer_fetched_bytes_total").await,
        layer.bytes.len() as f64
    );
    // Anyone else claiming to be a peer: no proof, a malformed one, one under another key.
    let id = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("t={now};mac={}", "ab".repeat(32));
    for proof in [None, Some("nonsense"), Some(forged.as_str())] {
        let mut rq = client()
            .get(nodes[0].blob_url(&layer.digest))
            .header("ferry-peer", id);
        if let Some(p) = proof {
            rq = rq.header("ferry-peer-auth", p);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), 403, "{proof:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "DENIED", "{proof:?}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("not a member"),
            "{body}"
        );
    }
    assert_eq!(
        nodes[0].metric("ferry_peer_requests_denied_total").await,
        3.0
    );
    // Plain clients are not peers: served as before.
    pull(&nodes[0].blob_url(&layer.digest), &layer.digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_answered_at_once_with_the_copys_state_and_the_nodes_load() {
    let Some(c) = cluster(image(85, 2, 2_000_000, "amd64"), 2, |_| String::new()).await else {
        return;
    };
    let Cluster { up, img, nodes, .. } = &c;
    let (held, filling) = (&img.layers[0], &img.layers[1]);
    pull(&nodes[0].blob_url(&held.digest), &held.digest).await;
    // The second layer's upstream transfer stops halfway: node 1 is filling it.
    let paused = crate::p2p::pull_paused(&nodes[1], up, &filling.digest).await;
    let probe = |node: &Node, digest: &ferry_oci::Digest| {
        client()
            .head(node.blob_url(digest))
            .header(
                "ferry-peer",
                "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
            )
            .header("ferry-peer-probe", "1")
            .send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let complete = probe(&nodes[0], &held.digest).await.unwrap();
    assert_eq!(complete.status(), 200);
    assert_eq!(
        header(&complete, "ferry-peer-copy").as_deref(),
        Some("complete")
    );
    assert_eq!(header(&complete, "ferry-peer-load").as_deref(), Some("0"));
    // A fill in flight is answered at once (a probe is never held), as filling.
    let started = std::time::Instant::now();
    let in_flight = probe(&nodes[1], &filling.digest).await.unwrap();
    assert_eq!(in_flight.status(), 200);
    assert_eq!(
        header(&in_flight, "ferry-peer-copy").as_deref(),
        Some("filling")
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Nothing here: 404 at once, and nothing fetched for the probe.
    let before = up.requests("GET", &blob_path(&held.digest));
    let nothing = probe(&nodes[1], &held.digest).await.unwrap();
    assert_eq!(nothing.status(), 404);
    assert_eq!(up.requests("GET", &blob_path(&held.digest)), before);
    up.release();
    let body = paused.bytes().await.unwrap();
    assert_eq!(Digest::sha256(&body), filling.digest);
}
