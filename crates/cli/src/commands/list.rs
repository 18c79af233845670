//! `ferry list`: stored images with their sizes, ages and pull counts.

use std::process::ExitCode;

use clap::Args;
use ferry_server::prune::image_name;

use super::DataArgs;
use super::inventory_view::{ago, human, now_secs, pattern};
use super::open_store;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Only images whose `repository:tag` matches this regular expression.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn list(c: Config, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let re = pattern(&args.pattern)?;
    let store = open_store(&c, ferry_store::LockMode::Shared).await?;
    let images: Vec<_> = store
        .images()
        .await?
        .into_iter()
        .filter(|i| re.as_ref().is_none_or(|r| r.is_match(&image_name(i))))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_secs();
    let rows: Vec<[String; 6]> = images
        .iter()
        .map(|i| {
            [
                image_name(i),
                i.digest.to_string().chars().take(19).collect(),
                human(i.size),
                ago(now, Some(i.created)),
                ago(now, i.last_pulled),
                i.pull_count.to_string(),
            ]
        })
        .collect();
    let head = ["IMAGE", "DIGEST", "SIZE", "STORED", "LAST PULLED", "PULLS"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(&head.map(str::to_owned)));
    for r in &rows {
        println!("{}", line(r));
    }
    Ok(ExitCode::SUCCESS)
}
