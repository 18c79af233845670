//! The serving lifecycle: the registry listener, the optional metrics listener, housekeeping while
//! they run, one shutdown for both, and the store left tidy at the end. What `ferry serve` runs
//! once it has an [`App`] and its listeners, and what tests run to have a whole server in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::mirror::budget::CacheBudget;
use crate::{App, ServeOptions};

/// How a running server serves and keeps house.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Connection limits of the registry listener.
    pub serve: ServeOptions,
    /// Connection limits of the metrics listener.
    pub metrics_serve: ServeOptions,
    /// Time between housekeeping rounds: pull statistics written, the cache kept within its
    /// budget; expired uploads and abandoned temp files are swept about every ten minutes.
    pub housekeeping_interval: Duration,
    /// The cache's limits, applied every round when the app mirrors.
    pub budget: CacheBudget,
}

/// Why serving stopped other than by the shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The registry listener failed (the host's fault: sockets, descriptors).
    #[error("serving the registry API failed: {0}")]
    Registry(#[source] std::io::Error),
}

/// Serves `app` on `listener` (and its metrics on `metrics`, if given) until `shutdown` resolves;
/// then both listeners stop accepting and drain, pull statistics are written and temp files
/// removed.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    settings: RunSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let RunSettings {
        serve,
        metrics_serve,
        housekeeping_interval,
        budget,
    } = settings;
    let housekeeping = tokio::spawn(keep_house(app.clone(), housekeeping_interval, budget));
    let announcing = app
        .mirror
        .as_ref()
        .and_then(|m| m.peers.clone())
        .map(|p| tokio::spawn(p.keep_announced(app.store.clone(), app.metrics.clone())));
    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics_server = metrics.map(|l| {
        tokio::spawn(crate::serve(
            l,
            crate::metrics::router(app.clone()),
            metrics_serve,
            stopped(),
        ))
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let served = crate::serve(listener, crate::router(app.clone()), serve, stopped()).await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    housekeeping.abort();
    let _ = housekeeping.await;
    if let Some(a) = announcing {
        a.abort();
    }
    if let Err(e) = app.store.flush_access().await {
        tracing::warn!(error = %e, "writing pull statistics failed");
    }
    if let Err(e) = app.store.clean_tmp().await {
        // Requests still running past the grace period may hold temp files; the next start wipes them.
        tracing::warn!(error = %e, "could not remove every temp file at shutdown");
    }
    served.map_err(RunError::Registry)
}

/// Housekeeping while the server runs: pull statistics are written every round, the cache is kept
/// within its budget, and expired uploads and abandoned temp files go about every ten minutes.
async fn keep_house(app: Arc<App>, interval: Duration, budget: CacheBudget) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let sweep_every = (600 / interval.as_secs().max(1)).max(1);
    // Configuration is checked before serving; this only guards a caller that did not.
    let mut state = budget
        .state()
        .inspect_err(|e| tracing::error!(error = %e, "the cache budget is not enforced"))
        .ok();
    if app.mirror.is_some() && budget.max_bytes > 0 {
        app.store.journal_pulls(crate::mirror::budget::PULL_JOURNAL);
    }
    for round in 1u64.. {
        tick.tick().await;
        if let Err(e) = app.store.flush_access().await {
            tracing::warn!(error = %e, "writing pull statistics failed");
        }
        if let Some(rate) = &app.options.rate {
            rate.sweep();
        }
        if let Some(m) = &app.mirror
            && let Some(state) = &mut state
            && let Err(e) =
                crate::mirror::budget::evict(&app.store, m, &app.metrics, &budget, state).await
        {
            tracing::warn!(error = %e, "cache eviction failed");
        }
        if round % sweep_every == 0
            && let Err(e) = app.store.sweep().await
        {
            tracing::warn!(error = %e, "sweeping expired uploads failed");
        }
    }
}
