//! Configuration for the clients a mirror serves: containerd's hosts.toml files and Docker's
//! daemon.json.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;

use crate::config::UpstreamConfig;

/// `http(s)://host[:port]` with nothing after it.
fn check_mirror(mirror: &str) -> anyhow::Result<(&str, &str)> {
    let (scheme, host) = mirror
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .with_context(|| {
            format!("--mirror {mirror:?} must be http://host[:port] or https://host[:port]")
        })?;
    let host = host.trim_end_matches('/');
    anyhow::ensure!(
        !host.is_empty() && !host.contains('/'),
        "--mirror {mirror:?} must have no path"
    );
    Ok((scheme, host))
}

/// Where containerd falls back to when the mirror fails: the registry itself, over the scheme it
/// really speaks. `upstream_url` is the mirror's configured URL for this registry, if any (a
/// plain-HTTP upstream must not be written as https, or the fallback can never work).
fn fallback(registry: &str, upstream_url: Option<&str>) -> String {
    match (registry, upstream_url) {
        ("_default", _) => String::new(),
        (_, Some(url)) => url.trim_end_matches('/').to_owned(),
        ("docker.io", None) => "https://registry-1.docker.io".to_owned(),
        (r, None) => format!("https://{r}"),
    }
}

/// How containerd reaches a mirror that serves TLS or wants credentials.
#[derive(Debug, Clone, Default)]
pub struct MirrorAccess {
    /// The CA that signed the mirror's certificate (PEM).
    pub ca: Option<PathBuf>,
    /// A client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `user:password` sent as basic credentials on every request to the mirror.
    pub basic: Option<String>,
}

/// The hosts.toml for one registry: pulls and resolves go to the mirror; the registry itself stays
/// the fallback (containerd adds `?ns=<registry>` to mirror requests, which ferry routes by).
/// `upstream_url` is the URL the mirror is configured with for `registry`, if known; `access`
/// says how to reach the mirror, `ca` the path its CA is named by in the file.
pub fn hosts_toml(
    mirror: &str,
    registry: &str,
    upstream_url: Option<&str>,
    access: &MirrorAccess,
    ca: Option<&Path>,
) -> anyhow::Result<String> {
    let (scheme, host) = check_mirror(mirror)?;
    let fallback = fallback(registry, upstream_url);
    let mut s = String::from(
        "# Written by `ferry containerd-config`: pulls go through the ferry mirror.\n",
    );
    if !fallback.is_empty() {
        s.push_str(&format!("server = \"{fallback}\"\n\n"));
    }
    s.push_str(&format!(
        "[host.\"{scheme}://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    ));
    if scheme == "http" {
        s.push_str("  skip_verify = true\n");
    }
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    if let Some(ca) = ca {
        s.push_str(&format!("  ca = {}\n", quoted(ca)));
    }
    if let Some((cert, key)) = &access.client {
        s.push_str(&format!(
            "  client = [[{}, {}]]\n",
            quoted(cert),
            quoted(key)
        ));
    }
    if let Some(basic) = &access.basic {
        // containerd sends the image host's credentials, not a mirror's: a static header is how
        // a mirror that wants its own gets them.
        let value = base64::engine::general_purpose::STANDARD.encode(basic);
        s.push_str(&format!(
            "\n  [host.\"{scheme}://{host}\".header]\n    Authorization = [\"Basic {value}\"]\n"
        ));
    }
    Ok(s)
}

/// Writes (or with `dry_run` prints) `<dir>/<registry>/hosts.toml` for each registry.
///
/// A registry is `host[:port]`, `_default`, or `http(s)://host[:port]` to give its scheme; a
/// registry that is one of `upstreams` (by routing name) falls back to that upstream's URL.
pub fn containerd(
    mirror: &str,
    registries: &[String],
    upstreams: &[UpstreamConfig],
    access: &MirrorAccess,
    dir: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let ca_pem = match &access.ca {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("cannot read --ca {}", p.display()))?)
        }
        None => None,
    };
    anyhow::ensure!(
        ca_pem
            .as_deref()
            .is_none_or(|pem| String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")),
        "--ca must be a PEM file of CA certificates (\"BEGIN CERTIFICATE\")"
    );
    for r in registries {
        let given = r.trim();
        let (r, url) = match given.split_once("://") {
            Some(("http" | "https", host)) => (host.trim_end_matches('/'), Some(given)),
            _ => (given, None),
        };
        anyhow::ensure!(
            !r.is_empty() && !r.contains('/') && !r.contains("://") && r != "." && r != "..",
            "registry {given:?} must be a host[:port] such as docker.io, http(s)://host[:port], or _default"
        );
        let configured = upstreams
            .iter()
            .find(|u| u.routing_name().is_ok_and(|n| n == r))
            .map(|u| u.url.as_str());
        let ca_path = ca_pem.as_ref().map(|_| dir.join(r).join("ferry-ca.crt"));
        let text = hosts_toml(mirror, r, url.or(configured), access, ca_path.as_deref())?;
        let path = dir.join(r).join("hosts.toml");
        if dry_run {
            println!("# {}\n{text}", path.display());
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap_or(dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        if let (Some(ca), Some(pem)) = (&ca_path, &ca_pem) {
            std::fs::write(ca, pem).with_context(|| format!("cannot write {}", ca.display()))?;
        }
        if access.basic.is_some() {
            // It holds credentials: owner-only, written whole.
            ferry_auth::write_secret_file(&path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        } else {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Docker's daemon.json: Docker uses `registry-mirrors` for Docker Hub only; a plain-HTTP mirror
/// must also be listed as an insecure registry.
/// With `ca`, the mirror's CA is also written where Docker looks for it,
/// `<certs_dir>/<host:port>/ca.crt`.
pub fn docker_ca(mirror: &str, ca: &Path, certs_dir: &Path) -> anyhow::Result<PathBuf> {
    let (_, host) = check_mirror(mirror)?;
    let pem = std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
        "--ca must be a PEM file of CA certificates (\"BEGIN CERTIFICATE\")"
    );
    let dir = certs_dir.join(host);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("ca.crt");
    std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub fn docker(mirror: &str) -> anyhow::Result<String> {
    let (scheme, host) = check_mirror(mirror)?;
    let mut v = serde_json::json!({ "registry-mirrors": [format!("{scheme}://{host}")] });
    if scheme == "http" {
        v["insecure-registries"] = serde_json::json!([host]);
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files() {
        let t = hosts_toml(
            "http://127.0.0.1:8080",
            "docker.io",
            None,
            &MirrorAccess::default(),
            None,
        )
        .unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["server"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(
            v["host"]["http://127.0.0.1:8080"]["capabilities"],
            toml::Value::Array(vec!["pull".into(), "resolve".into()])
        );
        assert!(
            toml::from_str::<toml::Value>(
                &hosts_toml(
                    "https://m.example:5000",
                    "_default",
                    None,
                    &MirrorAccess::default(),
                    None
                )
                .unwrap()
            )
            .unwrap()
            .get("server")
            .is_none()
        );
        assert!(hosts_toml("ftp://x", "docker.io", None, &MirrorAccess::default(), None).is_err());
        assert!(
            hosts_toml(
                "http://x/path",
                "docker.io",
                None,
                &MirrorAccess::default(),
                None
            )
            .is_err()
        );
        let d: serde_json::Value =
            serde_json::from_str(&docker("http://10-0-0-1.local:8080").unwrap()).unwrap();
        assert_eq!(d["registry-mirrors"][0], "http://10-0-0-1.local:8080");
        assert_eq!(d["insecure-registries"][0], "10-0-0-1.local:8080");
    }

    #[test]
    fn a_tls_mirror_with_credentials_names_its_ca_client_certificate_and_header() {
        let access = MirrorAccess {
            ca: Some("/in/ca.pem".into()),
            client: Some(("/c/node.pem".into(), "/c/node.key".into())),
            basic: Some("node:pw".into()),
        };
        let t = hosts_toml(
            "https://mirror.local:5000",
            "docker.io",
            None,
            &access,
            Some(Path::new("/etc/containerd/certs.d/docker.io/ferry-ca.crt")),
        )
        .unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        let host = &v["host"]["https://mirror.local:5000"];
        assert_eq!(
            host["ca"].as_str(),
            Some("/etc/containerd/certs.d/docker.io/ferry-ca.crt")
        );
        assert_eq!(host["client"][0][0].as_str(), Some("/c/node.pem"));
        assert_eq!(host["client"][0][1].as_str(), Some("/c/node.key"));
        assert_eq!(
            host["header"]["Authorization"][0].as_str(),
            Some("Basic bm9kZTpwdw==")
        );
        assert!(host.get("skip_verify").is_none());
    }
}
