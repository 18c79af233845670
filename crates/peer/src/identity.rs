//! A node's identity: an ed25519 key pair kept in the data dir, so a restarted node is the same
//! peer (its provider records, other nodes' allow-lists and routing tables stay true).

use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::PeerError;

/// This node's key pair and the peer id derived from it.
#[derive(Clone)]
pub struct NodeIdentity {
    keypair: Keypair,
    id: PeerId,
}

impl std::fmt::Debug for NodeIdentity {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .finish()
    }
}

impl NodeIdentity {
    /// A fresh identity that lives as long as the process (tests; nodes that keep no data dir).
    pub fn ephemeral() -> NodeIdentity {
        NodeIdentity::from_keypair(Keypair::generate_ed25519())
    }

    /// The identity stored at `path`, made (mode 0600, written whole then renamed into place)
    /// when there is none yet.
    pub fn load_or_create(path: &Path) -> Result<NodeIdentity, PeerError> {
        let fail = |what: &str, detail: String| PeerError::Identity {
            path: path.to_path_buf(),
            detail: format!("{what}: {detail}"),
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                    fail(
                        "not a key pair ferry wrote (delete it to make the node a new peer)",
                        e.to_string(),
                    )
                })?;
                Ok(NodeIdentity::from_keypair(keypair))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keypair = Keypair::generate_ed25519();
                let bytes = keypair
                    .to_protobuf_encoding()
                    .map_err(|e| fail("encoding the new key", e.to_string()))?;
                ferry_auth::write_secret_file(path, &bytes)
                    .map_err(|e| fail("writing the new key", e.to_string()))?;
                Ok(NodeIdentity::from_keypair(keypair))
            }
            Err(e) => Err(fail("reading", e.to_string())),
        }
    }

    fn from_keypair(keypair: Keypair) -> NodeIdentity {
        let id = keypair.public().to_peer_id();
        NodeIdentity { keypair, id }
    }

    /// The peer id, as other nodes and allow-lists name this node.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Signs `msg` with the node's key.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        // ed25519 signing cannot fail; the Result is for key types ferry never makes.
        self.keypair.sign(msg).unwrap_or_default()
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

/// Whether `sig` is `peer`'s signature of `msg`: peer ids of ed25519 keys carry the public key.
pub fn verify(peer: &PeerId, msg: &[u8], sig: &[u8]) -> bool {
    let hash = peer.as_ref();
    // 0x00: the identity multihash, whose digest is the protobuf-encoded public key.
    if hash.code() != 0x00 {
        return false;
    }
    match libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()) {
        Ok(key) => key.verify(msg, sig),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_restart_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer/identity.key");
        let first = NodeIdentity::load_or_create(&path).unwrap();
        let again = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(first.id(), again.id());
        let sig = again.sign(b"sha256:abc");
        assert!(verify(&first.id(), b"sha256:abc", &sig));
        assert!(!verify(&first.id(), b"sha256:abd", &sig));
        assert!(!verify(
            &NodeIdentity::ephemeral().id(),
            b"sha256:abc",
            &sig
        ));
    }

    #[test]
    fn a_damaged_identity_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"not a key").unwrap();
        let e = NodeIdentity::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("delete it"), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not a key",
            "nothing overwritten"
        );
    }
}
