//! Remembers basic credentials that verified, so bcrypt (50–100 ms at cost 10) runs once per
//! client and TTL rather than once per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use ring::hmac;
use ring::rand::SystemRandom;

/// Default number of cached credentials.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Default lifetime of a cached success, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Successful `(user, password)` checks, keyed by an HMAC under a key drawn at startup, so no
/// password (nor an offline-crackable fast hash of one) is kept in memory.
///
/// Bounded: never more than `capacity` entries. Inserting into a full cache first drops expired
/// entries and entries of another generation, and if it is still full, the entry that expires
/// soonest (with one TTL for all, the oldest). One mutex; every operation is one HMAC and a map
/// access, except that full-cache sweep, which scans the map.
pub struct CredentialCache {
    key: hmac::Key,
    capacity: usize,
    ttl_secs: u64,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    generation: u64,
    expires_at: u64,
}

/// The random HMAC key could not be drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl CredentialCache {
    /// A cache of at most `capacity` entries, each valid for `ttl_secs`.
    pub fn new(capacity: usize, ttl_secs: u64) -> Result<Self, RandomError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| RandomError)?;
        Ok(CredentialCache {
            key,
            capacity,
            ttl_secs,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// [`DEFAULT_CAPACITY`] entries, [`DEFAULT_TTL_SECS`].
    pub fn with_defaults() -> Result<Self, RandomError> {
        Self::new(DEFAULT_CAPACITY, DEFAULT_TTL_SECS)
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        // Length-prefixed, so no (user, password) split of the same bytes collides.
        context.update(&(user.len() as u64).to_be_bytes());
        context.update(user.as_bytes());
        context.update(password.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }

    /// Whether this pair verified under the htpasswd `generation` less than a TTL before `now`
    /// (unix seconds).
    pub fn get(&self, user: &str, password: &str, generation: u64, now: u64) -> bool {
        let fingerprint = self.fingerprint(user, password);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&fingerprint) {
            Some(entry) if entry.generation == generation && now < entry.expires_at => true,
            Some(_) => {
                entries.remove(&fingerprint);
                false
            }
            None => false,
        }
    }

    /// Records a successful check of this pair under `generation` at `now`. Call it only after
    /// the password verified.
    pub fn insert(&self, user: &str, password: &str, generation: u64, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let fingerprint = self.fingerprint(user, password);
        let entry = Entry {
            generation,
            expires_at: now.saturating_add(self.ttl_secs),
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&fingerprint) {
            entries.retain(|_, e| e.generation == generation && now < e.expires_at);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at)
                    .map(|(k, _)| *k);
                if let Some(k) = soonest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(fingerprint, entry);
    }

    /// Number of entries held (some may have expired).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("capacity", &self.capacity)
            .field("ttl_secs", &self.ttl_secs)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hit_until_expiry_and_generation_bump() {
        let cache = CredentialCache::new(10, 300).expect("rng");
        assert!(!cache.get("alice", "pw", 1, 1000));
        cache.insert("alice", "pw", 1, 1000);
        assert!(cache.get("alice", "pw", 1, 1299));
        assert!(!cache.get("alice", "pw2", 1, 1000));
        assert!(!cache.get("alicepw", "", 1, 1000));
        assert!(!cache.get("alice", "pw", 1, 1300), "expired");
        cache.insert("alice", "pw", 1, 2000);
        assert!(!cache.get("alice", "pw", 2, 2000), "htpasswd reloaded");
        assert!(
            !cache.get("alice", "pw", 1, 2000),
            "the stale entry was dropped"
        );
    }

    #[test]
    fn full_cache_drops_expired_then_oldest() {
        let cache = CredentialCache::new(2, 100).expect("rng");
        cache.insert("a", "1", 0, 0);
        cache.insert("b", "1", 0, 50);
        cache.insert("c", "1", 0, 120); // a expired
        assert!(cache.get("b", "1", 0, 120) && cache.get("c", "1", 0, 120));
        cache.insert("d", "1", 0, 130); // none expired: b is the oldest
        assert_eq!(cache.len(), 2);
        assert!(!cache.get("b", "1", 0, 130));
        assert!(cache.get("c", "1", 0, 130) && cache.get("d", "1", 0, 130));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = CredentialCache::new(0, 100).expect("rng");
        cache.insert("a", "1", 0, 0);
        assert!(cache.is_empty());
        assert!(format!("{cache:?}").contains("capacity: 0"));
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_keeps_the_latest(
            capacity in 1usize..8,
            ops in proptest::collection::vec((0u8..20, 0u64..3, 0u64..50), 1..60),
        ) {
            let cache = CredentialCache::new(capacity, 30).expect("rng");
            let mut now = 0;
            for (user, generation, dt) in ops {
                now += dt;
                let user = user.to_string();
                cache.insert(&user, "pw", generation, now);
                prop_assert!(cache.len() <= capacity);
                prop_assert!(cache.get(&user, "pw", generation, now));
                prop_assert!(!cache.get(&user, "pw", generation + 1, now));
            }
        }
    }
}
