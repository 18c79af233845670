//! Bounds on HTTP/2 connections that HTTP/1's do not cover.
//!
//! Over HTTP/1 a client that stops reading leaves a socket write pending, which the connection's
//! rate floor (`Paced`) times; and hyper's header timer closes a connection that never sends a
//! request. Over HTTP/2 neither holds: flow control means a stalled stream leaves no write pending
//! (hyper just stops asking the body for more), and no timer applies to a connection with no
//! stream. So each response body is watched here ([`FlooredBody`]): the time it waits between
//! handing hyper a frame and being asked for the next one is the time the client's flow-control
//! window keeps ferry waiting, held to the same [`RateFloor`]; and a connection with no open
//! stream for the idle limit is told to go away.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};

use crate::listen::RateFloor;

/// What a connection's watch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do.
    Fine,
    /// No stream has been open for the idle limit.
    Idle,
    /// A stream's client took its bytes below the floor for a whole window.
    TooSlow,
}

/// The open streams of one HTTP/2 connection.
#[derive(Debug)]
pub(crate) struct StreamWatch {
    floor: RateFloor,
    idle_limit: Duration,
    open: AtomicUsize,
    /// When the last stream closed (or the connection began).
    idle_since: Mutex<Option<Instant>>,
    streams: Mutex<Vec<Weak<Mutex<Pace>>>>,
}

/// One stream's progress against the floor.
#[derive(Debug, Default)]
struct Pace {
    /// When the body last handed hyper a frame and has not been asked for another since.
    handed_at: Option<Instant>,
    /// Time waited in earlier stretches of this window.
    waited: Duration,
    /// Bytes handed over in this window.
    moved: u64,
}

impl Pace {
    fn waited(&self, now: Instant) -> Duration {
        self.waited
            + self
                .handed_at
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

impl StreamWatch {
    pub(crate) fn new(floor: RateFloor, idle_limit: Duration) -> Arc<StreamWatch> {
        Arc::new(StreamWatch {
            floor,
            idle_limit,
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Some(Instant::now())),
            streams: Mutex::new(Vec::new()),
        })
    }

    /// Counts a stream open until the guard (carried by its response body) is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let pace = Arc::new(Mutex::new(Pace::default()));
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(&pace));
        StreamGuard {
            watch: self.clone(),
            pace,
        }
    }

    /// Looks at the connection now: idle too long, a stream below the floor, or fine.
    pub(crate) fn check(&self, now: Instant) -> Verdict {
        if self.open.load(Ordering::SeqCst) == 0 {
            let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            if since.is_some_and(|t| now.saturating_duration_since(t) >= self.idle_limit) {
                return Verdict::Idle;
            }
        }
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for pace in streams.iter().filter_map(Weak::upgrade) {
            let mut pace = pace.lock().unwrap_or_else(|e| e.into_inner());
            if pace.waited(now) >= self.floor.window {
                if !self.floor.met(pace.moved) {
                    return Verdict::TooSlow;
                }
                // A full window met the floor: the next one starts now, still waiting if it
                // was (a stream stalled after a good window is judged by the next one).
                *pace = Pace {
                    handed_at: pace.handed_at.map(|_| now),
                    waited: Duration::ZERO,
                    moved: 0,
                };
            }
        }
        Verdict::Fine
    }

    /// How often [`StreamWatch::check`] should run to judge within a small part of a window.
    pub(crate) fn tick(&self) -> Duration {
        (self.floor.window.min(self.idle_limit) / 8)
            .clamp(Duration::from_millis(10), Duration::from_secs(5))
    }
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    watch: Arc<StreamWatch>,
    pace: Arc<Mutex<Pace>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.watch.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self
                .watch
                .idle_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

/// A response body that reports to its stream's [`Pace`] (and keeps the stream counted open).
///
/// Frames are handed over in pieces of [`FlooredBody::PIECE`]: hyper asks for the next piece
/// right after sending one and holds it until the stream has room, so what was handed over is
/// what the client's window took, give or take one piece and hyper's send buffer (the floor is
/// met about 16 KiB per window early), not a whole megabyte read from a file at once.
#[derive(Debug)]
pub(crate) struct FlooredBody<B> {
    inner: B,
    guard: StreamGuard,
    rest: bytes::Bytes,
}

impl<B> FlooredBody<B> {
    const PIECE: usize = 16 * 1024;

    pub(crate) fn new(inner: B, guard: StreamGuard) -> FlooredBody<B> {
        FlooredBody {
            inner,
            guard,
            rest: bytes::Bytes::new(),
        }
    }

    fn hand_over(&mut self, piece: bytes::Bytes) -> bytes::Bytes {
        let mut pace = self.guard.pace.lock().unwrap_or_else(|e| e.into_inner());
        pace.moved += piece.len() as u64;
        pace.handed_at = Some(Instant::now());
        piece
    }
}

impl<B: Body<Data = bytes::Bytes> + Unpin> Body for FlooredBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let now = Instant::now();
        let floor = this.guard.watch.floor;
        {
            // Asked again: the wait for the client is over. A full window that met the floor
            // starts a new one; one that did not stays as it is for the watch to close.
            let mut pace = this.guard.pace.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = pace.handed_at.take() {
                pace.waited += now.saturating_duration_since(t);
            }
            if pace.waited >= floor.window && floor.met(pace.moved) {
                *pace = Pace::default();
            }
        }
        if this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                other => return other,
            }
        }
        let n = this.rest.len().min(Self::PIECE);
        let piece = this.rest.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(this.hand_over(piece)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        // Upper first: http-body asserts lower <= upper at each step.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(window_ms: u64) -> RateFloor {
        RateFloor {
            bytes_per_sec: 1000,
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn a_connection_without_streams_is_idle_after_the_limit_and_not_before() {
        let watch = StreamWatch::new(floor(1000), Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(watch.check(start), Verdict::Fine);
        assert_eq!(watch.check(start + Duration::from_secs(6)), Verdict::Idle);
        let guard = watch.open();
        assert_eq!(watch.check(start + Duration::from_secs(60)), Verdict::Fine);
        drop(guard);
        let closed = Instant::now();
        assert_eq!(watch.check(closed + Duration::from_secs(1)), Verdict::Fine);
        assert_eq!(watch.check(closed + Duration::from_secs(5)), Verdict::Idle);
    }

    #[test]
    fn a_stream_whose_client_takes_too_little_in_a_window_is_too_slow() {
        let watch = StreamWatch::new(floor(1000), Duration::from_secs(60));
        let guard = watch.open();
        let now = Instant::now();
        // Handed 10 bytes and never asked again: after a whole window, below 1000 bytes/s.
        {
            let mut pace = guard.pace.lock().unwrap();
            pace.moved = 10;
            pace.handed_at = Some(now);
        }
        assert_eq!(watch.check(now + Duration::from_millis(900)), Verdict::Fine);
        assert_eq!(
            watch.check(now + Duration::from_millis(1000)),
            Verdict::TooSlow
        );
        // Enough bytes in the window: fine, and the next window begins; a client that then
        // stalls is judged by that window.
        guard.pace.lock().unwrap().moved = 5000;
        let later = now + Duration::from_millis(1000);
        assert_eq!(watch.check(later), Verdict::Fine);
        assert_eq!(
            watch.check(later + Duration::from_millis(500)),
            Verdict::Fine
        );
        assert_eq!(
            watch.check(later + Duration::from_millis(1000)),
            Verdict::TooSlow
        );
    }

    #[test]
    fn waiting_on_ferrys_side_does_not_count_against_the_client() {
        let watch = StreamWatch::new(floor(1000), Duration::from_secs(60));
        let guard = watch.open();
        // A body that is being asked for data (not handed over) waits on ferry, not the client.
        guard.pace.lock().unwrap().handed_at = None;
        assert_eq!(
            watch.check(Instant::now() + Duration::from_secs(30)),
            Verdict::Fine
        );
    }
}
