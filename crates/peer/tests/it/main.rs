//! The peer network on loopback: several nodes in one process, each with its own swarm.

mod dht;
