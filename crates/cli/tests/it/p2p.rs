//! Mirrors sharing blobs as peers (`ferry serve --peer URL`): real ferry processes on 127.0.0.1,
//! Distribution as the upstream behind a counting, fault-injecting proxy.

use std::time::Duration;

use ferry_oci::{Digest, MediaType};
use ferry_testkit::faults::{Fault, FaultProxy, Target};
use ferry_testkit::image::{Image, image};
use ferry_testkit::peers::{DockerRegistry, Ferry, Skopeo, free_port};

use crate::p2p_dht::{dht, joined};
use crate::{client, ferry_bin};

/// Distribution holding `img` as `p2p/app:v1`, behind a proxy that counts what reaches it.
pub(crate) fn upstream(tmp: &std::path::Path, img: &Image) -> Option<(DockerRegistry, FaultProxy)> {
    let skopeo = Skopeo::new()?;
    let registry = DockerRegistry::start()?;
    skopeo.push_image(img, tmp, &format!("{}/p2p/app:v1", registry.host()));
    let proxy = FaultProxy::start(&registry.host());
    Some((registry, proxy))
}

/// A node mirroring `upstream` with `peers` (URLs) and its metrics on a port of its own.
pub(crate) struct Node {
    pub(crate) ferry: Ferry,
    metrics: u16,
}

impl Node {
    fn start(
        tmp: &std::path::Path,
        name: &str,
        port: u16,
        upstream: &str,
        peers: &[String],
    ) -> Node {
        Node::start_with(tmp, name, port, upstream, peers, "")
    }

    /// [`Node::start`] with `config` (TOML) as its configuration file.
    fn start_with(
        tmp: &std::path::Path,
        name: &str,
        port: u16,
        upstream: &str,
        peers: &[String],
        config: &str,
    ) -> Node {
        Node::start_args(tmp, name, port, Some(upstream), peers, config)
    }

    /// A node with `config` as its configuration file, and `upstream` (when given) as
    /// `--upstream`; without, the configuration names it (for per-upstream settings).
    pub(crate) fn start_args(
        tmp: &std::path::Path,
        name: &str,
        port: u16,
        upstream: Option<&str>,
        peers: &[String],
        config: &str,
    ) -> Node {
        let metrics = free_port();
        let config_file = tmp.join(format!("{name}.toml"));
        std::fs::write(&config_file, config).unwrap();
        let mut args = vec![
            "--config".to_owned(),
            config_file.display().to_string(),
            "--metrics".to_owned(),
            format!("127.0.0.1:{metrics}"),
        ];
        if let Some(u) = upstream {
            args.extend(["--upstream".to_owned(), format!("http://{u}")]);
        }
        for p in peers {
            args.extend(["--peer".to_owned(), p.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ferry = Ferry::start_on(ferry_bin(), port, &tmp.join(name), &args);
        Node { ferry, metrics }
    }

    pub(crate) fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/p2p/app/blobs/{digest}", self.ferry.url())
    }

    /// The value of the series `name` (with its labels, as the metrics text spells them).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = client()
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The blob's bytes through `url`, checked against `digest`.
pub(crate) async fn pull(url: &str, digest: &Digest) -> Vec<u8> {
    let r = client()
        .get(url)
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(&Digest::sha256(&body), digest, "{url} sent other bytes");
    body
}

/// GETs `url` while wrong bytes are on their way: the client may see a broken transfer (a failed
/// request when no head was sent, or a body cut short), never a whole body of other bytes.
async fn assert_never_whole_and_wrong(url: &str, digest: &Digest) {
    let whole = match client().get(url).send().await {
        Ok(r) if r.status() == 200 => r.bytes().await.ok(),
        _ => None,
    };
    assert!(
        whole.is_none_or(|w| &Digest::sha256(&w) == digest),
        "{url}: a whole body with wrong bytes reached the client"
    );
}

/// Node A, a peer (of itself) holding `digest`, and a proxy in front of it that applies `fault` to
/// the next blob it serves: how a node reaches a misbehaving peer.
async fn holder_behind_proxy(
    tmp: &std::path::Path,
    up: &FaultProxy,
    digest: &Digest,
    fault: Fault,
) -> (Node, FaultProxy) {
    let pa = free_port();
    let a = Node::start(
        tmp,
        "a",
        pa,
        &up.host(),
        &[format!("http://127.0.0.1:{pa}")],
    );
    pull(&a.blob_url(digest), digest).await;
    let proxy = FaultProxy::start(&a.ferry.host());
    proxy.inject(Target::Blob, fault, 1);
    (a, proxy)
}

pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("/v2/p2p/app/blobs/{digest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_one_node_pulled_reaches_the_others_from_it_not_the_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(71, 2, 300_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let ports = [free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    // Every node lists all three, itself included, as a cluster's shared configuration would.
    let nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Node::start(tmp.path(), &format!("n{i}"), port, &up.host(), &urls))
        .collect();
    for layer in &img.layers {
        pull(&nodes[0].blob_url(&layer.digest), &layer.digest).await;
    }
    for node in &nodes[1..] {
        for layer in &img.layers {
            pull(&node.blob_url(&layer.digest), &layer.digest).await;
        }
    }
    for layer in &img.layers {
        assert_eq!(
            up.requests("GET", &blob_path(&layer.digest)),
            1,
            "the upstream served {} once, to the first node",
            layer.digest
        );
    }
    let layer_bytes: usize = img.layers.iter().map(|l| l.bytes.len()).sum();
    let from_upstream = format!(
        "ferry_upstream_fetched_bytes_total{{upstream=\"{}\"}}",
        up.host()
    );
    assert_eq!(nodes[0].metric(&from_upstream).await, layer_bytes as f64);
    let mut served = 0.0;
    for node in &nodes {
        served += node.metric("ferry_peer_served_bytes_total").await;
    }
    for node in &nodes[1..] {
        assert_eq!(
            node.metric("ferry_peer_fetched_bytes_total").await,
            layer_bytes as f64
        );
        assert_eq!(node.metric(&from_upstream).await, 0.0);
    }
    assert_eq!(
        served,
        2.0 * layer_bytes as f64,
        "peers served what the others fetched"
    );
}

/// Starts pulling `digest` through `node` while the upstream holds the transfer halfway: returns
/// once the node's fill is receiving (its answer's head has come), with the response to finish.
pub(crate) async fn pull_paused(
    node: &Node,
    up: &FaultProxy,
    digest: &Digest,
) -> reqwest::Response {
    up.inject(Target::Blob, Fault::PauseMidBody, 1);
    let r = client()
        .get(node.blob_url(digest))
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// Waits (bounded) until `node` is serving `n` transfers to peers.
async fn serving_peers(node: &Node, n: f64) -> bool {
    for _ in 0..400 {
        if node.metric("ferry_peer_uploads").await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_streams_a_blob_its_peer_is_still_fetching_and_falls_back_when_the_peer_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(72, 2, 2_000_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a_url = format!("http://127.0.0.1:{pa}");
    let peers = std::slice::from_ref(&a_url);
    let a = Node::start(tmp.path(), "a", pa, &up.host(), peers);
    let b = Node::start(tmp.path(), "b", pb, &up.host(), peers);
    let c = Node::start(tmp.path(), "c", pc, &up.host(), peers);

    // Layer 0: A's upstream transfer stops halfway; B asks A meanwhile and is streamed what A has,
    // then the rest as it arrives.
    let layer = &img.layers[0];
    let a_response = pull_paused(&a, &up, &layer.digest).await;
    let b_pull = tokio::spawn({
        let (url, d) = (b.blob_url(&layer.digest), layer.digest.clone());
        async move { pull(&url, &d).await }
    });
    assert!(
        serving_peers(&a, 1.0).await,
        "B is being served by A while A is still fetching"
    );
    up.release();
    let a_body = a_response.bytes().await.unwrap();
    assert_eq!(Digest::sha256(&a_body), layer.digest);
    b_pull.await.unwrap();
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    assert_eq!(
        b.metric("ferry_peer_fetched_bytes_total").await,
        layer.bytes.len() as f64
    );

    // Layer 1: A stops halfway again, C starts streaming from A, then A is killed: C goes on from
    // the upstream where A stopped, and its client gets the whole blob, verified.
    let layer = &img.layers[1];
    up.hold_again();
    let a_response = pull_paused(&a, &up, &layer.digest).await;
    let c_pull = tokio::spawn({
        let (url, d) = (c.blob_url(&layer.digest), layer.digest.clone());
        async move { pull(&url, &d).await }
    });
    assert!(
        serving_peers(&a, 1.0).await,
        "C is being served by A while A is still fetching"
    );
    drop(a);
    drop(a_response);
    c_pull.await.unwrap();
    up.release();
    assert_eq!(
        c.metric("ferry_peer_fallbacks_total{cause=\"interrupted\"}")
            .await,
        1.0
    );
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 2);
    assert_eq!(
        up.ranges("GET", &blob_path(&layer.digest)).len(),
        1,
        "C went on from where A stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_other_bytes_breaks_the_transfer_and_the_retry_uses_the_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(73, 1, 500_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let pb = free_port();
    // B reaches A through a proxy that flips a byte of the next blob.
    let (_a, liar) = holder_behind_proxy(tmp.path(), &up, &layer.digest, Fault::WrongBytes).await;
    let b = Node::start(
        tmp.path(),
        "b",
        pb,
        &up.host(),
        &[format!("http://{}", liar.host())],
    );
    // B's first fill streams what the liar sends; the digest check breaks that transfer, so the
    // client never holds a whole wrong blob and nothing is stored.
    assert_never_whole_and_wrong(&b.blob_url(&layer.digest), &layer.digest).await;
    // The retry (containerd retries a broken layer) asks no peer for it: the upstream serves it.
    pull(&b.blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(liar.requests("GET", &blob_path(&layer.digest)), 1);
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 2);
    assert_eq!(
        b.metric("ferry_peer_fallbacks_total{cause=\"digest\"}")
            .await,
        1.0
    );
    // Nothing of the lie was kept: the store checks clean and holds the right blob.
    drop(b);
    let out = std::process::Command::new(ferry_bin())
        .args(["fsck", "--data-dir"])
        .arg(tmp.path().join("b"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_request_is_answered_from_the_node_alone_never_forwarded() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(74, 1, 100_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let (pa, pb) = (free_port(), free_port());
    let (a_url, b_url) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let a = Node::start(
        tmp.path(),
        "a",
        pa,
        &up.host(),
        std::slice::from_ref(&b_url),
    );
    let b = Node::start(
        tmp.path(),
        "b",
        pb,
        &up.host(),
        std::slice::from_ref(&a_url),
    );
    pull(&b.blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    let host = up.host();
    let ask = |url: String| {
        let host = host.clone();
        async move {
            client()
                .get(url)
                .header("ferry-peer", "1")
                .header("x-registry", host)
                .send()
                .await
                .unwrap()
        }
    };
    // A lacks the blob, B has it: a peer request to A is not passed on to B, nor upstream.
    let r = ask(a.blob_url(&layer.digest)).await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("BLOB_UNKNOWN"));
    assert_eq!(b.metric("ferry_peer_served_bytes_total").await, 0.0);
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 1);
    // B has it and serves it.
    let r = ask(b.blob_url(&layer.digest)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(Digest::sha256(&r.bytes().await.unwrap()), layer.digest);
    // Peers are asked for blobs only: a manifest is never resolved for one.
    let r = ask(format!("{}/v2/p2p/app/manifests/v1", a.ferry.url())).await;
    assert_eq!(r.status(), 405);
    assert_eq!(up.requests("GET", "/v2/p2p/app/manifests/v1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_missing_a_blob_at_once_fetch_it_from_the_upstream_once() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(75, 3, 1_000_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            // Holds last up to 3/4 of this: generous, so a loaded test machine cannot turn a
            // slow answer into a second upstream fetch.
            let config = "[peers]\nfirst_byte_timeout_secs = 20\n";
            Node::start_with(
                tmp.path(),
                &format!("n{i}"),
                port,
                &up.host(),
                &urls,
                config,
            )
        })
        .collect();
    // A cold rollout: every node is asked for every layer at the same moment.
    let mut pulls = Vec::new();
    for node in &nodes {
        for layer in &img.layers {
            let (url, d) = (node.blob_url(&layer.digest), layer.digest.clone());
            pulls.push(tokio::spawn(async move { pull(&url, &d).await }));
        }
    }
    for p in pulls {
        p.await.unwrap();
    }
    for layer in &img.layers {
        assert_eq!(
            up.requests("GET", &blob_path(&layer.digest)),
            1,
            "four nodes missing {} at once fetched it upstream once",
            layer.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_peers_that_lack_a_blob_upstream_faults_are_handled_as_without() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(76, 1, 1_000_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let (pa, pb) = (free_port(), free_port());
    let urls = [
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    ];
    let a = Node::start(tmp.path(), "a", pa, &up.host(), &urls);
    let _b = Node::start(tmp.path(), "b", pb, &up.host(), &urls);
    // The upstream breaks off mid-body: the fill resumes with a Range, the client gets it whole.
    up.inject(Target::Blob, Fault::ResetMidBody, 1);
    pull(&a.blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 2);
    assert_eq!(up.ranges("GET", &blob_path(&layer.digest)).len(), 1);
    // Wrong bytes from the upstream: the client never gets a whole wrong body, nothing is kept,
    // and the next pull fetches it right.
    let layer = &img.config;
    up.inject(Target::Blob, Fault::WrongBytes, 1);
    assert_never_whole_and_wrong(&a.blob_url(&layer.digest), &layer.digest).await;
    pull(&a.blob_url(&layer.digest), &layer.digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_a_dht_node_that_takes_the_layers_from_its_peer() {
    let Some(containerd) = ferry_testkit::peers::Containerd::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = image(77, 3, 400_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    // Two nodes that find each other through the DHT, as the Helm chart's DaemonSet runs them.
    let (la, lb) = (free_port(), free_port());
    let nodes = [
        Node::start_args(
            tmp.path(),
            "a",
            free_port(),
            Some(&up.host()),
            &[],
            &dht(la, &[], ""),
        ),
        Node::start_args(
            tmp.path(),
            "b",
            free_port(),
            Some(&up.host()),
            &[],
            &dht(lb, &[la], ""),
        ),
    ];
    joined(&nodes).await;
    let [a, b] = &nodes;
    // Node A has the image's blobs (another node of the cluster pulled it).
    for blob in img.blobs() {
        pull(&a.blob_url(&blob.digest), &blob.digest).await;
    }
    // containerd on node B pulls through B, whose hosts.toml ferry writes.
    let out = std::process::Command::new(ferry_bin())
        .args([
            "containerd-config",
            "--mirror",
            &b.ferry.url(),
            "--registries",
            &format!("http://{}", up.host()),
            "--dir",
        ])
        .arg(containerd.hosts_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = format!("{}/p2p/app:v1", up.host());
    let out = containerd.pull("p2p", &reference);
    assert!(
        out.status.success(),
        "containerd pull through node B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for blob in img.blobs() {
        let got = containerd.ctr(&["-n", "p2p", "content", "get", blob.digest.as_str()]);
        assert_eq!(Digest::sha256(&got.stdout), blob.digest);
        assert_eq!(
            up.requests("GET", &blob_path(&blob.digest)),
            1,
            "only node A fetched {} from the upstream",
            blob.digest
        );
    }
    let blob_bytes: usize = img.blobs().map(|b| b.bytes.len()).sum();
    assert_eq!(
        b.metric("ferry_peer_fetched_bytes_total").await,
        blob_bytes as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serving_as_many_peers_as_it_may_refuses_the_next_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(78, 1, 2_000_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let (pa, pb) = (free_port(), free_port());
    let a_url = format!("http://127.0.0.1:{pa}");
    let peers = std::slice::from_ref(&a_url);
    let a = Node::start_with(
        tmp.path(),
        "a",
        pa,
        &up.host(),
        peers,
        "[peers]\nmax_uploads = 1\n",
    );
    let b = Node::start(tmp.path(), "b", pb, &up.host(), peers);
    // A's one upload slot goes to B, streaming what A is still fetching.
    let a_response = pull_paused(&a, &up, &layer.digest).await;
    let b_pull = tokio::spawn({
        let (url, d) = (b.blob_url(&layer.digest), layer.digest.clone());
        async move { pull(&url, &d).await }
    });
    assert!(serving_peers(&a, 1.0).await, "A serves B");
    // Another peer is told at once, not queued.
    let r = client()
        .get(a.blob_url(&layer.digest))
        .header("ferry-peer", "00000000000000ff")
        .header("x-registry", up.host())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));
    assert_eq!(a.metric("ferry_peer_uploads_refused_total").await, 1.0);
    up.release();
    drop(a_response);
    b_pull.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_trickling_bytes_is_left_for_the_upstream_at_the_transfer_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(79, 1, 300_000, "amd64");
    let Some((_registry, up)) = upstream(tmp.path(), &img) else {
        return;
    };
    let layer = &img.layers[0];
    let pb = free_port();
    // B reaches A through a proxy that trickles the body a byte a second (never silent long
    // enough for a read timeout); B's floor is 16 KiB/s after 3 s.
    let (_a, slow) = holder_behind_proxy(tmp.path(), &up, &layer.digest, Fault::Stall).await;
    let b = Node::start_args(
        tmp.path(),
        "b",
        pb,
        None,
        &[format!("http://{}", slow.host())],
        &format!(
            "[[upstream]]\nurl = \"http://{}\"\nmin_transfer_grace_secs = 3\n",
            up.host()
        ),
    );
    pull(&b.blob_url(&layer.digest), &layer.digest).await;
    assert_eq!(slow.requests("GET", &blob_path(&layer.digest)), 1);
    assert_eq!(up.requests("GET", &blob_path(&layer.digest)), 2);
    assert_eq!(
        up.ranges("GET", &blob_path(&layer.digest)).len(),
        1,
        "B went on from the bytes the trickling peer had sent"
    );
    assert_eq!(
        b.metric("ferry_peer_fallbacks_total{cause=\"interrupted\"}")
            .await,
        1.0
    );
}
