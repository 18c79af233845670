//! How many pullers run when: up by one every step to the maximum, then down by one to one (the
//! 1→N→1 ramp of ociregistry's load test), or a fixed count for a fixed time.

use std::time::Duration;

/// A puller schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// 1, 2, …, `max`, …, 2, 1 pullers, each for `step`.
    Ramp {
        /// Most pullers at once.
        max: usize,
        /// How long each count runs.
        step: Duration,
    },
    /// `pullers` for `duration`.
    Fixed {
        /// Pullers.
        pullers: usize,
        /// How long.
        duration: Duration,
    },
}

impl Schedule {
    /// Pullers that should be running `t` after the start; `None` once the schedule is over.
    pub fn pullers_at(&self, t: Duration) -> Option<usize> {
        match *self {
            Schedule::Ramp { max, step } => {
                if max == 0 || step.is_zero() {
                    return None;
                }
                let k = (t.as_nanos() / step.as_nanos()) as usize;
                let steps = 2 * max - 1;
                if k >= steps {
                    None
                } else if k < max {
                    Some(k + 1)
                } else {
                    Some(steps - k)
                }
            }
            Schedule::Fixed { pullers, duration } => (t < duration).then_some(pullers),
        }
    }

    /// The schedule's length.
    pub fn total(&self) -> Duration {
        match *self {
            Schedule::Ramp { max, step } => step * (2 * max.max(1) as u32 - 1),
            Schedule::Fixed { duration, .. } => duration,
        }
    }

    /// The most pullers it ever runs.
    pub fn max_pullers(&self) -> usize {
        match *self {
            Schedule::Ramp { max, .. } => max,
            Schedule::Fixed { pullers, .. } => pullers,
        }
    }

    /// The instants (from the start) at which the count changes, with the new count; the last
    /// entry has count 0 (the end).
    pub fn changes(&self) -> Vec<(Duration, usize)> {
        let mut out = Vec::new();
        match *self {
            Schedule::Ramp { max, step } => {
                for k in 0..(2 * max).saturating_sub(1) {
                    let n = if k < max { k + 1 } else { 2 * max - 1 - k };
                    out.push((step * k as u32, n));
                }
            }
            Schedule::Fixed { pullers, .. } => out.push((Duration::ZERO, pullers)),
        }
        out.push((self.total(), 0));
        out
    }
}

/// Splits `images` among pullers: with patterns, puller `k` gets the images whose name contains
/// `patterns[k % patterns.len()]` (ociregistry's batch keys: disjoint when the patterns are);
/// without, every puller gets all of them.
pub fn partition<'a>(
    images: &'a [String],
    patterns: &[String],
    pullers: usize,
) -> Vec<Vec<&'a String>> {
    (0..pullers)
        .map(|k| {
            if patterns.is_empty() {
                images.iter().collect()
            } else {
                let p = &patterns[k % patterns.len()];
                images.iter().filter(|i| i.contains(p.as_str())).collect()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ramp_goes_up_then_down() {
        let s = Schedule::Ramp {
            max: 3,
            step: Duration::from_secs(10),
        };
        let at = |secs: f64| s.pullers_at(Duration::from_secs_f64(secs));
        assert_eq!(
            [0.0, 9.9, 10.0, 20.0, 29.9, 30.0, 40.0, 49.9, 50.0].map(at),
            [
                Some(1),
                Some(1),
                Some(2),
                Some(3),
                Some(3),
                Some(2),
                Some(1),
                Some(1),
                None
            ]
        );
        assert_eq!(s.total(), Duration::from_secs(50));
        assert_eq!(
            s.changes(),
            vec![
                (Duration::ZERO, 1),
                (Duration::from_secs(10), 2),
                (Duration::from_secs(20), 3),
                (Duration::from_secs(30), 2),
                (Duration::from_secs(40), 1),
                (Duration::from_secs(50), 0)
            ]
        );
    }

    #[test]
    fn patterns_give_disjoint_batches() {
        let images: Vec<String> = (1..=4)
            .flat_map(|b| (0..3).map(move |i| format!("a{i}-x-{b:04}:v1")))
            .collect();
        let parts = partition(&images, &["-0001".into(), "-0002".into()], 2);
        assert_eq!(parts[0].len(), 3);
        assert_eq!(parts[1].len(), 3);
        assert!(parts[0].iter().all(|i| !parts[1].contains(i)));
        assert_eq!(partition(&images, &[], 3)[2].len(), 12);
    }

    proptest! {
        #[test]
        fn ramp_is_consistent_with_its_changes(max in 1usize..20, step_ms in 1u64..5000, t_ms in 0u64..200_000) {
            let s = Schedule::Ramp { max, step: Duration::from_millis(step_ms) };
            let t = Duration::from_millis(t_ms);
            let expected = s
                .changes()
                .iter()
                .rev()
                .find(|(at, _)| *at <= t)
                .map(|(_, n)| *n)
                .filter(|n| *n > 0);
            prop_assert_eq!(s.pullers_at(t), expected);
            prop_assert!(s.pullers_at(t).is_none_or(|n| n >= 1 && n <= max));
        }
    }
}
