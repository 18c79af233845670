//! `ferry catalog HOST` and `ferry info PATTERN...`: what a registry holds, and a one-line summary
//! of each image a wildcard names (resolved over `_catalog` and tag lists, or Quay's REST API).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use ferry_client::{Connections, ErrorKind, Quay, QuayOptions, Registry};
use ferry_copy::{ImagePattern, Location};
use ferry_oci::{Reference, RepoName};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::inspect::{
    MAX_MANIFEST, MAX_TAG_LIST, MAX_TAG_PAGE, RegistryArgs, client, describe, endpoint, explain,
    parse, platform_name,
};

/// A catalog page and a whole catalog: names are short, so these are millions of repositories.
const MAX_CATALOG_PAGE: usize = 16 << 20;
const MAX_CATALOG: usize = 256 << 20;

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The registry: `registry://host[:port]` (`docker://` too, or just `host[:port]`).
    pub registry: String,
    /// Print `{"registry": …, "repositories": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// Repositories to ask for per page (default: the registry's page size).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Images: `registry://host/ns/*:latest` (wildcards `*` and `?` in the repository's last
    /// component and the tag), `quay://[host/]namespace/*:tag`, or one image
    /// `registry://host/repo:tag`.
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Print a JSON array, one object per image.
    #[arg(long)]
    pub json: bool,
    /// Requests in flight at once (catalog pages are read one after another).
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Repositories per catalog page (default: the registry's page size).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    /// Bearer token for Quay's REST API (quay:// patterns); anonymous without it.
    #[arg(long, env = "QUAY_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `registry://host[:port]`, `docker://host[:port]/` or `host[:port]` → `host[:port]`.
fn catalog_host(input: &str) -> anyhow::Result<String> {
    let host = input
        .strip_prefix("registry://")
        .or_else(|| input.strip_prefix("docker://"))
        .unwrap_or(input)
        .trim_end_matches('/');
    // The reference parser owns the host grammar; ask it about a name on that host.
    let valid = !host.is_empty()
        && !host.contains('/')
        && Reference::parse(&format!("{host}/x"))
            .is_ok_and(|r| r.registry.as_deref() == Some(host));
    anyhow::ensure!(
        valid,
        "ferry catalog takes a registry, registry://host[:port] (e.g. registry://127.0.0.1:5000); {input:?} is not one"
    );
    Ok(host.to_owned())
}

pub fn catalog(args: &CatalogArgs) -> anyhow::Result<ExitCode> {
    let host = catalog_host(&args.registry)?;
    let registry = client(&host, &args.registry_args, &Connections::new())?;
    let names = crate::runtime()?
        .block_on(registry.all_repositories(args.page_size, MAX_CATALOG_PAGE, MAX_CATALOG))
        .map_err(|e| catalog_error(e, &registry, &host))?;
    if args.json {
        let v = serde_json::json!({"registry": host, "repositories": names});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for n in &names {
            println!("{n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn catalog_error(e: ferry_client::ClientError, registry: &Registry, host: &str) -> anyhow::Error {
    match e.kind {
        ErrorKind::NotFound => anyhow::anyhow!(
            "{host} serves no catalog (GET /v2/_catalog answered 404); list a repository's tags with ferry tags"
        ),
        _ => explain(e, registry, host, &format!("catalog of {host}")),
    }
}

/// One image a location names: where, and under which name to show it.
pub(crate) struct Wanted {
    host: String,
    repo: RepoName,
    /// A tag or a digest.
    reference: String,
    /// `host/repo:tag` or `host/repo@digest`.
    pub(crate) name: String,
}

impl Wanted {
    fn new(host: &str, repo: RepoName, reference: String) -> Wanted {
        let sep = if reference.contains(':') { '@' } else { ':' };
        Wanted {
            name: format!("{host}/{repo}{sep}{reference}"),
            host: host.to_owned(),
            repo,
            reference,
        }
    }
}

pub fn info(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let locations = args
        .patterns
        .iter()
        .map(|p| {
            let l = p.parse::<Location>()?;
            match l {
                Location::Registry { .. }
                | Location::RegistryPattern { .. }
                | Location::Quay { .. } => Ok(l),
                other => anyhow::bail!(
                    "ferry info reads registry:// and quay:// locations ({p:?} is {})",
                    other.transport()
                ),
            }
        })
        .collect::<anyhow::Result<Vec<Location>>>()?;
    let jobs = usize::from(args.jobs);
    // One pool for every registry this command reads.
    let connections = Connections::new();
    crate::runtime()?.block_on(async {
        let mut clients: std::collections::HashMap<String, std::sync::Arc<Registry>> =
            Default::default();
        let mut wanted = Vec::new();
        for l in &locations {
            let host = match l {
                Location::Registry { reference } => reference.registry.clone().unwrap_or_default(),
                other => other
                    .pattern()
                    .map(|p| p.registry().to_owned())
                    .unwrap_or_default(),
            };
            if !clients.contains_key(&host) {
                clients.insert(
                    host.clone(),
                    std::sync::Arc::new(client(&host, &args.registry, &connections)?),
                );
            }
            let registry = &clients[&host];
            match l {
                Location::Registry { reference } => {
                    let r = match (&reference.digest, &reference.tag) {
                        (Some(d), _) => d.to_string(),
                        (None, Some(t)) => t.to_string(),
                        (None, None) => "latest".to_owned(),
                    };
                    wanted.push(Wanted::new(&host, reference.repo.clone(), r));
                }
                Location::RegistryPattern { .. } | Location::Quay { .. } => {
                    let listing = Listing {
                        page_size: args.page_size,
                        jobs,
                        plain_http: args.registry.plain_http,
                        tls_verify: args.registry.tls_verify,
                        quay_token: args.token.clone(),
                        quay_token_option: "--token",
                    };
                    wanted.extend(resolve_pattern(registry, l, &listing).await?);
                }
                _ => unreachable!("refused above"),
            }
        }
        let results: Vec<(Wanted, anyhow::Result<serde_json::Value>)> = stream::iter(wanted)
            .map(|w| {
                let registry = clients[&w.host].clone();
                async move {
                    let r = summary(&registry, &w).await;
                    (w, r)
                }
            })
            .buffered(jobs)
            .collect()
            .await;
        let mut failed = 0usize;
        let mut out = Vec::new();
        for (w, r) in results {
            match r {
                Ok(v) => {
                    if !args.json {
                        println!("{}", line(&v));
                    }
                    out.push(v);
                }
                Err(e) => {
                    failed += 1;
                    let message = format!("{e:#}");
                    // Most messages name the image already; the rest get its name in front.
                    if message.contains(&w.name) {
                        eprintln!("error: {message}");
                    } else {
                        eprintln!("error: {}: {message}", w.name);
                    }
                    out.push(serde_json::json!({"name": w.name, "error": format!("{e:#}")}));
                }
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        if failed > 0 {
            eprintln!("error: {failed} of {} images failed", out.len());
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// How to list what a pattern names.
pub(crate) struct Listing {
    /// Repositories per catalog page (default: the registry's page size).
    pub page_size: Option<usize>,
    /// Tag lists read at once.
    pub jobs: usize,
    /// For Quay's REST API: plain HTTP, certificate checks, and a bearer token.
    pub plain_http: bool,
    pub tls_verify: bool,
    pub quay_token: Option<String>,
    /// The option that takes the Quay token, for the message when Quay refuses.
    pub quay_token_option: &'static str,
}

/// The images a `registry://` pattern or a `quay://` location names, in order of repository,
/// then tag. `registry` is a client for the pattern's host. `ferry info` and `ferry copy` both
/// resolve wildcards here.
pub(crate) async fn resolve_pattern(
    registry: &Registry,
    location: &Location,
    listing: &Listing,
) -> anyhow::Result<Vec<Wanted>> {
    match location {
        Location::RegistryPattern { pattern } => {
            resolve_registry(registry, pattern, listing.page_size, listing.jobs).await
        }
        Location::Quay { pattern } => resolve_quay(listing, pattern).await,
        other => anyhow::bail!("{other} is not a pattern"),
    }
}

/// The images a `registry://` pattern names: the catalog's matching repositories (or the one
/// literal repository), then each one's matching tags (or the literal tag of a literal
/// repository), tag lists read `jobs` at a time. Sorted by repository, then tag.
async fn resolve_registry(
    registry: &Registry,
    pattern: &ImagePattern,
    page_size: Option<usize>,
    jobs: usize,
) -> anyhow::Result<Vec<Wanted>> {
    let host = pattern.registry();
    let mut repos: Vec<String> = if pattern.repository_has_wildcard() {
        registry
            .all_repositories(page_size, MAX_CATALOG_PAGE, MAX_CATALOG)
            .await
            .map_err(|e| catalog_error(e, registry, host))?
            .into_iter()
            .filter(|r| pattern.matches_repository(r))
            .collect()
    } else {
        vec![pattern.repository().to_owned()]
    };
    repos.sort();
    repos.dedup();
    let per_repo: Vec<Vec<Wanted>> = stream::iter(repos)
        .map(|name| async move {
            let repo = RepoName::new(&name)
                .with_context(|| format!("the catalog of {host} lists {name:?}"))?;
            // Of many repositories, `*:latest` means those that have a `latest` (as Quay's
            // `specificTag` does), so their tag lists are read too.
            if !pattern.tag_has_wildcard() && !pattern.repository_has_wildcard() {
                return Ok(vec![Wanted::new(host, repo, pattern.tag().to_owned())]);
            }
            let mut tags = registry
                .all_tags(&repo, None, MAX_TAG_PAGE, MAX_TAG_LIST)
                .await
                .map_err(|e| explain(e, registry, host, &format!("tags of {host}/{repo}")))?;
            tags.retain(|t| pattern.matches_tag(t));
            tags.sort();
            Ok::<_, anyhow::Error>(
                tags.into_iter()
                    .map(|t| Wanted::new(host, repo.clone(), t))
                    .collect(),
            )
        })
        .buffered(jobs)
        .try_collect()
        .await?;
    Ok(per_repo.into_iter().flatten().collect())
}

/// The images a `quay://` pattern names, listed through Quay's REST API: the namespace's
/// matching repositories, then each one's matching active tags (Quay filters a literal tag
/// itself, `specificTag`). A pattern without a wildcard is that image, listed nowhere.
async fn resolve_quay(listing: &Listing, pattern: &ImagePattern) -> anyhow::Result<Vec<Wanted>> {
    let jobs = listing.jobs;
    let host = pattern.registry();
    if !pattern.has_wildcard() {
        let repo = RepoName::new(pattern.repository())?;
        return Ok(vec![Wanted::new(host, repo, pattern.tag().to_owned())]);
    }
    let quay = Quay::new(QuayOptions {
        endpoint: endpoint(host, listing.plain_http),
        token: listing.quay_token.clone(),
        insecure_skip_verify: !listing.tls_verify,
        ..QuayOptions::default()
    })?;
    let quay = &quay;
    let namespace = pattern.repository().split('/').next().unwrap_or_default();
    let mut repos: Vec<String> = if pattern.repository_has_wildcard() {
        quay.repositories(namespace)
            .await
            .map_err(|e| {
                quay_error(
                    e,
                    host,
                    &format!("repositories of {host}/{namespace}"),
                    listing.quay_token_option,
                )
            })?
            .into_iter()
            .filter(|r| pattern.matches_repository(r))
            .collect()
    } else {
        vec![pattern.repository().to_owned()]
    };
    repos.sort();
    repos.dedup();
    let specific = (!pattern.tag_has_wildcard()).then(|| pattern.tag());
    let per_repo: Vec<Vec<Wanted>> = stream::iter(repos)
        .map(|name| async move {
            let repo = RepoName::new(&name)
                .with_context(|| format!("Quay lists a repository {name:?} in {namespace}"))?;
            let mut tags: Vec<String> = quay
                .tags(repo.as_str(), specific)
                .await
                .map_err(|e| {
                    quay_error(
                        e,
                        host,
                        &format!("tags of {host}/{repo}"),
                        listing.quay_token_option,
                    )
                })?
                .into_iter()
                .map(|t| t.name)
                .filter(|t| pattern.matches_tag(t))
                .collect();
            tags.sort();
            tags.dedup();
            Ok::<_, anyhow::Error>(
                tags.into_iter()
                    .map(|t| Wanted::new(host, repo.clone(), t))
                    .collect(),
            )
        })
        .buffered(jobs)
        .try_collect()
        .await?;
    Ok(per_repo.into_iter().flatten().collect())
}

fn quay_error(
    e: ferry_client::ClientError,
    host: &str,
    what: &str,
    token_option: &str,
) -> anyhow::Error {
    match e.kind {
        ErrorKind::Connect => anyhow::anyhow!("cannot connect to {host}: {}", e.message),
        ErrorKind::Unauthorized | ErrorKind::Denied => anyhow::anyhow!(
            "{what}: not allowed ({}); pass a Quay token with {token_option} or QUAY_TOKEN",
            e.message
        ),
        ErrorKind::NotFound => anyhow::anyhow!("{what}: Quay has no such namespace or repository"),
        _ => anyhow::anyhow!("{what}: {}", e.message),
    }
}

/// `ferry inspect --json`'s object for one image, with `platforms` (every platform it serves)
/// and, for an index, `size` summed over its platforms' manifests.
async fn summary(registry: &Registry, w: &Wanted) -> anyhow::Result<serde_json::Value> {
    let host = w.host.as_str();
    let got = registry
        .get_manifest(&w.repo, &w.reference, MAX_MANIFEST)
        .await
        .map_err(|e| explain(e, registry, host, &w.name))?;
    let manifest = parse(&got, &w.name)?;
    let mut v = describe(registry, &w.repo, &manifest, host, &w.name).await?;
    if manifest.media_type().is_index() {
        let mut size = 0u64;
        let mut platforms = Vec::new();
        for child in &manifest.manifests {
            if let Some(p) = &child.platform {
                platforms.push(platform_name(p));
            }
            let what = format!("{} ({})", w.name, child.digest);
            let got = registry
                .get_manifest(&w.repo, child.digest.as_str(), MAX_MANIFEST)
                .await
                .map_err(|e| explain(e, registry, host, &what))?;
            size += parse(&got, &what)?
                .layers
                .iter()
                .map(|l| l.size)
                .sum::<u64>();
        }
        v["platforms"] = serde_json::json!(platforms);
        v["size"] = serde_json::json!(size);
    } else {
        let platform = match (v["os"].as_str(), v["architecture"].as_str()) {
            (Some(os), Some(arch)) => match v["variant"].as_str() {
                Some(variant) => vec![format!("{os}/{arch}/{variant}")],
                None => vec![format!("{os}/{arch}")],
            },
            _ => Vec::new(),
        };
        v["platforms"] = serde_json::json!(platform);
    }
    Ok(v)
}

/// `NAME  DIGEST  MEDIA-TYPE  PLATFORMS  SIZE`, tab-separated (platforms comma-separated, `-`
/// when none is known).
fn line(v: &serde_json::Value) -> String {
    let platforms: Vec<&str> = v["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    format!(
        "{}\t{}\t{}\t{}\t{}",
        v["name"].as_str().unwrap_or(""),
        v["digest"].as_str().unwrap_or(""),
        v["mediaType"].as_str().unwrap_or(""),
        if platforms.is_empty() {
            "-".to_owned()
        } else {
            platforms.join(",")
        },
        v["size"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_takes_a_host_with_or_without_the_transport() {
        for (input, host) in [
            ("registry://127.0.0.1:5000", "127.0.0.1:5000"),
            ("docker://registry.example:443/", "registry.example:443"),
            ("localhost:5000", "localhost:5000"),
            ("registry://[::1]:5000", "[::1]:5000"),
        ] {
            assert_eq!(catalog_host(input).unwrap(), host, "{input}");
        }
        for bad in [
            "registry://",
            "registry://h.io/team",
            "registry://h_x",
            "oci:/tmp",
        ] {
            let e = catalog_host(bad).unwrap_err().to_string();
            assert!(e.contains("registry://host[:port]"), "{bad}: {e}");
        }
    }
}
