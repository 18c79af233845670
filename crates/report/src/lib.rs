//! Load-run results as a table and a chart: images per second over time, one line per run, with
//! the puller count as a step line on a second axis (the chart of ociregistry's load test), as SVG
//! or PNG. The PNG's text uses a bundled font (DejaVu Sans), so charts look the same everywhere.

use std::path::Path;

use plotters::prelude::*;
use serde::Deserialize;

/// What a chart needs of a `ferry load run --out` file.
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    /// Name in the legend.
    pub label: String,
    /// Totals.
    pub summary: Summary,
    /// Rate rows.
    pub tallies: Vec<Row>,
}

/// The totals used in tables.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    /// Images pulled.
    pub images: u64,
    /// Images per second over the run.
    pub images_per_sec: f64,
    /// Failed pulls.
    pub errors: u64,
    /// Percentiles by kind (`image`, `blob`, …), in milliseconds.
    #[serde(default)]
    pub latency_ms: std::collections::BTreeMap<String, Percentiles>,
}

/// Latency percentiles (ms).
#[derive(Debug, Clone, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One tally row.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// Seconds since the start.
    pub t: f64,
    /// Pullers running.
    pub pullers: usize,
    /// Images per second in the row's interval.
    pub images_per_sec: f64,
}

/// Reads a results file.
pub fn read(path: &Path) -> Result<Run, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a ferry load results file: {e}", path.display()))
}

/// A Markdown table of the runs' totals.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::from(
        "| run | images | images/s | failed | image p50 ms | image p99 ms | image max ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let p = r.summary.latency_ms.get("image");
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
            r.label,
            r.summary.images,
            r.summary.images_per_sec,
            r.summary.errors,
            f(p.map(|p| p.p50)),
            f(p.map(|p| p.p99)),
            f(p.map(|p| p.max)),
        ));
    }
    out
}

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

/// Draws the runs into `out`: `.svg` or `.png` by extension; 1200×600.
pub fn chart(runs: &[Run], title: &str, out: &Path) -> Result<(), String> {
    if runs.is_empty() {
        return Err("no runs to chart".into());
    }
    // Registering twice is harmless; the name is ours.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    match out.extension().and_then(|e| e.to_str()) {
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
        _ => Err(format!(
            "{}: the chart is written as .svg or .png; name the file so",
            out.display()
        )),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(err)?;
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
        .build_cartesian_2d(0f64..t_max, 0f64..rate_max)
        .map_err(err)?
        .set_secondary_coord(0f64..t_max, 0f64..pullers_max);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("images / s")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("pullers")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                r.tallies.iter().map(|t| (t.t, t.images_per_sec)),
                color.stroke_width(2),
            ))
            .map_err(err)?
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
        .draw_secondary_series(LineSeries::new(steps, grey.stroke_width(1)))
        .map_err(err)?
        .label("pullers")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, k: f64) -> Run {
        Run {
            label: label.into(),
            summary: Summary {
                images: 100,
                images_per_sec: 10.0 * k,
                errors: 0,
                latency_ms: [(
                    "image".to_owned(),
                    Percentiles {
                        p50: 1.0,
                        p99: 2.0,
                        max: 3.0,
                    },
                )]
                .into(),
            },
            tallies: (1..=9)
                .map(|i| Row {
                    t: i as f64,
                    pullers: if i <= 5 { i } else { 10 - i },
                    images_per_sec: k * i as f64,
                })
                .collect(),
        }
    }

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

    #[test]
    fn table_lists_each_run() {
        let t = table(&[run("ferry", 2.0)]);
        assert!(
            t.contains("| ferry | 100 | 20.0 | 0 | 1.0 | 2.0 | 3.0 |"),
            "{t}"
        );
    }
}
