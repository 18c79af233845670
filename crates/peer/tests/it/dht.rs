use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_peer::{
    Bootstrap, ClusterKey, Membership, Network, NetworkOptions, NodeIdentity, PeerId, Provider,
};

const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

struct NodeSpec {
    identity: NodeIdentity,
    registry_port: u16,
    bootstrap: Vec<Bootstrap>,
    membership: Membership,
    provider_ttl: Duration,
}

impl NodeSpec {
    fn new(registry_port: u16) -> NodeSpec {
        NodeSpec {
            identity: NodeIdentity::ephemeral(),
            registry_port,
            bootstrap: Vec::new(),
            membership: Membership::default(),
            provider_ttl: Duration::from_secs(600),
        }
    }

    fn via(mut self, node: &Network) -> NodeSpec {
        self.bootstrap
            .push(node.listen_addr().to_string().parse().unwrap());
        self
    }

    async fn start(self) -> Network {
        let mut o = NetworkOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            self.identity,
            self.registry_port,
        );
        o.bootstrap = self.bootstrap;
        o.membership = self.membership;
        o.provider_ttl = self.provider_ttl;
        o.rediscover = Duration::from_secs(1);
        Network::start(o).await.unwrap()
    }
}

/// Waits (polling, up to 20 s) until `check` holds on what `probe` returns; the last value otherwise.
async fn until<T, F, C>(what: &str, mut probe: impl FnMut() -> F, check: C) -> T
where
    F: std::future::Future<Output = T>,
    C: Fn(&T) -> bool,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = probe().await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {value:?} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(found: &[Provider]) -> HashSet<PeerId> {
    found.iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn a_blob_announced_on_one_node_is_found_from_the_others_with_its_registry() {
    let a = NodeSpec::new(5101).start().await;
    let b = NodeSpec::new(5102).via(&a).start().await;
    let c = NodeSpec::new(5103).via(&b).start().await;
    // c knows only b at first; the DHT brings it to a.
    until("c sees both others", || c.members(), |m| m.len() == 2).await;
    a.provide(DIGEST);
    let found = until("c finds a", || c.providers(DIGEST), |f| !f.is_empty()).await;
    assert_eq!(
        found,
        vec![Provider {
            id: a.id(),
            url: "http://127.0.0.1:5101".into()
        }]
    );
    // Two providers, neither of them the asker.
    b.provide(DIGEST);
    let found = until("c finds a and b", || c.providers(DIGEST), |f| f.len() == 2).await;
    assert_eq!(ids(&found), [a.id(), b.id()].into_iter().collect());
    let from_a = until("a finds b", || a.providers(DIGEST), |f| !f.is_empty()).await;
    assert_eq!(
        ids(&from_a),
        [b.id()].into_iter().collect(),
        "a never lists itself"
    );
    assert!(c.providers("sha256:00").await.is_empty());
    assert!(c.stats().lookups.load(Ordering::Relaxed) >= 3);
    assert!(c.stats().providers_found.load(Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn records_expire_unless_announced_again() {
    let ttl = Duration::from_secs(3);
    let a = NodeSpec {
        provider_ttl: ttl,
        ..NodeSpec::new(5201)
    }
    .start()
    .await;
    let b = NodeSpec {
        provider_ttl: ttl,
        ..NodeSpec::new(5202)
    }
    .via(&a)
    .start()
    .await;
    let c = NodeSpec {
        provider_ttl: ttl,
        ..NodeSpec::new(5203)
    }
    .via(&a)
    .start()
    .await;
    until("c sees both others", || c.members(), |m| m.len() == 2).await;
    a.provide(DIGEST);
    until("c finds a", || c.providers(DIGEST), |f| !f.is_empty()).await;
    // a stops announcing; the copies of its record on b and c live out their TTL.
    a.forget(DIGEST);
    assert_eq!(
        ids(&c.providers(DIGEST).await),
        [a.id()].into_iter().collect()
    );
    until(
        "a's record expires",
        || c.providers(DIGEST),
        |f| f.is_empty(),
    )
    .await;
    // Announced again (a restarted node announcing what it holds), it is found again.
    a.hold(vec![DIGEST.to_owned()]).await;
    let found = until("c finds a again", || c.providers(DIGEST), |f| !f.is_empty()).await;
    assert_eq!(ids(&found), [a.id()].into_iter().collect());
    drop(b);
}

#[tokio::test]
async fn a_restarted_node_keeps_its_identity_and_is_found_at_its_new_registry() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("peer-identity.key");
    let a = NodeSpec::new(5301).start().await;
    let b = NodeSpec {
        identity: NodeIdentity::load_or_create(&key).unwrap(),
        ..NodeSpec::new(5302)
    }
    .via(&a)
    .start()
    .await;
    let b_id = b.id();
    b.hold(vec![DIGEST.to_owned()]).await;
    until("a finds b", || a.providers(DIGEST), |f| !f.is_empty()).await;
    drop(b);
    until(
        "b is gone from a's members",
        || a.members(),
        |m| m.is_empty(),
    )
    .await;
    let b = NodeSpec {
        identity: NodeIdentity::load_or_create(&key).unwrap(),
        ..NodeSpec::new(5312)
    }
    .via(&a)
    .start()
    .await;
    assert_eq!(b.id(), b_id, "the identity file keeps the peer id");
    b.hold(vec![DIGEST.to_owned()]).await;
    let found = until(
        "a finds b at its new registry",
        || a.providers(DIGEST),
        |f| f.iter().any(|p| p.url == "http://127.0.0.1:5312"),
    )
    .await;
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn nodes_without_the_cluster_key_or_off_the_allow_list_cannot_take_part() {
    let key = ClusterKey::new([42; 32]);
    let (ia, ib, ix) = (
        NodeIdentity::ephemeral(),
        NodeIdentity::ephemeral(),
        NodeIdentity::ephemeral(),
    );
    let members = Membership {
        key: Some(key.clone()),
        allow: [ia.id(), ib.id()].into_iter().collect(),
    };
    let a = NodeSpec {
        identity: ia,
        membership: members.clone(),
        ..NodeSpec::new(5401)
    }
    .start()
    .await;
    let b = NodeSpec {
        identity: ib,
        membership: members.clone(),
        ..NodeSpec::new(5402)
    }
    .via(&a)
    .start()
    .await;
    // Another key: the private network's handshake fails.
    let stranger = NodeSpec {
        membership: Membership {
            key: Some(ClusterKey::new([7; 32])),
            ..Membership::default()
        },
        ..NodeSpec::new(5403)
    }
    .via(&a)
    .start()
    .await;
    // The right key, but not on the list.
    let unlisted = NodeSpec {
        identity: ix,
        membership: members.clone(),
        ..NodeSpec::new(5404)
    }
    .via(&a)
    .start()
    .await;
    a.provide(DIGEST);
    until("b finds a", || b.providers(DIGEST), |f| !f.is_empty()).await;
    // Both were turned away by a (a failed handshake, a denied connection), and the stranger
    // saw its own handshake fail.
    until(
        "a turns both away",
        || async { a.stats().connection_errors.load(Ordering::Relaxed) },
        |n| *n >= 2,
    )
    .await;
    until(
        "the stranger's handshake fails",
        || async { stranger.stats().connection_errors.load(Ordering::Relaxed) },
        |n| *n >= 1,
    )
    .await;
    for (name, outsider) in [("stranger", &stranger), ("unlisted", &unlisted)] {
        assert!(outsider.members().await.is_empty(), "{name} joined");
        assert!(
            outsider.providers(DIGEST).await.is_empty(),
            "{name} found a provider"
        );
    }
    let a_members = ids(&a.members().await);
    assert_eq!(a_members, [b.id()].into_iter().collect());
}

#[tokio::test]
async fn a_node_that_leaves_drops_out_of_the_members() {
    let a = NodeSpec::new(5501).start().await;
    let b = NodeSpec::new(5502).via(&a).start().await;
    let c = NodeSpec::new(5503).via(&a).start().await;
    until("a sees b and c", || a.members(), |m| m.len() == 2).await;
    let c_id = c.id();
    drop(c);
    let left = until("c leaves", || a.members(), |m| m.len() == 1).await;
    assert!(left.iter().all(|m| m.id != c_id));
    assert_eq!(ids(&left), [b.id()].into_iter().collect());
}

#[tokio::test]
async fn a_peer_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = NetworkOptions::new(taken.local_addr().unwrap(), NodeIdentity::ephemeral(), 5602);
    o.rediscover = Duration::from_secs(1);
    let e = Network::start(o).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot listen for peers") && e.contains("peers.listen"),
        "{e}"
    );
}

#[tokio::test]
async fn garbage_and_idle_connections_on_the_peer_port_do_not_stop_the_network() {
    let a = NodeSpec::new(5701).start().await;
    // 200 connections that never finish a handshake: half send garbage, half send nothing.
    let mut attackers = Vec::new();
    for i in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(a.listen_addr()).await {
            if i % 2 == 0 {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(&[0xff; 4096]).await;
            }
            attackers.push(s);
        }
    }
    let b = NodeSpec::new(5702).via(&a).start().await;
    until("b joins a under attack", || b.members(), |m| m.len() == 1).await;
    a.provide(DIGEST);
    let found = until("b finds a", || b.providers(DIGEST), |f| !f.is_empty()).await;
    assert_eq!(ids(&found), [a.id()].into_iter().collect());
    drop(attackers);
}
