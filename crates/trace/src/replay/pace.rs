//! When each replayed request is sent. `recorded`: open loop on the trace's own timestamps
//! (divided by a speed-up), each request sent at its intended instant whether or not earlier
//! ones have been answered, at most `max_in_flight` at a time; `asap`: as fast as `concurrency`
//! requests in flight allow. Tokio's clock throughout, so schedules run (and are tested) in
//! paused time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The most requests in flight any pace allows (each holds a connection).
pub const MAX_IN_FLIGHT: usize = 1 << 16;

/// How requests are timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// At the trace's timestamps, `speed` times faster; at most `max_in_flight` requests in
    /// flight (a request due while all are busy waits for one, and is counted).
    Recorded {
        /// Time compression: 10 replays a minute of trace in 6 seconds.
        speed: f64,
        /// Most requests in flight.
        max_in_flight: usize,
    },
    /// Back to back, `concurrency` in flight.
    Asap {
        /// Requests in flight.
        concurrency: usize,
    },
}

impl Pace {
    /// Requests in flight at most: 1 to [`MAX_IN_FLIGHT`].
    fn slots(self) -> usize {
        match self {
            Pace::Recorded { max_in_flight, .. } => max_in_flight,
            Pace::Asap { concurrency } => concurrency,
        }
        .clamp(1, MAX_IN_FLIGHT)
    }
}

/// What the scheduler did, besides sending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paced {
    /// Requests sent.
    pub sent: u64,
    /// Requests that were due while `max_in_flight` were in flight, and so went late (their lag
    /// shows by how much). Always 0 at `asap`, where waiting is the pace.
    pub overflowed: u64,
}

/// Sends every item of `items` (each with its trace time in microseconds; ignored at `asap`)
/// by calling `send(item, intended, sent)` at its time and spawning the future it returns;
/// returns once every spawned future has finished. `intended` is when the trace says the
/// request is due (at `asap`: when it is sent), `sent` when it was: their difference is the
/// schedule lag. Items are pulled from `items` one at a time, as they fall due, so a trace is
/// streamed: memory holds only the requests in flight.
pub async fn pace<T, F, Fut>(
    items: impl Iterator<Item = (i64, T)>,
    pace: Pace,
    mut send: F,
) -> Paced
where
    F: FnMut(T, Instant, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = pace.slots();
    let free = Arc::new(Semaphore::new(slots));
    let start = Instant::now();
    let mut first: Option<i64> = None;
    let mut done = Paced::default();
    for (time_us, item) in items {
        let permit = match pace {
            Pace::Recorded { speed, .. } => {
                let t0 = *first.get_or_insert(time_us);
                let offset_s = (time_us - t0).max(0) as f64 / 1e6 / speed;
                let intended = start + Duration::from_secs_f64(offset_s);
                tokio::time::sleep_until(intended).await;
                let permit = match free.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        done.overflowed += 1;
                        free.clone().acquire_owned().await.expect("never closed")
                    }
                };
                (permit, Some(intended))
            }
            Pace::Asap { .. } => (
                free.clone().acquire_owned().await.expect("never closed"),
                None,
            ),
        };
        let (permit, intended) = permit;
        let sent = Instant::now();
        let fut = send(item, intended.unwrap_or(sent), sent);
        done.sent += 1;
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
    // Every slot free again: every request has been answered.
    let _all = free.acquire_many(slots as u32).await.expect("never closed");
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Record = Arc<Mutex<Vec<(u32, Duration, Duration)>>>;

    /// Paces `times` (ms) with requests that each take `busy`; the (item, intended, sent)
    /// offsets from the start the scheduler handed to `send`.
    async fn run(
        times: &[i64],
        p: Pace,
        busy: Duration,
    ) -> (Vec<(u32, Duration, Duration)>, Paced) {
        let start = Instant::now();
        let record: Record = Arc::default();
        let r = record.clone();
        let paced = pace(
            times
                .iter()
                .enumerate()
                .map(|(i, t)| (1_000_000_000 + t * 1000, i as u32)),
            p,
            move |i, intended, sent| {
                r.lock().unwrap().push((i, intended - start, sent - start));
                tokio::time::sleep(busy)
            },
        )
        .await;
        let v = record.lock().unwrap().clone();
        (v, paced)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_pace_sends_each_request_at_its_instant_while_others_are_in_flight() {
        let (sent, paced) = run(
            &[0, 100, 250, 250, 1000],
            Pace::Recorded {
                speed: 1.0,
                max_in_flight: 100,
            },
            ms(5000),
        )
        .await;
        assert_eq!(
            sent,
            vec![
                (0, ms(0), ms(0)),
                (1, ms(100), ms(100)),
                (2, ms(250), ms(250)),
                (3, ms(250), ms(250)),
                (4, ms(1000), ms(1000)),
            ]
        );
        assert_eq!(
            paced,
            Paced {
                sent: 5,
                overflowed: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn speed_compresses_time() {
        let (sent, _) = run(
            &[0, 100, 1000],
            Pace::Recorded {
                speed: 10.0,
                max_in_flight: 8,
            },
            ms(1),
        )
        .await;
        let at: Vec<Duration> = sent.iter().map(|s| s.2).collect();
        assert_eq!(at, vec![ms(0), ms(10), ms(100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cap_delays_requests_counts_them_and_shows_as_lag() {
        // One slot; each request takes 300 ms; due every 100 ms.
        let (sent, paced) = run(
            &[0, 100, 200],
            Pace::Recorded {
                speed: 1.0,
                max_in_flight: 1,
            },
            ms(300),
        )
        .await;
        assert_eq!(
            sent,
            vec![
                (0, ms(0), ms(0)),
                (1, ms(100), ms(300)),
                (2, ms(200), ms(600))
            ]
        );
        assert_eq!(paced.overflowed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn asap_keeps_concurrency_requests_in_flight() {
        let (sent, paced) = run(
            &[0, 5000, 9000, 9999],
            Pace::Asap { concurrency: 2 },
            ms(100),
        )
        .await;
        let at: Vec<Duration> = sent.iter().map(|s| s.2).collect();
        assert_eq!(at, vec![ms(0), ms(0), ms(100), ms(100)]);
        assert!(sent.iter().all(|s| s.1 == s.2), "asap has no lag");
        assert_eq!(paced.overflowed, 0);
    }
}
