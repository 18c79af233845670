//! The node's place in the DHT: a libp2p swarm (TCP, optionally a private network under the
//! cluster key, noise, yamux; Kademlia and identify) run by one task that owns it, driven through
//! a bounded command channel by cheap [`Network`] handles.
//!
//! What the DHT holds: provider records, keyed by blob digest, naming the nodes that hold or are
//! filling the blob. Where a provider's registry is comes from identify: a node states its
//! registry's scheme and port, and the asker puts them on the IP address the provider's
//! connection comes from, so a node can only ever point others at itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::kad::{self, RecordKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport, identify, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::PeerError;
use crate::bootstrap::{Bootstrap, socket_addr, tcp_addr};
use crate::identity::NodeIdentity;
use crate::membership::Membership;
use crate::store::ProviderStore;

/// The Kademlia protocol name: ferry's own DHT, never mixed with IPFS's or Spegel's.
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/kad/1.0.0");
/// identify's protocol version; a peer stating another is not a ferry node and is left alone.
const ID_PROTOCOL: &str = "/ferry/id/1.0.0";
/// Announcements in flight at once: a node restarting with many blobs announces them paced.
const ANNOUNCING_MAX: usize = 16;
/// Lookups waiting at once; more are answered "no providers" at once (the fill asks the upstream).
const LOOKUPS_MAX: usize = 256;
/// Providers a lookup returns at most.
const PROVIDERS_MAX: usize = 8;
/// Registry addresses remembered for peers not connected right now.
const URLS_MAX: usize = 4096;

/// How a node takes part in the DHT.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The peer port's address (`0.0.0.0:5001`; port 0 picks one, see [`Network::listen_addr`]).
    pub listen: SocketAddr,
    /// Where to find the first peers; names are resolved again every `rediscover`.
    pub bootstrap: Vec<Bootstrap>,
    /// This node's key pair.
    pub identity: NodeIdentity,
    /// Who may take part.
    pub membership: Membership,
    /// This node's registry as peers reach it: its scheme, and the port on the IP they see.
    pub registry_scheme: &'static str,
    pub registry_port: u16,
    /// How long other nodes keep a provider record of this node's.
    pub provider_ttl: Duration,
    /// How often bootstrap names are resolved again and the routing table refreshed.
    pub rediscover: Duration,
    /// How long a lookup may take, the provider's address included.
    pub lookup_timeout: Duration,
    /// Connections at most (in and out); past it new ones are refused.
    pub max_connections: u32,
    /// Digests of other nodes' records held at most (and of this node's own).
    pub max_records: usize,
}

impl NetworkOptions {
    /// Options with ferry's defaults for a node listening on `listen` whose registry is on
    /// `registry_port`.
    pub fn new(listen: SocketAddr, identity: NodeIdentity, registry_port: u16) -> NetworkOptions {
        NetworkOptions {
            listen,
            bootstrap: Vec::new(),
            identity,
            membership: Membership::default(),
            registry_scheme: "http",
            registry_port,
            provider_ttl: Duration::from_secs(30 * 60),
            rediscover: Duration::from_secs(30),
            lookup_timeout: Duration::from_millis(800),
            max_connections: 512,
            max_records: 1 << 18,
        }
    }
}

/// A node that holds (or is filling) a blob, and where its registry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: PeerId,
    /// `http(s)://ip:port`.
    pub url: String,
}

/// Counters of the node's DHT work, for metrics.
#[derive(Debug, Default)]
pub struct NetworkStats {
    /// Provider lookups started.
    pub lookups: AtomicU64,
    /// Lookups that found no provider with a reachable registry.
    pub lookups_empty: AtomicU64,
    /// Providers returned by lookups, in all.
    pub providers_found: AtomicU64,
    /// Announcements made (fresh fills and re-announcements).
    pub announced: AtomicU64,
    /// Announcements dropped: the command queue or the store was full.
    pub announce_dropped: AtomicU64,
    /// Peers connected now that are ferry nodes.
    pub members: AtomicU64,
    /// Connections that failed before becoming a peer's (unreachable, refused, or a handshake
    /// that failed: another cluster key, not on the allow-list).
    pub connection_errors: AtomicU64,
}

/// A handle on the node's DHT task; clones share it, and the task (with its connections) ends
/// when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    id: PeerId,
    listen: SocketAddr,
    lookup_timeout: Duration,
    stats: Arc<NetworkStats>,
}

enum Command {
    /// Announce a digest now (a fill started), ahead of re-announcements.
    Provide(String),
    /// The digests this node holds: announce them all (paced), stop announcing any other.
    Hold(Vec<String>),
    /// Stop announcing a digest (its fill failed, or it was deleted).
    Forget(String),
    Providers {
        digest: String,
        reply: oneshot::Sender<Vec<Provider>>,
    },
    Members(oneshot::Sender<Vec<Provider>>),
}

impl Network {
    /// Joins the DHT: listens on the peer port and starts finding peers.
    pub async fn start(options: NetworkOptions) -> Result<Network, PeerError> {
        // libp2p listens with SO_REUSEPORT, so a second node on a taken port would silently
        // share it; a plain bind first says the port is taken.
        if options.listen.port() != 0 {
            std::net::TcpListener::bind(options.listen).map_err(|e| PeerError::Listen {
                addr: options.listen,
                detail: e.to_string(),
            })?;
        }
        let mut swarm = build_swarm(&options)?;
        swarm
            .listen_on(tcp_addr(options.listen))
            .map_err(|e| PeerError::Listen {
                addr: options.listen,
                detail: e.to_string(),
            })?;
        let port = loop {
            match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                    if let Some(a) = socket_addr(&address) {
                        break a.port();
                    }
                }
                Ok(SwarmEvent::ListenerError { error, .. }) => {
                    return Err(PeerError::Listen {
                        addr: options.listen,
                        detail: error.to_string(),
                    });
                }
                Ok(SwarmEvent::ListenerClosed { reason, .. }) => {
                    return Err(PeerError::Listen {
                        addr: options.listen,
                        detail: format!("{reason:?}"),
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(PeerError::Listen {
                        addr: options.listen,
                        detail: "no listening address after 10 s".into(),
                    });
                }
            }
        };
        let listen = SocketAddr::new(options.listen.ip(), port);
        let stats = Arc::new(NetworkStats::default());
        let (commands, rx) = mpsc::channel(1024);
        let id = options.identity.id();
        let node = Node::new(swarm, options.clone(), listen, stats.clone());
        tokio::spawn(node.run(rx));
        tracing::info!(peer_id = %id, %listen, "joined the peer network");
        Ok(Network {
            commands,
            id,
            listen,
            lookup_timeout: options.lookup_timeout,
            stats,
        })
    }

    /// This node's peer id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The peer port's address (with the port picked when 0 was asked).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Counters of the DHT work.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    /// Announces that this node holds or is filling `digest`. Never waits: when the queue is
    /// full the announcement is dropped (counted) and made at the next re-announcement.
    pub fn provide(&self, digest: &str) {
        if self
            .commands
            .try_send(Command::Provide(digest.to_owned()))
            .is_err()
        {
            self.stats.announce_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops announcing `digest`.
    pub fn forget(&self, digest: &str) {
        let _ = self.commands.try_send(Command::Forget(digest.to_owned()));
    }

    /// Announces every digest of `held` (paced) and stops announcing any other.
    pub async fn hold(&self, held: Vec<String>) {
        let _ = self.commands.send(Command::Hold(held)).await;
    }

    /// The other nodes that announced `digest`, with their registries, found within the lookup
    /// timeout (what was found by then; nothing when the DHT is unreachable).
    pub async fn providers(&self, digest: &str) -> Vec<Provider> {
        let (reply, answer) = oneshot::channel();
        let asked = self.commands.send(Command::Providers {
            digest: digest.to_owned(),
            reply,
        });
        // The task answers at its own deadline; this one only guards against a task gone.
        let guard = self.lookup_timeout + Duration::from_secs(1);
        match tokio::time::timeout(guard, async {
            asked.await.ok()?;
            answer.await.ok()
        })
        .await
        {
            Ok(Some(found)) => found,
            _ => Vec::new(),
        }
    }

    /// The ferry nodes connected now, with their registries.
    pub async fn members(&self) -> Vec<Provider> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Members(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: Toggle<libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::AllowedPeers>>,
    limits: libp2p::connection_limits::Behaviour,
    kad: kad::Behaviour<ProviderStore>,
    identify: identify::Behaviour,
}

fn build_swarm(options: &NetworkOptions) -> Result<Swarm<Behaviour>, PeerError> {
    let psk = options
        .membership
        .key
        .as_ref()
        .map(|k| libp2p::pnet::PreSharedKey::new(k.bytes()));
    let transport_error = |e: &dyn std::fmt::Display| PeerError::Transport(e.to_string());
    let built = transport(options.identity.keypair(), psk).map_err(|e| transport_error(&e))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(options.identity.keypair().clone())
        .with_tokio()
        .with_other_transport(move |_| built)
        .map_err(|e| transport_error(&e))?
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_provider_record_ttl(Some(options.provider_ttl))
                // Re-announcing is ferry's (paced, of what the store holds), not a burst of all.
                .set_provider_publication_interval(None)
                .set_query_timeout(Duration::from_secs(30))
                .set_periodic_bootstrap_interval(None)
                .set_max_packet_size(64 * 1024);
            let store = ProviderStore::new(local, options.max_records, 20);
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // Nodes find each other on private addresses, which Kademlia's client mode would
            // keep out of routing tables.
            kad.set_mode(Some(kad::Mode::Server));
            let identify = identify::Behaviour::new(
                identify::Config::new(ID_PROTOCOL.to_owned(), key.public()).with_agent_version(
                    format!(
                        "ferry/{} registry={}:{}",
                        env!("CARGO_PKG_VERSION"),
                        options.registry_scheme,
                        options.registry_port
                    ),
                ),
            );
            let allow = (!options.membership.allow.is_empty()).then(|| {
                let mut b = libp2p::allow_block_list::Behaviour::<
                    libp2p::allow_block_list::AllowedPeers,
                >::default();
                for peer in &options.membership.allow {
                    b.allow_peer(*peer);
                }
                b
            });
            let limits = libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(options.max_connections))
                    .with_max_pending_incoming(Some(64))
                    .with_max_established_per_peer(Some(2)),
            );
            Behaviour {
                allow: allow.into(),
                limits,
                kad,
                identify,
            }
        })
        .map_err(|e| transport_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

fn transport(
    key: &libp2p::identity::Keypair,
    psk: Option<libp2p::pnet::PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    let yamux = yamux::Config::default();
    Ok(match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux)
            .timeout(Duration::from_secs(10))
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux)
            .timeout(Duration::from_secs(10))
            .boxed(),
    })
}

/// A lookup in progress.
struct Lookup {
    reply: oneshot::Sender<Vec<Provider>>,
    /// Providers whose registry is known, in the order found.
    found: Vec<Provider>,
    /// Providers being dialed to learn where their registry is.
    waiting: HashSet<PeerId>,
    query_done: bool,
    deadline: Instant,
}

/// The task that owns the swarm.
struct Node {
    swarm: Swarm<Behaviour>,
    options: NetworkOptions,
    stats: Arc<NetworkStats>,
    /// This node's own addresses, never dialed.
    own_addrs: HashSet<SocketAddr>,
    /// The remote IP of each connection.
    conn_ips: HashMap<ConnectionId, IpAddr>,
    /// The listening addresses of connected peers: bootstrap addresses among them are not
    /// dialed again.
    peer_addrs: HashMap<PeerId, HashSet<SocketAddr>>,
    /// Connected ferry nodes.
    members: HashSet<PeerId>,
    /// Where each known peer's registry is.
    urls: HashMap<PeerId, String>,
    announce_queue: VecDeque<RecordKey>,
    queued: HashSet<RecordKey>,
    announcing: HashMap<kad::QueryId, RecordKey>,
    lookups: HashMap<u64, Lookup>,
    lookup_of: HashMap<kad::QueryId, u64>,
    next_lookup: u64,
    /// Lookups waiting for a peer's identify.
    url_waiters: HashMap<PeerId, Vec<u64>>,
}

impl Node {
    fn new(
        swarm: Swarm<Behaviour>,
        options: NetworkOptions,
        listen: SocketAddr,
        stats: Arc<NetworkStats>,
    ) -> Node {
        Node {
            swarm,
            options,
            stats,
            own_addrs: [listen].into_iter().collect(),
            conn_ips: HashMap::new(),
            peer_addrs: HashMap::new(),
            members: HashSet::new(),
            urls: HashMap::new(),
            announce_queue: VecDeque::new(),
            queued: HashSet::new(),
            announcing: HashMap::new(),
            lookups: HashMap::new(),
            lookup_of: HashMap::new(),
            next_lookup: 0,
            url_waiters: HashMap::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let (resolved_tx, mut resolved) = mpsc::channel::<Vec<Multiaddr>>(4);
        let mut rediscover = tokio::time::interval(self.options.rediscover);
        rediscover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.lookups.values().map(|l| l.deadline).min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.event(event),
                _ = rediscover.tick() => {
                    let entries = self.options.bootstrap.clone();
                    let tx = resolved_tx.clone();
                    // Resolving may take a while; the swarm goes on meanwhile.
                    tokio::spawn(async move {
                        let mut all = Vec::new();
                        for b in &entries {
                            all.extend(b.resolve().await);
                        }
                        let _ = tx.send(all).await;
                    });
                    if self.swarm.behaviour_mut().kad.bootstrap().is_err() && self.options.bootstrap.is_empty() {
                        tracing::debug!("no peers known yet and no bootstrap address: waiting to be dialed");
                    }
                }
                Some(addrs) = resolved.recv() => self.dial_bootstrap(addrs),
                _ = sleep_until(deadline), if deadline.is_some() => self.expire_lookups(),
            }
        }
        tracing::info!("left the peer network");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Provide(digest) => {
                let key = RecordKey::new(&digest);
                if self.queued.insert(key.clone()) {
                    self.announce_queue.push_front(key);
                }
                self.pump_announcements();
            }
            Command::Hold(held) => {
                let keep: HashSet<RecordKey> = held.iter().map(RecordKey::new).collect();
                let stale: Vec<RecordKey> = {
                    use kad::store::RecordStore;
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .provided()
                        .map(|r| r.key.clone())
                        .filter(|k| !keep.contains(k))
                        .collect()
                };
                for key in stale {
                    self.swarm.behaviour_mut().kad.stop_providing(&key);
                }
                for key in keep {
                    if self.queued.insert(key.clone()) {
                        self.announce_queue.push_back(key);
                    }
                }
                self.pump_announcements();
            }
            Command::Forget(digest) => {
                let key = RecordKey::new(&digest);
                self.swarm.behaviour_mut().kad.stop_providing(&key);
                if self.queued.remove(&key) {
                    self.announce_queue.retain(|k| *k != key);
                }
            }
            Command::Providers { digest, reply } => self.lookup(digest, reply),
            Command::Members(reply) => {
                let members = self
                    .members
                    .iter()
                    .filter_map(|p| {
                        Some(Provider {
                            id: *p,
                            url: self.urls.get(p)?.clone(),
                        })
                    })
                    .collect();
                let _ = reply.send(members);
            }
        }
    }

    fn pump_announcements(&mut self) {
        while self.announcing.len() < ANNOUNCING_MAX {
            let Some(key) = self.announce_queue.pop_front() else {
                return;
            };
            self.queued.remove(&key);
            match self.swarm.behaviour_mut().kad.start_providing(key.clone()) {
                Ok(query) => {
                    self.stats.announced.fetch_add(1, Ordering::Relaxed);
                    self.announcing.insert(query, key);
                }
                Err(e) => {
                    self.stats.announce_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "an announcement was dropped: this node announces too many blobs for its record store (peers.max_records)");
                }
            }
        }
    }

    fn lookup(&mut self, digest: String, reply: oneshot::Sender<Vec<Provider>>) {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        if self.lookups.len() >= LOOKUPS_MAX {
            self.stats.lookups_empty.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Vec::new());
            return;
        }
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(RecordKey::new(&digest));
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookup_of.insert(query, id);
        self.lookups.insert(
            id,
            Lookup {
                reply,
                found: Vec::new(),
                waiting: HashSet::new(),
                query_done: false,
                deadline: Instant::now() + self.options.lookup_timeout,
            },
        );
    }

    /// Adds providers a lookup's query found: known registries at once, the rest once dialed.
    fn found_providers(&mut self, id: u64, providers: HashSet<PeerId>) {
        let local = *self.swarm.local_peer_id();
        for peer in providers {
            if peer == local {
                continue;
            }
            let Some(lookup) = self.lookups.get_mut(&id) else {
                return;
            };
            if lookup.found.len() + lookup.waiting.len() >= PROVIDERS_MAX
                || lookup.found.iter().any(|p| p.id == peer)
            {
                continue;
            }
            if let Some(url) = self.urls.get(&peer) {
                lookup.found.push(Provider {
                    id: peer,
                    url: url.clone(),
                });
            } else if lookup.waiting.insert(peer) {
                self.url_waiters.entry(peer).or_default().push(id);
                if !self.swarm.is_connected(&peer) {
                    // Kademlia knows the provider's addresses from its routing table.
                    let _ = self.swarm.dial(DialOpts::peer_id(peer).build());
                }
            }
        }
    }

    fn finish_lookup_if_done(&mut self, id: u64) {
        let done = self
            .lookups
            .get(&id)
            .is_some_and(|l| l.query_done && l.waiting.is_empty());
        if done {
            self.answer(id);
        }
    }

    fn answer(&mut self, id: u64) {
        let Some(lookup) = self.lookups.remove(&id) else {
            return;
        };
        self.lookup_of.retain(|_, l| *l != id);
        for peer in &lookup.waiting {
            if let Some(waiters) = self.url_waiters.get_mut(peer) {
                waiters.retain(|w| *w != id);
                if waiters.is_empty() {
                    self.url_waiters.remove(peer);
                }
            }
        }
        if lookup.found.is_empty() {
            self.stats.lookups_empty.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .providers_found
            .fetch_add(lookup.found.len() as u64, Ordering::Relaxed);
        let _ = lookup.reply.send(lookup.found);
    }

    fn expire_lookups(&mut self) {
        let now = Instant::now();
        let late: Vec<(u64, bool)> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (*id, l.query_done))
            .collect();
        for (id, query_done) in late {
            if !query_done {
                let query = self
                    .lookup_of
                    .iter()
                    .find(|(_, l)| **l == id)
                    .map(|(q, _)| *q);
                if let Some(mut q) =
                    query.and_then(|q| self.swarm.behaviour_mut().kad.query_mut(&q))
                {
                    q.finish();
                }
            }
            self.answer(id);
        }
    }

    /// A peer's registry became known (or could not be): the lookups waiting for it go on.
    fn registry_known(&mut self, peer: PeerId, url: Option<String>) {
        let Some(waiters) = self.url_waiters.remove(&peer) else {
            return;
        };
        for id in waiters {
            if let Some(lookup) = self.lookups.get_mut(&id) {
                lookup.waiting.remove(&peer);
                if let Some(url) = &url {
                    lookup.found.push(Provider {
                        id: peer,
                        url: url.clone(),
                    });
                }
            }
            self.finish_lookup_if_done(id);
        }
    }

    fn dial_bootstrap(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            let Some(sock) = socket_addr(&addr) else {
                continue;
            };
            // Oneself (a headless Service lists this pod too), and peers connected already.
            if self.own_addrs.contains(&sock)
                || sock.ip().is_unspecified()
                || self.peer_addrs.values().any(|a| a.contains(&sock))
            {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial refused");
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if let Some(a) = socket_addr(&address) {
                    self.own_addrs.insert(a);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if let ConnectedPoint::Dialer { address, .. } = &endpoint
                    && let Some(a) = socket_addr(address)
                {
                    self.peer_addrs.entry(peer_id).or_default().insert(a);
                }
                let remote = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address,
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr,
                };
                if let Some(a) = socket_addr(remote) {
                    self.conn_ips.insert(connection_id, a.ip());
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.conn_ips.remove(&connection_id);
                if num_established == 0 {
                    self.peer_addrs.remove(&peer_id);
                }
                if num_established == 0 && self.members.remove(&peer_id) {
                    self.stats
                        .members
                        .store(self.members.len() as u64, Ordering::Relaxed);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: None,
                error,
                ..
            } => {
                self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "a bootstrap address could not be reached");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "a connection from outside failed");
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %error, "a peer could not be reached");
                if !self.swarm.is_connected(&peer) {
                    // Its registry address is likely stale too: learn it afresh next time.
                    self.urls.remove(&peer);
                    self.registry_known(peer, None);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                connection_id,
                info,
            })) => self.identified(peer_id, connection_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.kad_event(event),
            _ => {}
        }
    }

    fn identified(&mut self, peer: PeerId, connection: ConnectionId, info: identify::Info) {
        let registry = (info.protocol_version == ID_PROTOCOL)
            .then(|| registry_of(&info.agent_version))
            .flatten();
        let (Some((scheme, port)), Some(ip)) = (registry, self.conn_ips.get(&connection).copied())
        else {
            tracing::debug!(%peer, agent = %info.agent_version, "a peer that is not a ferry node (or states no registry) is left alone");
            self.registry_known(peer, None);
            return;
        };
        for addr in info.listen_addrs {
            if let Some(a) = socket_addr(&addr).filter(|a| !a.ip().is_unspecified()) {
                self.peer_addrs.entry(peer).or_default().insert(a);
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
        let url = match ip {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
        };
        if self.urls.len() >= URLS_MAX && !self.urls.contains_key(&peer) {
            // Forgetting one only costs a dial when it is next a provider.
            let drop = self
                .urls
                .keys()
                .find(|p| !self.members.contains(p))
                .copied();
            if let Some(p) = drop.or_else(|| self.urls.keys().next().copied()) {
                self.urls.remove(&p);
            }
        }
        self.urls.insert(peer, url.clone());
        let was_empty = self.members.is_empty();
        self.members.insert(peer);
        self.stats
            .members
            .store(self.members.len() as u64, Ordering::Relaxed);
        if was_empty {
            // The first peer: fill the routing table through it.
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        self.registry_known(peer, Some(url));
    }

    fn kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            kad::QueryResult::StartProviding(result) => {
                if let Some(key) = self.announcing.remove(&id)
                    && let Err(e) = result
                {
                    tracing::debug!(key = ?key, error = %e, "an announcement reached fewer peers than asked");
                }
                self.pump_announcements();
            }
            kad::QueryResult::GetProviders(result) => {
                let Some(lookup) = self.lookup_of.get(&id).copied() else {
                    return;
                };
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                    self.found_providers(lookup, providers);
                }
                if step.last {
                    self.lookup_of.remove(&id);
                    if let Some(l) = self.lookups.get_mut(&lookup) {
                        l.query_done = true;
                    }
                    self.finish_lookup_if_done(lookup);
                }
            }
            _ => {}
        }
    }
}

/// The scheme and port an agent string states: `ferry/<version> registry=<scheme>:<port>`.
fn registry_of(agent: &str) -> Option<(&'static str, u16)> {
    let mut words = agent.split_whitespace();
    if !words.next()?.starts_with("ferry/") {
        return None;
    }
    let value = words.find_map(|w| w.strip_prefix("registry="))?;
    let (scheme, port) = value.split_once(':')?;
    let scheme = match scheme {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some((scheme, port))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_registry_is_read_from_a_ferry_agent_only() {
        assert_eq!(
            registry_of("ferry/0.1.0 registry=http:5000"),
            Some(("http", 5000))
        );
        assert_eq!(
            registry_of("ferry/0.1.0 registry=https:443"),
            Some(("https", 443))
        );
        for bad in [
            "",
            "rust-libp2p/0.1 registry=http:5000",
            "ferry/0.1.0",
            "ferry/0.1.0 registry=ftp:21",
            "ferry/0.1.0 registry=http:0",
            "ferry/0.1.0 registry=http://evil:80",
        ] {
            assert_eq!(registry_of(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_agent_string_is_read_without_panicking(agent in "\\PC{0,100}") {
            let _ = registry_of(&agent);
        }
    }
}
