//! # ferry-policy
//!
//! Which cached images to drop. The server's byte budget and the trace lab's cache simulator call
//! the same functions, so a simulated hit ratio predicts the server's.
//!
//! Architecture invariant: pure and deterministic — no I/O, no clock (times are passed in as
//! seconds), ties broken by key, so the same input always gives the same answer.

pub mod units;

/// One evictable unit (an image: a manifest and what only it references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<K> {
    /// What identifies it to the caller.
    pub key: K,
    /// Bytes freed by dropping it.
    pub bytes: u64,
    /// Last access, in seconds on the caller's clock.
    pub last_access: u64,
    /// Never evicted.
    pub pinned: bool,
}

/// Least-recently-used eviction: the keys to drop, oldest first, until `used` fits in `budget`.
/// Pinned items are never chosen; if only pinned items remain, the budget stays exceeded.
pub fn lru_victims<K: Clone + Ord>(items: &[Item<K>], used: u64, budget: u64) -> Vec<K> {
    if used <= budget {
        return Vec::new();
    }
    let mut order: Vec<&Item<K>> = items.iter().filter(|i| !i.pinned).collect();
    order.sort_by(|a, b| {
        a.last_access
            .cmp(&b.last_access)
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut over = used - budget;
    let mut out = Vec::new();
    for i in order {
        if over == 0 {
            break;
        }
        out.push(i.key.clone());
        over = over.saturating_sub(i.bytes);
    }
    out
}

/// Criteria for pruning (all given criteria must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneRule {
    /// Last accessed before this time (seconds); never-accessed items count by creation time.
    pub accessed_before: Option<u64>,
    /// Created before this time (seconds).
    pub created_before: Option<u64>,
}

impl PruneRule {
    /// Whether an item created at `created` and last accessed at `accessed` is pruned.
    pub fn matches(&self, created: u64, accessed: Option<u64>) -> bool {
        let accessed_ok = self
            .accessed_before
            .is_none_or(|t| accessed.unwrap_or(created) < t);
        let created_ok = self.created_before.is_none_or(|t| created < t);
        accessed_ok && created_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(key: u32, bytes: u64, last: u64, pinned: bool) -> Item<u32> {
        Item {
            key,
            bytes,
            last_access: last,
            pinned,
        }
    }

    #[test]
    fn evicts_oldest_unpinned_until_it_fits() {
        let items = [
            item(1, 10, 5, false),
            item(2, 10, 1, true),
            item(3, 10, 3, false),
            item(4, 10, 9, false),
        ];
        assert_eq!(lru_victims(&items, 40, 25), vec![3, 1]);
        assert_eq!(lru_victims(&items, 40, 40), Vec::<u32>::new());
        assert_eq!(lru_victims(&items, 40, 0), vec![3, 1, 4]);
    }

    #[test]
    fn prune_rules() {
        let r = PruneRule {
            accessed_before: Some(100),
            created_before: None,
        };
        assert!(r.matches(10, Some(50)));
        assert!(!r.matches(10, Some(150)));
        assert!(r.matches(10, None));
        assert!(!r.matches(200, None));
        let both = PruneRule {
            accessed_before: Some(100),
            created_before: Some(20),
        };
        assert!(both.matches(10, Some(50)) && !both.matches(30, Some(50)));
        assert!(PruneRule::default().matches(1, None));
    }

    proptest! {
        #[test]
        fn victims_are_unpinned_oldest_first_and_enough(
            raw in proptest::collection::vec((1u64..1000, 0u64..100, any::<bool>()), 0..50),
            budget in 0u64..20_000,
        ) {
            let items: Vec<Item<u32>> = raw.iter().enumerate().map(|(k, (b, t, p))| item(k as u32, *b, *t, *p)).collect();
            let used: u64 = items.iter().map(|i| i.bytes).sum();
            let v = lru_victims(&items, used, budget);
            let chosen: Vec<&Item<u32>> = v.iter().map(|k| &items[*k as usize]).collect();
            prop_assert!(chosen.iter().all(|i| !i.pinned));
            prop_assert!(chosen.windows(2).all(|w| w[0].last_access <= w[1].last_access));
            let freed: u64 = chosen.iter().map(|i| i.bytes).sum();
            let evictable: u64 = items.iter().filter(|i| !i.pinned).map(|i| i.bytes).sum();
            if used > budget {
                prop_assert!(used - freed <= budget || freed == evictable);
                // Minimal: without its last victim the budget would not be met.
                if let Some(last) = chosen.last() {
                    prop_assert!(used - (freed - last.bytes) > budget);
                }
            } else {
                prop_assert!(v.is_empty());
            }
        }
    }
}
