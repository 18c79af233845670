//! `ferry preload`: pull references through a running mirror, or copy image archives and
//! references into a stopped mirror's data directory (a copy into its store, named as the mirror
//! caches them); also what `ferry serve --preload` runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;

use super::DataArgs;
use super::open_store;
use ferry_copy::{
    Copied, Copier, CopyOptions, Location, NamingError, Platform, PlatformChoice, SourceNames,
    StoreName, StoreNaming, StoreTarget, archive,
};
use ferry_oci::Reference;
use ferry_server::CacheNames;
use std::collections::HashMap;

use crate::{config, preload};

#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The running ferry to warm with the references [default: http://127.0.0.1:8080, unless
    /// --data-dir or --config is given: then they are copied from their upstreams into the data
    /// directory].
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Only these platforms of multi-platform images (repeatable; default all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<Platform>,
    /// Blobs fetched at once per image.
    #[arg(short = 'j', long, default_value_t = 4)]
    pub jobs: usize,
    /// Images fetched at once.
    #[arg(short = 'J', long, default_value_t = 2)]
    pub images: usize,
    /// Data directory and configuration of a stopped ferry, to copy archives and references into.
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

/// `ferry preload`: copies the archives among the items (and, with a data directory, the
/// references) into the store; else preloads the references through the running mirror.
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
    let into_store = args.data.data_dir.is_some() || args.data.config.is_some();
    anyhow::ensure!(
        archives.is_empty() || into_store,
        "archives are imported straight into a data directory: give --data-dir (with the server stopped), or pass them to `ferry serve --preload`"
    );
    anyhow::ensure!(
        name.is_none() || !archives.is_empty(),
        "--name renames an archive's image; none of the items is an archive"
    );
    anyhow::ensure!(
        !(into_store && args.mirror.is_some() && !refs.is_empty()),
        "references go either through a running ferry (--mirror URL) or into a stopped one's data directory (--data-dir/--config), not both: run ferry preload once for each"
    );
    let rt = crate::runtime()?;
    let mut ok = true;
    if into_store {
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
            images: args.images,
        };
        ok &= rt.block_on(async {
            let mirror = c.mirror()?.context(
                "images are cached for an upstream: give --upstream URL (the registry their names point at) or a --config with [[upstream]] tables",
            )?;
            let store = open_store(&c, ferry_store::LockMode::Exclusive)
                .await
                .context("stop the server first, or pass the items to `ferry serve --preload`")?;
            let mut ok = import_archives(&store, &mirror, &paths, &o, true).await;
            if !refs.is_empty() {
                ok &= copy_references(&store, &c, &mirror, refs, &o).await?;
            }
            store.flush_access().await?;
            anyhow::Ok(ok)
        })?;
    } else if !refs.is_empty() {
        let mirror = args.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
        ok &= rt.block_on(run_preload(
            mirror,
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

/// The mirror `ferry preload` warms when none is named.
const DEFAULT_MIRROR: &str = "http://127.0.0.1:8080";

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

/// How images are copied into a store.
#[derive(Debug)]
pub struct ImportOptions<'a> {
    /// Platforms of multi-platform images kept (all when empty).
    pub platforms: &'a [Platform],
    /// What reading one archive may cost.
    pub limits: archive::ArchiveLimits,
    /// A name for an archive's only image.
    pub name: Option<&'a ferry_oci::Reference>,
    /// Blobs stored at once per image.
    pub jobs: usize,
    /// Images copied at once.
    pub images: usize,
}

/// Names images in a store as a mirror caches them: under the upstream their registry names
/// (`cache`: the mirror's upstreams; `None` takes any registry), with their tag. `rename` names
/// every image instead of its source's name.
pub fn store_naming(cache: Option<CacheNames>, rename: Option<Reference>) -> Box<StoreNaming> {
    Box::new(move |src: &SourceNames<'_>| {
        let reference = match (&rename, src.reference, src.tag_only) {
            (Some(n), _, _) => n,
            (None, Some(r), _) => r,
            (None, None, tag) => {
                return Err(NamingError(format!(
                    "the image has no repository name{}; give one with --name REGISTRY/REPO:TAG",
                    tag.map_or(String::new(), |t| format!(" (only the tag {t})"))
                )));
            }
        };
        let registry = reference
            .registry
            .as_deref()
            .unwrap_or(ferry_oci::DOCKER_HUB);
        let repo = match &cache {
            Some(names) => names.cache_repo(registry, &reference.repo),
            None => ferry_server::cache_repo_of(registry, &reference.repo),
        }
        .map_err(|e| NamingError(format!("{reference}: {e}")))?;
        let tags = reference
            .tag
            .iter()
            .chain(src.tag_only.filter(|_| rename.is_none()))
            .take(1)
            .cloned()
            .collect();
        Ok(StoreName { repo, tags })
    })
}

/// A copier into `store` (its images named by `mirror`'s cache, or `rename`), with `o`'s
/// platforms and parallelism; `factory` builds registry clients for sources.
fn store_copier(
    store: &Arc<ferry_store::Store>,
    names: CacheNames,
    o: &ImportOptions<'_>,
    factory: Box<ferry_copy::RegistryFactory>,
) -> Copier {
    let options = CopyOptions {
        layer_jobs: o.jobs.max(1),
        image_jobs: o.images.max(1),
        platforms: if o.platforms.is_empty() {
            PlatformChoice::All
        } else {
            PlatformChoice::Only(o.platforms.to_vec())
        },
        ..CopyOptions::default()
    };
    Copier::new(options, factory, Arc::new(ferry_copy::Silent)).with_store(
        store.root().to_owned(),
        StoreTarget {
            store: store.clone(),
            naming: store_naming(Some(names), o.name.cloned()),
        },
    )
}

/// Adds what one image's copy did to `out`.
fn tally(out: &mut preload::Preloaded, c: &Copied) {
    out.manifests += c.manifests_written;
    out.blobs += c.blobs_copied + c.blobs_present + c.blobs_cached + c.blobs_mounted;
    out.bytes += c.bytes_copied;
}

/// Copies every image of the archives at `paths` into the cache in `store`, where pulls through
/// `mirror` find them; reports each archive; false if any failed.
pub async fn import_archives(
    store: &Arc<ferry_store::Store>,
    mirror: &ferry_server::Mirror,
    paths: &[PathBuf],
    o: &ImportOptions<'_>,
    print: bool,
) -> bool {
    if paths.is_empty() {
        return true;
    }
    let no_registries = Box::new(|host: &str| {
        Err(ferry_client::ClientError::new(
            ferry_client::ErrorKind::Request,
            format!("{host}: archives are copied without registries"),
        ))
    });
    let copier = store_copier(store, mirror.cache_names(), o, no_registries);
    let into = Location::FerryStore {
        data_dir: store.root().to_owned(),
    };
    let mut ok = true;
    for path in paths {
        let opened = {
            let (path, platforms, limits) = (path.clone(), o.platforms.to_vec(), o.limits);
            tokio::task::spawn_blocking(move || archive::Archive::open(&path, &platforms, &limits))
                .await
        };
        let result = match opened {
            Ok(Ok(a)) => import_archive(&copier, Arc::new(a), o.name, &into).await,
            Ok(Err(e)) => Err(super::archive_error(
                e,
                "`ferry preload --max-unpacked SIZE` or `max_unpacked_archive` under [limits] in the config file",
            )),
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

/// Copies the images of one opened archive into the store `into`.
async fn import_archive(
    copier: &Copier,
    archive: Arc<archive::Archive>,
    name: Option<&Reference>,
    into: &Location,
) -> anyhow::Result<preload::Preloaded> {
    if let Some(n) = name {
        anyhow::ensure!(
            archive.images.len() == 1,
            "--name renames an archive's only image, but {} holds {}",
            archive.path.display(),
            archive.images.len()
        );
        let top = archive.images[0].content.top.digest();
        anyhow::ensure!(
            n.digest.as_ref().is_none_or(|d| d == top),
            "{n}: the archive's manifest is {top}"
        );
    }
    let mut out = preload::Preloaded::default();
    let mut blobs = std::collections::HashSet::new();
    let results = copier.copy_archive(archive.clone(), into).await;
    for (image, (label, r)) in archive.images.iter().zip(results) {
        tally(&mut out, &r.with_context(|| format!("image {label}"))?);
        blobs.extend(image.content.blobs().into_iter().map(|d| &d.digest));
    }
    // Images of one archive share blobs: each is counted once.
    out.blobs = blobs.len();
    Ok(out)
}

/// Copies `refs` from their upstreams (as `c` configures them) into the cache in `store`;
/// reports each; false if any failed.
async fn copy_references(
    store: &Arc<ferry_store::Store>,
    c: &config::Config,
    mirror: &ferry_server::Mirror,
    refs: Vec<Reference>,
    o: &ImportOptions<'_>,
) -> anyhow::Result<bool> {
    let connections = ferry_client::Connections::new();
    let mut upstreams = HashMap::new();
    for u in &c.upstream {
        upstreams.insert(u.build(&connections)?.name, u.clone());
    }
    let factory = Box::new(move |host: &str| {
        let config = upstreams.get(&host.to_ascii_lowercase()).ok_or_else(|| {
            ferry_client::ClientError::new(
                ferry_client::ErrorKind::Request,
                format!("{host} is not a configured upstream"),
            )
        })?;
        config.client(&connections).map_err(|e| {
            ferry_client::ClientError::new(ferry_client::ErrorKind::Request, format!("{e:#}"))
        })
    });
    let names = mirror.cache_names();
    // Refused before anything is copied: names that no upstream serves.
    for r in &refs {
        names
            .cache_repo(
                r.registry.as_deref().unwrap_or(ferry_oci::DOCKER_HUB),
                &r.repo,
            )
            .with_context(|| r.to_string())?;
    }
    let copier = store_copier(store, names, &ImportOptions { name: None, ..*o }, factory);
    let into = Location::FerryStore {
        data_dir: store.root().to_owned(),
    };
    let pairs: Vec<(Location, Location)> = refs
        .iter()
        .map(|r| {
            (
                Location::Registry {
                    reference: r.clone(),
                },
                into.clone(),
            )
        })
        .collect();
    let results = copier.copy_many(&pairs).await;
    let mut ok = true;
    for (r, result) in refs.iter().zip(results) {
        let result = result.map_err(anyhow::Error::from).map(|c| {
            let mut out = preload::Preloaded::default();
            tally(&mut out, &c);
            out
        });
        ok &= report_preload("preloaded", &r.to_string(), "bytes new", &result, true);
    }
    Ok(ok)
}
