//! Incremental cache replacement policies: each access costs O(1), so a simulator can replay
//! millions of requests per second through the same code a cache would evict with.
//!
//! A cache holds objects (identified by a `u64` key) up to a [`Capacity`]: a count of objects, or
//! bytes. [`CachePolicy::access`] says whether the object was in the cache and admits it, evicting
//! what the policy chooses. An object larger than the whole capacity is never admitted (it would
//! evict everything and still not fit); it is a miss every time.

use std::hash::{BuildHasherDefault, Hasher};

/// The policies' maps from keys: keys are already well mixed (the simulator numbers objects, the
/// mirror's budget hashes manifests), so one multiplication spreads them; SipHash, std's default,
/// guards against chosen keys that cannot occur here and costs most of an access.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A map from keys: a hash map, or, for keys a caller numbers densely from 0 (the simulator's
/// objects), a table indexed by the key, which saves the hashing and the probe.
#[derive(Debug, Clone)]
enum KeyMap<V> {
    Hashed(HashMap<u64, V>),
    Dense { slots: Vec<Option<V>>, len: usize },
}

impl<V> Default for KeyMap<V> {
    fn default() -> KeyMap<V> {
        KeyMap::Hashed(HashMap::default())
    }
}

impl<V> KeyMap<V> {
    fn dense() -> KeyMap<V> {
        KeyMap::Dense {
            slots: Vec::new(),
            len: 0,
        }
    }

    fn get(&self, key: &u64) -> Option<&V> {
        match self {
            KeyMap::Hashed(m) => m.get(key),
            KeyMap::Dense { slots, .. } => slots.get(*key as usize)?.as_ref(),
        }
    }

    fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        match self {
            KeyMap::Hashed(m) => m.get_mut(key),
            KeyMap::Dense { slots, .. } => slots.get_mut(*key as usize)?.as_mut(),
        }
    }

    fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }

    fn insert(&mut self, key: u64, value: V) -> Option<V> {
        match self {
            KeyMap::Hashed(m) => m.insert(key, value),
            KeyMap::Dense { slots, len } => {
                let at = key as usize;
                if at >= slots.len() {
                    // Doubling keeps growth amortized O(1) as new objects appear.
                    slots.resize_with((at + 1).max(slots.len() * 2), || None);
                }
                let old = slots[at].replace(value);
                if old.is_none() {
                    *len += 1;
                }
                old
            }
        }
    }

    fn remove(&mut self, key: &u64) -> Option<V> {
        match self {
            KeyMap::Hashed(m) => m.remove(key),
            KeyMap::Dense { slots, len } => {
                let old = slots.get_mut(*key as usize)?.take();
                if old.is_some() {
                    *len -= 1;
                }
                old
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyMap::Hashed(m) => m.len(),
            KeyMap::Dense { len, .. } => *len,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fibonacci hashing of a `u64` key (the only key type the policies use).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; kept correct for any other.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = (self.0 ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How much a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capacity {
    /// At most this many objects, whatever their sizes.
    Objects(u64),
    /// At most this many bytes.
    Bytes(u64),
}

impl Capacity {
    /// What an object of `size` bytes takes of this capacity.
    pub fn weight(self, size: u64) -> u64 {
        match self {
            Capacity::Objects(_) => 1,
            Capacity::Bytes(_) => size,
        }
    }

    /// The capacity in its unit.
    pub fn amount(self) -> u64 {
        match self {
            Capacity::Objects(n) | Capacity::Bytes(n) => n,
        }
    }
}

/// A replacement policy over a cache of one capacity.
pub trait CachePolicy: std::fmt::Debug {
    /// The object `key` of `size` bytes is requested: whether it was cached; afterwards it is
    /// cached (unless it cannot fit at all), and others may have been evicted.
    fn access(&mut self, key: u64, size: u64) -> bool;
    /// Whether `key` is cached, without touching it (a prefetch asks before it admits).
    fn contains(&self, key: u64) -> bool;
    /// The policy's name, as reports print it (`lru`).
    fn name(&self) -> &'static str;
}

/// A policy a real cache evicts with (the mirror's byte budget): the cache deletes what the policy
/// evicts, so the policy reports its victims, can be asked for one more when the cache is over its
/// limit for reasons the policy cannot see, and forgets what was deleted behind its back.
pub trait Evicting: CachePolicy + Send {
    /// Keys evicted since the last call, in eviction order (by accesses and by [`Evicting::evict`]).
    fn take_evicted(&mut self) -> Vec<u64>;
    /// Evicts what the policy would evict next to make room; false when nothing is cached.
    fn evict(&mut self) -> bool;
    /// Forgets `key`, deleted by someone else (not recorded as evicted).
    fn remove(&mut self, key: u64);
}

/// The policies a cache can evict with, by the names `[cache] policy` and `ferry trace simulate`
/// take: `lru`, `lfu`, `s3-fifo`. ARC has no standard form in bytes and the two-tier cache is a
/// model of memory in front of disk, so neither is offered. `None` for any other name.
pub fn evicting(name: &str, capacity: Capacity) -> Option<Box<dyn Evicting>> {
    Some(match name {
        "lru" => Box::new(Lru::new(capacity).with_eviction_log()),
        "lfu" => Box::new(Lfu::new(capacity).with_eviction_log()),
        "s3-fifo" => Box::new(S3Fifo::new(capacity).with_eviction_log()),
        _ => return None,
    })
}

/// Where a policy writes the keys it evicts, when a cache must act on them; the simulator runs
/// without one.
#[derive(Debug, Default)]
struct EvictionLog(Option<Vec<u64>>);

impl EvictionLog {
    fn record(&mut self, key: u64) {
        if let Some(log) = &mut self.0 {
            log.push(key);
        }
    }

    fn take(&mut self) -> Vec<u64> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// No node: the end of a list.
const NIL: u32 = u32::MAX;

/// A doubly linked list of keys in a slab, for O(1) move-to-front and removal.
#[derive(Debug, Default)]
struct List {
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    key: u64,
    weight: u64,
    prev: u32,
    next: u32,
}

impl List {
    fn new() -> List {
        List {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn push_front(&mut self, key: u64, weight: u64) -> u32 {
        let node = Node {
            key,
            weight,
            prev: NIL,
            next: self.head,
        };
        let at = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 cached objects")
            }
        };
        if self.head != NIL {
            self.nodes[self.head as usize].prev = at;
        }
        self.head = at;
        if self.tail == NIL {
            self.tail = at;
        }
        at
    }

    fn unlink(&mut self, at: u32) -> Node {
        let n = self.nodes[at as usize];
        match n.prev {
            NIL => self.head = n.next,
            p => self.nodes[p as usize].next = n.next,
        }
        match n.next {
            NIL => self.tail = n.prev,
            x => self.nodes[x as usize].prev = n.prev,
        }
        self.free.push(at);
        n
    }

    fn pop_back(&mut self) -> Option<Node> {
        (self.tail != NIL).then(|| self.unlink(self.tail))
    }
}

/// Least recently used: a hit moves the object to the front; the back is evicted.
#[derive(Debug)]
pub struct Lru {
    capacity: Capacity,
    used: u64,
    list: List,
    index: KeyMap<u32>,
    log: EvictionLog,
}

impl Lru {
    /// An empty LRU cache of `capacity`.
    pub fn new(capacity: Capacity) -> Lru {
        Lru {
            capacity,
            used: 0,
            list: List::new(),
            index: KeyMap::default(),
            log: EvictionLog::default(),
        }
    }

    /// The same (empty) cache, for keys numbered densely from 0: looked up in a table indexed by
    /// the key, which grows to the largest key seen.
    pub fn with_dense_keys(mut self) -> Lru {
        self.index = KeyMap::dense();
        self
    }

    /// The same cache, recording its victims for [`Evicting::take_evicted`].
    pub fn with_eviction_log(mut self) -> Lru {
        self.log = EvictionLog(Some(Vec::new()));
        self
    }

    fn evict_back(&mut self) -> bool {
        let Some(victim) = self.list.pop_back() else {
            return false;
        };
        self.used -= victim.weight;
        self.index.remove(&victim.key);
        self.log.record(victim.key);
        true
    }

    /// Whether `key` is cached (without touching it).
    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Bytes (or objects) held.
    pub fn used(&self) -> u64 {
        self.used
    }
}

impl CachePolicy for Lru {
    fn access(&mut self, key: u64, size: u64) -> bool {
        let weight = self.capacity.weight(size);
        if let Some(&at) = self.index.get(&key) {
            let n = self.list.unlink(at);
            let front = self.list.push_front(key, n.weight);
            self.index.insert(key, front);
            return true;
        }
        if weight > self.capacity.amount() {
            return false;
        }
        while self.used + weight > self.capacity.amount() {
            let evicted = self.evict_back();
            debug_assert!(evicted, "used > 0 means something is cached");
        }
        let front = self.list.push_front(key, weight);
        self.index.insert(key, front);
        self.used += weight;
        false
    }

    fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    fn name(&self) -> &'static str {
        "lru"
    }
}

impl Evicting for Lru {
    fn take_evicted(&mut self) -> Vec<u64> {
        self.log.take()
    }

    fn evict(&mut self) -> bool {
        self.evict_back()
    }

    fn remove(&mut self, key: u64) {
        if let Some(at) = self.index.remove(&key) {
            self.used -= self.list.unlink(at).weight;
        }
    }
}

/// Least frequently used: evicts the object requested least often while cached, the least
/// recently requested of those on a tie (frequencies start at 1 on admission and are forgotten on
/// eviction, as libCacheSim's LFU counts them). O(1) per access (Shah, Mitra and Matani's
/// structure): a list of frequency buckets in increasing order, only those holding objects, each
/// its objects from least to most recently requested; an access moves an object to the end of the
/// next frequency's bucket, which lies right after its own, and the victim is the first object of
/// the first bucket.
#[derive(Debug)]
pub struct Lfu {
    capacity: Capacity,
    used: u64,
    index: KeyMap<u32>,
    items: Vec<LfuItem>,
    free_items: Vec<u32>,
    buckets: Vec<Bucket>,
    free_buckets: Vec<u32>,
    /// The bucket of the lowest frequency; [`NIL`] when nothing is cached.
    lowest: u32,
    log: EvictionLog,
}

#[derive(Debug, Clone, Copy)]
struct LfuItem {
    key: u64,
    weight: u64,
    bucket: u32,
    /// Neighbours in the bucket: less and more recently requested.
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    frequency: u64,
    /// Least and most recently requested object.
    oldest: u32,
    newest: u32,
    /// Neighbouring buckets: the next lower and higher frequency.
    lower: u32,
    higher: u32,
}

impl Lfu {
    /// An empty LFU cache of `capacity`.
    pub fn new(capacity: Capacity) -> Lfu {
        Lfu {
            capacity,
            used: 0,
            index: KeyMap::default(),
            items: Vec::new(),
            free_items: Vec::new(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            lowest: NIL,
            log: EvictionLog::default(),
        }
    }

    /// The same (empty) cache, for keys numbered densely from 0 (see [`Lru::with_dense_keys`]).
    pub fn with_dense_keys(mut self) -> Lfu {
        self.index = KeyMap::dense();
        self
    }

    /// The same cache, recording its victims for [`Evicting::take_evicted`].
    pub fn with_eviction_log(mut self) -> Lfu {
        self.log = EvictionLog(Some(Vec::new()));
        self
    }

    /// The bucket of `frequency` right above `below` (above none: the lowest), made if missing.
    fn bucket_above(&mut self, below: u32, frequency: u64) -> u32 {
        let above = match below {
            NIL => self.lowest,
            b => self.buckets[b as usize].higher,
        };
        if above != NIL && self.buckets[above as usize].frequency == frequency {
            return above;
        }
        let bucket = Bucket {
            frequency,
            oldest: NIL,
            newest: NIL,
            lower: below,
            higher: above,
        };
        let at = match self.free_buckets.pop() {
            Some(i) => {
                self.buckets[i as usize] = bucket;
                i
            }
            None => {
                self.buckets.push(bucket);
                u32::try_from(self.buckets.len() - 1).expect("fewer than 2^32 frequencies")
            }
        };
        match below {
            NIL => self.lowest = at,
            b => self.buckets[b as usize].higher = at,
        }
        if above != NIL {
            self.buckets[above as usize].lower = at;
        }
        at
    }

    /// Appends item `at` to `bucket` as its most recently requested object.
    fn append(&mut self, bucket: u32, at: u32) {
        let newest = self.buckets[bucket as usize].newest;
        let item = &mut self.items[at as usize];
        item.bucket = bucket;
        item.prev = newest;
        item.next = NIL;
        match newest {
            NIL => self.buckets[bucket as usize].oldest = at,
            n => self.items[n as usize].next = at,
        }
        self.buckets[bucket as usize].newest = at;
    }

    /// Takes item `at` out of its bucket, dropping the bucket if that empties it.
    fn detach(&mut self, at: u32) {
        let LfuItem {
            bucket, prev, next, ..
        } = self.items[at as usize];
        match prev {
            NIL => self.buckets[bucket as usize].oldest = next,
            p => self.items[p as usize].next = next,
        }
        match next {
            NIL => self.buckets[bucket as usize].newest = prev,
            n => self.items[n as usize].prev = prev,
        }
        let b = self.buckets[bucket as usize];
        if b.oldest == NIL {
            match b.lower {
                NIL => self.lowest = b.higher,
                l => self.buckets[l as usize].higher = b.higher,
            }
            if b.higher != NIL {
                self.buckets[b.higher as usize].lower = b.lower;
            }
            self.free_buckets.push(bucket);
        }
    }

    /// Forgets item `at`: out of its bucket and the index, its slot free, its weight released.
    fn drop_item(&mut self, at: u32) -> u64 {
        self.detach(at);
        self.free_items.push(at);
        let LfuItem { key, weight, .. } = self.items[at as usize];
        self.index.remove(&key);
        self.used -= weight;
        key
    }

    fn evict_least(&mut self) -> bool {
        if self.lowest == NIL {
            return false;
        }
        let victim = self.buckets[self.lowest as usize].oldest;
        let key = self.drop_item(victim);
        self.log.record(key);
        true
    }
}

impl CachePolicy for Lfu {
    fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(&at) = self.index.get(&key) {
            let bucket = self.items[at as usize].bucket;
            let frequency = self.buckets[bucket as usize].frequency;
            // The next bucket is found before the object leaves its own, which may then go.
            let next = self.bucket_above(bucket, frequency + 1);
            self.detach(at);
            self.append(next, at);
            return true;
        }
        let weight = self.capacity.weight(size);
        if weight > self.capacity.amount() {
            return false;
        }
        while self.used + weight > self.capacity.amount() {
            let evicted = self.evict_least();
            debug_assert!(evicted, "used > 0 means something is cached");
        }
        let item = LfuItem {
            key,
            weight,
            bucket: NIL,
            prev: NIL,
            next: NIL,
        };
        let at = match self.free_items.pop() {
            Some(i) => {
                self.items[i as usize] = item;
                i
            }
            None => {
                self.items.push(item);
                u32::try_from(self.items.len() - 1).expect("fewer than 2^32 cached objects")
            }
        };
        let first = self.bucket_above(NIL, 1);
        self.append(first, at);
        self.index.insert(key, at);
        self.used += weight;
        false
    }

    fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    fn name(&self) -> &'static str {
        "lfu"
    }
}

impl Evicting for Lfu {
    fn take_evicted(&mut self) -> Vec<u64> {
        self.log.take()
    }

    fn evict(&mut self) -> bool {
        self.evict_least()
    }

    fn remove(&mut self, key: u64) {
        if let Some(&at) = self.index.get(&key) {
            self.drop_item(at);
        }
    }
}

/// S3-FIFO (Yang et al., SOSP'23), as the paper's listing has it: a small FIFO (a tenth of the
/// capacity) takes new objects, a main FIFO the rest, and a ghost FIFO remembers the keys last
/// evicted from the small one (as many as the main FIFO holds objects). A hit only bumps a 2-bit
/// frequency (at most 3). When room is needed, the small FIFO's oldest object moves to the main FIFO
/// if its frequency is above 1 (the frequency cleared on the way, as the paper's text and
/// libCacheSim have it), else leaves, its key going to the ghost; a miss whose key is in the ghost
/// goes straight to the main FIFO. The main FIFO's oldest object is reinserted with its frequency
/// decremented while that is above 0, else evicted; a move that overfills the main FIFO evicts from
/// it at once.
///
/// libCacheSim's `S3FIFO` (its authors' simulator) differs from the listing (the trace lab's
/// comparison test states and bounds how much): while the cache first fills, objects go to the
/// main FIFO once the small one is full; the main FIFO may overfill until the next eviction; its
/// ghost holds 90% of the capacity (objects or bytes); and its small FIFO admits only objects
/// smaller than itself (nothing under 20 objects of capacity; in bytes, no object of a tenth of the
/// capacity or more, where this one admits whatever fits the cache). In objects that moves hits by
/// under 1% of the requests; in bytes, at small capacities, the admission rule moves them by far
/// more.
#[derive(Debug)]
pub struct S3Fifo {
    capacity: Capacity,
    small_capacity: u64,
    move_to_main: u8,
    small: std::collections::VecDeque<u64>,
    main: std::collections::VecDeque<u64>,
    small_used: u64,
    main_used: u64,
    /// Key → (frequency, weight, in main).
    entries: KeyMap<(u8, u64, bool)>,
    /// Remembered keys, newest first; a key readmitted leaves it at once.
    ghost: List,
    /// Key → its node in `ghost`.
    ghosts: KeyMap<u32>,
    log: EvictionLog,
}

impl S3Fifo {
    /// An empty S3-FIFO cache of `capacity`, the small FIFO a tenth of it, objects moving to the
    /// main FIFO when requested at least twice in the small one (the paper's `freq > 1`).
    pub fn new(capacity: Capacity) -> S3Fifo {
        S3Fifo {
            capacity,
            small_capacity: (capacity.amount() / 10).max(1),
            move_to_main: 2,
            small: std::collections::VecDeque::new(),
            main: std::collections::VecDeque::new(),
            small_used: 0,
            main_used: 0,
            entries: KeyMap::default(),
            ghost: List::new(),
            ghosts: KeyMap::default(),
            log: EvictionLog::default(),
        }
    }

    /// The same (empty) cache, for keys numbered densely from 0 (see [`Lru::with_dense_keys`]).
    pub fn with_dense_keys(mut self) -> S3Fifo {
        self.entries = KeyMap::dense();
        self.ghosts = KeyMap::dense();
        self
    }

    /// The same cache, recording its victims for [`Evicting::take_evicted`].
    pub fn with_eviction_log(mut self) -> S3Fifo {
        self.log = EvictionLog(Some(Vec::new()));
        self
    }

    /// One eviction, from the FIFO the paper's listing takes it from; false when empty.
    fn evict_one(&mut self) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let before = self.entries.len();
        while self.entries.len() == before {
            if self.small_used >= self.small_capacity || self.main.is_empty() {
                if !self.evict_small() {
                    // Everything in the small FIFO moved on to the main one.
                    self.evict_main();
                }
            } else {
                self.evict_main();
            }
        }
        true
    }

    fn remember(&mut self, key: u64) {
        self.forget(key);
        let at = self.ghost.push_front(key, 1);
        self.ghosts.insert(key, at);
        while self.ghosts.len() > self.main.len().max(1) {
            let old = self.ghost.pop_back().expect("as many nodes as ghosts");
            self.ghosts.remove(&old.key);
        }
    }

    /// Takes `key` out of the ghost; whether it was there.
    fn forget(&mut self, key: u64) -> bool {
        match self.ghosts.remove(&key) {
            Some(at) => {
                self.ghost.unlink(at);
                true
            }
            None => false,
        }
    }

    /// Evicts one object from the main FIFO.
    fn evict_main(&mut self) {
        while let Some(key) = self.main.pop_front() {
            let e = self.entries.get_mut(&key).expect("queued keys are cached");
            if e.0 > 0 {
                e.0 -= 1;
                self.main.push_back(key);
            } else {
                let (_, w, _) = self.entries.remove(&key).expect("present");
                self.main_used -= w;
                self.log.record(key);
                return;
            }
        }
    }

    /// Evicts one object from the small FIFO, moving requested ones on to the main FIFO; false
    /// when all of them moved and none was evicted from it.
    fn evict_small(&mut self) -> bool {
        while let Some(key) = self.small.pop_front() {
            let e = self.entries.get_mut(&key).expect("queued keys are cached");
            self.small_used -= e.1;
            if e.0 >= self.move_to_main {
                e.0 = 0;
                e.2 = true;
                self.main_used += e.1;
                self.main.push_back(key);
                if self.main_used
                    > self.capacity.amount() - self.small_capacity.min(self.capacity.amount())
                {
                    self.evict_main();
                }
            } else {
                self.entries.remove(&key);
                self.remember(key);
                self.log.record(key);
                return true;
            }
        }
        false
    }
}

impl CachePolicy for S3Fifo {
    fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(e) = self.entries.get_mut(&key) {
            e.0 = (e.0 + 1).min(3);
            return true;
        }
        let weight = self.capacity.weight(size);
        if weight > self.capacity.amount() {
            return false;
        }
        // Looked up before evicting: making room may push the key out of the ghost.
        let remembered = self.forget(key);
        while self.small_used + self.main_used + weight > self.capacity.amount() {
            if self.small_used >= self.small_capacity || self.main.is_empty() {
                self.evict_small();
            } else {
                self.evict_main();
            }
        }
        if remembered {
            self.main.push_back(key);
            self.main_used += weight;
            self.entries.insert(key, (0, weight, true));
        } else {
            self.small.push_back(key);
            self.small_used += weight;
            self.entries.insert(key, (0, weight, false));
        }
        false
    }

    fn contains(&self, key: u64) -> bool {
        self.entries.contains_key(&key)
    }

    fn name(&self) -> &'static str {
        "s3-fifo"
    }
}

impl Evicting for S3Fifo {
    fn take_evicted(&mut self) -> Vec<u64> {
        self.log.take()
    }

    fn evict(&mut self) -> bool {
        self.evict_one()
    }

    /// O(n) in the FIFO holding the key: removals behind the policy's back are rare (a delete by
    /// an operator), accesses are not.
    fn remove(&mut self, key: u64) {
        if let Some((_, w, in_main)) = self.entries.remove(&key) {
            let (queue, used) = if in_main {
                (&mut self.main, &mut self.main_used)
            } else {
                (&mut self.small, &mut self.small_used)
            };
            queue.retain(|&k| k != key);
            *used -= w;
        }
    }
}

/// ARC (Megiddo and Modha, FAST'03) over a capacity in objects: two LRU lists of cached objects
/// (seen once recently, `t1`; seen at least twice, `t2`), their ghosts (`b1`, `b2`: keys only),
/// and a target size `p` for `t1` that a ghost hit moves towards the list that would have kept it.
/// O(1) per access. Counted in bytes it has no standard form, so byte capacities are refused by
/// [`Arc::new`].
#[derive(Debug)]
pub struct Arc {
    c: usize,
    p: f64,
    lists: [List; 4],
    lens: [usize; 4],
    /// Key → (list, node).
    index: KeyMap<(usize, u32)>,
}

const T1: usize = 0;
const T2: usize = 1;
const B1: usize = 2;
const B2: usize = 3;

impl Arc {
    /// An empty ARC cache of `capacity`; `None` for a capacity in bytes.
    pub fn new(capacity: Capacity) -> Option<Arc> {
        let Capacity::Objects(c) = capacity else {
            return None;
        };
        Some(Arc {
            c: usize::try_from(c).unwrap_or(usize::MAX),
            p: 0.0,
            lists: [List::new(), List::new(), List::new(), List::new()],
            lens: [0; 4],
            index: KeyMap::default(),
        })
    }

    /// The same (empty) cache, for keys numbered densely from 0 (see [`Lru::with_dense_keys`]).
    pub fn with_dense_keys(mut self) -> Arc {
        self.index = KeyMap::dense();
        self
    }

    fn push(&mut self, list: usize, key: u64) {
        let at = self.lists[list].push_front(key, 1);
        self.lens[list] += 1;
        self.index.insert(key, (list, at));
    }

    fn take(&mut self, key: u64) {
        if let Some((list, at)) = self.index.remove(&key) {
            self.lists[list].unlink(at);
            self.lens[list] -= 1;
        }
    }

    /// Drops the least recent key of `list`.
    fn drop_lru(&mut self, list: usize) -> Option<u64> {
        let n = self.lists[list].pop_back()?;
        self.lens[list] -= 1;
        self.index.remove(&n.key);
        Some(n.key)
    }

    /// Evicts from `t1` or `t2` into its ghost, as `p` says.
    fn replace(&mut self, in_b2: bool) {
        let t1 = self.lens[T1];
        if t1 >= 1 && ((in_b2 && t1 as f64 == self.p) || t1 as f64 > self.p) {
            if let Some(k) = self.drop_lru(T1) {
                self.push(B1, k);
            }
        } else if let Some(k) = self.drop_lru(T2) {
            self.push(B2, k);
        } else if let Some(k) = self.drop_lru(T1) {
            self.push(B1, k);
        }
    }
}

impl CachePolicy for Arc {
    fn access(&mut self, key: u64, _size: u64) -> bool {
        if self.c == 0 {
            return false;
        }
        match self.index.get(&key).map(|&(list, _)| list) {
            Some(T1 | T2) => {
                self.take(key);
                self.push(T2, key);
                true
            }
            Some(B1) => {
                let delta = (self.lens[B2] as f64 / self.lens[B1] as f64).max(1.0);
                self.p = (self.p + delta).min(self.c as f64);
                self.replace(false);
                self.take(key);
                self.push(T2, key);
                false
            }
            Some(_) => {
                let delta = (self.lens[B1] as f64 / self.lens[B2] as f64).max(1.0);
                self.p = (self.p - delta).max(0.0);
                self.replace(true);
                self.take(key);
                self.push(T2, key);
                false
            }
            None => {
                let l1 = self.lens[T1] + self.lens[B1];
                let total = l1 + self.lens[T2] + self.lens[B2];
                if l1 == self.c {
                    if self.lens[T1] < self.c {
                        self.drop_lru(B1);
                        self.replace(false);
                    } else {
                        self.drop_lru(T1);
                    }
                } else if total >= self.c {
                    if total == 2 * self.c {
                        self.drop_lru(B2);
                    }
                    self.replace(false);
                }
                self.push(T1, key);
                false
            }
        }
    }

    fn contains(&self, key: u64) -> bool {
        matches!(self.index.get(&key), Some(&(T1 | T2, _)))
    }

    fn name(&self) -> &'static str {
        "arc"
    }
}

/// The FAST'18 paper's two-tier cache: an LRU in memory in front of an LRU on SSD `ssd_ratio`
/// times as large. Objects larger than `bypass_above` bytes skip memory (large layers would flush
/// it). Every object fetched goes to the SSD tier; a request hits if either tier holds the object.
#[derive(Debug)]
pub struct TwoTier {
    memory: Lru,
    ssd: Lru,
    bypass_above: u64,
    memory_hits: u64,
}

impl TwoTier {
    /// A two-tier cache whose memory tier is `memory` and whose SSD tier is `ssd_ratio` times it.
    pub fn new(memory: Capacity, ssd_ratio: u64, bypass_above: u64) -> TwoTier {
        let ssd = match memory {
            Capacity::Objects(n) => Capacity::Objects(n.saturating_mul(ssd_ratio)),
            Capacity::Bytes(n) => Capacity::Bytes(n.saturating_mul(ssd_ratio)),
        };
        TwoTier {
            memory: Lru::new(memory),
            ssd: Lru::new(ssd),
            bypass_above,
            memory_hits: 0,
        }
    }

    /// Hits the memory tier served.
    pub fn memory_hits(&self) -> u64 {
        self.memory_hits
    }
}

impl CachePolicy for TwoTier {
    fn access(&mut self, key: u64, size: u64) -> bool {
        let in_memory = size <= self.bypass_above && self.memory.access(key, size);
        let on_ssd = self.ssd.access(key, size);
        if in_memory {
            self.memory_hits += 1;
        }
        in_memory || on_ssd
    }

    fn contains(&self, key: u64) -> bool {
        self.memory.contains(key) || self.ssd.contains(key)
    }

    fn name(&self) -> &'static str {
        "two-tier"
    }
}

/// Hits of LRU at every object capacity in `capacities`, from one pass over the keys' stack
/// distances (how many distinct keys were requested since the key's last request): a request hits
/// an LRU cache of `c` objects exactly when its stack distance is below `c` (LRU is a stack
/// algorithm). O(log n) per request (a Fenwick tree over request positions), whatever the number
/// of capacities. Counts requests from position `from` on (earlier ones warm the cache).
pub fn lru_hits_by_objects(keys: &[u64], capacities: &[u64], from: usize) -> Vec<u64> {
    lru_sweep(keys, |_| 0, capacities, from)
        .into_iter()
        .map(|(hits, _)| hits)
        .collect()
}

/// [`lru_hits_by_objects`] with the bytes of the hits too: `size(i)` is request `i`'s size. One
/// `(hits, bytes hit)` per capacity.
pub fn lru_sweep(
    keys: &[u64],
    size: impl Fn(usize) -> u64,
    capacities: &[u64],
    from: usize,
) -> Vec<(u64, u64)> {
    let n = keys.len();
    // tree[i] is 1 where position i is some key's latest request so far.
    let mut tree = vec![0i64; n + 1];
    let add = |tree: &mut Vec<i64>, mut i: usize, v: i64| {
        i += 1;
        while i <= n {
            tree[i] += v;
            i += i & i.wrapping_neg();
        }
    };
    let prefix = |tree: &Vec<i64>, mut i: usize| -> i64 {
        let mut s = 0;
        while i > 0 {
            s += tree[i];
            i -= i & i.wrapping_neg();
        }
        s
    };
    let mut last: HashMap<u64, usize> = HashMap::default();
    // at_distance[d]: requests (from `from` on) whose stack distance is d, and their bytes.
    let mut at_distance: Vec<(u64, u64)> = Vec::new();
    for (pos, &key) in keys.iter().enumerate() {
        if let Some(prev) = last.insert(key, pos) {
            // Distinct keys requested after `prev`: latest-request marks in (prev, pos).
            let distance = (prefix(&tree, pos) - prefix(&tree, prev + 1)) as usize;
            if pos >= from {
                if at_distance.len() <= distance {
                    at_distance.resize(distance + 1, (0, 0));
                }
                at_distance[distance].0 += 1;
                at_distance[distance].1 += size(pos);
            }
            add(&mut tree, prev, -1);
        }
        add(&mut tree, pos, 1);
    }
    // Hits at capacity c: requests at distance < c.
    let mut below = vec![(0u64, 0u64); at_distance.len() + 1];
    for (d, (count, bytes)) in at_distance.iter().enumerate() {
        below[d + 1] = (below[d].0 + count, below[d].1 + bytes);
    }
    capacities
        .iter()
        .map(|&c| below[(c as usize).min(at_distance.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hits(policy: &mut dyn CachePolicy, keys: &[u64]) -> Vec<bool> {
        keys.iter().map(|&k| policy.access(k, 10 * k)).collect()
    }

    #[test]
    fn lru_hits_as_computed_by_hand() {
        // Capacity 2: A B A C B A → miss miss hit miss(evicts B) miss(evicts A) miss(evicts C).
        let (a, b, c) = (1, 2, 3);
        let mut lru = Lru::new(Capacity::Objects(2));
        assert_eq!(
            hits(&mut lru, &[a, b, a, c, b, a]),
            [false, false, true, false, false, false]
        );
        // Bytes: sizes 10, 20, 30 (10 × key) under 40 bytes: A B (30) C evicts A then B? 30+30 > 40
        // evicts A (20+30 = 50 > 40) and B (30): C alone.
        let mut lru = Lru::new(Capacity::Bytes(40));
        assert_eq!(
            hits(&mut lru, &[a, b, c, b, a]),
            [false, false, false, false, false]
        );
        assert_eq!(lru.used(), 30, "A and B: 10 + 20");
        assert!(lru.contains(a) && lru.contains(b) && !lru.contains(c));
        // Too large for the whole cache: never admitted, nothing evicted.
        let mut lru = Lru::new(Capacity::Bytes(25));
        assert_eq!(hits(&mut lru, &[a, c, a]), [false, false, true]);
    }

    #[test]
    fn lfu_hits_as_computed_by_hand() {
        // Capacity 2: A B A(hit, 2) C(evicts B, 1) B(evicts C: 1 < A's 2) A(hit).
        let mut lfu = Lfu::new(Capacity::Objects(2));
        assert_eq!(
            hits(&mut lfu, &[1, 2, 1, 3, 2, 1]),
            [false, false, true, false, false, true]
        );
        // A tie of frequencies goes to the least recent: A B C evicts A.
        let mut lfu = Lfu::new(Capacity::Objects(2));
        assert_eq!(
            hits(&mut lfu, &[1, 2, 3, 2, 1]),
            [false, false, false, true, false]
        );
    }

    #[test]
    fn s3fifo_hits_as_computed_by_hand() {
        // Capacity 2: the small FIFO holds 1, the main 1. A A A (frequency 2) B; C makes room: A
        // (frequency 2 > 1) moves to main, B (0) leaves for the ghost; C enters small. B again:
        // remembered, so after C is evicted to make room it goes to main. A is still cached.
        let (a, b, c) = (1, 2, 3);
        let mut s3 = S3Fifo::new(Capacity::Objects(2));
        assert_eq!(
            hits(&mut s3, &[a, a, a, b, c, b, a]),
            [false, true, true, false, false, false, true]
        );
        assert!(
            s3.entries.get(&b).is_some_and(|e| e.2),
            "B went straight to main"
        );
        // A one-hit wonder never reaches main: A B C D each once, then A misses.
        let mut s3 = S3Fifo::new(Capacity::Objects(2));
        assert_eq!(hits(&mut s3, &[a, b, c, 4, a]), [false; 5]);
        // Promotion clears the frequency: A A A B, then C moves A (2) to main with frequency 0
        // and B to the ghost; B (remembered) pushes C to the ghost and joins A in main; C
        // (remembered) needs room in main, where A, not requested since its move, is the oldest:
        // evicted. Had A kept its 2, B would have gone and A hit.
        let mut s3 = S3Fifo::new(Capacity::Objects(2));
        assert_eq!(
            hits(&mut s3, &[a, a, a, b, c, b, c, a]),
            [false, true, true, false, false, false, false, false]
        );
    }

    proptest! {
        /// The simulator's dense-key tables decide exactly as the hashed maps do.
        #[test]
        fn dense_keys_hit_exactly_as_hashed_ones(
            keys in proptest::collection::vec(0u64..60, 0..400),
            capacity in 1u64..40,
        ) {
            let sized = |k: u64| 10 + 7 * k;
            let run = |policy: &mut dyn CachePolicy| -> Vec<bool> {
                keys.iter().map(|&k| policy.access(k, sized(k))).collect()
            };
            for c in [Capacity::Objects(capacity), Capacity::Bytes(capacity * 40)] {
                prop_assert_eq!(run(&mut Lru::new(c)), run(&mut Lru::new(c).with_dense_keys()));
                prop_assert_eq!(run(&mut S3Fifo::new(c)), run(&mut S3Fifo::new(c).with_dense_keys()));
            }
            for c in [Capacity::Objects(capacity), Capacity::Bytes(capacity * 40)] {
                prop_assert_eq!(run(&mut Lfu::new(c)), run(&mut Lfu::new(c).with_dense_keys()));
            }
            let c = Capacity::Objects(capacity);
            prop_assert_eq!(
                run(&mut Arc::new(c).unwrap()),
                run(&mut Arc::new(c).unwrap().with_dense_keys())
            );
        }
    }

    /// LFU as its definition reads, a scan per eviction: the least (frequency, last request).
    #[derive(Debug, Default)]
    struct ScanLfu {
        capacity: u64,
        used: u64,
        clock: u64,
        /// Key → (frequency, last request, weight).
        entries: std::collections::HashMap<u64, (u64, u64, u64)>,
    }

    impl ScanLfu {
        fn access(&mut self, key: u64, weight: u64) -> bool {
            self.clock += 1;
            if let Some(e) = self.entries.get_mut(&key) {
                e.0 += 1;
                e.1 = self.clock;
                return true;
            }
            if weight > self.capacity {
                return false;
            }
            while self.used + weight > self.capacity {
                let (&victim, &(_, _, w)) =
                    self.entries.iter().min_by_key(|(_, e)| (e.0, e.1)).unwrap();
                self.entries.remove(&victim);
                self.used -= w;
            }
            self.entries.insert(key, (1, self.clock, weight));
            self.used += weight;
            false
        }
    }

    proptest! {
        /// The bucketed LFU decides as the definition does, in objects and in bytes, with objects
        /// removed behind its back (the mirror deletes some) and evicted on demand.
        #[test]
        fn lfu_decides_as_its_definition(
            ops in proptest::collection::vec((0u64..40, 0u8..20), 0..500),
            capacity in 1u64..30,
            bytes in any::<bool>(),
        ) {
            let c = if bytes { Capacity::Bytes(capacity * 30) } else { Capacity::Objects(capacity) };
            let mut lfu = Lfu::new(c).with_eviction_log();
            let mut reference = ScanLfu { capacity: c.amount(), ..ScanLfu::default() };
            for (key, op) in ops {
                let weight = c.weight(key % 50 + 1);
                match op {
                    0 => {
                        lfu.remove(key);
                        if let Some((_, _, w)) = reference.entries.remove(&key) {
                            reference.used -= w;
                        }
                    }
                    1 => {
                        let victim = reference
                            .entries
                            .iter()
                            .min_by_key(|(_, e)| (e.0, e.1))
                            .map(|(&k, _)| k);
                        prop_assert_eq!(lfu.evict(), victim.is_some());
                        let _ = lfu.take_evicted();
                        if let Some(v) = victim {
                            let (_, _, w) = reference.entries.remove(&v).unwrap();
                            reference.used -= w;
                            prop_assert!(!lfu.contains(v));
                        }
                    }
                    _ => {
                        prop_assert_eq!(lfu.access(key, key % 50 + 1), reference.access(key, weight));
                        let _ = lfu.take_evicted();
                    }
                }
                prop_assert_eq!(lfu.used, reference.used);
                prop_assert_eq!(lfu.index.len(), reference.entries.len());
            }
        }
    }

    proptest! {
        /// Whatever the requests, no policy holds more than its capacity, and a hit is always an
        /// object requested before.
        #[test]
        fn policies_stay_within_capacity(
            keys in proptest::collection::vec(0u64..50, 0..400),
            capacity in 1u64..300,
            bytes in any::<bool>(),
        ) {
            let capacity = if bytes { Capacity::Bytes(capacity * 10) } else { Capacity::Objects(capacity / 10 + 1) };
            let mut policies: Vec<Box<dyn CachePolicy>> = vec![
                Box::new(Lru::new(capacity)),
                Box::new(Lfu::new(capacity)),
                Box::new(S3Fifo::new(capacity)),
            ];
            if let Some(arc) = Arc::new(capacity) {
                policies.push(Box::new(arc));
            }
            policies.push(Box::new(TwoTier::new(capacity, 4, 40)));
            for p in &mut policies {
                let mut seen = std::collections::HashSet::new();
                for &k in &keys {
                    let size = k * 7 % 90 + 1;
                    let hit = p.access(k, size);
                    prop_assert!(!hit || seen.contains(&k), "{} hit {} unseen", p.name(), k);
                    seen.insert(k);
                }
            }
            let mut lfu = Lfu::new(capacity);
            let mut s3 = S3Fifo::new(capacity);
            for &k in &keys {
                let size = k * 7 % 90 + 1;
                lfu.access(k, size);
                s3.access(k, size);
                prop_assert!(lfu.used <= capacity.amount());
                prop_assert!(s3.small_used + s3.main_used <= capacity.amount());
                prop_assert_eq!(s3.entries.len(), s3.small.len() + s3.main.len());
            }
        }
    }

    #[test]
    fn arc_hits_as_computed_by_hand() {
        // Capacity 2, p = 0. A B: t1 = [B, A]. A: hit, to t2. C: t1 + t2 hold 2 = c, so replace:
        // |t1| = 1 > p evicts B to b1; t1 = [C]. B: a b1 hit, p = 1; replace: |t1| = 1 is not above
        // p, so t2's A goes to b2; B to t2. C: hit. A: a b2 hit, p = 0; t2's B goes to b2.
        let (a, b, c) = (1, 2, 3);
        let mut arc = Arc::new(Capacity::Objects(2)).unwrap();
        assert_eq!(
            hits(&mut arc, &[a, b, a, c, b, c, a]),
            [false, false, true, false, false, true, false]
        );
        assert!(Arc::new(Capacity::Bytes(10)).is_none());
        // A scan of one-time keys does not flush what was requested twice.
        let mut arc = Arc::new(Capacity::Objects(3)).unwrap();
        let mut keys = vec![a, a, b, b];
        keys.extend(10..20);
        keys.extend([a, b]);
        let got = hits(&mut arc, &keys);
        assert!(got[got.len() - 2] && got[got.len() - 1], "{got:?}");
    }

    #[test]
    fn two_tier_bypasses_memory_for_large_objects() {
        // Memory 2 objects, SSD 4; objects over 50 bytes skip memory (sizes are 10 × key).
        let mut cache = TwoTier::new(Capacity::Objects(2), 2, 50);
        // 1 2 3: memory keeps 2 3, SSD 1 2 3. 1 hits on SSD. 9 (90 bytes) goes to SSD only;
        // 9 again hits on SSD, never in memory. 3 hits in memory.
        assert_eq!(
            hits(&mut cache, &[1, 2, 3, 1, 9, 9, 3]),
            [false, false, false, true, false, true, true]
        );
        assert_eq!(cache.memory_hits(), 1, "only 3's last request");
        assert!(!cache.memory.contains(9));
    }

    #[test]
    fn stack_distances_give_the_hand_computed_hits() {
        let keys = [1, 2, 1, 3, 2, 1];
        // Distances: 1→1 (2 between), 2→2 (1,3 between: 2), 1→2 (3,2: 2).
        assert_eq!(lru_hits_by_objects(&keys, &[1, 2, 3, 10], 0), [0, 1, 3, 3]);
        assert_eq!(
            lru_hits_by_objects(&keys, &[3], 3),
            [2],
            "from position 3 on"
        );
    }

    proptest! {
        #[test]
        fn one_pass_sweep_equals_replay_at_each_capacity(
            keys in proptest::collection::vec(0u64..40, 0..400),
            capacities in proptest::collection::vec(1u64..50, 1..6),
            from in 0usize..100,
        ) {
            let swept = lru_hits_by_objects(&keys, &capacities, from);
            for (&c, &hits) in capacities.iter().zip(&swept) {
                let mut lru = Lru::new(Capacity::Objects(c));
                let replayed = keys
                    .iter()
                    .enumerate()
                    .filter(|&(i, &k)| lru.access(k, 1) && i >= from)
                    .count() as u64;
                prop_assert_eq!(hits, replayed, "capacity {}", c);
            }
        }

        /// Counted in objects, LRU is a stack algorithm: a larger cache holds what a smaller one
        /// does. (In bytes it is not: an object too large for a small cache is not admitted
        /// there, and may evict in a larger one what the small one keeps.)
        #[test]
        fn lru_hits_never_fall_as_capacity_grows(
            keys in proptest::collection::vec(0u64..30, 0..300),
            small in 1u64..40,
            extra in 0u64..40,
        ) {
            let run = |c: u64| {
                let mut lru = Lru::new(Capacity::Objects(c));
                keys.iter().filter(|&&k| lru.access(k, k * 7 % 90 + 1)).count()
            };
            prop_assert!(run(small) <= run(small + extra));
        }
    }
}
