//! Warming a running mirror: pull references through it so that its cache holds them (the same
//! path a client takes, coalescing and digest checks included). Filling a stopped mirror's data
//! directory is a copy into its store (`commands/preload.rs`).

use anyhow::{Context, bail, ensure};
use ferry_copy::Platform;
use ferry_oci::{Digest, Manifest, MediaType, Reference};
use futures_util::StreamExt;

/// Outcome of preloading one reference.
#[derive(Debug, Default)]
pub struct Preloaded {
    /// Manifests fetched (an index and its chosen children count separately).
    pub manifests: usize,
    /// Blobs fetched.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Largest file of references read (a million references fit in far less).
const MAX_REFERENCE_LIST_BYTES: u64 = 64 << 20;
/// Longest line of a reference list (a reference is at most a few hundred bytes).
const MAX_REFERENCE_LINE: usize = 4096;
/// Most references preloaded in one run, files and arguments together: what they take in memory
/// stays a few tens of MB.
const MAX_REFERENCES: usize = 100_000;

/// References from files (one per line, `#` comments) and arguments.
pub fn references(items: &[String]) -> anyhow::Result<Vec<Reference>> {
    let mut out = Vec::new();
    for item in items {
        match std::fs::metadata(item) {
            Ok(m) if m.is_file() && m.len() > MAX_REFERENCE_LIST_BYTES => bail!(
                "{item} is {} bytes; a list of references may have at most {MAX_REFERENCE_LIST_BYTES} (split it)",
                m.len()
            ),
            Ok(m) if m.is_file() => {
                let f = std::fs::File::open(item).with_context(|| format!("cannot read {item}"))?;
                read_reference_list(item, std::io::BufReader::new(f), &mut out)?;
            }
            // Never opened: reading a FIFO waits for a writer, a device reads forever.
            Ok(m) if !m.is_dir() => bail!(
                "{item} is {}, not a regular file: give a file listing references, an image archive or a reference",
                ferry_copy::archive::file_kind(&m)
            ),
            // An argument is read as a line of a list would be.
            _ => {
                let l = item.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                ensure!(
                    out.len() < MAX_REFERENCES,
                    "{l}: more than {MAX_REFERENCES} references to preload in one run; preload them in several"
                );
                out.push(
                    Reference::parse_normalized(l)
                        .with_context(|| format!("{l:?} is not an image reference"))?,
                );
            }
        }
    }
    Ok(out)
}

/// Adds the references listed in `list` (named `name`) to `out`, a line at a time: what is held
/// is the references, never the file, and a line or a list past its limit stops the reading.
fn read_reference_list(
    name: &str,
    mut list: impl std::io::BufRead,
    out: &mut Vec<Reference>,
) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Read as _};
    let mut line = Vec::new();
    for n in 1u64.. {
        line.clear();
        let read = list
            .by_ref()
            .take(MAX_REFERENCE_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {name}"))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        ensure!(
            line.len() <= MAX_REFERENCE_LINE,
            "{name}: line {n} is longer than {MAX_REFERENCE_LINE} bytes; a list of references has one reference per line"
        );
        let l = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("{name}: line {n} is not UTF-8 text; a list of references has one reference per line"))?
            .trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        ensure!(
            out.len() < MAX_REFERENCES,
            "{name}: line {n}: more than {MAX_REFERENCES} references to preload in one run; split the list and preload the parts in turn"
        );
        out.push(
            Reference::parse_normalized(l)
                .with_context(|| format!("{name}: line {n}: {l:?} is not an image reference"))?,
        );
    }
    Ok(())
}

async fn get_manifest(
    c: &reqwest::Client,
    mirror: &str,
    ns: &str,
    repo: &str,
    reference: &str,
) -> anyhow::Result<Manifest> {
    let r = c
        .get(format!("{mirror}/v2/{repo}/manifests/{reference}"))
        .query(&[("ns", ns)])
        .header("accept", MediaType::ACCEPT_ALL)
        .send()
        .await?;
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "{ns}/{repo}:{reference}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let algorithm = reference
        .parse::<Digest>()
        .map_or(ferry_oci::Algorithm::Sha256, |d| d.algorithm());
    Ok(Manifest::parse_as(
        bytes.to_vec(),
        ct.as_deref(),
        algorithm,
    )?)
}

/// Pulls one reference (and, for an index, the children of the chosen platforms; all when none
/// are given) through the mirror at `mirror`, `jobs` blobs at a time.
pub async fn preload(
    c: &reqwest::Client,
    mirror: &str,
    r: &Reference,
    platforms: &[Platform],
    jobs: usize,
) -> anyhow::Result<Preloaded> {
    let ns = r.registry.as_deref().unwrap_or(ferry_oci::DOCKER_HUB);
    let repo = r.repo.as_str();
    let top = get_manifest(c, mirror, ns, repo, &r.manifest_ref().to_string()).await?;
    let mut images = Vec::new();
    let mut out = Preloaded {
        manifests: 1,
        ..Preloaded::default()
    };
    if top.media_type().is_index() {
        for child in &top.manifests {
            if Platform::wanted(platforms, child) {
                images.push(get_manifest(c, mirror, ns, repo, child.digest.as_str()).await?);
                out.manifests += 1;
            }
        }
        ensure!(
            !images.is_empty() || top.manifests.is_empty(),
            "{r}: no child manifest matches the requested platforms"
        );
    } else {
        images.push(top);
    }
    let blobs: Vec<Digest> = images
        .iter()
        .flat_map(|m| m.blob_references().map(|d| d.digest.clone()))
        .collect();
    let results: Vec<anyhow::Result<u64>> = futures_util::stream::iter(blobs)
        .map(|d| async move {
            let r = c
                .get(format!("{mirror}/v2/{repo}/blobs/{d}"))
                .query(&[("ns", ns)])
                .send()
                .await?;
            ensure!(r.status().is_success(), "blob {d}: {}", r.status());
            // Read it through: ferry caches while it streams; the bytes themselves are not needed.
            let mut body = r.bytes_stream();
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            Ok(n)
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    for r in results {
        out.bytes += r?;
        out.blobs += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference list file holding `bytes`, and its name.
    fn list(bytes: &[u8]) -> (tempfile::NamedTempFile, String) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        let name = f.path().display().to_string();
        (f, name)
    }

    #[test]
    fn reference_lists_skip_comments_and_blank_lines() {
        let (_f, name) =
            list(b"# mirror these\n\n  alpine:3.20  \r\nquay.io/org/app:v1\n\t\n# end");
        let refs = references(&[name, "nginx".into()]).unwrap();
        let refs: Vec<String> = refs.iter().map(ToString::to_string).collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/alpine:3.20",
                "quay.io/org/app:v1",
                "docker.io/library/nginx:latest"
            ]
        );
    }

    #[test]
    fn a_reference_list_line_past_the_limit_is_refused_by_number() {
        let mut bytes = b"alpine\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 5000));
        bytes.push(b'\n');
        let (_f, name) = list(&bytes);
        let e = format!("{:#}", references(&[name]).unwrap_err());
        assert!(e.contains("line 2") && e.contains("4096 bytes"), "{e}");
        // A line of exactly the limit is read (and refused as a reference, not as a line).
        let mut bytes = vec![b'a'; 4096];
        bytes.push(b'\n');
        let (_f, name) = list(&bytes);
        let e = format!("{:#}", references(&[name]).unwrap_err());
        assert!(e.contains("is not an image reference"), "{e}");
    }

    #[test]
    fn a_reference_list_line_that_is_not_utf8_is_refused_by_number() {
        let (_f, name) = list(b"alpine\n# ok\n\xff\xfe\n");
        let e = format!("{:#}", references(&[name]).unwrap_err());
        assert!(e.contains("line 3") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn references_past_the_limit_are_refused_by_line() {
        let (_f, name) = list(&b"a\n".repeat(100_000));
        assert_eq!(
            references(std::slice::from_ref(&name)).unwrap().len(),
            100_000
        );
        // One more, in the file or as an argument.
        let e = format!("{:#}", references(&[name.clone(), "b".into()]).unwrap_err());
        assert!(e.contains("more than 100000 references"), "{e}");
        let (_f, name) = list(&b"a\n".repeat(100_001));
        let e = format!("{:#}", references(&[name]).unwrap_err());
        assert!(
            e.contains("more than 100000 references") && e.contains("line 100001"),
            "{e}"
        );
    }
}
