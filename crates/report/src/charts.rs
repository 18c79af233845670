//! The chart: images per second over time, one line per run, with the puller count as a step line
//! on a second axis (the chart of ociregistry's load test), as SVG or PNG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::results::Results;

pub(crate) const WIDTH: u32 = 1200;
pub(crate) const HEIGHT: u32 = 600;
pub(crate) const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) const COLORS: [RGBColor; 6] = [
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

/// Draws with `$draw(area, args…)` into the file `$out`, SVG or PNG by its extension, 1200×600;
/// evaluates to the `Result<(), ChartError>` of the drawing (returns early on another extension).
macro_rules! render {
    ($out:expr, $draw:ident($($arg:expr),*)) => {{
        let out: &std::path::Path = $out;
        // Registering twice is harmless; the name is ours.
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            $crate::charts::FONT,
        );
        let size = ($crate::charts::WIDTH, $crate::charts::HEIGHT);
        let drawn = match out.extension().and_then(|e| e.to_str()) {
            Some("svg") => $draw(SVGBackend::new(out, size).into_drawing_area(), $($arg),*),
            Some("png") => $draw(BitMapBackend::new(out, size).into_drawing_area(), $($arg),*),
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
    }};
}
pub(crate) use render;

/// Draws the runs into `out`: `.svg` or `.png` by extension; 1200×600.
pub fn chart(runs: &[Results], title: &str, out: &Path) -> Result<(), ChartError> {
    if runs.is_empty() {
        return Err(ChartError::NoRuns);
    }
    render!(out, draw(runs, title))
}

/// A tick label with only the decimals its value needs: `12000`, `0.5`, `2.25` (plotters writes
/// `12000.0`). Rates and seconds keep their fractions where the ticks have them.
pub(crate) fn tick_label(v: &f64) -> String {
    let s = format!("{v:.5}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

pub(crate) type DrawError = Box<dyn std::error::Error + Send + Sync>;

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
    // Pullers are a count: an integer axis, so its ticks are whole pullers.
    let pullers_max = runs
        .iter()
        .flat_map(|r| r.tallies.iter().map(|t| t.pullers))
        .max()
        .unwrap_or(1)
        .max(1)
        + 1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)?
        .set_secondary_coord(0f64..t_max, 0usize..pullers_max);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("images / s")
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
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
        steps.push((prev_t, t.pullers));
        steps.push((t.t, t.pullers));
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

    /// The text of every `<text>` element of an SVG chart, in order.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    fn numeric_labels(texts: &[String]) -> Vec<&str> {
        texts
            .iter()
            .map(String::as_str)
            .filter(|t| t.parse::<f64>().is_ok())
            .collect()
    }

    /// #11: the axes read "12000.0" images/s and "10.0" pullers. Counts tick as integers; a rate
    /// whose ticks are fractions keeps them.
    #[test]
    fn count_axes_tick_in_integers_and_fractions_stay_where_ticks_have_them() {
        let dir = std::env::temp_dir().join(format!("ferry-report-ticks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("ticks.svg");

        let mut busy = run("nginx", 12_000.0 / 9.0);
        for t in &mut busy.tallies {
            t.pullers *= 2;
        }
        chart(&[busy], "cached pulls", &svg).unwrap();
        let texts = svg_texts(&std::fs::read_to_string(&svg).unwrap());
        let labels = numeric_labels(&texts);
        assert!(labels.contains(&"12000"), "{texts:?}");
        assert!(labels.contains(&"10"), "{texts:?}");
        assert!(labels.iter().all(|l| !l.contains('.')), "{texts:?}");

        // Under one image per second the rate axis ticks in fifths, and says so.
        chart(&[run("slow", 0.1)], "slow pulls", &svg).unwrap();
        let texts = svg_texts(&std::fs::read_to_string(&svg).unwrap());
        let labels = numeric_labels(&texts);
        assert!(labels.contains(&"0.2"), "{texts:?}");
        assert!(labels.iter().all(|l| !l.ends_with(".0")), "{texts:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tick_labels_have_only_the_decimals_they_need() {
        for (v, label) in [
            (12000.0, "12000"),
            (0.0, "0"),
            (-0.0, "0"),
            (10.0, "10"),
            (0.5, "0.5"),
            (2.25, "2.25"),
            (0.1 + 0.2, "0.3"),
            (-1.5, "-1.5"),
        ] {
            assert_eq!(tick_label(&v), label, "{v}");
        }
    }
}
