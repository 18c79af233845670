//! `ferry inspect REF` and `ferry tags REPO`: read-only looks at an image in a registry.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ferry_client::{
    ClientError, Connections, CredentialSources, ErrorKind, Registry, RegistryOptions,
    resolve_credentials,
};
use ferry_copy::Location;
use ferry_oci::{Manifest, Reference, RepoName};
use futures_util::StreamExt;

/// Manifests and config blobs are small; anything bigger is not one.
pub(crate) const MAX_MANIFEST: usize = 4 << 20;
const MAX_CONFIG: usize = 16 << 20;
pub(crate) const MAX_TAG_PAGE: usize = 16 << 20;
/// All pages of a tag list together: millions of tags, far beyond any real repository.
pub(crate) const MAX_TAG_LIST: usize = 256 << 20;

/// How to reach the registry (shared by `inspect` and `tags`).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP. Without it ferry uses HTTPS, except for loopback hosts (localhost,
    /// 127.0.0.0/8, `[::1]`), which use HTTP as docker treats them as insecure registries.
    #[arg(long)]
    pub plain_http: bool,
    /// Verify the registry's TLS certificate (`--tls-verify=false` accepts any).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: `registry://host[:port]/repo[:tag|@digest]` (`docker://` too).
    pub reference: String,
    /// Print the manifest bytes exactly as the registry serves them.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
    /// Of an index, inspect the image for this platform: `os/arch[/variant]`.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository: `registry://host[:port]/repo` (`docker://` too).
    pub repository: String,
    /// Print `{"repository": …, "tags": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// Tags to ask for per page (default: the registry's page size).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The registry reference in `input`, or an error saying why it is not one.
pub(crate) fn registry_reference(input: &str, command: &str) -> anyhow::Result<Reference> {
    match input.parse::<Location>()? {
        Location::Registry { reference } => Ok(reference),
        other => anyhow::bail!(
            "ferry {command} reads registry:// locations ({input:?} is {}); oci:/archives come with ferry copy",
            other.transport()
        ),
    }
}

/// Whether `host` (`name[:port]`) is a loopback address, which docker reaches over plain HTTP.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host` of the registry named `host`: HTTPS unless `plain_http` or a loopback host.
pub(crate) fn endpoint(host: &str, plain_http: bool) -> String {
    // Docker Hub's API lives on another host than its name.
    let api_host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    let scheme = if plain_http || is_loopback(api_host) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{api_host}")
}

/// A client for the registry `host`, with the credentials `ferry_client::resolve_credentials`
/// finds for it (auth files, docker's config.json and its helpers), else anonymous; its
/// connections come from the process's pool.
pub(crate) fn client(
    host: &str,
    args: &RegistryArgs,
    connections: &Connections,
) -> anyhow::Result<Registry> {
    registry_client(
        host,
        args.plain_http,
        &CredentialSources::default(),
        RegistryOptions {
            insecure_skip_verify: !args.tls_verify,
            connections: connections.clone(),
            ..RegistryOptions::default()
        },
    )
    .with_context(|| format!("credentials for {host}"))
}

/// A client for the registry `host` with `options` (TLS, retries, rate limit) and the credentials
/// `ferry_client::resolve_credentials` finds for it from `sources`, else anonymous.
pub(crate) fn registry_client(
    host: &str,
    plain_http: bool,
    sources: &CredentialSources,
    options: RegistryOptions,
) -> Result<Registry, ClientError> {
    let credentials = resolve_credentials(host, sources)?;
    Registry::new(RegistryOptions {
        endpoint: endpoint(host, plain_http),
        credentials,
        ..options
    })
}

/// One line for a failed request, naming what failed and, where it helps, the fix.
pub(crate) fn explain(
    e: ClientError,
    registry: &Registry,
    host: &str,
    what: &str,
) -> anyhow::Error {
    let hint = if registry.endpoint().starts_with("https://") {
        " (is the registry running? for a plain-HTTP registry add --plain-http)"
    } else {
        " (is the registry running?)"
    };
    match e.kind {
        ErrorKind::NotFound => anyhow::anyhow!("manifest unknown: {what}"),
        ErrorKind::Connect => anyhow::anyhow!("cannot connect to {host}: {}{hint}", e.message),
        ErrorKind::Unauthorized => anyhow::anyhow!(
            "{what}: unauthorized ({}); log in with `docker login {host}`",
            e.message
        ),
        _ => anyhow::anyhow!("{what}: {}", e.message),
    }
}

pub fn tags(args: &TagsArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.repository, "tags")?;
    let host = reference.registry.clone().unwrap_or_default();
    let registry = client(&host, &args.registry, &Connections::new())?;
    let repository = format!("{host}/{}", reference.repo);
    let tags = crate::runtime()?
        .block_on(registry.all_tags(&reference.repo, args.page_size, MAX_TAG_PAGE, MAX_TAG_LIST))
        .map_err(|e| match e.kind {
            ErrorKind::NotFound => anyhow::anyhow!("repository unknown: {repository}"),
            _ => explain(e, &registry, &host, &repository),
        })?;
    if args.json {
        let v = serde_json::json!({"repository": repository, "tags": tags});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for t in &tags {
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `os/arch[/variant]` of a platform.
pub(crate) fn platform_name(p: &ferry_oci::Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.reference, "inspect")?;
    let host = reference.registry.clone().unwrap_or_default();
    let registry = client(&host, &args.registry, &Connections::new())?;
    let name = args.reference.as_str();
    crate::runtime()?.block_on(async {
        let tag_or_digest = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.as_str().to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let mut got = registry
            .get_manifest(&reference.repo, &tag_or_digest, MAX_MANIFEST)
            .await
            .map_err(|e| explain(e, &registry, &host, name))?;
        let mut manifest = parse(&got, name)?;
        if let Some(wanted) = &args.platform {
            anyhow::ensure!(
                manifest.media_type().is_index(),
                "--platform {wanted}: {name} is a single image, not an index of platforms"
            );
            let names: Vec<(String, &ferry_oci::Descriptor)> = manifest
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| (platform_name(p), d)))
                .collect();
            let Some((_, child)) = names.iter().find(|(n, _)| n == wanted) else {
                let available: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
                anyhow::bail!(
                    "{name} has no platform {wanted}; available: {}",
                    available.join(", ")
                );
            };
            let child = child.digest.to_string();
            got = registry
                .get_manifest(&reference.repo, &child, MAX_MANIFEST)
                .await
                .map_err(|e| explain(e, &registry, &host, &format!("{name} ({wanted})")))?;
            manifest = parse(&got, name)?;
        }
        if args.raw {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&got.bytes)?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        let v = describe(&registry, &reference.repo, &manifest, &host, name).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print_text(&v);
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn parse(got: &ferry_client::ManifestResponse, name: &str) -> anyhow::Result<Manifest> {
    let content_type = (!got.media_type.is_empty()).then_some(got.media_type.as_str());
    Manifest::parse(got.bytes.to_vec(), content_type)
        .with_context(|| format!("{name}: the registry served an unusable manifest"))
}

async fn read_config(
    registry: &Registry,
    repo: &RepoName,
    config: &ferry_oci::Descriptor,
    host: &str,
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    let what = format!("config {} of {name}", config.digest);
    let r = registry
        .get_blob(repo, &config.digest, 0)
        .await
        .map_err(|e| explain(e, registry, host, &what))?;
    let mut body = r.into_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| explain(e, registry, host, &what))?);
        anyhow::ensure!(buf.len() <= MAX_CONFIG, "{what} is over {MAX_CONFIG} bytes");
    }
    Ok(buf)
}

/// What `ferry inspect --json` prints of `manifest` (fetched as `name` from `repo`): digest,
/// media type, and either an index's platforms or an image's config, platform, layers and their
/// total size. `ferry info` builds its summaries on it.
pub(crate) async fn describe(
    registry: &Registry,
    repo: &RepoName,
    manifest: &Manifest,
    host: &str,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::json!({
        "name": name,
        "digest": manifest.digest().to_string(),
        "mediaType": manifest.media_type().as_str(),
    });
    if manifest.media_type().is_index() {
        v["manifests"] = manifest
            .manifests
            .iter()
            .map(|d| {
                serde_json::json!({
                    "platform": d.platform.as_ref().map(platform_name),
                    "digest": d.digest.to_string(),
                    "size": d.size,
                    "mediaType": d.media_type,
                })
            })
            .collect();
    } else {
        if let Some(config) = &manifest.config {
            v["config"] = serde_json::json!(config.digest.to_string());
            let bytes = read_config(registry, repo, config, host, name).await?;
            #[derive(serde::Deserialize)]
            struct ImageConfig {
                os: Option<String>,
                architecture: Option<String>,
                variant: Option<String>,
            }
            // Not every artifact's config is an image config: the platform is then absent.
            if let Ok(c) = serde_json::from_slice::<ImageConfig>(&bytes) {
                v["os"] = serde_json::json!(c.os);
                v["architecture"] = serde_json::json!(c.architecture);
                if c.variant.is_some() {
                    v["variant"] = serde_json::json!(c.variant);
                }
            }
        }
        v["layers"] = manifest
            .layers
            .iter()
            .map(|d| {
                serde_json::json!({
                    "digest": d.digest.to_string(),
                    "size": d.size,
                    "mediaType": d.media_type,
                })
            })
            .collect();
        v["size"] = serde_json::json!(manifest.layers.iter().map(|d| d.size).sum::<u64>());
    }
    Ok(v)
}

fn print_text(v: &serde_json::Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    println!("Name:       {}", s("name"));
    println!("Digest:     {}", s("digest"));
    println!("Media type: {}", s("mediaType"));
    if let Some(children) = v["manifests"].as_array() {
        println!("Platforms:");
        for c in children {
            println!(
                "  {:<16} {}  {:>10}",
                c["platform"].as_str().unwrap_or("-"),
                c["digest"].as_str().unwrap_or(""),
                c["size"]
            );
        }
        return;
    }
    if v.get("config").is_some() {
        println!("Config:     {}", s("config"));
    }
    if v.get("os").is_some() {
        let variant = v["variant"]
            .as_str()
            .map(|x| format!("/{x}"))
            .unwrap_or_default();
        println!("Platform:   {}/{}{variant}", s("os"), s("architecture"));
    }
    println!("Layers:");
    for l in v["layers"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:>10}  {}",
            l["digest"].as_str().unwrap_or(""),
            l["size"],
            l["mediaType"].as_str().unwrap_or("")
        );
    }
    println!("Total size: {} bytes (layers)", v["size"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http_and_others_https() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
        ] {
            assert_eq!(endpoint(host, false), format!("http://{host}"), "{host}");
        }
        for host in [
            "quay.io",
            "198.18.0.1:5000",
            "registry.lan",
            "[::2]:5000",
            "localhost.example",
        ] {
            assert_eq!(endpoint(host, false), format!("https://{host}"), "{host}");
            assert_eq!(endpoint(host, true), format!("http://{host}"), "{host}");
        }
        assert_eq!(endpoint("docker.io", false), "https://registry-1.docker.io");
    }
}
