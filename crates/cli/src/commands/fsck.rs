//! `ferry fsck`: verify every stored blob, optionally quarantine corrupt ones and drop dangling
//! names.

use std::process::ExitCode;

use clap::Args;

use super::DataArgs;
use super::open_store;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct FsckArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Move corrupt blobs to `DATA_DIR/quarantine` so they are never served (needs the server stopped).
    #[arg(long)]
    pub quarantine: bool,
    /// Remove links and tags that point at nothing, e.g. a mirror's newest names after a power
    /// loss (names only, never content; needs the server stopped).
    #[arg(long)]
    pub drop_dangling: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn fsck(
    c: Config,
    quarantine: bool,
    drop_dangling: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mode = if quarantine || drop_dangling {
        ferry_store::LockMode::ExistingExclusive
    } else {
        ferry_store::LockMode::Shared
    };
    let store = open_store(&c, mode).await?;
    let mut r = store.fsck(quarantine).await?;
    if drop_dangling {
        r.dropped = store.drop_dangling_names().await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "checked {} ({} bytes)",
            crate::counts::count(r.blobs_checked, "blob", "blobs"),
            r.bytes_checked
        );
        for b in &r.corrupt {
            let what = if r.quarantined {
                "quarantined"
            } else {
                "CORRUPT"
            };
            println!(
                "{what}: {} hashes to {} ({})",
                b.expected,
                b.actual,
                b.path.display()
            );
        }
        for s in &r.stray {
            println!("stray file: {}", s.display());
        }
        for m in &r.missing {
            println!("missing manifest content: {m}");
        }
        for d in &r.dangling {
            println!("dangling: {d}");
        }
        for p in &r.dropped {
            println!("removed dangling name: {}", p.display());
        }
        if r.is_clean() {
            println!("clean");
        } else if !r.corrupt.is_empty() && !r.quarantined {
            println!(
                "run `ferry fsck --quarantine` with the server stopped to move corrupt blobs aside"
            );
        } else if !r.dangling.is_empty() && r.dropped.is_empty() {
            println!(
                "dangling names are skipped by the server; `ferry fsck --drop-dangling` with the server stopped removes them"
            );
        }
    }
    Ok(if r.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
