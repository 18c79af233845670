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
mod tls_serve;
mod tour;
mod trace;
mod trace_replay;

use std::path::Path;

/// The binary under test.
pub fn ferry_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// The repositories a registry at `base` lists in its catalog (what a mirror has cached).
pub async fn catalog(base: &str) -> Vec<String> {
    let body: serde_json::Value = client()
        .get(format!("{base}/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("{base}/v2/_catalog: {body}"))
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
