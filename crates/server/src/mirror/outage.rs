//! Warnings about a failing upstream, at most one per upstream per [`WARN_EVERY`]: a dead upstream
//! fails every pull, and a warning per request would bury everything else in the log. The first
//! success after a logged failure is worth a line too: without it the log leaves the upstream down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest gap between two warnings about the same upstream.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// When an upstream was last warned about, and how many failures went unlogged since.
#[derive(Debug, Default)]
pub(crate) struct OutageLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_warned: Option<Instant>,
    unlogged: u64,
    /// When the first logged failure not yet followed by a success was.
    down_since: Option<Instant>,
}

/// An upstream answering again after a logged failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Failures since the last warning, which were counted but not logged.
    pub unlogged: u64,
    /// From the first logged failure to this success.
    pub down_for: Duration,
}

impl OutageLog {
    /// Records a failure at `now`; `Some(n)` when it is to be logged, `n` being the failures left
    /// unlogged since the previous warning (or recovery).
    pub(crate) fn failed(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last_warned {
            Some(t) if now.saturating_duration_since(t) < WARN_EVERY => {
                s.unlogged += 1;
                None
            }
            _ => {
                s.last_warned = Some(now);
                s.down_since.get_or_insert(now);
                Some(std::mem::take(&mut s.unlogged))
            }
        }
    }

    /// Records a success at `now`; `Some` when it is the first since a logged failure. The
    /// warning interval keeps running, so a flapping upstream still gets at most one warning
    /// (and so one recovery line) per [`WARN_EVERY`].
    pub(crate) fn succeeded(&self, now: Instant) -> Option<Recovery> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = s.down_since.take()?;
        Some(Recovery {
            unlogged: std::mem::take(&mut s.unlogged),
            down_for: now.saturating_duration_since(since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_count_of_the_rest() {
        let log = OutageLog::default();
        let t = Instant::now();
        assert_eq!(log.failed(t), Some(0));
        assert_eq!(log.failed(t + Duration::from_secs(1)), None);
        assert_eq!(log.failed(t + WARN_EVERY - Duration::from_secs(1)), None);
        assert_eq!(log.failed(t + WARN_EVERY), Some(2));
        assert_eq!(log.failed(t + WARN_EVERY), None);
    }

    #[test]
    fn the_first_success_after_a_logged_failure_reports_the_recovery_once() {
        let log = OutageLog::default();
        let t = Instant::now();
        let at = |secs| t + Duration::from_secs(secs);
        assert_eq!(
            log.succeeded(t),
            None,
            "no failure, nothing to recover from"
        );
        assert_eq!(log.failed(t), Some(0));
        assert_eq!(log.failed(at(1)), None);
        assert_eq!(log.failed(at(2)), None);
        assert_eq!(
            log.succeeded(at(5)),
            Some(Recovery {
                unlogged: 2,
                down_for: Duration::from_secs(5)
            })
        );
        assert_eq!(log.succeeded(at(6)), None, "reported once");
        // Within the interval a new failure is counted, not logged, and so not recovered from.
        assert_eq!(log.failed(at(7)), None);
        assert_eq!(log.succeeded(at(8)), None);
        // The next logged failure starts a new outage and carries the count left unlogged.
        assert_eq!(log.failed(t + WARN_EVERY), Some(1));
        assert_eq!(log.failed(t + WARN_EVERY + WARN_EVERY), Some(0));
        assert_eq!(
            log.succeeded(t + WARN_EVERY + WARN_EVERY + Duration::from_secs(3)),
            Some(Recovery {
                unlogged: 0,
                down_for: WARN_EVERY + Duration::from_secs(3)
            })
        );
    }
}
