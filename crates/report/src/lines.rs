//! Line charts of `(x, y)` series, either axis on a log scale: the trace lab's plots (hit ratio
//! against cache size, size CDFs, popularity rank against frequency, requests over time).

use std::path::Path;

use plotters::prelude::*;

use crate::charts::{COLORS, ChartError, DrawError, render, tick_label};

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend.
    pub label: String,
    /// Its points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A chart's title and axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Axes {
    /// Above the chart.
    pub title: String,
    /// The x axis' description.
    pub x: String,
    /// The y axis' description.
    pub y: String,
    /// x on a log10 scale (points at x ≤ 0 are left out).
    pub log_x: bool,
    /// y on a log10 scale (points at y ≤ 0 are left out).
    pub log_y: bool,
}

/// Draws `series` into `out` (`.svg` or `.png` by extension; 1200×600).
pub fn line_chart(series: &[Series], axes: &Axes, out: &Path) -> Result<(), ChartError> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(ChartError::NoRuns);
    }
    render!(out, draw(series, axes))
}

/// A log axis is drawn as the log10 of its values on a linear axis, labelled with the values.
fn scale(v: f64, log: bool) -> Option<f64> {
    match log {
        false => v.is_finite().then_some(v),
        true => (v > 0.0 && v.is_finite()).then(|| v.log10()),
    }
}

fn label(v: &f64, log: bool) -> String {
    if !log {
        return tick_label(v);
    }
    let value = 10f64.powf(*v);
    if (1e-3..1e6).contains(&value) {
        tick_label(&((value * 1000.0).round() / 1000.0))
    } else {
        format!("{value:.0e}")
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[Series],
    axes: &Axes,
) -> Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let scaled: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(x, y)| Some((scale(x, axes.log_x)?, scale(y, axes.log_y)?)))
                .collect()
        })
        .collect();
    let range = |pick: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = scaled
            .iter()
            .flatten()
            .map(pick)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if !lo.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1e-9 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi + (hi - lo) * 0.05)
        }
    };
    let (x0, x1) = range(|p| p.0);
    let (y0, y1) = range(|p| p.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(&axes.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let (log_x, log_y) = (axes.log_x, axes.log_y);
    // On a log axis, about one tick a decade, so ticks fall on powers of ten.
    let ticks = |log: bool, lo: f64, hi: f64| {
        if log {
            ((hi - lo).ceil() as usize + 1).clamp(2, 12)
        } else {
            10
        }
    };
    chart
        .configure_mesh()
        .x_labels(ticks(log_x, x0, x1))
        .y_labels(ticks(log_y, y0, y1))
        .x_desc(axes.x.as_str())
        .y_desc(axes.y.as_str())
        .x_label_formatter(&|v| label(v, log_x))
        .y_label_formatter(&|v| label(v, log_y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, (s, points)) in series.iter().zip(scaled).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svg_of(series: &[Series], axes: &Axes) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("l.svg");
        line_chart(series, axes, &out).unwrap();
        std::fs::read_to_string(out).unwrap()
    }

    #[test]
    fn log_axes_are_labelled_with_values_and_skip_non_positive_points() {
        let s = Series {
            label: "lru".into(),
            points: vec![(0.0, 0.1), (10.0, 0.2), (100.0, 0.4), (1000.0, 0.5)],
        };
        let axes = Axes {
            title: "hit ratio".into(),
            x: "capacity (objects)".into(),
            y: "hit ratio".into(),
            log_x: true,
            log_y: false,
        };
        let svg = svg_of(&[s], &axes);
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim()))
            .collect();
        assert!(
            texts.contains(&"10") && texts.contains(&"100") && texts.contains(&"1000"),
            "{texts:?}"
        );
        assert!(svg.contains("lru") && svg.contains("capacity (objects)"));
        assert!(matches!(
            line_chart(&[], &axes, Path::new("x.svg")),
            Err(ChartError::NoRuns)
        ));
        assert!(matches!(
            line_chart(
                &[Series {
                    label: "a".into(),
                    points: vec![(1.0, 1.0)]
                }],
                &axes,
                Path::new("x.gif")
            ),
            Err(ChartError::Format { .. })
        ));
    }
}
