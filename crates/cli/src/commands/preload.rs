//! `ferry preload`: pull references through a running mirror, or import image archives into a
//! data directory; also what `ferry serve --preload` runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;

use super::DataArgs;
use super::open_store;
use ferry_copy::{Platform, archive};

use crate::{config, preload};

#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The ferry to warm.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub mirror: String,
    /// Only these platforms of multi-platform images (repeatable; default all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<Platform>,
    /// Blobs fetched at once per image.
    #[arg(short = 'j', long, default_value_t = 4)]
    pub jobs: usize,
    /// Images fetched at once.
    #[arg(short = 'J', long, default_value_t = 2)]
    pub images: usize,
    /// Data directory and configuration, for importing archives.
    #[command(flatten)]
    pub data: DataArgs,
    /// An upstream the imported archives' images belong to (repeatable; or `[[upstream]]` in
    /// --config).
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Cache an archive's only image under this reference instead of the name saved in it.
    #[arg(long, value_name = "REFERENCE")]
    pub name: Option<String>,
    /// Largest decompressed copy of a gzip archive, e.g. 50GiB [default: limits.max_unpacked_archive
    /// in --config, else 100 times the archive's size, at least 64 MiB].
    #[arg(long, value_name = "SIZE", value_parser = ferry_server::units::parse_size)]
    pub max_unpacked: Option<u64>,
    /// References, files listing them, or image archives.
    #[arg(required = true, value_name = "REFERENCE|FILE|ARCHIVE")]
    pub items: Vec<String>,
}

/// `ferry preload`: imports the archives among the items, then preloads the references.
pub fn run(args: &PreloadArgs) -> anyhow::Result<ExitCode> {
    let (archives, lists): (Vec<&String>, Vec<&String>) = args
        .items
        .iter()
        .partition(|i| archive::is_archive(std::path::Path::new(i)));
    let refs = preload::references(&lists.into_iter().cloned().collect::<Vec<_>>())?;
    let name = args
        .name
        .as_deref()
        .map(|n| {
            ferry_oci::Reference::parse_normalized(n)
                .with_context(|| format!("--name {n:?} is not an image reference"))
        })
        .transpose()?;
    let rt = crate::runtime()?;
    let mut ok = true;
    if !archives.is_empty() {
        anyhow::ensure!(
            args.data.data_dir.is_some() || args.data.config.is_some(),
            "archives are imported straight into a data directory: give --data-dir (with the server stopped), or pass them to `ferry serve --preload`"
        );
        let mut c = args.data.config()?;
        for url in &args.upstreams {
            c.upstream.push(config::UpstreamConfig::from_url(url));
        }
        let mut limits = c.archive_limits()?;
        if let Some(n) = args.max_unpacked {
            limits.max_unpacked = Some(n);
        }
        let paths: Vec<PathBuf> = archives.into_iter().map(PathBuf::from).collect();
        let o = ImportOptions {
            platforms: &args.platform,
            limits,
            name: name.as_ref(),
            jobs: args.jobs,
        };
        ok &= rt.block_on(async {
            let mirror = c.mirror()?.context(
                "imported images are cached for an upstream: give --upstream URL (the registry their names point at) or a --config with [[upstream]] tables",
            )?;
            let store = open_store(&c, ferry_store::LockMode::Exclusive)
                .await
                .context("stop the server first, or pass the archives to `ferry serve --preload`")?;
            let ok = import_archives(&store, &mirror, &paths, &o, true).await;
            store.flush_access().await?;
            anyhow::Ok(ok)
        })?;
    } else if name.is_some() {
        anyhow::bail!("--name renames an archive's image; none of the items is an archive");
    }
    if !refs.is_empty() {
        ok &= rt.block_on(run_preload(
            &args.mirror,
            refs,
            &args.platform,
            args.jobs,
            args.images,
            true,
        ));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Preloads `refs` through the mirror at `mirror`, `images` at a time; reports each; false if any failed.
pub async fn run_preload(
    mirror: &str,
    refs: Vec<ferry_oci::Reference>,
    platforms: &[Platform],
    jobs: usize,
    images: usize,
    print: bool,
) -> bool {
    let Ok(c) = reqwest::Client::builder().no_proxy().build() else {
        return false;
    };
    let mirror = mirror.trim_end_matches('/');
    let results: Vec<(String, anyhow::Result<preload::Preloaded>)> =
        futures_util::stream::iter(refs)
            .map(|r| {
                let c = &c;
                async move {
                    (
                        r.to_string(),
                        preload::preload(c, mirror, &r, platforms, jobs).await,
                    )
                }
            })
            .buffer_unordered(images.max(1))
            .collect()
            .await;
    let mut ok = true;
    for (name, r) in results {
        ok &= report_preload("preloaded", &name, "bytes", &r, print);
    }
    ok
}

/// Says how preloading or importing `what` went (stdout/stderr when `print`, and the log); whether
/// it worked.
pub fn report_preload(
    done: &str,
    what: &str,
    bytes: &str,
    r: &anyhow::Result<preload::Preloaded>,
    print: bool,
) -> bool {
    match r {
        Ok(p) => {
            if print {
                println!(
                    "{done} {what}: {}, {} ({} {bytes})",
                    crate::counts::count(p.manifests as u64, "manifest", "manifests"),
                    crate::counts::count(p.blobs as u64, "blob", "blobs"),
                    p.bytes
                );
            }
            tracing::info!(item = %what, manifests = p.manifests, blobs = p.blobs, bytes = p.bytes, "{done}");
            true
        }
        Err(e) => {
            if print {
                eprintln!("error: {what} was not {done}: {e:#}");
            }
            tracing::warn!(item = %what, error = %format!("{e:#}"), "{done}: failed");
            false
        }
    }
}

/// How archives are imported.
#[derive(Debug)]
pub struct ImportOptions<'a> {
    /// Platforms of multi-platform images kept (all when empty).
    pub platforms: &'a [Platform],
    /// What reading one archive may cost.
    pub limits: archive::ArchiveLimits,
    /// A name for an archive's only image.
    pub name: Option<&'a ferry_oci::Reference>,
    /// Blobs stored at once.
    pub jobs: usize,
}

/// Imports image archives into the cache; reports each; false if any failed.
pub async fn import_archives(
    store: &Arc<ferry_store::Store>,
    mirror: &ferry_server::Mirror,
    paths: &[PathBuf],
    o: &ImportOptions<'_>,
    print: bool,
) -> bool {
    let mut ok = true;
    for path in paths {
        let opened = {
            let (path, platforms, limits) = (path.clone(), o.platforms.to_vec(), o.limits);
            tokio::task::spawn_blocking(move || archive::Archive::open(&path, &platforms, &limits))
                .await
        };
        let result = match opened {
            Ok(Ok(a)) => preload::import(store, mirror, Arc::new(a), o.name, o.jobs).await,
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(anyhow::anyhow!("reading the archive failed: {e}")),
        };
        ok &= report_preload(
            "imported",
            &path.display().to_string(),
            "bytes new",
            &result,
            print,
        );
    }
    ok
}
