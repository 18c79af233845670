//! `ferry gc`: remove blobs no manifest references.

use std::process::ExitCode;

use clap::Args;

use super::DataArgs;
use super::open_store;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn gc(c: Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    // A dry run changes nothing, so it needs no lock; a real run must not race a server.
    let mode = if dry_run {
        ferry_store::LockMode::Shared
    } else {
        ferry_store::LockMode::ExistingExclusive
    };
    let store = open_store(&c, mode).await?;
    let r = store.gc(dry_run).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for d in &r.digests {
            println!("{verb} {d}");
        }
        println!(
            "{verb} {} ({} bytes); {} kept",
            crate::counts::count(r.removed, "blob", "blobs"),
            r.bytes_freed,
            crate::counts::count(r.kept, "referenced blob", "referenced blobs")
        );
    }
    Ok(ExitCode::SUCCESS)
}
