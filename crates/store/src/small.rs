//! Small blobs (and manifests) kept in memory within a byte budget, as nginx's open-file cache
//! keeps descriptors: a cached pull of a small image is seven requests for objects of a few
//! kilobytes, where open, stat, read and close cost more than the bytes. Content is named by its
//! digest, so an entry can never be stale; entries are dropped by a second-chance clock when the
//! budget is reached, and when gc or fsck removes the file.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use ferry_oci::Digest;

const SHARDS: usize = 16;

/// What one entry costs beyond its bytes (the map slot with its 32-byte key and `Bytes`, the queue
/// slot, the allocation's header).
const OVERHEAD: usize = 128;

/// Entries are SHA-256 digests' bytes (nearly all content); other content is not kept here.
type Key = [u8; 32];

#[derive(Debug)]
pub(crate) struct SmallBlobs {
    shards: Vec<Mutex<Shard>>,
    budget_per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Key, Entry, foldhash::fast::RandomState>,
    /// Insertion order, for the clock hand.
    order: VecDeque<Key>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    /// Read since the clock hand last passed: spared once.
    used: bool,
}

impl SmallBlobs {
    /// A cache of at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> SmallBlobs {
        SmallBlobs {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            budget_per_shard: budget / SHARDS,
        }
    }

    fn shard(&self, k: &Key) -> std::sync::MutexGuard<'_, Shard> {
        // A digest's bytes are uniformly distributed: no hashing needed to pick a shard.
        let i = (k[0] >> 4) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        if self.budget_per_shard == 0 {
            return None;
        }
        let k = d.sha256_bytes()?;
        let mut s = self.shard(&k);
        let e = s.entries.get_mut(&k)?;
        e.used = true;
        Some(e.bytes.clone())
    }

    pub fn insert(&self, d: &Digest, bytes: &Bytes) {
        let cost = bytes.len() + OVERHEAD;
        if cost > self.budget_per_shard {
            return;
        }
        let Some(k) = d.sha256_bytes() else {
            return;
        };
        let mut s = self.shard(&k);
        if s.entries.contains_key(&k) {
            return;
        }
        while s.bytes + cost > self.budget_per_shard {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            match s.entries.get_mut(&old) {
                Some(e) if e.used => {
                    e.used = false;
                    s.order.push_back(old);
                }
                Some(_) => {
                    if let Some(e) = s.entries.remove(&old) {
                        s.bytes -= e.bytes.len() + OVERHEAD;
                    }
                }
                // Removed earlier (gc): its queue slot just goes.
                None => {}
            }
        }
        s.entries.insert(
            k,
            Entry {
                bytes: bytes.clone(),
                used: false,
            },
        );
        s.order.push_back(k);
        s.bytes += cost;
    }

    pub fn remove(&self, d: &Digest) {
        let Some(k) = d.sha256_bytes() else {
            return;
        };
        let mut s = self.shard(&k);
        if let Some(e) = s.entries.remove(&k) {
            s.bytes -= e.bytes.len() + OVERHEAD;
            s.order.retain(|x| *x != k);
        }
    }

    /// Bytes held, overhead included.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(i: u32, len: usize) -> (Digest, Bytes) {
        let bytes = Bytes::from(vec![i as u8; len]);
        (
            Digest::sha256(&[&i.to_le_bytes()[..], &bytes[..]].concat()),
            bytes,
        )
    }

    proptest! {
        /// Whatever is inserted, read and removed, the cache stays within its budget and every
        /// hit returns the bytes inserted under that digest.
        #[test]
        fn the_budget_holds_and_hits_are_exact(ops in proptest::collection::vec((0u32..200, 0usize..3000, 0u8..3), 1..400)) {
            let budget = 64 * 1024;
            let cache = SmallBlobs::new(budget);
            for (i, len, op) in ops {
                let (d, bytes) = blob(i, len % 2000 + i as usize % 7);
                match op {
                    0 => cache.insert(&d, &bytes),
                    1 => if let Some(got) = cache.get(&d) { prop_assert_eq!(got, bytes) },
                    _ => cache.remove(&d),
                }
                prop_assert!(cache.bytes() <= budget);
            }
        }
    }

    #[test]
    fn a_read_entry_outlives_one_that_was_not() {
        let cache = SmallBlobs::new(SHARDS * 3 * (1000 + OVERHEAD));
        // Same first hex digit, so one shard holds all of them: find three such digests.
        let mut same = Vec::new();
        let mut i = 0;
        while same.len() < 4 {
            let (d, b) = blob(i, 1000);
            if d.sha256_bytes().unwrap()[0] >> 4 == 0xa {
                same.push((d, b));
            }
            i += 1;
        }
        for (d, b) in &same[..3] {
            cache.insert(d, b);
        }
        assert!(cache.get(&same[0].0).is_some());
        cache.insert(&same[3].0, &same[3].1);
        assert!(
            cache.get(&same[0].0).is_some(),
            "the entry read was evicted"
        );
        assert!(
            cache.get(&same[1].0).is_none(),
            "the oldest unread entry stayed"
        );
        assert!(cache.get(&same[3].0).is_some());
        assert_eq!(SmallBlobs::new(0).get(&same[0].0), None);
    }
}
