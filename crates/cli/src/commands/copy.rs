//! `ferry copy SRC DST`: images between registries, OCI layouts and directories.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ferry_client::{
    Connections, CredentialSources, ErrorKind, Registry, RegistryOptions, resolve_credentials,
};
use ferry_copy::archive::ArchiveLimits;
use ferry_copy::{
    Compression, Copied, Copier, CopyError, CopyOptions, Location, Platform, PlatformChoice,
    StoreTarget, destination_for,
};

use crate::commands::copy_progress::{CopyProgress, mb};
use crate::commands::inspect::{is_loopback, registry_client};
use crate::commands::raise_unpacked;
use crate::counts::count;

/// Most lines read from a `--from-file` list.
const MAX_LIST_LINES: usize = 100_000;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// SRC DST, or just DST with --from-file. Locations: `registry://host/repo:tag` (`docker://`),
    /// `oci:DIR[:NAME]`, `dir:DIR`, `dir:DIR?unique_names=true`. A source may be a wildcard,
    /// `registry://host/ns/*:latest` or `quay://[host/]ns/*:tag`: every image it names is copied.
    #[arg(value_name = "LOCATION", num_args = 1..=2, required = true)]
    pub locations: Vec<String>,
    /// Copy every source listed in FILE (one location or wildcard per line, # starts a comment)
    /// into DST.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<std::path::PathBuf>,
    /// Blobs transferred at once per image.
    #[arg(short = 'j', long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub layer_jobs: u16,
    /// Images copied at once.
    #[arg(short = 'J', long, default_value_t = 6, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub image_jobs: u16,
    /// Times a failed blob transfer is tried again (connection errors, 429, 5xx, broken bodies).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
    /// Of a multi-platform image, copy this platform (`os/arch[/variant]`); repeat for several,
    /// which are written as a new index of just those. Default: the platform ferry runs on.
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    pub platform: Vec<Platform>,
    /// Copy every platform of a multi-platform image: the index is kept byte for byte.
    #[arg(long)]
    pub all_platforms: bool,
    /// Reuse verified blobs across copies: blobs found in DIR are not fetched from a registry
    /// source again, and blobs fetched into a directory destination are added to DIR (hard
    /// links where it is on the same file system). DIR grows; delete it to empty it.
    #[arg(long, value_name = "DIR")]
    pub layer_cache: Option<std::path::PathBuf>,
    /// The compression of the layers written: `keep` (as the source has them; every digest is
    /// kept), `gzip` or `zstd` (layers stored otherwise are converted, so they and the manifests
    /// listing them get new digests; a Docker image converted to zstd becomes an OCI image).
    #[arg(long, default_value = "keep", value_name = "keep|gzip|zstd")]
    pub dest_compress: Compression,
    /// Largest decompressed copy of a gzip archive source, e.g. 50GiB [default: 100 times the
    /// archive's size, at least 64 MiB].
    #[arg(long, value_name = "SIZE", value_parser = ferry_server::units::parse_size)]
    pub max_unpacked: Option<u64>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print a JSON summary (one object per image) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Credentials for the source registry, `USER:PASSWORD` (else auth files and docker's config).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub src_creds: Option<String>,
    /// Credentials for the destination registry, `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub dest_creds: Option<String>,
    /// A bearer token for the source registry.
    #[arg(long, value_name = "TOKEN", conflicts_with = "src_creds")]
    pub src_token: Option<String>,
    /// A bearer token for the destination registry.
    #[arg(long, value_name = "TOKEN", conflicts_with = "dest_creds")]
    pub dest_token: Option<String>,
    /// An auth file (containers' auth.json or docker's config.json) to take credentials from,
    /// before $REGISTRY_AUTH_FILE, containers' auth.json and docker's config.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<std::path::PathBuf>,
    /// Requests per second to each registry, at most (stays under registries' 429s).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<f64>,
    /// Bearer token for Quay's REST API, to list a quay:// source's repositories and tags.
    #[arg(long, env = "QUAY_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub quay_token: Option<String>,
    /// A directory of TLS material for both sides, as containers' certs.d: `*.crt` are CA
    /// certificates to trust, `NAME.cert` with `NAME.key` a client certificate for mutual TLS.
    /// A loopback registry is reached over TLS when its side has a cert dir.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<std::path::PathBuf>,
    /// TLS material for the source registry only (instead of --cert-dir); a loopback source is
    /// then reached over TLS.
    #[arg(long, value_name = "DIR")]
    pub src_cert_dir: Option<std::path::PathBuf>,
    /// TLS material for the destination registry only (instead of --cert-dir); a loopback
    /// destination is then reached over TLS.
    #[arg(long, value_name = "DIR")]
    pub dest_cert_dir: Option<std::path::PathBuf>,
    /// Speak plain HTTP to every registry, even with a cert dir (loopback registries without one
    /// always are).
    #[arg(long)]
    pub plain_http: bool,
    /// Verify the source registry's TLS certificate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub src_tls_verify: bool,
    /// Verify the destination registry's TLS certificate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub dest_tls_verify: bool,
}

/// Which side of a copy a registry is on: each has its own credentials and TLS material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

impl CopyArgs {
    /// The cert dir of `side` and the option that gave it: its own, else `--cert-dir`.
    fn cert_dir_of(&self, side: Side) -> Option<(&'static str, &std::path::Path)> {
        let own = match side {
            Side::Source => ("--src-cert-dir", &self.src_cert_dir),
            Side::Destination => ("--dest-cert-dir", &self.dest_cert_dir),
        };
        [own, ("--cert-dir", &self.cert_dir)]
            .into_iter()
            .find_map(|(option, dir)| dir.as_deref().map(|d| (option, d)))
    }

    /// How registries of `side` are reached: its cert dir's material, and TLS for loopback
    /// hosts when it has one (unless `--plain-http`).
    pub(crate) fn side_tls(&self, side: Side) -> anyhow::Result<SideTls> {
        Ok(match self.cert_dir_of(side) {
            Some((option, dir)) => SideTls {
                material: cert_dir(dir, option)?,
                loopback_tls: !self.plain_http,
            },
            None => SideTls::default(),
        })
    }
}

/// How ferry reaches the registries of one side of a copy.
#[derive(Debug, Default)]
pub(crate) struct SideTls {
    pub(crate) material: TlsMaterial,
    /// Loopback registries speak TLS (the side has a cert dir), not docker's plain HTTP.
    pub(crate) loopback_tls: bool,
}

/// A client of the registry `host` with its side's TLS material; a loopback host over HTTPS when
/// the side says so, else as [`registry_client`] decides.
pub(crate) fn side_client(
    host: &str,
    tls: &SideTls,
    plain_http: bool,
    sources: &CredentialSources,
    options: RegistryOptions,
) -> Result<Registry, ferry_client::ClientError> {
    let options = RegistryOptions {
        ca_pem: tls.material.ca.clone(),
        identity_pem: tls.material.identity.clone(),
        ..options
    };
    if tls.loopback_tls && is_loopback(host) {
        return Registry::new(RegistryOptions {
            endpoint: format!("https://{host}"),
            credentials: resolve_credentials(host, sources)?,
            ..options
        });
    }
    registry_client(host, plain_http, sources, options)
}

/// The side each registry of `pairs` is on. A registry on both sides must have the same cert dir
/// on both: ferry keeps one client per registry.
fn registry_sides(
    args: &CopyArgs,
    pairs: &[(Location, Location)],
) -> anyhow::Result<HashMap<String, Side>> {
    let mut sides: HashMap<String, Side> = HashMap::new();
    for (s, d) in pairs {
        for (loc, side) in [(s, Side::Source), (d, Side::Destination)] {
            let Location::Registry { reference } = loc else {
                continue;
            };
            let host = reference.registry.clone().unwrap_or_default();
            let had = *sides.entry(host.clone()).or_insert(side);
            let dir = |side| args.cert_dir_of(side).map(|(_, d)| d);
            anyhow::ensure!(
                dir(had) == dir(side),
                "registry {host} is both a source and a destination, but the sides' cert dirs differ ({} for the source, {} for the destination); give both the same, e.g. with --cert-dir",
                shown(dir(Side::Source)),
                shown(dir(Side::Destination)),
            );
        }
    }
    Ok(sides)
}

fn shown(dir: Option<&std::path::Path>) -> String {
    dir.map_or("none".to_owned(), |d| d.display().to_string())
}

/// What to do about a failed copy, where the error alone does not say.
fn hint(e: &CopyError) -> String {
    match e {
        CopyError::Archive { error, .. }
            if error
                .unpacked_too_large()
                .is_some_and(|u| u.limit_can_be_raised()) =>
        {
            format!("; {}", raise_unpacked("`ferry copy --max-unpacked SIZE`"))
        }
        CopyError::Registry { source, .. } => match source.kind {
            ErrorKind::Unauthorized => {
                " (unauthorized: give credentials with --src-creds/--dest-creds or --authfile, or log in with `docker login`)".to_owned()
            }
            ErrorKind::Connect if source.message.contains("certificate") => {
                " (the registry's certificate is not trusted: put its CA in --cert-dir DIR as a .crt file, or in --src-cert-dir/--dest-cert-dir for one side)".to_owned()
            }
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn parse_location(s: &str, what: &str) -> anyhow::Result<Location> {
    s.parse::<Location>()
        .with_context(|| format!("{what} {s:?}"))
}

/// What every registry client of one `ferry copy` shares: the pool of connections (a wildcard's
/// listing and the copies after it, a source and a destination on one host, reuse each other's)
/// and the runtime those connections live on.
pub(crate) struct Session {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) connections: Connections,
}

/// The (source, destination) pairs asked for, all validated before anything is copied.
fn plan(args: &CopyArgs, session: &Session) -> anyhow::Result<Vec<(Location, Location)>> {
    match (&args.from_file, args.locations.as_slice()) {
        (None, [src, dst]) => {
            let src = parse_location(src, "source")?;
            let dst = parse_location(dst, "destination")?;
            anyhow::ensure!(
                src.can_be_source(),
                "source {src}: {} is a destination only",
                src.transport()
            );
            anyhow::ensure!(
                dst.can_be_destination(),
                "destination {dst}: an image index (@N) selects from an existing archive; name the image instead"
            );
            if src.pattern().is_some() {
                return crate::commands::copy_wildcard::expand(args, &src, &dst, session);
            }
            Ok(vec![(src, dst)])
        }
        (None, [_]) => anyhow::bail!(
            "ferry copy needs a source and a destination (ferry copy SRC DST), or --from-file LIST DST"
        ),
        (Some(file), [dst]) => {
            let dst = parse_location(dst, "destination")?;
            let text = read_list(file)?;
            let mut pairs = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let src = parse_location(line, &format!("{}:{}:", file.display(), n + 1))?;
                if src.pattern().is_some() {
                    let many = crate::commands::copy_wildcard::expand(args, &src, &dst, session)
                        .with_context(|| format!("{}:{}", file.display(), n + 1))?;
                    pairs.extend(many);
                    continue;
                }
                let to = destination_for(&src, &dst)
                    .with_context(|| format!("{}:{}: {line}", file.display(), n + 1))?;
                pairs.push((src, to));
            }
            anyhow::ensure!(!pairs.is_empty(), "{} lists no images", file.display());
            Ok(pairs)
        }
        (Some(_), _) => anyhow::bail!(
            "with --from-file give only the destination: ferry copy --from-file LIST DST"
        ),
        (None, _) => unreachable!("clap allows one or two locations"),
    }
}

/// PEM bytes of CA certificates and a client identity (certificate + key).
#[derive(Debug, Default)]
pub(crate) struct TlsMaterial {
    pub(crate) ca: Option<Vec<u8>>,
    pub(crate) identity: Option<Vec<u8>>,
}

/// The CA certificates (`*.crt`) and client identity (`NAME.cert` + `NAME.key`) in `dir`, given
/// by `option` (named in errors).
fn cert_dir(dir: &std::path::Path, option: &str) -> anyhow::Result<TlsMaterial> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("{option}: cannot read {}", p.display()))
    };
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{option} {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut ca = Vec::new();
    let mut identity = None;
    for p in &names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                ca.extend(read(p)?);
                ca.push(b'\n');
            }
            Some("cert") => {
                let key = p.with_extension("key");
                anyhow::ensure!(
                    key.is_file(),
                    "{option}: {} has no key {} beside it",
                    p.display(),
                    key.display()
                );
                anyhow::ensure!(
                    identity.is_none(),
                    "{option} {}: more than one client certificate (*.cert)",
                    dir.display()
                );
                let mut pem = read(p)?;
                pem.push(b'\n');
                pem.extend(read(&key)?);
                identity = Some(pem);
            }
            _ => {}
        }
    }
    Ok(TlsMaterial {
        ca: (!ca.is_empty()).then_some(ca),
        identity,
    })
}

fn read_list(file: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(file).with_context(|| format!("--from-file {}", file.display()))?;
    let mut text = String::new();
    f.take(64 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("--from-file {}", file.display()))?;
    anyhow::ensure!(
        text.lines().count() <= MAX_LIST_LINES,
        "--from-file {} has more than {MAX_LIST_LINES} lines",
        file.display()
    );
    Ok(text)
}

pub fn copy(args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let session = Session {
        runtime: crate::runtime()?,
        connections: Connections::new(),
    };
    let pairs = plan(args, &session)?;
    let platforms = if args.all_platforms {
        PlatformChoice::All
    } else if args.platform.is_empty() {
        PlatformChoice::Host
    } else {
        PlatformChoice::Only(args.platform.clone())
    };
    let mut insecure = HashSet::new();
    for (s, d) in &pairs {
        if let (Location::Registry { reference }, false) = (s, args.src_tls_verify) {
            insecure.insert(reference.registry.clone().unwrap_or_default());
        }
        if let (Location::Registry { reference }, false) = (d, args.dest_tls_verify) {
            insecure.insert(reference.registry.clone().unwrap_or_default());
        }
    }
    let plain_http = args.plain_http;
    // Which credentials go to which host: the destination's to its registry, the sources' to
    // theirs.
    let mut sources: HashMap<String, CredentialSources> = HashMap::new();
    for (s, d) in &pairs {
        for (loc, creds, token) in [
            (s, &args.src_creds, &args.src_token),
            (d, &args.dest_creds, &args.dest_token),
        ] {
            if let Location::Registry { reference } = loc {
                sources.insert(
                    reference.registry.clone().unwrap_or_default(),
                    CredentialSources {
                        creds: creds.clone(),
                        token: token.clone(),
                        auth_file: args.authfile.clone(),
                    },
                );
            }
        }
    }
    let rate_limit = args.rate_limit;
    let attempts = args.retries + 1;
    let sides = registry_sides(args, &pairs)?;
    let src_tls = args.side_tls(Side::Source)?;
    let dest_tls = args.side_tls(Side::Destination)?;
    let connections = session.connections.clone();
    let factory = Box::new(move |host: &str| {
        let anonymous = CredentialSources::default();
        let sources = sources.get(host).unwrap_or(&anonymous);
        let tls = match sides.get(host) {
            Some(Side::Destination) => &dest_tls,
            _ => &src_tls,
        };
        let options = RegistryOptions {
            insecure_skip_verify: insecure.contains(host),
            rate_limit,
            attempts,
            connections: connections.clone(),
            ..RegistryOptions::default()
        };
        side_client(host, tls, plain_http, sources, options)
    });
    let reporter = Arc::new(CopyProgress::for_stderr(args.quiet || args.json));
    let stores = session.runtime.block_on(open_stores(&pairs))?;
    let mut copier = Copier::new(
        CopyOptions {
            layer_jobs: args.layer_jobs.into(),
            image_jobs: args.image_jobs.into(),
            platforms,
            attempts: args.retries + 1,
            layer_cache: args.layer_cache.clone(),
            compression: args.dest_compress,
            archive_limits: ArchiveLimits {
                max_unpacked: args.max_unpacked,
            },
        },
        factory,
        reporter.clone(),
    );
    for (dir, store) in &stores {
        copier = copier.with_store(
            dir.clone(),
            StoreTarget {
                store: store.clone(),
                naming: super::preload::store_naming(None, None),
            },
        );
    }
    let started = Instant::now();
    let results = session.runtime.block_on(async {
        let ticker = reporter.clone();
        let tick = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                ticker.tick(started.elapsed());
            }
        });
        let results = copier.copy_many(&pairs).await;
        tick.abort();
        for (_, store) in &stores {
            if let Err(e) = store.flush_access().await {
                tracing::warn!(error = %e, "recording the copied images' access times failed");
            }
        }
        results
    });
    reporter.finish();
    let elapsed = started.elapsed();
    let mut failed = 0;
    let mut total = Total::default();
    let mut json = Vec::new();
    for ((src, dst), r) in pairs.iter().zip(&results) {
        match r {
            Ok(c) => {
                total.add(c);
                json.push(serde_json::json!({
                    "source": src.to_string(),
                    "destination": dst.to_string(),
                    "digest": c.digest.to_string(),
                    "blobs_copied": c.blobs_copied,
                    "blobs_present": c.blobs_present,
                    "blobs_mounted": c.blobs_mounted,
                    "blobs_cached": c.blobs_cached,
                    "bytes_copied": c.bytes_copied,
                    "bytes_resumed": c.bytes_resumed,
                    "blobs_recompressed": c.blobs_recompressed,
                }));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: copying {src} to {dst}: {e}{}", hint(e));
                json.push(serde_json::json!({
                    "source": src.to_string(),
                    "destination": dst.to_string(),
                    "error": e.to_string(),
                }));
            }
        }
    }
    if args.json {
        let v = serde_json::json!({
            "images": json,
            "seconds": elapsed.as_secs_f64(),
            "bytes_copied": total.bytes_copied,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !args.quiet && failed < pairs.len() {
        eprintln!("{}", total.line(pairs.len() - failed, elapsed));
    }
    if failed > 0 {
        anyhow::bail!(
            "{} of {} failed",
            count(failed as u64, "copy", "copies"),
            pairs.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the data directories that `ferry-store:` destinations name, each locked against a
/// server (or another copy) writing it meanwhile.
async fn open_stores(
    pairs: &[(Location, Location)],
) -> anyhow::Result<Vec<(std::path::PathBuf, Arc<ferry_store::Store>)>> {
    let mut stores: Vec<(std::path::PathBuf, Arc<ferry_store::Store>)> = Vec::new();
    for (_, d) in pairs {
        let Location::FerryStore { data_dir } = d else {
            continue;
        };
        if stores.iter().any(|(dir, _)| dir == data_dir) {
            continue;
        }
        let store = ferry_store::Store::open(data_dir, ferry_store::StoreOptions::default())
            .await
            .with_context(|| {
                format!(
                    "cannot open the data directory {} (stop the ferry serving it first)",
                    data_dir.display()
                )
            })?;
        stores.push((data_dir.clone(), store));
    }
    Ok(stores)
}

#[derive(Debug, Default)]
struct Total {
    blobs_copied: usize,
    blobs_present: usize,
    blobs_mounted: usize,
    bytes_copied: u64,
    bytes_resumed: u64,
    blobs_recompressed: usize,
}

impl Total {
    fn add(&mut self, c: &Copied) {
        self.blobs_copied += c.blobs_copied;
        self.blobs_present += c.blobs_present;
        self.blobs_mounted += c.blobs_mounted;
        self.bytes_copied += c.bytes_copied;
        self.bytes_resumed += c.bytes_resumed;
        self.blobs_recompressed += c.blobs_recompressed;
    }

    /// `copied 1 image: 131.2 MB in 0.41 s (320.0 MB/s); 6 blobs copied, 0 already there`.
    fn line(&self, images: usize, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-6);
        let mut s = format!(
            "copied {}: {} in {secs:.2} s ({}/s); {} copied, {} already at the destination",
            count(images as u64, "image", "images"),
            mb(self.bytes_copied),
            mb((self.bytes_copied as f64 / secs) as u64),
            count(self.blobs_copied as u64, "blob", "blobs"),
            self.blobs_present,
        );
        if self.blobs_mounted > 0 {
            s.push_str(&format!(", {} mounted", self.blobs_mounted));
        }
        if self.blobs_recompressed > 0 {
            s.push_str(&format!(
                ", {} recompressed",
                count(self.blobs_recompressed as u64, "layer", "layers")
            ));
        }
        if self.bytes_resumed > 0 {
            s.push_str(&format!(
                ", {} kept from an interrupted copy",
                mb(self.bytes_resumed)
            ));
        }
        s
    }
}
