//! `ferry prune`: delete images by age or name, then the blobs nothing references any more.

use std::process::ExitCode;

use clap::Args;

use super::DataArgs;
use super::inventory_view::{human, now_secs, pattern};
use super::open_store;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Images last pulled (or, never pulled, stored) longer ago than AGE.
    #[arg(long, value_name = "AGE")]
    pub accessed_before: Option<String>,
    /// Images stored longer ago than AGE.
    #[arg(long, value_name = "AGE")]
    pub created_before: Option<String>,
    /// Images whose `repository:tag` matches this regular expression.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn prune(c: Config, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.accessed_before.is_some() || args.created_before.is_some() || args.pattern.is_some(),
        "say what to prune: --accessed-before AGE, --created-before AGE and/or --pattern RE"
    );
    let now = now_secs();
    let age = |a: &Option<String>, flag: &str| -> anyhow::Result<Option<u64>> {
        a.as_deref()
            .map(|a| {
                ferry_server::units::parse_age(a)
                    .map(|s| now.saturating_sub(s))
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            })
            .transpose()
    };
    let rule = ferry_policy::PruneRule {
        accessed_before: age(&args.accessed_before, "--accessed-before")?,
        created_before: age(&args.created_before, "--created-before")?,
    };
    let selection = ferry_policy::Selection {
        rule,
        pattern: pattern(&args.pattern)?,
        repository: None,
        pinned: c.cache.pinned.clone(),
    };
    let mode = if args.dry_run {
        ferry_store::LockMode::Shared
    } else {
        ferry_store::LockMode::ExistingExclusive
    };
    let store = open_store(&c, mode).await?;
    let plan = ferry_server::prune::plan(&store.images().await?, &selection);
    let chosen = &plan.images;
    let mut report = serde_json::json!({"dry_run": args.dry_run, "images": chosen});
    if !args.dry_run {
        ferry_server::prune::prune(&store, &plan).await?;
        let g = store.gc(false).await?;
        store.flush_access().await?;
        report["blobs_removed"] = g.removed.into();
        report["bytes_freed"] = g.bytes_freed.into();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for name in chosen {
            println!("{verb} {name}");
        }
        if args.dry_run {
            println!(
                "{} selected (dry run: nothing changed)",
                crate::counts::count(chosen.len() as u64, "image", "images")
            );
        } else {
            println!(
                "{} deleted; {} ({}) freed",
                crate::counts::count(chosen.len() as u64, "image", "images"),
                crate::counts::count(
                    report["blobs_removed"].as_u64().unwrap_or(0),
                    "blob",
                    "blobs"
                ),
                human(report["bytes_freed"].as_u64().unwrap_or(0))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
