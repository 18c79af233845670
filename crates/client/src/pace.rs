//! The pace of requests: a rate limit shared by every request of a [`crate::Registry`], and the
//! backoff between attempts.

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket that holds one token, refilled at `rate` per second: requests start at most
/// `rate` per second, evenly spaced, whatever number of tasks send them (a bucket that held more
/// would let bursts through, and bursts are what registries answer 429 to).
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    /// When the next request may start.
    next: Mutex<Instant>,
}

impl RateLimit {
    /// `None` unless `per_second` is a positive finite number.
    pub fn new(per_second: f64) -> Option<RateLimit> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        Some(RateLimit {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits for this request's turn. Turns are handed out in call order; a caller that gives
    /// up waiting leaves its turn unused, which only slows the others.
    pub async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The wait before attempt `attempt + 1`: exponential from 100 ms, at most 2 s, and randomly
/// between half and all of that, so clients that failed together do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2));
    let half = full / 2;
    half + half.mul_f64(random_fraction())
}

/// A number in [0, 1) that differs between calls; jitter needs no better randomness than
/// std's hasher keys (random per process, stepped per instance).
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_in_its_band() {
        for attempt in 1..10 {
            let full = Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2));
            for _ in 0..50 {
                let b = backoff(attempt);
                assert!(b >= full / 2 && b <= full, "{attempt}: {b:?}");
            }
        }
        // Not the same wait every time.
        let waits: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(3)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn only_positive_finite_rates() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimit::new(bad).is_none(), "{bad}");
        }
        assert!(RateLimit::new(0.5).is_some());
    }
}
