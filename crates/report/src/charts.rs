//! The chart: images per second over time, one line per run, with the puller count as a step line
//! on a second axis (the chart of ociregistry's load test), as SVG or PNG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::results::Results;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 600;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Why a chart was not written.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The caller gave no runs.
    #[error("no runs to chart")]
    NoRuns,
    /// The output's name says neither SVG nor PNG (the caller's choice of name).
    #[error("{}: the chart is written as .svg or .png; name the file so", path.display())]
    Format {
        /// The output asked for.
        path: PathBuf,
    },
    /// Drawing or writing the file failed (mostly I/O on the output: a missing directory, a full
    /// disk).
    #[error("drawing the chart into {}", path.display())]
    Draw {
        /// The output.
        path: PathBuf,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Draws the runs into `out`: `.svg` or `.png` by extension; 1200×600.
pub fn chart(runs: &[Results], title: &str, out: &Path) -> Result<(), ChartError> {
    if runs.is_empty() {
        return Err(ChartError::NoRuns);
    }
    // Registering twice is harmless; the name is ours.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let drawn = match out.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw(
            SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area(),
            runs,
            title,
        ),
        Some("png") => draw(
            BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area(),
            runs,
            title,
        ),
        _ => {
            return Err(ChartError::Format {
                path: out.to_owned(),
            });
        }
    };
    drawn.map_err(|source| ChartError::Draw {
        path: out.to_owned(),
        source,
    })
}

type DrawError = Box<dyn std::error::Error + Send + Sync>;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Results],
    title: &str,
) -> Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let t_max = runs
        .iter()
        .flat_map(|r| r.tallies.iter().map(|t| t.t))
        .fold(1.0f64, f64::max);
    let rate_max = runs
        .iter()
        .flat_map(|r| r.tallies.iter().map(|t| t.images_per_sec))
        .fold(1.0f64, f64::max)
        * 1.1;
    let pullers_max = runs
        .iter()
        .flat_map(|r| r.tallies.iter().map(|t| t.pullers))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)?
        .set_secondary_coord(0f64..t_max, 0f64..pullers_max);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("images / s")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("pullers")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                r.tallies.iter().map(|t| (t.t, t.images_per_sec)),
                color.stroke_width(2),
            ))?
            .label(r.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    // The puller count of the first run, as steps.
    let mut steps = Vec::new();
    let mut prev_t = 0.0;
    for t in &runs[0].tallies {
        steps.push((prev_t, t.pullers as f64));
        steps.push((t.t, t.pullers as f64));
        prev_t = t.t;
    }
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_secondary_series(LineSeries::new(steps, grey.stroke_width(1)))?
        .label("pullers")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::run;

    #[test]
    fn svg_and_png_have_the_chart_size() {
        let dir = std::env::temp_dir().join(format!("ferry-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runs = [run("ferry", 2.0), run("distribution", 1.0)];
        let svg = dir.join("c.svg");
        chart(&runs, "pull rate", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains(r#"width="1200""#) && text.contains(r#"height="600""#));
        assert!(text.contains("distribution") && text.contains("pullers"));
        let png = dir.join("c.png");
        chart(&runs, "pull rate", &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1200);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 600);
        assert!(bytes.len() > 10_000, "a chart, not a blank image");
        assert!(chart(&runs, "x", &dir.join("c.jpg")).is_err());
        if let Ok(keep) = std::env::var("FERRY_REPORT_KEEP") {
            std::fs::copy(&png, keep).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
