//! Warnings about a failing upstream, at most one per upstream per [`WARN_EVERY`]: a dead upstream
//! fails every pull, and a warning per request would bury everything else in the log.

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
}

impl OutageLog {
    /// Records a failure at `now`; `Some(n)` when it is to be logged, `n` being the failures left
    /// unlogged since the previous warning.
    pub(crate) fn failed(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.last_warned {
            Some(t) if now.saturating_duration_since(t) < WARN_EVERY => {
                s.unlogged += 1;
                None
            }
            _ => {
                s.last_warned = Some(now);
                Some(std::mem::take(&mut s.unlogged))
            }
        }
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
}
