//! ferry's result files and what is made of them: [`results`] is the one schema of a load run's
//! results file (`ferry-load` writes it, this crate reads it); [`table`] makes a Markdown table of
//! runs and, with the `charts` feature (on by default), `chart` draws images per second over
//! time, one line per run, with the puller count as a step line on a second axis, as SVG or PNG,
//! and `line_chart` draws any `(x, y)` series, either axis on a log scale (the trace lab's plots).
//! The PNG's text uses a bundled font (DejaVu Sans), so charts look the same everywhere.
//!
//! Writers such as `ferry-load` depend on it with `default-features = false`: the schema without
//! plotters.

#[cfg(feature = "charts")]
mod charts;
#[cfg(feature = "charts")]
mod lines;
pub mod results;

#[cfg(feature = "charts")]
pub use charts::{ChartError, chart};
#[cfg(feature = "charts")]
pub use lines::{Axes, Series, line_chart};
pub use results::{ReadError, Results, read};

/// A Markdown table of the runs' totals.
pub fn table(runs: &[Results]) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::results::{Percentiles, SCHEMA_VERSION, Summary, Tally};

    /// A run whose rate climbs with `k` while 1→5→1 pullers run.
    pub(crate) fn run(label: &str, k: f64) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            target: "127.0.0.1:5000".into(),
            label: label.into(),
            started_unix: 0,
            mode: "closed".into(),
            summary: Summary {
                images: 100,
                images_per_sec: 10.0 * k,
                requests: 600,
                requests_per_sec: 60.0 * k,
                bytes: 1 << 20,
                errors: 0,
                error_kinds: Default::default(),
                duration_secs: 10.0 / k,
                latency_ms: [(
                    "image".to_owned(),
                    Percentiles {
                        count: 100,
                        p50: 1.0,
                        p90: 1.5,
                        p99: 2.0,
                        p999: 2.5,
                        max: 3.0,
                    },
                )]
                .into(),
            },
            tallies: (1..=9)
                .map(|i| Tally {
                    t: i as f64,
                    pullers: if i <= 5 { i } else { 10 - i },
                    images: (k * i as f64) as u64,
                    images_per_sec: k * i as f64,
                    requests_per_sec: 6.0 * k * i as f64,
                    mb_per_sec: 0.1,
                    errors: Default::default(),
                })
                .collect(),
            replay: None,
        }
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
