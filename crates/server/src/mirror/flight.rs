//! Coalescing: at most one upstream fetch per key in flight; everyone else waits for its outcome.
//!
//! Like pingora's cache lock: one leader per key, the leader's work runs in its own task so a
//! disconnecting client cannot cancel it, and a leader that fails or panics hands over cleanly — the
//! entry is removed and the next request elects a new leader.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// A run's outcome, awaitable by any number of waiters.
type SharedRun<T, E> = Shared<BoxFuture<'static, Result<T, E>>>;

/// Runs in flight by key, each with its generation.
type Inflight<K, T, E> = Arc<Mutex<HashMap<K, (u64, SharedRun<T, E>)>>>;

/// Single-flight runner: every waiter gets a clone of the leader's outcome (`T` is cheap to clone,
/// e.g. an `Arc` or a `Bytes`-backed value).
pub(crate) struct Coalescer<K, T, E> {
    inflight: Inflight<K, T, E>,
    next: AtomicU64,
}

/// Removes a finished run's entry (if it is still that run's) however the run ends, so that a run
/// nobody waited for does not answer later requests with a stale outcome.
struct Forget<K: Eq + Hash, T, E> {
    inflight: Inflight<K, T, E>,
    key: K,
    generation: u64,
}

impl<K: Eq + Hash, T, E> Drop for Forget<K, T, E> {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            map.remove(&self.key);
        }
    }
}

impl<K, T, E> std::fmt::Debug for Coalescer<K, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coalescer")
    }
}

impl<
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
> Default for Coalescer<K, T, E>
{
    fn default() -> Self {
        Coalescer {
            inflight: Arc::default(),
            next: AtomicU64::new(0),
        }
    }
}

impl<
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
> Coalescer<K, T, E>
{
    /// Runs `work` for `key` unless a run for it is already in flight, in which case this waits for
    /// that one. Returns the run's outcome and whether this call led it. `panicked` is the error
    /// waiters get if the leader's task dies.
    pub async fn run<F>(
        &self,
        key: K,
        work: impl FnOnce() -> F,
        panicked: impl FnOnce() -> E,
    ) -> (Result<T, E>, bool)
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (fut, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some((_, f)) => (f.clone(), false),
                None => {
                    let generation = self.next.fetch_add(1, Ordering::Relaxed);
                    let forget = Forget {
                        inflight: self.inflight.clone(),
                        key: key.clone(),
                        generation,
                    };
                    let w = work();
                    // The entry goes when the run ends (the map lock held here orders that after
                    // the insert below), whether or not anyone is still waiting.
                    let handle = tokio::spawn(async move {
                        let _forget = forget;
                        w.await
                    });
                    let err = panicked();
                    let shared = async move { handle.await.unwrap_or(Err(err)) }
                        .boxed()
                        .shared();
                    map.insert(key.clone(), (generation, shared.clone()));
                    (shared, true)
                }
            }
        };
        let out = fut.await;
        (out, leader)
    }

    /// Keys in flight right now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn one_run_per_key_and_clean_handover_after_a_panic() {
        let c: Arc<Coalescer<&str, (), String>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let calls = (0..20).map(|_| {
            let (c, runs, mut rx) = (c.clone(), runs.clone(), release_rx.clone());
            async move {
                c.run(
                    "k",
                    move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = rx.wait_for(|go| *go).await;
                        Ok(())
                    },
                    || "died".to_owned(),
                )
                .await
            }
        });
        // join! polls all twenty calls (each joins the flight and waits) before the release runs.
        let (results, ()) = tokio::join!(futures_util::future::join_all(calls), async {
            release_tx.send(true).unwrap();
        });
        assert!(results.iter().all(|(r, _)| r.is_ok()));
        assert_eq!(results.iter().filter(|(_, led)| *led).count(), 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(c.len(), 0);

        // A leader that panics: its waiters get the error, and the next call leads a fresh run.
        let (r, _) = c
            .run(
                "k",
                || async { panic!("leader died") },
                || "died".to_owned(),
            )
            .await;
        assert_eq!(r, Err("died".to_owned()));
        let (r, led) = c.run("k", || async { Ok(()) }, || "died".to_owned()).await;
        assert_eq!((r, led), (Ok(()), true));
    }
}
