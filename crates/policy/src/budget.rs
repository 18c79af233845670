//! The cache's limits: standing prune rules and least-recently-used eviction under a byte budget.
//!
//! A round, as the server runs it (and a simulator should): delete the plan of
//! [`CacheBudget::expired`], collect garbage, measure the bytes used, then delete the manifests of
//! [`CacheBudget::victims`] for that measurement. The measurement sits between the two because only
//! the store knows what deleting a manifest freed (blobs are shared).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::image::{Image, ManifestKey};
use crate::prune::{PrunePlan, PruneRule, Selection, is_pinned, prune_plan};

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

/// The evictable units of `inventory`: one per manifest of a repository `evictable` accepts,
/// pinned if any of its names matches a `pinned` pattern, last accessed when any name last was.
/// Sorted by key.
pub fn evictable_units(
    inventory: &[Image],
    pinned: &[String],
    evictable: impl Fn(&str) -> bool,
) -> Vec<Item<ManifestKey>> {
    let mut by_key: BTreeMap<ManifestKey, Item<ManifestKey>> = BTreeMap::new();
    for i in inventory.iter().filter(|i| evictable(&i.repository)) {
        let pin = is_pinned(pinned, i);
        // Every name of a manifest reports the same size and times; max keeps the unit
        // independent of which name comes first.
        by_key
            .entry(i.manifest())
            .and_modify(|u| {
                u.pinned |= pin;
                u.bytes = u.bytes.max(i.bytes);
                u.last_access = u.last_access.max(i.last_access());
            })
            .or_insert_with(|| Item {
                key: i.manifest(),
                bytes: i.bytes,
                last_access: i.last_access(),
                pinned: pin,
            });
    }
    by_key.into_values().collect()
}

/// A standing prune rule (`[[cache.prune]]`): all of its criteria must hold.
#[derive(Debug, Clone, Default)]
pub struct ExpiryRule {
    /// Not pulled for this long (never-pulled images count from when they were stored).
    pub accessed_before: Option<Duration>,
    /// Stored this long ago.
    pub created_before: Option<Duration>,
    /// `repository:tag` (repository as cached, e.g. `docker.io/library/alpine:3.20`) must match.
    pub pattern: Option<regex_lite::Regex>,
}

impl ExpiryRule {
    /// What the rule selects at `now` (seconds).
    pub fn selection(&self, now: u64) -> Selection {
        let before = |d: Option<Duration>| d.map(|d| now.saturating_sub(d.as_secs()));
        Selection {
            rule: PruneRule {
                accessed_before: before(self.accessed_before),
                created_before: before(self.created_before),
            },
            pattern: self.pattern.clone(),
            repository: None,
            pinned: Vec::new(),
        }
    }
}

/// The cache's limits.
#[derive(Debug, Clone, Default)]
pub struct CacheBudget {
    /// Bytes the store may hold before cached images are evicted; 0 means no limit.
    pub max_bytes: u64,
    /// `repository:tag` patterns (`*` wildcard, repository as cached, e.g. `docker.io/library/*`)
    /// never evicted.
    pub pinned: Vec<String>,
    /// Standing prune rules: cached images any of them selects are removed every round.
    pub expiry: Vec<ExpiryRule>,
}

impl CacheBudget {
    /// Whether `image` is protected by a pinned pattern.
    pub fn is_pinned(&self, image: &Image) -> bool {
        is_pinned(&self.pinned, image)
    }

    /// Whether `used` bytes exceed the budget.
    pub fn over(&self, used: u64) -> bool {
        self.max_bytes != 0 && used > self.max_bytes
    }

    /// What the standing prune rules remove at `now` (seconds): images of repositories `cached`
    /// accepts that are not pinned and that some rule selects.
    pub fn expired(
        &self,
        inventory: &[Image],
        now: u64,
        cached: impl Fn(&str) -> bool,
    ) -> PrunePlan {
        let selections: Vec<Selection> = self.expiry.iter().map(|r| r.selection(now)).collect();
        prune_plan(inventory, |i| {
            cached(&i.repository) && !self.is_pinned(i) && selections.iter().any(|s| s.matches(i))
        })
    }

    /// The manifests to delete, least recently accessed first, until `used` bytes fit the budget:
    /// only of repositories `cached` accepts, never a pinned one. Empty when within budget.
    pub fn victims(
        &self,
        inventory: &[Image],
        used: u64,
        cached: impl Fn(&str) -> bool,
    ) -> Vec<ManifestKey> {
        if !self.over(used) {
            return Vec::new();
        }
        lru_victims(
            &evictable_units(inventory, &self.pinned, cached),
            used,
            self.max_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_inventory::{REPOSITORIES, image, inventory, inventory_and_shuffled};
    use proptest::prelude::*;

    fn item(key: u32, bytes: u64, last: u64, pinned: bool) -> Item<u32> {
        Item {
            key,
            bytes,
            last_access: last,
            pinned,
        }
    }

    fn cached(repository: &str) -> bool {
        repository.starts_with("docker.io/")
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
    fn one_unit_per_cached_manifest_pinned_by_any_name() {
        let inv = [
            image("docker.io/app", Some("keep"), 1),
            image("docker.io/app", Some("other"), 1),
            image("docker.io/app", Some("x"), 2),
            image("local/app", Some("keep"), 1),
        ];
        let u = evictable_units(&inv, &["docker.io/app:keep".into()], cached);
        assert_eq!(u.len(), 2);
        let pinned: Vec<bool> = u.iter().map(|i| i.pinned).collect();
        let first = inv[0].manifest();
        assert_eq!(pinned, u.iter().map(|i| i.key == first).collect::<Vec<_>>());
    }

    #[test]
    fn standing_rules_select_by_age_at_now_and_spare_pinned_and_pushed_images() {
        let mut old = image("docker.io/app", Some("old"), 1);
        old.created = 100;
        let mut pinned = image("docker.io/app", Some("pinned"), 2);
        pinned.created = 100;
        let mut fresh = image("docker.io/app", Some("fresh"), 3);
        fresh.created = 100;
        fresh.last_pulled = Some(950);
        let mut pushed = image("local/app", Some("old"), 1);
        pushed.created = 100;
        let budget = CacheBudget {
            pinned: vec!["*:pinned".into()],
            expiry: vec![ExpiryRule {
                accessed_before: Some(Duration::from_secs(100)),
                ..ExpiryRule::default()
            }],
            ..CacheBudget::default()
        };
        let plan = budget.expired(&[old.clone(), pinned, fresh, pushed], 1000, cached);
        assert_eq!(plan.manifests, vec![old.manifest()]);
        assert_eq!(plan.images, vec!["docker.io/app:old".to_owned()]);
        assert!(plan.tags.is_empty());
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

        #[test]
        fn a_unit_is_pinned_iff_some_name_of_it_is(inv in inventory(), pin in 0usize..5) {
            let pinned = vec![format!("{}:*", REPOSITORIES[pin % REPOSITORIES.len()]), format!("*:t{pin}")];
            let u = evictable_units(&inv, &pinned, cached);
            let cached_manifests: std::collections::BTreeSet<ManifestKey> =
                inv.iter().filter(|i| cached(&i.repository)).map(Image::manifest).collect();
            prop_assert_eq!(u.iter().map(|i| i.key.clone()).collect::<std::collections::BTreeSet<_>>(), cached_manifests);
            for unit in &u {
                let names: Vec<&Image> = inv.iter().filter(|i| i.manifest() == unit.key).collect();
                prop_assert_eq!(unit.pinned, names.iter().any(|i| is_pinned(&pinned, i)));
                prop_assert_eq!(unit.bytes, names[0].bytes);
                prop_assert_eq!(unit.last_access, names[0].last_access());
            }
        }

        #[test]
        fn budget_rounds_never_touch_pinned_or_pushed_images(
            inv in inventory(),
            pin in 0usize..5,
            max_bytes in 0u64..3000,
            accessed in proptest::option::of(0u64..120),
            now in 100u64..220,
        ) {
            let budget = CacheBudget {
                max_bytes,
                pinned: vec![format!("*:t{pin}")],
                expiry: accessed.map(|s| ExpiryRule { accessed_before: Some(Duration::from_secs(s)), ..ExpiryRule::default() }).into_iter().collect(),
            };
            let used: u64 = evictable_units(&inv, &[], |_| true).iter().map(|u| u.bytes).sum();
            let expired = budget.expired(&inv, now, cached);
            let victims = budget.victims(&inv, used, cached);
            for i in inv.iter().filter(|i| budget.is_pinned(i) || !cached(&i.repository)) {
                prop_assert!(!victims.contains(&i.manifest()));
                prop_assert!(!expired.manifests.contains(&i.manifest()));
                prop_assert!(!expired.images.contains(&i.name()));
            }
        }

        #[test]
        fn budget_rounds_do_not_depend_on_inventory_order(
            (inv, shuffled) in inventory_and_shuffled(),
            max_bytes in 0u64..3000,
            used in 0u64..6000,
        ) {
            let budget = CacheBudget {
                max_bytes,
                pinned: vec!["*:t1".into()],
                expiry: vec![ExpiryRule { accessed_before: Some(Duration::from_secs(30)), ..ExpiryRule::default() }],
            };
            prop_assert_eq!(budget.victims(&inv, used, cached), budget.victims(&shuffled, used, cached));
            prop_assert_eq!(budget.expired(&inv, 100, cached), budget.expired(&shuffled, 100, cached));
            prop_assert_eq!(evictable_units(&inv, &budget.pinned, cached), evictable_units(&shuffled, &budget.pinned, cached));
        }
    }
}
