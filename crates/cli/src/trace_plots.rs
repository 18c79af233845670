//! The trace lab's plots, drawn through `ferry-report`: a characterization's distributions
//! (`ferry trace analyze --plots DIR`) and hit ratio against capacity (`ferry trace simulate --plot`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry_report::{Axes, Series, line_chart};
use ferry_trace::analyze::Distributions;
use ferry_trace::simulate::SimResult;

/// Points a plotted line keeps at most: beyond that they are sampled.
const MAX_POINTS: usize = 1000;

/// The empirical CDF of ascending `sizes`, sampled evenly by rank.
fn cdf(sizes: &[u64]) -> Vec<(f64, f64)> {
    let n = sizes.len();
    let step = n.div_ceil(MAX_POINTS).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sizes[i] as f64, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = sizes.last() {
        points.push((last as f64, 1.0));
    }
    points
}

/// (rank, GETs) at ranks spaced evenly on a log scale.
fn rank_frequency(gets: &[u64]) -> Vec<(f64, f64)> {
    let n = gets.len();
    let mut ranks: Vec<usize> = (0..MAX_POINTS)
        .map(|k| (n as f64).powf(k as f64 / (MAX_POINTS - 1) as f64).round() as usize)
        .filter(|&r| r >= 1 && r <= n)
        .collect();
    ranks.dedup();
    ranks
        .into_iter()
        .map(|r| (r as f64, gets[r - 1] as f64))
        .collect()
}

/// Writes `size-cdf.svg`, `popularity.svg` and `requests-over-time.svg` into `dir`; returns them.
pub fn analysis(d: &Distributions, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut draw = |name: &str, series: Vec<Series>, axes: Axes| -> anyhow::Result<()> {
        if series.iter().all(|s| s.points.is_empty()) {
            eprintln!("note: {name} not drawn: the trace has nothing to plot there");
            return Ok(());
        }
        let out = dir.join(name);
        line_chart(&series, &axes, &out)?;
        written.push(out);
        Ok(())
    };
    draw(
        "size-cdf.svg",
        vec![
            Series {
                label: "blobs".into(),
                points: cdf(&d.blob_sizes),
            },
            Series {
                label: "manifests".into(),
                points: cdf(&d.manifest_sizes),
            },
        ],
        Axes {
            title: "Object sizes (distinct objects GET)".into(),
            x: "bytes".into(),
            y: "share of objects at most this large".into(),
            log_x: true,
            log_y: false,
        },
    )?;
    draw(
        "popularity.svg",
        vec![Series {
            label: "GETs per object".into(),
            points: rank_frequency(&d.gets_by_rank),
        }],
        Axes {
            title: "Popularity: rank against GETs".into(),
            x: "rank".into(),
            y: "GETs".into(),
            log_x: true,
            log_y: true,
        },
    )?;
    let hours = |pick: fn(&ferry_trace::analyze::Hour) -> u64| {
        d.hours
            .iter()
            .map(|h| (h.hour as f64, pick(h) as f64))
            .collect()
    };
    draw(
        "requests-over-time.svg",
        vec![
            Series {
                label: "reads (GET, HEAD)".into(),
                points: hours(|h| h.reads),
            },
            Series {
                label: "writes (PUT, PATCH, POST)".into(),
                points: hours(|h| h.writes),
            },
        ],
        Axes {
            title: "Requests per hour".into(),
            x: "hours since the first request".into(),
            y: "requests".into(),
            log_x: false,
            log_y: false,
        },
    )?;
    Ok(written)
}

/// Draws hit ratio against capacity, one line per policy and unit, into `out` (.svg or .png).
pub fn hit_ratios(results: &[SimResult], out: &Path) -> anyhow::Result<()> {
    let mut series: Vec<Series> = Vec::new();
    for r in results {
        let label = format!("{} ({})", r.policy, r.unit);
        let point = (r.capacity as f64, r.hit_ratio);
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                label,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let (lo, hi) = results
        .iter()
        .map(|r| r.capacity)
        .fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
    let units: Vec<&str> = {
        let mut u: Vec<&str> = results.iter().map(|r| r.unit).collect();
        u.dedup();
        u
    };
    line_chart(
        &series,
        &Axes {
            title: "Hit ratio against cache capacity".into(),
            x: format!("capacity ({})", units.join(", ")),
            y: "request hit ratio".into(),
            log_x: lo > 0 && hi / lo.max(1) >= 10,
            log_y: false,
        },
        out,
    )
    .with_context(|| format!("cannot draw {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdfs_end_at_one_and_samples_stay_bounded() {
        let sizes: Vec<u64> = (1..=10_000).collect();
        let points = cdf(&sizes);
        assert!(points.len() <= MAX_POINTS + 1, "{}", points.len());
        assert_eq!(points.last(), Some(&(10_000.0, 1.0)));
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(cdf(&[]).is_empty());
    }

    #[test]
    fn rank_frequency_samples_ranks_on_a_log_scale_from_the_first() {
        let gets: Vec<u64> = (1..=50_000).rev().collect();
        let points = rank_frequency(&gets);
        assert_eq!(points[0], (1.0, 50_000.0));
        assert_eq!(points.last(), Some(&(50_000.0, 1.0)));
        assert!(points.len() <= MAX_POINTS);
    }
}
