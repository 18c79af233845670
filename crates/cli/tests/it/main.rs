//! End-to-end tests of the `ferry` binary with real clients and registries on 127.0.0.1.

mod archives;
mod cli;
mod copy;
mod copy_tls;
mod crash;
mod faults;
mod helm;
mod info;
mod inspect;
mod inventory;
mod load;
mod mirror;
mod p2p;
mod p2p_dht;
mod peers;
mod security;
mod storage;
mod store;
mod tour;
mod trace;
mod trace_replay;

use std::path::Path;

/// The binary under test.
pub fn ferry_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
