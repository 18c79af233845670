//! The `ferry` binary: clap definitions and thin glue over the library crates.

mod archive;
mod client_config;
mod config;
mod counts;
mod environment;
mod load;
mod preload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;

use config::{Config, LogFormat};
use ferry_server::prune::image_name;

const EXAMPLES: &str = "\
Examples:
  ferry serve                                        registry on 127.0.0.1:8080, data in ~/.local/share/ferry
  ferry serve --listen 0.0.0.0:5000 --data-dir /var/lib/ferry
  ferry serve --upstream https://registry-1.docker.io   pull-through cache of Docker Hub
  ferry fsck --data-dir /var/lib/ferry --quarantine  verify every blob, move corrupt ones aside
  ferry gc --data-dir /var/lib/ferry --dry-run       list blobs no manifest references
  ferry config print --config ferry.toml             show the effective configuration";

/// ferry gets OCI container images to the machines that run them, fast.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = EXAMPLES, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info`, `debug`, `ferry_server=debug,info`.
    #[arg(long, global = true, env = "FERRY_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the OCI registry.
    #[command(
        after_help = "Examples:\n  ferry serve\n  ferry serve --listen 127.0.0.1:5000 --data-dir /tmp/ferry\n  FERRY_LISTEN=0.0.0.0:5000 ferry serve --config /etc/ferry/ferry.toml\n\nPush and pull with any OCI client, e.g.:\n  skopeo copy --dest-tls-verify=false oci:./layout:v1 docker://127.0.0.1:8080/team/app:v1"
    )]
    Serve(ServeArgs),
    /// Verify that every stored blob hashes to its name.
    #[command(
        after_help = "Examples:\n  ferry fsck --data-dir /var/lib/ferry\n  ferry fsck --data-dir /var/lib/ferry --quarantine --json\n  ferry fsck --data-dir /var/lib/ferry --drop-dangling   (after a power loss)\n\nExits 0 when the store is clean, 1 when something is wrong."
    )]
    Fsck(FsckArgs),
    /// Fill a ferry mirror's cache: pull references through a running mirror, or import image
    /// archives (docker save, OCI layout, oci-archive; gzip too) straight into its data directory.
    #[command(
        after_help = "Examples:\n  ferry preload --mirror http://127.0.0.1:8080 docker.io/library/alpine:3.20 quay.io/org/app:v1\n  ferry preload --mirror http://127.0.0.1:8080 --platform linux/amd64 images.txt\n  ferry preload --data-dir /var/lib/ferry --upstream https://registry-1.docker.io alpine.tar.gz\n  ferry preload --data-dir /var/lib/ferry --config /etc/ferry/ferry.toml --name quay.io/org/app:v1 app-oci.tar\n\nA file lists one reference per line (# starts a comment). Each reference's registry must be one of\nthe mirror's upstreams. Archives are imported with the server stopped (or give them to\n`ferry serve --preload`); their images are cached under the names they were saved with (docker\nsave's RepoTags, OCI io.containerd.image.name / org.opencontainers.image.ref.name annotations) or\n--name, and each name's registry must be a configured upstream."
    )]
    Preload(PreloadArgs),
    /// List stored images: repository, tag, digest, size, when stored, last pulled, pull count.
    #[command(
        after_help = "Examples:\n  ferry list --data-dir /var/lib/ferry\n  ferry list --data-dir /var/lib/ferry --pattern '^docker.io/library/' --json"
    )]
    List(ListArgs),
    /// Delete images by age or name, then the blobs nothing references any more (server stopped).
    #[command(
        after_help = "Examples:\n  ferry prune --data-dir /var/lib/ferry --accessed-before 30d --dry-run\n  ferry prune --data-dir /var/lib/ferry --created-before 90d --pattern '^docker.io/'\n\nAGE is a number and a unit: s, m, h, d or w. Images never pulled count from when they were stored."
    )]
    Prune(PruneArgs),
    /// Remove blobs that no manifest references (run while the server is stopped).
    #[command(
        after_help = "Examples:\n  ferry gc --data-dir /var/lib/ferry --dry-run\n  ferry gc --data-dir /var/lib/ferry"
    )]
    Gc(GcArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write containerd hosts.toml files that send pulls through a ferry mirror.
    #[command(
        after_help = "Examples:\n  ferry containerd-config --mirror http://127.0.0.1:8080 --registries docker.io,quay.io --dir /etc/containerd/certs.d\n  ferry containerd-config --mirror http://ferry.local:8080 --registries docker.io --dir ./certs.d --dry-run\n  ferry containerd-config --mirror http://ferry.local:8080 --config /etc/ferry/ferry.toml --registries registry.lan:5000 --dry-run\n\ncontainerd must point at the directory: config_path = \"/etc/containerd/certs.d\" in its CRI registry\nsection, or `ctr images pull --hosts-dir /etc/containerd/certs.d …`."
    )]
    ContainerdConfig(ContainerdConfigArgs),
    /// Print the Docker daemon.json settings that use a ferry mirror for Docker Hub.
    #[command(
        after_help = "Example:\n  ferry docker-config --mirror http://127.0.0.1:8080 > /etc/docker/daemon.json"
    )]
    DockerConfig(DockerConfigArgs),
    /// The load lab: generate images, drive a registry with scaling pullers, report.
    #[command(subcommand)]
    Load(load::LoadCommand),
    /// Print the version.
    #[command(after_help = "Example:\n  ferry version")]
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment and flags merged) as TOML.
    #[command(
        after_help = "Examples:\n  ferry config print\n  ferry config print --config ferry.toml --listen 0.0.0.0:5000 > effective.toml"
    )]
    Print(ServeArgs),
}

#[derive(Debug, Args)]
struct ContainerdConfigArgs {
    /// The ferry mirror, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    mirror: String,
    /// Registries to send through the mirror, comma separated (`_default` covers all others);
    /// `http://host:port` marks a plain-HTTP registry.
    #[arg(long, value_delimiter = ',', required = true)]
    registries: Vec<String>,
    /// The mirror's TOML configuration: a registry that is one of its `[[upstream]]`s falls back
    /// to that upstream's URL (so a plain-HTTP upstream stays http).
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// containerd's hosts directory.
    #[arg(long, default_value = "/etc/containerd/certs.d")]
    dir: PathBuf,
    /// Print the files instead of writing them.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct DockerConfigArgs {
    /// The ferry mirror, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    mirror: String,
}

#[derive(Debug, Args)]
struct DataArgs {
    /// TOML configuration file.
    #[arg(long, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ~/.local/share/ferry].
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FERRY_LISTEN", value_name = "IP:PORT", value_parser = socket_addr)]
    listen: Option<SocketAddr>,
    /// Refuse DELETE of manifests, tags and blobs.
    #[arg(long)]
    no_delete: bool,
    /// Accept manifests whose blobs have not been pushed (some migration tools push manifests first).
    #[arg(long)]
    relaxed_manifests: bool,
    /// Connections served at once.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Mirror this registry (repeatable): `http(s)://host[:port]`; its `host[:port]` is the name
    /// requests route by (`?ns=`, `X-Registry`, `/v2/<host:port>/…`). A single upstream is also the
    /// default.
    #[arg(long = "upstream", value_name = "URL")]
    upstreams: Vec<String>,
    /// The upstream for requests that name none.
    #[arg(long, value_name = "NAME")]
    default_upstream: Option<String>,
    /// A repository prefix that is ferry's own, pushable, when a default upstream takes every
    /// other name (repeatable), e.g. `--local-namespace team`.
    #[arg(long = "local-namespace", value_name = "PREFIX")]
    local_namespaces: Vec<String>,
    /// Never contact upstreams; serve only what is cached.
    #[arg(long)]
    offline: bool,
    /// Pull the references listed in FILE through this server once it listens, or import FILE if it
    /// is an image archive (docker save, OCI layout, oci-archive; before listening) (repeatable).
    #[arg(long, value_name = "FILE")]
    preload: Vec<PathBuf>,
    /// Serve Prometheus/OpenMetrics series at http://ADDR/metrics.
    #[arg(long = "metrics", value_name = "IP:PORT", env = "FERRY_METRICS", value_parser = socket_addr)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct FsckArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Move corrupt blobs to `DATA_DIR/quarantine` so they are never served (needs the server stopped).
    #[arg(long)]
    quarantine: bool,
    /// Remove links and tags that point at nothing, e.g. a mirror's newest names after a power
    /// loss (names only, never content; needs the server stopped).
    #[arg(long)]
    drop_dangling: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PreloadArgs {
    /// The ferry to warm.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    mirror: String,
    /// Only these platforms of multi-platform images (repeatable; default all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<preload::PlatformFilter>,
    /// Blobs fetched at once per image.
    #[arg(short = 'j', long, default_value_t = 4)]
    jobs: usize,
    /// Images fetched at once.
    #[arg(short = 'J', long, default_value_t = 2)]
    images: usize,
    /// Data directory and configuration, for importing archives.
    #[command(flatten)]
    data: DataArgs,
    /// An upstream the imported archives' images belong to (repeatable; or `[[upstream]]` in
    /// --config).
    #[arg(long = "upstream", value_name = "URL")]
    upstreams: Vec<String>,
    /// Cache an archive's only image under this reference instead of the name saved in it.
    #[arg(long, value_name = "REFERENCE")]
    name: Option<String>,
    /// Largest decompressed copy of a gzip archive, e.g. 50GiB [default: limits.max_unpacked_archive
    /// in --config, else 100 times the archive's size, at least 64 MiB].
    #[arg(long, value_name = "SIZE", value_parser = ferry_policy::units::parse_size)]
    max_unpacked: Option<u64>,
    /// References, files listing them, or image archives.
    #[arg(required = true, value_name = "REFERENCE|FILE|ARCHIVE")]
    items: Vec<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only images whose `repository:tag` matches this regular expression.
    #[arg(long)]
    pattern: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PruneArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Images last pulled (or, never pulled, stored) longer ago than AGE.
    #[arg(long, value_name = "AGE")]
    accessed_before: Option<String>,
    /// Images stored longer ago than AGE.
    #[arg(long, value_name = "AGE")]
    created_before: Option<String>,
    /// Images whose `repository:tag` matches this regular expression.
    #[arg(long)]
    pattern: Option<String>,
    /// Only report what would be deleted.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GcArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl DataArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        Ok(c)
    }
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = self.data.config()?;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if self.no_delete {
            c.registry.delete_enabled = false;
        }
        if self.relaxed_manifests {
            c.registry.check_manifest_references = false;
        }
        if let Some(n) = self.max_connections {
            c.limits.max_connections = n;
        }
        for url in &self.upstreams {
            c.upstream.push(config::UpstreamConfig::from_url(url));
        }
        if let Some(d) = &self.default_upstream {
            c.default_upstream = Some(d.clone());
        }
        c.local_namespaces
            .extend(self.local_namespaces.iter().cloned());
        if self.offline {
            c.offline = true;
        }
        if let Some(m) = self.metrics_listen {
            c.metrics_listen = Some(m);
        }
        c.validate()?;
        Ok(c)
    }
}

/// An address to listen on, with an error that says what is wanted (the standard one says only
/// "invalid socket address syntax", e.g. for a bare port).
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        let hint = if s.parse::<u16>().is_ok() {
            format!(" (a port alone is not enough: 127.0.0.1:{s} or 0.0.0.0:{s})")
        } else {
            String::new()
        };
        format!("expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080{hint}")
    })
}

fn init_logs(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid log filter {level:?} (try `info` or `debug`)"))?;
    // Colour only for a person at a terminal: escapes in log files and pipes are noise (and
    // NO_COLOR says no anyway).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps their
/// memory: under a prune-heavy load ferry's peak RSS was 66–71 MiB with the default and 31 MiB with
/// two arenas (docs/benchmarks/load.md). The setting is read only at process start, so `serve`
/// re-executes itself once with `MALLOC_ARENA_MAX=2` unless the variable is already set (set it to
/// anything, e.g. `8`, to keep glibc's default behaviour). Other C libraries ignore it.
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // `exec` only returns on failure; then ferry runs on as it is.
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!("warning: could not re-execute with MALLOC_ARENA_MAX=2 ({err}); continuing");
}

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        environment::name_the_variable(e, &<Cli as clap::CommandFactory>::command()).exit()
    });
    if matches!(cli.command, Command::Serve(_)) {
        limit_malloc_arenas();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Store work runs on blocking threads; bounding them bounds the memory (each thread may hold
    // a malloc arena) under bursts such as many concurrent prunes.
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let logs = |c: &Config| {
        init_logs(
            cli.log_format.unwrap_or(c.log_format),
            cli.log_level.as_deref().unwrap_or(&c.log_level),
        )
    };
    match &cli.command {
        Command::Version => {
            println!("ferry {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(load::LoadCommand::Gen(args)) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            runtime()?.block_on(load::generate(args.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(load::LoadCommand::Report(args)) => {
            load::report(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(load::LoadCommand::Run(args)) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            let ok = runtime()?.block_on(load::run((**args).clone()))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Config(ConfigCommand::Print(args)) => {
            let mut c = args.config()?;
            if let Some(f) = cli.log_format {
                c.log_format = f;
            }
            if let Some(l) = &cli.log_level {
                c.log_level = l.clone();
            }
            print!("{}", c.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::ContainerdConfig(args) => {
            let upstreams = match &args.config {
                Some(path) => config::Config::load(Some(path))?.upstream,
                None => Vec::new(),
            };
            client_config::containerd(
                &args.mirror,
                &args.registries,
                &upstreams,
                &args.dir,
                args.dry_run,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DockerConfig(args) => {
            println!("{}", client_config::docker(&args.mirror)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let c = args.config()?;
            logs(&c)?;
            let (archives, lists): (Vec<PathBuf>, Vec<PathBuf>) = args
                .preload
                .iter()
                .cloned()
                .partition(|p| archive::is_archive(p));
            let lists: Vec<String> = lists.iter().map(|p| p.display().to_string()).collect();
            let refs = preload::references(&lists)?;
            runtime()?.block_on(serve(c, refs, archives))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck(args) => {
            let c = args.data.config()?;
            logs(&c)?;
            runtime()?.block_on(fsck(c, args.quarantine, args.drop_dangling, args.json))
        }
        Command::Preload(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
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
            let rt = runtime()?;
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
        Command::List(args) => {
            let c = args.data.config()?;
            logs(&c)?;
            runtime()?.block_on(list(c, args))
        }
        Command::Prune(args) => {
            let c = args.data.config()?;
            logs(&c)?;
            runtime()?.block_on(prune(c, args))
        }
        Command::Gc(args) => {
            let c = args.data.config()?;
            logs(&c)?;
            runtime()?.block_on(gc(c, args.dry_run, args.json))
        }
    }
}

async fn open_store(
    c: &Config,
    lock: ferry_store::LockMode,
) -> anyhow::Result<Arc<ferry_store::Store>> {
    ferry_store::Store::open_with(&c.data_dir, c.store_options(), lock)
        .await
        .with_context(|| format!("cannot open the data directory {}", c.data_dir.display()))
}

/// Raises the open-file limit as far as allowed, and keeps the connection bound under it: each
/// connection may hold a socket and a file, and the store needs descriptors of its own.
fn fit_connections_to_fd_limit(c: &mut Config) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let fit = (limit.saturating_sub(256) / 2).max(16) as usize;
    if c.limits.max_connections > fit {
        tracing::warn!(
            max_connections = c.limits.max_connections,
            open_file_limit = limit,
            using = fit,
            "max_connections exceeds what the open-file limit allows; lowering it (raise `ulimit -n` to serve more)"
        );
        c.limits.max_connections = fit;
    }
}

/// Preloads `refs` through the mirror at `mirror`, `images` at a time; reports each; false if any failed.
async fn run_preload(
    mirror: &str,
    refs: Vec<ferry_oci::Reference>,
    platforms: &[preload::PlatformFilter],
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
fn report_preload(
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
                    counts::count(p.manifests as u64, "manifest", "manifests"),
                    counts::count(p.blobs as u64, "blob", "blobs"),
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
struct ImportOptions<'a> {
    /// Platforms of multi-platform images kept (all when empty).
    platforms: &'a [preload::PlatformFilter],
    /// What reading one archive may cost.
    limits: archive::ArchiveLimits,
    /// A name for an archive's only image.
    name: Option<&'a ferry_oci::Reference>,
    /// Blobs stored at once.
    jobs: usize,
}

/// Imports image archives into the cache; reports each; false if any failed.
async fn import_archives(
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
            Ok(Err(e)) => Err(e),
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

async fn serve(
    mut c: Config,
    preload_refs: Vec<ferry_oci::Reference>,
    archives: Vec<PathBuf>,
) -> anyhow::Result<()> {
    fit_connections_to_fd_limit(&mut c);
    let mirror = c.mirror()?;
    let store = open_store(&c, ferry_store::LockMode::Exclusive).await?;
    if !archives.is_empty() {
        // Imported before listening, so an air-gapped node never answers for images it is about
        // to have.
        let m = mirror.as_ref().context(
            "--preload with an image archive needs the upstream its images belong to (--upstream or [[upstream]])",
        )?;
        let o = ImportOptions {
            platforms: &[],
            limits: c.archive_limits()?,
            name: None,
            jobs: 4,
        };
        if import_archives(&store, m, &archives, &o, false).await {
            tracing::info!(archives = archives.len(), "archives imported");
        }
    }
    let listener = tokio::net::TcpListener::bind(c.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another server using the port? try --listen 127.0.0.1:<port>)", c.listen))?;
    let addr = listener.local_addr()?;
    if !preload_refs.is_empty() {
        // The listener is bound, so these requests wait in its queue until serving starts.
        let me = format!("http://{addr}");
        tokio::spawn(async move {
            let n = preload_refs.len();
            if run_preload(&me, preload_refs, &[], 4, 2, false).await {
                tracing::info!(images = n, "preload finished");
            }
        });
    }
    tracing::info!(listen = %addr, data_dir = %c.data_dir.display(), "ferry serving the OCI distribution API");
    if let Some(m) = &mirror {
        let names: Vec<&str> = m.upstream_names().collect();
        tracing::info!(upstreams = %names.join(","), offline = c.offline, "mirroring");
        // Pushed repositories that a default upstream now shadows are not served; say so once.
        let hidden: Vec<String> = store
            .repositories(None, None)
            .into_iter()
            .filter(|r| m.owns_namespace(r).is_none() && !m.serves_locally(r))
            .collect();
        if !hidden.is_empty() {
            tracing::warn!(
                count = hidden.len(),
                first = %hidden.iter().take(5).cloned().collect::<Vec<_>>().join(","),
                "pushed repositories are not served: their names route to the default upstream; list their prefixes in local_namespaces (--local-namespace) to serve them"
            );
        }
    }
    let budget = c.cache.budget()?;
    let interval = std::time::Duration::from_secs(c.cache.maintenance_interval_secs);
    let options = ferry_server::RegistryOptions {
        admin_token: c.admin_token()?,
        ..c.registry_options()
    };
    if options.admin_token.is_some() {
        tracing::info!("admin API enabled under /admin/");
    }
    let app = Arc::new(ferry_server::App {
        store: store.clone(),
        options,
        mirror: mirror.map(Arc::new),
        metrics: Arc::default(),
    });
    // Housekeeping while the server runs: pull statistics are written every minute, the cache is
    // kept within its budget, and expired uploads and abandoned temp files go every ten minutes.
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            let sweep_every = (600 / interval.as_secs().max(1)).max(1);
            for round in 1u64.. {
                tick.tick().await;
                if let Err(e) = app.store.flush_access().await {
                    tracing::warn!(error = %e, "writing pull statistics failed");
                }
                if let Some(m) = &app.mirror
                    && let Err(e) =
                        ferry_server::mirror::budget::evict(&app.store, m, &app.metrics, &budget)
                            .await
                {
                    tracing::warn!(error = %e, "cache eviction failed");
                }
                if round % sweep_every == 0
                    && let Err(e) = app.store.sweep().await
                {
                    tracing::warn!(error = %e, "sweeping expired uploads failed");
                }
            }
        })
    };
    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics_server = match c.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            tracing::info!(listen = %l.local_addr()?, "metrics at /metrics");
            let opts = ferry_server::ServeOptions {
                max_connections: 64,
                ..c.serve_options()
            };
            Some(tokio::spawn(ferry_server::serve(
                l,
                ferry_server::metrics::router(app.clone()),
                opts,
                stopped(),
            )))
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    ferry_server::serve(
        listener,
        ferry_server::router(app),
        c.serve_options(),
        stopped(),
    )
    .await?;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    sweeper.abort();
    if let Err(e) = store.flush_access().await {
        tracing::warn!(error = %e, "writing pull statistics failed");
    }
    if let Err(e) = store.clean_tmp().await {
        // Requests still running past the grace period may hold temp files; the next start wipes them.
        tracing::warn!(error = %e, "could not remove every temp file at shutdown");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn fsck(
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
            counts::count(r.blobs_checked, "blob", "blobs"),
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

fn pattern(p: &Option<String>) -> anyhow::Result<Option<regex_lite::Regex>> {
    p.as_deref()
        .map(|p| {
            regex_lite::Regex::new(p)
                .with_context(|| format!("--pattern {p:?} is not a valid regular expression"))
        })
        .transpose()
}

fn human(bytes: u64) -> String {
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

fn ago(now: u64, t: Option<u64>) -> String {
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

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn list(c: Config, args: &ListArgs) -> anyhow::Result<ExitCode> {
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

async fn prune(c: Config, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.accessed_before.is_some() || args.created_before.is_some() || args.pattern.is_some(),
        "say what to prune: --accessed-before AGE, --created-before AGE and/or --pattern RE"
    );
    let now = now_secs();
    let age = |a: &Option<String>, flag: &str| -> anyhow::Result<Option<u64>> {
        a.as_deref()
            .map(|a| {
                ferry_policy::units::parse_age(a)
                    .map(|s| now.saturating_sub(s))
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            })
            .transpose()
    };
    let rule = ferry_policy::PruneRule {
        accessed_before: age(&args.accessed_before, "--accessed-before")?,
        created_before: age(&args.created_before, "--created-before")?,
    };
    let selection = ferry_server::prune::Selection {
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
    let images = store.images().await?;
    let chosen: Vec<&ferry_store::ImageInfo> =
        images.iter().filter(|i| selection.matches(i)).collect();
    let mut report = serde_json::json!({"dry_run": args.dry_run, "images": chosen.iter().map(|i| image_name(i)).collect::<Vec<_>>()});
    if !args.dry_run {
        ferry_server::prune::prune(&store, &images, &selection).await?;
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
        for i in &chosen {
            println!("{verb} {}", image_name(i));
        }
        if args.dry_run {
            println!(
                "{} selected (dry run: nothing changed)",
                counts::count(chosen.len() as u64, "image", "images")
            );
        } else {
            println!(
                "{} deleted; {} ({}) freed",
                counts::count(chosen.len() as u64, "image", "images"),
                counts::count(
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

async fn gc(c: Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
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
            counts::count(r.removed, "blob", "blobs"),
            r.bytes_freed,
            counts::count(r.kept, "referenced blob", "referenced blobs")
        );
    }
    Ok(ExitCode::SUCCESS)
}
