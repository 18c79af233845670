//! What `ferry copy` shows while it runs, always on stderr: bars per image and per layer on a
//! terminal, one line per blob and a periodic summary when stderr is a file or a pipe (so CI logs
//! show progress too), nothing with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use ferry_copy::{BlobOutcome, Event, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Layer bars on screen at once: with `-J 6 -j 16` a hundred blobs can be in flight, and a screen
/// of bars scrolls. Blobs started while this many are shown are counted in their image's bar only.
pub(crate) const MAX_LAYER_BARS: usize = 8;

/// The progress display of one `ferry copy`, chosen by where stderr goes.
#[derive(Debug)]
pub(crate) enum CopyProgress {
    /// `--quiet` (or `--json`, whose output is the summary on stdout).
    Quiet,
    /// stderr is not a terminal.
    Lines(Lines),
    /// stderr is a terminal.
    Bars(Box<Bars>),
}

impl CopyProgress {
    pub(crate) fn for_stderr(quiet: bool) -> CopyProgress {
        if quiet {
            CopyProgress::Quiet
        } else if std::io::stderr().is_terminal() {
            CopyProgress::Bars(Box::new(Bars::new(ProgressDrawTarget::stderr())))
        } else {
            CopyProgress::Lines(Lines::default())
        }
    }

    /// Called every few seconds while the copy runs: logs get a summary line; bars show it
    /// already.
    pub(crate) fn tick(&self, elapsed: Duration) {
        if let CopyProgress::Lines(lines) = self {
            lines.summary(elapsed);
        }
    }

    /// The copy is over: bars of images that failed half way are taken off the screen, so the
    /// error and final lines print on a clean terminal.
    pub(crate) fn finish(&self) {
        if let CopyProgress::Bars(bars) = self {
            bars.clear();
        }
    }
}

impl Progress for CopyProgress {
    fn event(&self, event: Event<'_>) {
        match self {
            CopyProgress::Quiet => {}
            CopyProgress::Lines(lines) => lines.event(event),
            CopyProgress::Bars(bars) => bars.event(event),
        }
    }
}

/// One line per blob on stderr, and [`Lines::summary`] every few seconds.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    state: Mutex<LineState>,
}

#[derive(Debug, Default)]
struct LineState {
    blobs: usize,
    blobs_done: usize,
    bytes: u64,
    bytes_done: u64,
}

impl Lines {
    fn summary(&self, elapsed: Duration) {
        let s = self.state.lock().expect("progress state poisoned");
        let secs = elapsed.as_secs_f64().max(1e-6);
        eprintln!(
            "… {}/{} blobs, {} of {}, {}/s",
            s.blobs_done,
            s.blobs,
            mb(s.bytes_done),
            mb(s.bytes),
            mb((s.bytes_done as f64 / secs) as u64)
        );
    }
}

impl Progress for Lines {
    fn event(&self, event: Event<'_>) {
        let mut s = self.state.lock().expect("progress state poisoned");
        match event {
            Event::ImageStarted { blobs, bytes, .. } => {
                s.blobs += blobs;
                s.bytes += bytes;
            }
            Event::BlobProgress { bytes, .. } => s.bytes_done += bytes,
            Event::BlobDone {
                image,
                digest,
                size,
                outcome,
            } => {
                s.blobs_done += 1;
                if matches!(outcome, BlobOutcome::Present | BlobOutcome::Mounted) {
                    s.bytes_done += size;
                }
                eprintln!(
                    "{image}: {} {} {}",
                    short(digest.as_str()),
                    mb(size),
                    how(outcome)
                );
            }
            Event::Retrying { image, what, error } => {
                eprintln!("{image}: {what}: {error}; trying again");
            }
            Event::ImageDone { image, digest } => eprintln!("{image}: done, {digest}"),
            Event::BlobStarted { .. } => {}
        }
    }
}

fn how(outcome: BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Copied { resumed_from: 0 } => "copied".to_owned(),
        BlobOutcome::Copied { resumed_from } => {
            format!("copied (resumed at {})", mb(resumed_from))
        }
        BlobOutcome::Present => "already there".to_owned(),
        BlobOutcome::Mounted => "mounted".to_owned(),
        BlobOutcome::Cached => "copied from the layer cache".to_owned(),
    }
}

/// A bar per image in flight and one per blob in flight (at most [`MAX_LAYER_BARS`]), all in one
/// [`MultiProgress`] so that images copied at once redraw in their own rows. A finished blob's
/// bar is removed; a finished image's bar becomes one printed line above the bars.
pub(crate) struct Bars {
    multi: MultiProgress,
    image_style: ProgressStyle,
    blob_style: ProgressStyle,
    state: Mutex<BarState>,
}

#[derive(Debug, Default)]
struct BarState {
    images: HashMap<String, ProgressBar>,
    /// Blobs in flight, by image and digest: two images may fetch the same digest at once.
    blobs: HashMap<(String, String), InFlight>,
    images_done: usize,
}

#[derive(Debug)]
struct InFlight {
    bar: Option<ProgressBar>,
    /// Bytes reported for it so far, so that its image's bar gets the rest when it is done
    /// (a blob the destination had, or the part of a resumed one that was already there).
    seen: u64,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Bars {
    pub(crate) fn new(target: ProgressDrawTarget) -> Bars {
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .expect("a valid bar template")
                .progress_chars("=> ")
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            image_style: style(
                "{msg:40!} [{bar:24}] {decimal_bytes:>9}/{decimal_total_bytes:<9} {decimal_bytes_per_sec:>11}",
            ),
            blob_style: style("  {msg:38!} [{bar:24}] {decimal_bytes:>9}/{decimal_total_bytes:<9}"),
            state: Mutex::default(),
        }
    }

    fn event(&self, event: Event<'_>) {
        let mut s = self.state.lock().expect("progress state poisoned");
        match event {
            Event::ImageStarted { image, bytes, .. } => {
                let bar = self.multi.add(
                    ProgressBar::new(bytes)
                        .with_style(self.image_style.clone())
                        .with_message(image.to_owned()),
                );
                if let Some(old) = s.images.insert(image.to_owned(), bar) {
                    // The same source twice in one copy: the newer bar replaces the older.
                    self.drop_bar(&old);
                }
            }
            Event::BlobStarted {
                image,
                digest,
                size,
            } => {
                let shown = s.blobs.values().filter(|b| b.bar.is_some()).count();
                let bar = match s.images.get(image) {
                    Some(image_bar) if shown < MAX_LAYER_BARS => Some(
                        self.multi.insert_after(
                            image_bar,
                            ProgressBar::new(size)
                                .with_style(self.blob_style.clone())
                                .with_message(short(digest.as_str()).to_owned()),
                        ),
                    ),
                    _ => None,
                };
                s.blobs.insert(
                    (image.to_owned(), digest.to_string()),
                    InFlight { bar, seen: 0 },
                );
            }
            Event::BlobProgress {
                image,
                digest,
                bytes,
            } => {
                if let Some(b) = s.blobs.get_mut(&(image.to_owned(), digest.to_string())) {
                    b.seen += bytes;
                    if let Some(bar) = &b.bar {
                        bar.inc(bytes);
                    }
                }
                if let Some(bar) = s.images.get(image) {
                    bar.inc(bytes);
                }
            }
            Event::BlobDone {
                image,
                digest,
                size,
                outcome,
            } => {
                let seen = match s.blobs.remove(&(image.to_owned(), digest.to_string())) {
                    Some(InFlight { bar, seen }) => {
                        if let Some(bar) = bar {
                            self.drop_bar(&bar);
                        }
                        seen
                    }
                    None => 0,
                };
                if let Some(bar) = s.images.get(image) {
                    bar.inc(size.saturating_sub(seen));
                }
                if let BlobOutcome::Copied { resumed_from } = outcome
                    && resumed_from > 0
                {
                    let _ = self.multi.println(format!(
                        "{image}: {} {} {}",
                        short(digest.as_str()),
                        mb(size),
                        how(outcome)
                    ));
                }
            }
            Event::Retrying { image, what, error } => {
                // Above the bars, so it stays on screen after they move on.
                let _ = self
                    .multi
                    .println(format!("{image}: {what}: {error}; trying again"));
            }
            Event::ImageDone { image, digest } => {
                if let Some(bar) = s.images.remove(image) {
                    self.drop_bar(&bar);
                }
                s.images_done += 1;
                let _ = self.multi.println(format!("{image}: done, {digest}"));
            }
        }
    }

    fn drop_bar(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        self.multi.remove(bar);
    }

    fn clear(&self) {
        let mut s = self.state.lock().expect("progress state poisoned");
        for (_, b) in s.blobs.drain() {
            if let Some(bar) = b.bar {
                self.drop_bar(&bar);
            }
        }
        for (_, bar) in s.images.drain() {
            self.drop_bar(&bar);
        }
        let _ = self.multi.clear();
    }
}

/// Bytes as decimal megabytes, as transfer tools print them.
pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `sha256:0123456789ab`: enough of a digest to tell blobs apart in a log.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_oci::Digest;

    impl Bars {
        fn hidden() -> Bars {
            Bars::new(ProgressDrawTarget::hidden())
        }

        /// (position, length) of an image's bar, while it has one.
        fn image_bar(&self, image: &str) -> Option<(u64, u64)> {
            let s = self.state.lock().unwrap();
            s.images
                .get(image)
                .map(|b| (b.position(), b.length().unwrap()))
        }

        /// The layer bars on screen: (digest, position, length).
        fn layer_bars(&self) -> Vec<(String, u64, u64)> {
            let s = self.state.lock().unwrap();
            let mut v: Vec<_> = s
                .blobs
                .iter()
                .filter_map(|((_, d), b)| {
                    let bar = b.bar.as_ref()?;
                    assert!(!bar.is_finished(), "a finished bar is still listed");
                    Some((d.clone(), bar.position(), bar.length().unwrap()))
                })
                .collect();
            v.sort();
            v
        }

        fn blobs_in_flight(&self) -> usize {
            self.state.lock().unwrap().blobs.len()
        }
    }

    fn digest(n: u8) -> Digest {
        Digest::sha256(&[n])
    }

    fn started(bars: &Bars, image: &str, d: &Digest, size: u64) {
        bars.event(Event::BlobStarted {
            image,
            digest: d,
            size,
        });
    }

    fn progress(bars: &Bars, image: &str, d: &Digest, bytes: u64) {
        bars.event(Event::BlobProgress {
            image,
            digest: d,
            bytes,
        });
    }

    fn done(bars: &Bars, image: &str, d: &Digest, size: u64, outcome: BlobOutcome) {
        bars.event(Event::BlobDone {
            image,
            digest: d,
            size,
            outcome,
        });
    }

    #[test]
    fn an_image_bar_counts_copied_present_and_resumed_bytes_to_its_total() {
        let bars = Bars::hidden();
        let img = "registry://127.0.0.1:5000/team/app:v1";
        let (a, b, c) = (digest(1), digest(2), digest(3));
        bars.event(Event::ImageStarted {
            image: img,
            blobs: 3,
            bytes: 1000 + 300 + 50,
        });
        assert_eq!(bars.image_bar(img), Some((0, 1350)));

        started(&bars, img, &a, 1000);
        progress(&bars, img, &a, 400);
        progress(&bars, img, &a, 600);
        assert_eq!(bars.layer_bars(), vec![(a.to_string(), 1000, 1000)]);
        done(
            &bars,
            img,
            &a,
            1000,
            BlobOutcome::Copied { resumed_from: 0 },
        );
        assert!(
            bars.layer_bars().is_empty(),
            "a finished blob's bar is gone"
        );
        assert_eq!(bars.image_bar(img), Some((1000, 1350)));

        // Resumed: only the missing 100 bytes arrive, the image still reaches the blob's size.
        started(&bars, img, &b, 300);
        progress(&bars, img, &b, 100);
        done(
            &bars,
            img,
            &b,
            300,
            BlobOutcome::Copied { resumed_from: 200 },
        );
        assert_eq!(bars.image_bar(img), Some((1300, 1350)));

        // The destination had it: no bytes arrive at all.
        started(&bars, img, &c, 50);
        done(&bars, img, &c, 50, BlobOutcome::Present);
        assert_eq!(bars.image_bar(img), Some((1350, 1350)));

        bars.event(Event::ImageDone {
            image: img,
            digest: &digest(9),
        });
        assert_eq!(bars.image_bar(img), None, "a finished image's bar is gone");
        assert_eq!(bars.state.lock().unwrap().images_done, 1);
        assert_eq!(bars.blobs_in_flight(), 0);
    }

    #[test]
    fn layer_bars_are_bounded_and_a_freed_row_goes_to_the_next_blob() {
        let bars = Bars::hidden();
        let images = ["registry://h/one:1", "registry://h/two:1"];
        for img in images {
            bars.event(Event::ImageStarted {
                image: img,
                blobs: MAX_LAYER_BARS,
                bytes: 10 * MAX_LAYER_BARS as u64,
            });
        }
        // Two images, each with MAX_LAYER_BARS blobs in flight at once.
        let digests: Vec<Digest> = (0..MAX_LAYER_BARS as u8).map(digest).collect();
        for img in images {
            for d in &digests {
                started(&bars, img, d, 10);
            }
        }
        assert_eq!(bars.blobs_in_flight(), 2 * MAX_LAYER_BARS);
        assert_eq!(bars.layer_bars().len(), MAX_LAYER_BARS);

        // A blob without a bar still counts in its image's bar.
        for d in &digests {
            progress(&bars, images[1], d, 10);
        }
        assert_eq!(
            bars.image_bar(images[1]),
            Some((10 * MAX_LAYER_BARS as u64, 10 * MAX_LAYER_BARS as u64))
        );

        // One bar finishes: the next blob started gets its row, and never more than the bound.
        done(
            &bars,
            images[0],
            &digests[0],
            10,
            BlobOutcome::Copied { resumed_from: 0 },
        );
        assert_eq!(bars.layer_bars().len(), MAX_LAYER_BARS - 1);
        started(&bars, images[0], &digest(200), 10);
        started(&bars, images[0], &digest(201), 10);
        assert_eq!(bars.layer_bars().len(), MAX_LAYER_BARS);
        assert!(
            bars.layer_bars()
                .iter()
                .any(|(d, _, _)| *d == digest(200).to_string())
        );
    }

    #[test]
    fn the_same_digest_in_two_images_has_two_entries_and_clear_empties_the_screen() {
        let bars = Bars::hidden();
        let d = digest(7);
        for img in ["registry://h/a:1", "registry://h/b:1"] {
            bars.event(Event::ImageStarted {
                image: img,
                blobs: 1,
                bytes: 100,
            });
            started(&bars, img, &d, 100);
        }
        progress(&bars, "registry://h/a:1", &d, 60);
        assert_eq!(bars.image_bar("registry://h/a:1"), Some((60, 100)));
        assert_eq!(bars.image_bar("registry://h/b:1"), Some((0, 100)));
        assert_eq!(bars.layer_bars().len(), 2);

        // An image that failed half way leaves bars behind; the end of the copy removes them.
        let kept = bars.state.lock().unwrap().images["registry://h/a:1"].clone();
        bars.clear();
        assert!(kept.is_finished());
        assert_eq!(bars.blobs_in_flight(), 0);
        assert_eq!(bars.image_bar("registry://h/a:1"), None);
    }
}
