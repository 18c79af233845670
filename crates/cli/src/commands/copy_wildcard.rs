//! `ferry copy 'registry://host/ns/*:latest' DST` and `quay://…` sources: the pattern is listed
//! the way `ferry info` lists it, and each image it names is copied as a `--from-file` line would
//! be.

use anyhow::Context;
use ferry_client::{CredentialSources, RegistryOptions};
use ferry_copy::{Location, destination_for};

use crate::commands::copy::{CopyArgs, Session, Side, side_client};
use crate::commands::info::{Listing, resolve_pattern};

/// Tag lists (or Quay pages) read at once while listing.
const LISTING_JOBS: usize = 8;

/// The (source, destination) pairs for every image `src`, a pattern, names; an error naming the
/// pattern when it names none.
pub(crate) fn expand(
    args: &CopyArgs,
    src: &Location,
    dst: &Location,
    session: &Session,
) -> anyhow::Result<Vec<(Location, Location)>> {
    let pattern = src
        .pattern()
        .with_context(|| format!("{src} is not a pattern"))?;
    let host = pattern.registry();
    let tls = args.side_tls(Side::Source)?;
    let registry = side_client(
        host,
        &tls,
        args.plain_http,
        &CredentialSources {
            creds: args.src_creds.clone(),
            token: args.src_token.clone(),
            auth_file: args.authfile.clone(),
        },
        RegistryOptions {
            insecure_skip_verify: !args.src_tls_verify,
            rate_limit: args.rate_limit,
            attempts: args.retries + 1,
            connections: session.connections.clone(),
            ..RegistryOptions::default()
        },
    )
    .with_context(|| format!("credentials for {host}"))?;
    let listing = Listing {
        page_size: None,
        jobs: LISTING_JOBS,
        plain_http: args.plain_http,
        tls_verify: args.src_tls_verify,
        quay_token: args.quay_token.clone(),
        quay_token_option: "--quay-token",
    };
    let wanted = session
        .runtime
        .block_on(resolve_pattern(&registry, src, &listing))
        .with_context(|| format!("listing the images of {src}"))?;
    anyhow::ensure!(!wanted.is_empty(), "source {src} matches no image");
    wanted
        .iter()
        .map(|w| {
            let one = format!("registry://{}", w.name)
                .parse::<Location>()
                .with_context(|| format!("{src} lists {:?}", w.name))?;
            let to = destination_for(&one, dst).with_context(|| format!("{one} into {dst}"))?;
            Ok((one, to))
        })
        .collect()
}
