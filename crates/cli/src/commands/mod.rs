//! The body of each command, one module each; `main.rs` only parses and dispatches.

pub mod copy;
pub mod copy_progress;
pub mod copy_wildcard;
pub mod fsck;
pub mod gc;
pub mod info;
pub mod inspect;
pub mod inventory_view;
pub mod list;
pub mod preload;
pub mod prune;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::config::Config;

/// `e` as a command reports it: past the unpacked-size limit of a gzip archive, with how this
/// command raises the limit (`raise`) added; the copy crate's message names no command.
pub(crate) fn archive_error(e: ferry_copy::archive::ArchiveError, raise: &str) -> anyhow::Error {
    match e.unpacked_too_large() {
        Some(u) if u.limit_can_be_raised() => {
            anyhow::anyhow!("{e}; {}", raise_unpacked(raise))
        }
        _ => e.into(),
    }
}

/// The advice for an archive past the unpacked-size limit, raised with `raise`.
pub(crate) fn raise_unpacked(raise: &str) -> String {
    format!("if the archive is genuine, raise the limit with {raise}")
}

/// Where a command finds its store: the configuration file and the data directory.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// TOML configuration file.
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ~/.local/share/ferry].
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The configuration file (or defaults) with `--data-dir` over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        Ok(c)
    }
}

/// Opens the store under `c.data_dir` with `lock`.
pub async fn open_store(
    c: &Config,
    lock: ferry_store::LockMode,
) -> anyhow::Result<Arc<ferry_store::Store>> {
    ferry_store::Store::open_with(&c.data_dir, c.store_options(), lock)
        .await
        .with_context(|| format!("cannot open the data directory {}", c.data_dir.display()))
}
