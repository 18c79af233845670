//! ferry's peer network: how a mirror finds which other mirrors hold a blob.
//!
//! Nodes form a Kademlia DHT over libp2p (TCP, noise, yamux; a private network under the cluster
//! key when there is one). A node announces a digest as soon as its fill **starts**, so nodes that
//! miss the same blob moments later stream it from the one already fetching instead of all going to
//! the upstream; it announces everything its store holds at start and again every re-announcement
//! interval, and records of a node that left expire after their TTL.
//!
//! This crate knows nothing of HTTP or the store: [`Network::providers`] answers "who has this
//! digest, and where is their registry", and the mirror (`ferry-server`) fetches from them with
//! the proofs [`Membership`] makes. libp2p appears in no other crate.

mod bootstrap;
mod identity;
mod membership;
mod network;
mod store;

pub use bootstrap::{Bootstrap, tcp_addr};
pub use identity::{NodeIdentity, verify};
pub use libp2p::PeerId;
pub use membership::{ClusterKey, Denied, MAX_SKEW, Membership};
pub use network::{Network, NetworkOptions, NetworkStats, Provider};

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong joining the peer network.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("node identity {path}: {detail}")]
    Identity { path: PathBuf, detail: String },
    #[error("cluster key {path}: {detail}")]
    ClusterKey { path: PathBuf, detail: String },
    #[error("cannot listen for peers on {addr}: {detail} (choose another peers.listen)")]
    Listen { addr: SocketAddr, detail: String },
    #[error("setting up the peer transport: {0}")]
    Transport(String),
}
