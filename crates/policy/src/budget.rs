//! The cache's limits: standing prune rules and eviction under a byte budget by a replacement
//! policy of [`crate::cache`].
//!
//! A round, as the server runs it (and a simulator should): delete the plan of
//! [`CacheBudget::expired`], collect garbage, measure the bytes used, then delete the manifests
//! [`CacheState::round`] chooses for that measurement and the pulls since the last round. The
//! measurement sits between the two because only the store knows what deleting a manifest freed
//! (blobs are shared).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::cache::{Capacity, Evicting, evicting};
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
    /// The replacement policy that chooses what goes: a name [`crate::cache::evicting`] takes
    /// (`lru`, `lfu`, `s3-fifo`); empty means `lru`.
    pub policy: String,
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

    /// The policy's name, `lru` when unset.
    pub fn policy_name(&self) -> &str {
        if self.policy.is_empty() {
            "lru"
        } else {
            &self.policy
        }
    }

    /// The state a server keeps between rounds to evict with the budget's policy; an error naming
    /// the policies there are when the name is not one.
    pub fn state(&self) -> Result<CacheState, UnknownPolicy> {
        CacheState::new(self.policy_name(), self.max_bytes)
    }

    /// The manifests to delete, least recently accessed first, until `used` bytes fit the budget:
    /// only of repositories `cached` accepts, never a pinned one. Empty when within budget. The
    /// stateless form of [`CacheState::round`] with LRU, from access times alone.
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

/// A policy name the budget cannot evict with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cache policy {0:?}: use lru, lfu or s3-fifo")]
pub struct UnknownPolicy(pub String);

/// What the budget's replacement policy knows of the cache between rounds: the cached images it
/// holds (keyed by manifest), in its own order. Each image weighs its bytes ([`Item::bytes`], shared
/// layers counted in every image, as the simulator counts objects), the policy's capacity is the
/// budget, and pinned images and images pushed to ferry never enter it.
pub struct CacheState {
    policy: Box<dyn Evicting>,
    /// [`policy_id`] → (manifest, weight admitted with).
    held: HashMap<u64, (ManifestKey, u64)>,
    rounds: u64,
}

impl std::fmt::Debug for CacheState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheState")
            .field("policy", &self.policy.name())
            .field("held", &self.held.len())
            .finish()
    }
}

impl CacheState {
    /// An empty state for policy `name` under `max_bytes` (0: no limit, nothing is ever chosen).
    pub fn new(name: &str, max_bytes: u64) -> Result<CacheState, UnknownPolicy> {
        let capacity = Capacity::Bytes(if max_bytes == 0 { u64::MAX } else { max_bytes });
        Ok(CacheState {
            policy: evicting(name, capacity).ok_or_else(|| UnknownPolicy(name.to_owned()))?,
            held: HashMap::new(),
            rounds: 0,
        })
    }

    /// One round. `units` are the evictable units now stored ([`evictable_units`]), `pulls` the
    /// manifests pulled since the last round in the order they were, `used` the bytes the store
    /// holds now. Returns the manifests to delete, in the order the policy chose them:
    ///
    /// 1. units gone since the last round (or pinned since) are forgotten; units new since then that
    ///    no pull mentions are admitted first, least recently accessed first (on the first round:
    ///    the whole cache, so a restart keeps LRU's order);
    /// 2. the pulls are replayed through the policy, exactly as the simulator replays a trace's
    ///    requests: what the policy evicts on the way goes, unless pulled again before the round
    ///    ended;
    /// 3. while the store would still be over `max_bytes` (pushed images and pinned ones count
    ///    there, not in the policy), the policy is asked for one more victim; units the policy
    ///    never admitted (larger than the whole budget) go last, oldest first.
    pub fn round(
        &mut self,
        units: &[Item<ManifestKey>],
        pulls: &[ManifestKey],
        used: u64,
        max_bytes: u64,
    ) -> Vec<ManifestKey> {
        self.rounds += 1;
        let live: HashMap<&ManifestKey, &Item<ManifestKey>> = units
            .iter()
            .filter(|u| !u.pinned)
            .map(|u| (&u.key, u))
            .collect();
        let gone: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (key, _))| !live.contains_key(key))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.forget(id);
            self.policy.remove(id);
        }
        let pulled: HashSet<&ManifestKey> = pulls.iter().collect();
        let mut new: Vec<&Item<ManifestKey>> = live
            .values()
            .filter(|u| !self.held.contains_key(&policy_id(&u.key)) && !pulled.contains(&u.key))
            .copied()
            .collect();
        new.sort_by(|a, b| (a.last_access, &a.key).cmp(&(b.last_access, &b.key)));
        for unit in new {
            self.access(&unit.key, unit.bytes);
        }
        for key in pulls {
            if let Some(unit) = live.get(key) {
                self.access(key, unit.bytes);
            }
        }
        let mut victims: Vec<ManifestKey> = Vec::new();
        let mut freed = 0u64;
        let mut collect = |state: &mut CacheState, victims: &mut Vec<ManifestKey>| {
            for id in state.policy.take_evicted() {
                // Evicted, then pulled again within the round: it stays.
                if state.policy.contains(id) {
                    continue;
                }
                if let Some((key, _)) = state.forget(id)
                    && let Some(unit) = live.get(&key)
                {
                    freed += unit.bytes;
                    victims.push(key);
                }
            }
            freed
        };
        let mut freed_now = collect(self, &mut victims);
        if max_bytes == 0 {
            return victims;
        }
        while used.saturating_sub(freed_now) > max_bytes && self.policy.evict() {
            freed_now = collect(self, &mut victims);
        }
        if used.saturating_sub(freed_now) > max_bytes {
            let chosen: HashSet<ManifestKey> = victims.iter().cloned().collect();
            let outside: Vec<Item<ManifestKey>> = units
                .iter()
                .filter(|u| {
                    !u.pinned
                        && !chosen.contains(&u.key)
                        && !self.held.contains_key(&policy_id(&u.key))
                })
                .cloned()
                .collect();
            victims.extend(lru_victims(&outside, used - freed_now, max_bytes));
        }
        victims
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Rounds run.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Images the policy holds.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether the policy holds no image.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn access(&mut self, key: &ManifestKey, bytes: u64) {
        let id = policy_id(key);
        self.held.entry(id).or_insert_with(|| (key.clone(), bytes));
        self.policy.access(id, bytes);
        if !self.policy.contains(id) {
            // Larger than the whole budget: the policy never admits it.
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u64) -> Option<(ManifestKey, u64)> {
        self.held.remove(&id)
    }
}

/// The key a manifest has in the policy: the same every time it comes back, so policies that
/// remember evicted keys (S3-FIFO's ghost FIFO) recognize it.
fn policy_id(key: &ManifestKey) -> u64 {
    use std::hash::{Hash, Hasher};
    // Unkeyed SipHash: deterministic; 64 bits make a collision among a store's manifests unlikely
    // enough (one in 10^10 for 60,000 of them) that it costs at most one wrong eviction.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
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

    fn unit_key(k: u8) -> ManifestKey {
        ManifestKey {
            repository: format!("docker.io/r{k}"),
            digest: crate::test_inventory::digest(k),
        }
    }

    fn unit_bytes(k: u8) -> u64 {
        100 + 37 * u64::from(k)
    }

    /// What the trace simulator does with a policy (`ferry_trace::simulate` builds it with the same
    /// constructor and calls `access` per request), against what the mirror does: rounds of
    /// [`CacheState::round`] over a store that caches what is pulled and deletes the victims.
    /// After every round both hold the same images.
    fn simulator_and_mirror_agree(
        policy: &str,
        pulls: &[u8],
        rounds: &[usize],
        max_bytes: u64,
    ) -> Result<(), TestCaseError> {
        let names: Vec<ManifestKey> = (0..16u8).map(unit_key).collect();
        let mut simulated =
            crate::cache::evicting(policy, Capacity::Bytes(max_bytes)).expect("a known policy");
        let mut state = CacheState::new(policy, max_bytes).unwrap();
        let mut stored: BTreeMap<ManifestKey, u64> = BTreeMap::new();
        let mut at = 0;
        let mut ends: Vec<usize> = rounds.iter().map(|r| r % (pulls.len() + 1)).collect();
        ends.push(pulls.len());
        ends.sort_unstable();
        for end in ends {
            let round = &pulls[at..end];
            at = end;
            for &k in round {
                simulated.access(u64::from(k), unit_bytes(k));
                // A pull of an image the mirror does not hold caches it.
                stored.insert(names[usize::from(k)].clone(), 0);
            }
            let units: Vec<Item<ManifestKey>> = stored
                .keys()
                .map(|key| Item {
                    key: key.clone(),
                    bytes: unit_bytes(key.digest_byte()),
                    last_access: 0,
                    pinned: false,
                })
                .collect();
            let used = units.iter().map(|u| u.bytes).sum();
            let keys: Vec<ManifestKey> = round
                .iter()
                .map(|&k| names[usize::from(k)].clone())
                .collect();
            for victim in state.round(&units, &keys, used, max_bytes) {
                prop_assert!(
                    stored.remove(&victim).is_some(),
                    "{victim:?} was not stored"
                );
            }
            let held: Vec<u8> = (0..16u8)
                .filter(|&k| simulated.contains(u64::from(k)))
                .collect();
            let mut kept: Vec<u8> = stored.keys().map(ManifestKey::digest_byte).collect();
            kept.sort_unstable();
            prop_assert_eq!(&held, &kept, "{} after {} pulls", policy, end);
        }
        Ok(())
    }

    impl ManifestKey {
        fn digest_byte(&self) -> u8 {
            self.repository["docker.io/r".len()..]
                .parse()
                .expect("a test key")
        }
    }

    #[test]
    fn the_mirror_evicts_with_the_configured_policy_in_pull_order() {
        // Three images of 100, 137 and 174 bytes under 320: A is pulled thrice, then B, then C.
        // LRU drops A (least recent), LFU drops B (pulled once, before C).
        let (a, b, c) = (0u8, 1, 2);
        let pulls = [a, a, a, b, c];
        for (policy, victim) in [("lru", a), ("lfu", b)] {
            let mut state = CacheState::new(policy, 320).unwrap();
            let units: Vec<Item<ManifestKey>> = [a, b, c]
                .iter()
                .map(|&k| Item {
                    key: unit_key(k),
                    bytes: unit_bytes(k),
                    last_access: 0,
                    pinned: false,
                })
                .collect();
            let keys: Vec<ManifestKey> = pulls.iter().map(|&k| unit_key(k)).collect();
            assert_eq!(
                state.round(&units, &keys, 411, 320),
                vec![unit_key(victim)],
                "{policy}"
            );
        }
    }

    #[test]
    fn pushed_bytes_over_the_budget_take_more_victims_in_the_policys_order() {
        // The policy's images fit (237 of 1000), but the store holds 1200 bytes: LFU gives up B
        // (pulled once) before A (pulled twice), then A too if needed.
        let units: Vec<Item<ManifestKey>> = [0u8, 1]
            .iter()
            .map(|&k| Item {
                key: unit_key(k),
                bytes: unit_bytes(k),
                last_access: 0,
                pinned: false,
            })
            .collect();
        let mut state = CacheState::new("lfu", 1000).unwrap();
        let pulls = [unit_key(0), unit_key(1), unit_key(0)];
        assert_eq!(state.round(&units, &pulls, 1100, 1000), vec![unit_key(1)]);
        assert_eq!(state.round(&units[..1], &[], 1200, 1000), vec![unit_key(0)]);
    }

    #[test]
    fn an_image_larger_than_the_budget_still_goes_when_over() {
        let big = Item {
            key: unit_key(3),
            bytes: 5000,
            last_access: 0,
            pinned: false,
        };
        let mut state = CacheState::new("s3-fifo", 1000).unwrap();
        assert_eq!(
            state.round(
                std::slice::from_ref(&big),
                std::slice::from_ref(&big.key),
                5000,
                1000
            ),
            vec![big.key]
        );
    }

    #[test]
    fn unknown_policies_are_named_with_the_known_ones() {
        let e = CacheState::new("arc", 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown cache policy \"arc\": use lru, lfu or s3-fifo"
        );
        let budget = CacheBudget::default();
        assert_eq!(budget.policy_name(), "lru");
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
        fn the_mirror_and_the_simulator_choose_the_same_victims(
            pulls in proptest::collection::vec(0u8..16, 0..120),
            rounds in proptest::collection::vec(0usize..121, 0..6),
            // Every image fits alone (at most 655 bytes): a mirror stores what is pulled whatever
            // its size, where a simulated cache does not admit it (that case has its own test).
            max_bytes in 655u64..3000,
        ) {
            for policy in ["lru", "lfu", "s3-fifo"] {
                simulator_and_mirror_agree(policy, &pulls, &rounds, max_bytes)?;
            }
        }

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
                policy: String::new(),
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
                policy: String::new(),
                pinned: vec!["*:t1".into()],
                expiry: vec![ExpiryRule { accessed_before: Some(Duration::from_secs(30)), ..ExpiryRule::default() }],
            };
            prop_assert_eq!(budget.victims(&inv, used, cached), budget.victims(&shuffled, used, cached));
            prop_assert_eq!(budget.expired(&inv, 100, cached), budget.expired(&shuffled, 100, cached));
            prop_assert_eq!(evictable_units(&inv, &budget.pinned, cached), evictable_units(&shuffled, &budget.pinned, cached));
        }
    }
}
