//! The image inventory on the command line: `--pattern` selection and human-readable sizes and
//! ages for `ferry list` and `ferry prune`.

use anyhow::Context;

pub fn pattern(p: &Option<String>) -> anyhow::Result<Option<regex_lite::Regex>> {
    p.as_deref()
        .map(|p| {
            regex_lite::Regex::new(p)
                .with_context(|| format!("--pattern {p:?} is not a valid regular expression"))
        })
        .transpose()
}

pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn ago(now: u64, t: Option<u64>) -> String {
    match t {
        None => "never".to_owned(),
        Some(t) => {
            let s = now.saturating_sub(t);
            match s {
                0..=119 => format!("{s}s ago"),
                120..=7199 => format!("{}m ago", s / 60),
                7200..=172_799 => format!("{}h ago", s / 3600),
                _ => format!("{}d ago", s / 86_400),
            }
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
