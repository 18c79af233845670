//! Who may take part. Two optional gates, either or both:
//! - a **cluster key** (32 bytes, the go-libp2p `swarm.key` format or 64 hex digits): the DHT runs
//!   as a libp2p private network under it (a node without the key cannot even finish a handshake),
//!   and a node's blob requests to another carry an HMAC under a key derived from it;
//! - an **allow-list** of peer ids: only those connect, and a node's blob requests carry its
//!   ed25519 signature, which the serving node checks against the list.
//!
//! Without either, any node that reaches the peer port takes part (a trusted network only).
//! A proof covers the asking node, the digest and the time; it is accepted for [`MAX_SKEW`] either
//! side of the serving node's clock, so a captured header buys at most that blob for that long.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use libp2p::PeerId;
use sha2::{Digest as _, Sha256};

use crate::PeerError;
use crate::identity::{NodeIdentity, verify};

/// How far a proof's time may be from the serving node's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A cluster's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key `bytes`.
    pub fn new(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// Reads a key file: go-libp2p's `swarm.key` (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex
    /// digits) or just the 64 hex digits.
    pub fn read(path: &Path) -> Result<ClusterKey, PeerError> {
        let text = std::fs::read_to_string(path).map_err(|e| PeerError::ClusterKey {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        ClusterKey::parse(&text).map_err(|detail| PeerError::ClusterKey {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parses a key file's text.
    pub fn parse(text: &str) -> Result<ClusterKey, String> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let hex_digits = match lines.as_slice() {
            [key] => *key,
            ["/key/swarm/psk/1.0.0/", "/base16/", key] => *key,
            ["/key/swarm/psk/1.0.0/", encoding, _] => {
                return Err(format!(
                    "the key is in encoding {encoding:?}; ferry reads /base16/ (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')"
                ));
            }
            _ => {
                return Err(
                    "expected 64 hex digits, alone or after the lines /key/swarm/psk/1.0.0/ and /base16/ (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')".into(),
                );
            }
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut key)
            .map_err(|e| format!("the key must be 64 hex digits (32 bytes): {e}"))?;
        Ok(ClusterKey(key))
    }

    pub(crate) fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The HTTP proofs' key: derived, so the DHT's stream cipher and the MAC never share one.
    fn mac_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"ferry peer request mac\n");
        h.update(self.0);
        h.finalize().into()
    }
}

/// The gates a node applies to peers, and the proofs it sends them.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// The cluster key, when members share one.
    pub key: Option<ClusterKey>,
    /// The peers allowed to take part, when listed (empty: no list).
    pub allow: HashSet<PeerId>,
}

/// Why a peer's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "the request carries no proof of membership (ferry-peer-auth); this node's cluster requires one"
    )]
    Missing,
    #[error("the membership proof is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "the membership proof is {0} s away from this node's clock (at most 300 s are accepted; check NTP)"
    )]
    Skew(u64),
    #[error("the membership proof does not match this node's cluster key")]
    WrongKey,
    #[error("the asking node {0} is not on this node's allow-list")]
    NotAllowed(String),
    #[error("the asking node's signature does not verify")]
    BadSignature,
}

impl Membership {
    /// Whether anything is checked.
    pub fn is_open(&self) -> bool {
        self.key.is_none() && self.allow.is_empty()
    }

    /// The proof that `identity` (named `node` in the request) may ask for `digest` at `now`
    /// (seconds since the epoch): the value of the `ferry-peer-auth` header, or `None` when this
    /// cluster checks nothing.
    pub fn prove(
        &self,
        identity: &NodeIdentity,
        node: &str,
        digest: &str,
        now: u64,
    ) -> Option<String> {
        if self.is_open() {
            return None;
        }
        let msg = message(node, digest, now);
        let mut proof = format!("t={now}");
        if let Some(key) = &self.key {
            proof.push_str(";mac=");
            proof.push_str(&hex::encode(hmac_sha256(&key.mac_key(), &msg)));
        }
        if !self.allow.is_empty() {
            proof.push_str(";sig=");
            proof.push_str(&hex::encode(identity.sign(&msg)));
        }
        Some(proof)
    }

    /// Whether the request of `node` for `digest`, carrying `proof`, is a member's.
    pub fn check(
        &self,
        node: &str,
        digest: &str,
        proof: Option<&str>,
        now: u64,
    ) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let proof = proof.ok_or(Denied::Missing)?;
        let (mut t, mut mac, mut sig) = (None, None, None);
        for part in proof.split(';') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or(Denied::Malformed("expected name=value parts"))?;
            let slot = match name {
                "t" => &mut t,
                "mac" => &mut mac,
                "sig" => &mut sig,
                _ => return Err(Denied::Malformed("unknown part")),
            };
            if slot.replace(value).is_some() {
                return Err(Denied::Malformed("a part given twice"));
            }
        }
        let t: u64 = t
            .ok_or(Denied::Malformed("no time"))?
            .parse()
            .map_err(|_| Denied::Malformed("the time is not a number"))?;
        let skew = t.abs_diff(now);
        if skew > MAX_SKEW.as_secs() {
            return Err(Denied::Skew(skew));
        }
        let msg = message(node, digest, t);
        if let Some(key) = &self.key {
            let given = hex::decode(mac.ok_or(Denied::WrongKey)?)
                .map_err(|_| Denied::Malformed("the mac is not hex"))?;
            if !constant_time_eq(&given, &hmac_sha256(&key.mac_key(), &msg)) {
                return Err(Denied::WrongKey);
            }
        }
        if !self.allow.is_empty() {
            let peer: PeerId = node
                .parse()
                .map_err(|_| Denied::NotAllowed(node.to_owned()))?;
            if !self.allow.contains(&peer) {
                return Err(Denied::NotAllowed(node.to_owned()));
            }
            let sig = hex::decode(sig.ok_or(Denied::BadSignature)?)
                .map_err(|_| Denied::Malformed("the signature is not hex"))?;
            if !verify(&peer, &msg, &sig) {
                return Err(Denied::BadSignature);
            }
        }
        Ok(())
    }
}

fn message(node: &str, digest: &str, t: u64) -> Vec<u8> {
    format!("ferry-peer/1\n{node}\n{digest}\n{t}").into_bytes()
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    padded[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(padded.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(padded.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_1() {
        // RFC 4231 test case 1 uses a 20-byte key; padded with zeros to 32 it is the same HMAC
        // (keys shorter than the block are zero-padded by definition).
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn key_files_in_both_forms_read_the_same_and_bad_ones_say_how_to_make_one() {
        let hex64 = "0123456789abcdef".repeat(4);
        let plain = ClusterKey::parse(&format!("{hex64}\n")).unwrap();
        let swarm =
            ClusterKey::parse(&format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex64}\n")).unwrap();
        assert_eq!(plain, swarm);
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            "/key/swarm/psk/1.0.0/\n/base64/\nAAAA",
        ] {
            let e = ClusterKey::parse(bad).unwrap_err();
            assert!(e.contains("hex") || e.contains("base16"), "{bad:?}: {e}");
        }
    }

    fn members() -> (NodeIdentity, NodeIdentity, Membership) {
        let (a, b) = (NodeIdentity::ephemeral(), NodeIdentity::ephemeral());
        let m = Membership {
            key: Some(ClusterKey::new([7; 32])),
            allow: [a.id(), b.id()].into_iter().collect(),
        };
        (a, b, m)
    }

    #[test]
    fn a_members_proof_passes_and_every_kind_of_forgery_is_refused() {
        let (a, _b, m) = members();
        let node = a.id().to_string();
        let d = "sha256:00";
        let now = 1_000_000;
        let proof = m.prove(&a, &node, d, now).unwrap();
        assert_eq!(m.check(&node, d, Some(&proof), now + 10), Ok(()));
        // Another blob, too late, no proof.
        assert!(m.check(&node, "sha256:01", Some(&proof), now).is_err());
        assert!(matches!(
            m.check(&node, d, Some(&proof), now + 301),
            Err(Denied::Skew(301))
        ));
        assert_eq!(m.check(&node, d, None, now), Err(Denied::Missing));
        // A stranger with the right key but not on the list.
        let stranger = NodeIdentity::ephemeral();
        let s = stranger.id().to_string();
        let theirs = m.prove(&stranger, &s, d, now).unwrap();
        assert_eq!(
            m.check(&s, d, Some(&theirs), now),
            Err(Denied::NotAllowed(s.clone()))
        );
        // A stranger claiming a member's name: its signature does not verify.
        let claimed = m.prove(&stranger, &node, d, now).unwrap();
        assert_eq!(
            m.check(&node, d, Some(&claimed), now),
            Err(Denied::BadSignature)
        );
        // A node with another cluster key.
        let other = Membership {
            key: Some(ClusterKey::new([8; 32])),
            ..m.clone()
        };
        let wrong = other.prove(&a, &node, d, now).unwrap();
        assert_eq!(m.check(&node, d, Some(&wrong), now), Err(Denied::WrongKey));
    }

    #[test]
    fn an_open_cluster_checks_nothing() {
        let m = Membership::default();
        assert!(m.prove(&NodeIdentity::ephemeral(), "n", "d", 0).is_none());
        assert_eq!(m.check("n", "d", None, 0), Ok(()));
    }

    proptest! {
        #[test]
        fn any_proof_text_is_checked_without_panicking(text in ".{0,200}", node in "[a-zA-Z0-9]{0,60}") {
            let (_a, _b, m) = members();
            prop_assert!(m.check(&node, "sha256:00", Some(&text), 1_000_000).is_err());
        }

        #[test]
        fn any_key_file_text_parses_or_says_why(text in ".{0,200}") {
            let _ = ClusterKey::parse(&text);
        }
    }
}
