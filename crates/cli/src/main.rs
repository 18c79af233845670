//! The `ferry` binary: clap definitions and dispatch; each command's body is in `commands/`.

mod client_config;
mod commands;
mod config;
mod counts;
mod environment;
mod load;
mod preload;
mod trace;
mod trace_plots;
mod trace_run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use commands::copy::CopyArgs;
use commands::fsck::{FsckArgs, fsck};
use commands::gc::{GcArgs, gc};
use commands::info::{CatalogArgs, InfoArgs};
use commands::inspect::{InspectArgs, TagsArgs};
use commands::list::{ListArgs, list};
use commands::preload::PreloadArgs;
use commands::prune::{PruneArgs, prune};
use commands::serve::{ServeArgs, limit_malloc_arenas, serve};
use config::{Config, LogFormat};

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
        after_help = "Examples:\n  ferry serve\n  ferry serve --listen 127.0.0.1:5000 --data-dir /tmp/ferry\n  FERRY_LISTEN=0.0.0.0:5000 ferry serve --config /etc/ferry/ferry.toml\n  ferry serve --listen 0.0.0.0:5000 --upstream https://registry-1.docker.io --p2p --p2p-bootstrap node-1:5001\n\nPush and pull with any OCI client, e.g.:\n  skopeo copy --dest-tls-verify=false oci:./layout:v1 docker://127.0.0.1:8080/team/app:v1"
    )]
    Serve(ServeArgs),
    /// Verify that every stored blob hashes to its name.
    #[command(
        after_help = "Examples:\n  ferry fsck --data-dir /var/lib/ferry\n  ferry fsck --data-dir /var/lib/ferry --quarantine --json\n  ferry fsck --data-dir /var/lib/ferry --drop-dangling   (after a power loss)\n\nExits 0 when the store is clean, 1 when something is wrong."
    )]
    Fsck(FsckArgs),
    /// Fill a ferry mirror's cache: pull references through a running mirror, or copy references
    /// and image archives (docker save, OCI layout, oci-archive; gzip too) straight into a stopped
    /// one's data directory.
    #[command(
        after_help = "Examples:\n  ferry preload --mirror http://127.0.0.1:8080 docker.io/library/alpine:3.20 quay.io/org/app:v1\n  ferry preload --mirror http://127.0.0.1:8080 --platform linux/amd64 images.txt\n  ferry preload --data-dir /var/lib/ferry --upstream https://registry-1.docker.io alpine.tar.gz\n  ferry preload --data-dir /var/lib/ferry --upstream https://registry-1.docker.io -J 4 images.txt\n  ferry preload --data-dir /var/lib/ferry --config /etc/ferry/ferry.toml --name quay.io/org/app:v1 app-oci.tar\n\nA file lists one reference per line (# starts a comment). Each reference's registry must be one of\nthe mirror's upstreams. With --data-dir or --config (and no --mirror), references are copied from\ntheir upstreams into the data directory. Archives are imported with the server stopped (or give them to\n`ferry serve --preload`); their images are cached under the names they were saved with (docker\nsave's RepoTags, OCI io.containerd.image.name / org.opencontainers.image.ref.name annotations) or\n--name, and each name's registry must be a configured upstream."
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
    /// Show an image in a registry: digest, media type, config, platform, layers and sizes (or
    /// the platforms of an index).
    #[command(
        after_help = "Examples:\n  ferry inspect registry://127.0.0.1:5000/team/app:v1\n  ferry inspect --platform linux/arm64 --json registry://quay.io/org/app:v1\n  ferry inspect --raw docker://docker.io/library/alpine:3.20\n\nLoopback registries (localhost, 127.0.0.0/8, [::1]) are reached over plain HTTP, as docker treats\nthem as insecure registries; any other host over HTTPS unless --plain-http. Credentials come from\ndocker's config.json ($DOCKER_CONFIG or ~/.docker) when it has some for the registry."
    )]
    Inspect(InspectArgs),
    /// List every tag of a repository in a registry, following its pagination.
    #[command(
        after_help = "Examples:\n  ferry tags registry://127.0.0.1:5000/team/app\n  ferry tags --json docker://quay.io/org/app\n\nLoopback registries (localhost, 127.0.0.0/8, [::1]) are reached over plain HTTP, as docker treats\nthem as insecure registries; any other host over HTTPS unless --plain-http."
    )]
    Tags(TagsArgs),
    /// Copy images between registries, OCI layouts and directories, verifying every blob.
    #[command(
        after_help = "Examples:\n  ferry copy registry://127.0.0.1:5000/team/app:v1 oci:/tmp/app-layout:v1\n  ferry copy -j 8 registry://127.0.0.1:5000/team/app:v1 dir:/tmp/app-dir\n  ferry copy --all-platforms registry://127.0.0.1:5000/team/multi:v1 oci:/tmp/multi\n  ferry copy --from-file images.txt 'dir:/tmp/many?unique_names=true'\n  ferry copy 'registry://127.0.0.1:5000/team/*:latest' oci:/tmp/team\n  ferry copy 'quay://org/app-*:v1' 'dir:/tmp/apps?unique_names=true'\n  ferry copy --dest-compress zstd registry://127.0.0.1:5000/team/app:v1 oci:/tmp/app-zstd:v1\n  ferry copy --dest-cert-dir ./certs.d registry://127.0.0.1:5000/team/app:v1 registry://127.0.0.1:5443/team/app:v1\n\nEvery blob is verified by its digest and kept under a partial name until it is; an interrupted copy\nrun again keeps complete blobs and continues a partial one with a Range request. Manifests are\nwritten byte for byte (digests are kept) unless --dest-compress gzip|zstd converts layers, which\ngives them and the manifests listing them new digests. Progress goes to stderr: bars on a terminal,\nelse one line per blob and a summary every 5 s; --quiet prints only errors. A wildcard source\ncopies every image it names (as ferry info lists them) into one destination, as --from-file does.\nLoopback registries are plain HTTP unless their side has a cert dir (--src-cert-dir,\n--dest-cert-dir, or --cert-dir for both), which says they speak TLS."
    )]
    Copy(CopyArgs),
    /// List every repository of a registry (its /v2/_catalog), following its pagination.
    #[command(
        after_help = "Examples:\n  ferry catalog registry://127.0.0.1:5000\n  ferry catalog --json --page-size 100 registry://127.0.0.1:5000\n\nLoopback registries (localhost, 127.0.0.0/8, [::1]) are reached over plain HTTP; any other host\nover HTTPS unless --plain-http. Docker Hub, Quay and GHCR serve no catalog: use ferry tags there."
    )]
    Catalog(CatalogArgs),
    /// One line per image (name, digest, media type, platforms, size of the layers) for images
    /// named by wildcards, resolved over the registry's catalog and tag lists or Quay's API.
    #[command(
        after_help = "Examples:\n  ferry info 'registry://127.0.0.1:5000/team/*:latest'\n  ferry info --json --jobs 16 'registry://127.0.0.1:5000/team/app-?:v1.*'\n  ferry info registry://127.0.0.1:5000/team/app:v1\n  QUAY_TOKEN=… ferry info 'quay://org/*:latest'\n\n* matches any run of characters and ? one, in the repository's last component and in the tag\n(team/* is team/app, not team/app/api). Output: name, digest, media type, platforms, size, tab-\nseparated. An image that fails is reported on stderr and the others still print; the exit code\nis then 1. quay:// lists repositories and tags through Quay's REST API (host quay.io unless one\nis named) and reads manifests through its registry API."
    )]
    Info(InfoArgs),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write containerd hosts.toml files that send pulls through a ferry mirror.
    #[command(
        after_help = "Examples:\n  ferry containerd-config --mirror http://127.0.0.1:8080 --registries docker.io,quay.io --dir /etc/containerd/certs.d\n  ferry containerd-config --mirror http://ferry.local:8080 --registries docker.io --dir ./certs.d --dry-run\n  ferry containerd-config --mirror http://ferry.local:8080 --config /etc/ferry/ferry.toml --registries registry.lan:5000 --dry-run\n  ferry containerd-config --mirror https://ferry.local:5000 --ca /etc/ferry/ca.crt --registries docker.io --dir ./certs.d\n\ncontainerd must point at the directory: config_path = \"/etc/containerd/certs.d\" in its CRI registry\nsection, or `ctr images pull --hosts-dir /etc/containerd/certs.d …`."
    )]
    ContainerdConfig(ContainerdConfigArgs),
    /// Print the Docker daemon.json settings that use a ferry mirror for Docker Hub.
    #[command(
        after_help = "Examples:\n  ferry docker-config --mirror http://127.0.0.1:8080 > /etc/docker/daemon.json\n  ferry docker-config --mirror https://ferry.local:5000 --ca /etc/ferry/ca.crt > /etc/docker/daemon.json"
    )]
    DockerConfig(DockerConfigArgs),
    /// The load lab: generate images, drive a registry with scaling pullers, report.
    #[command(subcommand)]
    Load(load::LoadCommand),
    /// The trace lab: production registry traces analyzed, simulated, generated and replayed.
    #[command(subcommand)]
    Trace(trace::TraceCommand),
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
    /// The CA that signed an https mirror's certificate (PEM): copied beside each hosts.toml
    /// (`ferry-ca.crt`) and named by its `ca` key.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) for a mirror that asks for one (mutual TLS); with --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// A user the mirror knows (its htpasswd): sent as basic credentials on every request to the
    /// mirror; with --password-file. The hosts.toml files are then written owner-only.
    #[arg(long, requires = "password_file")]
    username: Option<String>,
    /// File holding the user's password (refused if others can read it).
    #[arg(long, value_name = "FILE", requires = "username")]
    password_file: Option<PathBuf>,
    /// Print the files instead of writing them.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct DockerConfigArgs {
    /// The ferry mirror, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    mirror: String,
    /// The CA that signed an https mirror's certificate (PEM): written to
    /// `<certs-dir>/<host:port>/ca.crt`, where Docker looks for it.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Docker's certificates directory.
    #[arg(long, default_value = "/etc/docker/certs.d")]
    certs_dir: PathBuf,
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

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
        Command::Trace(trace::TraceCommand::Analyze(args)) => trace::analyze(args),
        Command::Trace(trace::TraceCommand::Simulate(args)) => trace::simulate(args),
        Command::Trace(trace::TraceCommand::Gen(args)) => trace::generate(args),
        Command::Trace(trace::TraceCommand::Warmup(args)) => trace_run::warmup(args),
        Command::Trace(trace::TraceCommand::Run(args)) => trace_run::run(args),
        Command::Trace(trace::TraceCommand::Merge(args)) => trace_run::merge(args),
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
            let basic = match (&args.username, &args.password_file) {
                (Some(user), Some(file)) => {
                    let password =
                        String::from_utf8(ferry_auth::read_secret_file(file)?).map_err(|_| {
                            anyhow::anyhow!("--password-file {}: not UTF-8", file.display())
                        })?;
                    Some(format!(
                        "{user}:{}",
                        password.trim_end_matches(['\r', '\n'])
                    ))
                }
                _ => None,
            };
            let access = client_config::MirrorAccess {
                ca: args.ca.clone(),
                client: args.client_cert.clone().zip(args.client_key.clone()),
                basic,
            };
            client_config::containerd(
                &args.mirror,
                &args.registries,
                &upstreams,
                &access,
                &args.dir,
                args.dry_run,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            commands::inspect::inspect(args)
        }
        Command::Copy(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            commands::copy::copy(args)
        }
        Command::Tags(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            commands::inspect::tags(args)
        }
        Command::Catalog(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            commands::info::catalog(args)
        }
        Command::Info(args) => {
            init_logs(
                cli.log_format.unwrap_or(LogFormat::Text),
                cli.log_level.as_deref().unwrap_or("warn"),
            )?;
            commands::info::info(args)
        }
        Command::DockerConfig(args) => {
            println!("{}", client_config::docker(&args.mirror)?);
            if let Some(ca) = &args.ca {
                let path = client_config::docker_ca(&args.mirror, ca, &args.certs_dir)?;
                eprintln!("wrote {}", path.display());
            }
            if args.mirror.starts_with("https://") {
                eprintln!(
                    "Docker sends Docker Hub's credentials to registry-mirrors, not the mirror's: let anonymous callers pull through it ([[auth.access]] anonymous = true)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let c = args.config()?;
            logs(&c)?;
            let (archives, lists): (Vec<PathBuf>, Vec<PathBuf>) = args
                .preload
                .iter()
                .cloned()
                .partition(|p| ferry_copy::archive::is_archive(p));
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
            commands::preload::run(args)
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
