//! Token-bucket rate limits per client, with a bounded number of clients.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Longest `Retry-After` given, in seconds, whatever the rate.
pub const MAX_RETRY_AFTER_SECS: u64 = 24 * 60 * 60;

const TOLERANCE: f64 = 1e-9;

/// A rate: tokens refill at `per_sec` up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Capacity, and the tokens a new client starts with.
    pub burst: f64,
}

/// Refused: try again after this many seconds (at least 1), as the `Retry-After` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {0} s")]
pub struct RetryAfter(pub u64);

/// One client's bucket. Pure: the time is an argument, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// Tokens available at `last_ms`.
    pub tokens: f64,
    /// When `tokens` was last brought up to date.
    pub last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: f64, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst.max(0.0),
            last_ms: now_ms,
        }
    }

    /// Adds what `rate_per_sec` has refilled since the last call, up to `burst`. A clock that
    /// went backwards refills nothing.
    fn refill(&mut self, rate_per_sec: f64, burst: f64, now_ms: u64) {
        if now_ms > self.last_ms {
            let elapsed = (now_ms - self.last_ms) as f64 / 1000.0;
            if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
                self.tokens = (self.tokens + elapsed * rate_per_sec).min(burst);
            }
            self.last_ms = now_ms;
        }
        self.tokens = self.tokens.min(burst);
    }

    /// Takes `cost` tokens, or says how long until they will be there. A cost above `burst`
    /// never succeeds; a zero, negative or non-finite rate never refills (the retry is then
    /// [`MAX_RETRY_AFTER_SECS`]).
    pub fn try_take(
        &mut self,
        cost: f64,
        rate_per_sec: f64,
        burst: f64,
        now_ms: u64,
    ) -> Result<(), RetryAfter> {
        self.refill(rate_per_sec, burst, now_ms);
        // The tolerance absorbs rounding, so that waiting the Retry-After given is always
        // enough; it gives away at most a billionth of a token per request.
        if self.tokens + TOLERANCE >= cost {
            self.tokens = (self.tokens - cost).max(0.0);
            return Ok(());
        }
        let deficit = cost - self.tokens;
        let secs = (deficit / rate_per_sec).ceil();
        // NaN and infinities fail the comparison and take the maximum.
        Err(RetryAfter(
            if secs >= 1.0 && secs < MAX_RETRY_AFTER_SECS as f64 {
                secs as u64
            } else if secs < 1.0 {
                1
            } else {
                MAX_RETRY_AFTER_SECS
            },
        ))
    }

    /// Whether the bucket has refilled to `burst` by `now_ms`, so it is no different from a new
    /// one and can be forgotten.
    pub fn is_full(&self, rate_per_sec: f64, burst: f64, now_ms: u64) -> bool {
        let mut probe = *self;
        probe.refill(rate_per_sec, burst, now_ms);
        probe.tokens >= burst
    }
}

/// A bucket per client key, at most `max_keys` of them. Once that many clients hold buckets,
/// new clients share one overflow bucket (counted in [`RateLimiter::overflow_uses`]) until
/// [`RateLimiter::sweep`] forgets buckets that have refilled. Keys are spread over mutex shards
/// by a randomly seeded hash, so clients cannot aim at one shard.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    shards: Vec<Mutex<HashMap<K, TokenBucket>>>,
    per_shard: usize,
    hasher: RandomState,
    overflow: Mutex<Option<TokenBucket>>,
    overflow_uses: AtomicU64,
}

const SHARDS: usize = 8;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `rate` per key, holding at most `max_keys` buckets.
    pub fn new(rate: Rate, max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            // Rounded down, so all shards together never exceed `max_keys`.
            per_shard: max_keys / SHARDS,
            hasher: RandomState::new(),
            overflow: Mutex::new(None),
            overflow_uses: AtomicU64::new(0),
        }
    }

    /// Charges `cost` to `key`'s bucket at `now_ms`.
    pub fn check(&self, key: &K, cost: f64, now_ms: u64) -> Result<(), RetryAfter> {
        let Rate { per_sec, burst } = self.rate;
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.try_take(cost, per_sec, burst, now_ms);
        }
        if buckets.len() < self.per_shard {
            let mut bucket = TokenBucket::full(burst, now_ms);
            let result = bucket.try_take(cost, per_sec, burst, now_ms);
            buckets.insert(key.clone(), bucket);
            return result;
        }
        drop(buckets);
        self.overflow_uses.fetch_add(1, Ordering::Relaxed);
        let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        overflow
            .get_or_insert_with(|| TokenBucket::full(burst, now_ms))
            .try_take(cost, per_sec, burst, now_ms)
    }

    /// Forgets buckets that have refilled to `burst` by `now_ms`: a new bucket would be the
    /// same. Call it periodically.
    pub fn sweep(&self, now_ms: u64) {
        let Rate { per_sec, burst } = self.rate;
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, bucket| !bucket.is_full(per_sec, burst, now_ms));
        }
    }

    /// Buckets held (the overflow bucket aside).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no client holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many checks fell to the shared overflow bucket: a steady rise means `max_keys` is
    /// too small for the clients (or many addresses are in use by one).
    pub fn overflow_uses(&self) -> u64 {
        self.overflow_uses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::full(3.0, 0);
        for _ in 0..3 {
            assert_eq!(b.try_take(1.0, 0.5, 3.0, 0), Ok(()));
        }
        assert_eq!(b.try_take(1.0, 0.5, 3.0, 0), Err(RetryAfter(2)));
        assert_eq!(b.try_take(1.0, 0.5, 3.0, 1999), Err(RetryAfter(1)));
        assert_eq!(b.try_take(1.0, 0.5, 3.0, 2000), Ok(()));
        // Never beyond the burst, however long the wait.
        assert_eq!(b.try_take(3.0, 0.5, 3.0, 1_000_000), Ok(()));
        assert!(b.try_take(0.5, 0.5, 3.0, 1_000_000).is_err());
        // A clock going backwards refills nothing, and breaks nothing.
        assert!(b.try_take(1.0, 0.5, 3.0, 0).is_err());
    }

    #[test]
    fn odd_rates() {
        let mut b = TokenBucket::full(1.0, 0);
        assert_eq!(b.try_take(5.0, 1.0, 1.0, 0), Err(RetryAfter(4)));
        assert_eq!(
            b.try_take(5.0, 0.0, 1.0, 0),
            Err(RetryAfter(MAX_RETRY_AFTER_SECS))
        );
        assert_eq!(
            b.try_take(5.0, f64::NAN, 1.0, 10),
            Err(RetryAfter(MAX_RETRY_AFTER_SECS))
        );
        assert_eq!(b.try_take(1.0, 1000.0, 1.0, 10), Ok(()));
        assert_eq!(b.try_take(0.001, 1000.0, 1.0, 10), Err(RetryAfter(1)));
    }

    #[test]
    fn limiter_overflow_and_sweep() {
        let limiter = RateLimiter::new(
            Rate {
                per_sec: 1.0,
                burst: 1.0,
            },
            SHARDS,
        );
        let mut overflowed = 0;
        for key in 0..100u32 {
            if limiter.check(&key, 1.0, 0).is_err() {
                overflowed += 1;
            }
        }
        assert!(limiter.len() <= SHARDS);
        assert_eq!(limiter.overflow_uses(), 100 - limiter.len() as u64);
        // The overflow bucket let one of the others through.
        assert_eq!(overflowed, 100 - limiter.len() - 1);
        limiter.sweep(999);
        assert!(!limiter.is_empty());
        limiter.sweep(1000);
        assert!(limiter.is_empty());
    }

    proptest! {
        #[test]
        fn never_more_than_burst_plus_refill(
            per_sec in 0.1f64..50.0,
            burst in 1.0f64..20.0,
            ops in proptest::collection::vec((0u64..2000, 0.5f64..5.0), 1..40),
        ) {
            let mut bucket = TokenBucket::full(burst, 0);
            let mut now = 0;
            let mut granted: Vec<(u64, f64)> = Vec::new();
            for (dt, cost) in ops {
                now += dt;
                match bucket.try_take(cost, per_sec, burst, now) {
                    Ok(()) => granted.push((now, cost)),
                    Err(RetryAfter(secs)) => {
                        prop_assert!(secs >= 1);
                        // Waiting as told is enough (for a cost the burst can hold).
                        if cost <= burst {
                            let mut later = bucket;
                            prop_assert!(later.try_take(cost, per_sec, burst, now + secs * 1000).is_ok());
                        }
                    }
                }
            }
            for (i, &(start, _)) in granted.iter().enumerate() {
                let mut total = 0.0;
                for &(end, cost) in &granted[i..] {
                    total += cost;
                    let allowed = burst + per_sec * (end - start) as f64 / 1000.0;
                    prop_assert!(total <= allowed + 1e-6, "{total} > {allowed}");
                }
            }
        }

        #[test]
        fn limiter_memory_is_bounded(
            max_keys in 0usize..40,
            ops in proptest::collection::vec((0u16..200, 0u64..500), 1..100),
        ) {
            let limiter = RateLimiter::new(Rate { per_sec: 2.0, burst: 2.0 }, max_keys);
            let mut now = 0;
            for (key, dt) in ops {
                now += dt;
                let _ = limiter.check(&key, 1.0, now);
                prop_assert!(limiter.len() <= max_keys);
                if key % 7 == 0 {
                    limiter.sweep(now);
                }
            }
        }
    }
}
