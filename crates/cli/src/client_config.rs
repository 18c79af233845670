//! Configuration for the clients a mirror serves: containerd's hosts.toml files and Docker's
//! daemon.json.

use std::path::Path;

use anyhow::Context;

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

/// The hosts.toml for one registry: pulls and resolves go to the mirror; the registry itself stays
/// the fallback (containerd adds `?ns=<registry>` to mirror requests, which ferry routes by).
pub fn hosts_toml(mirror: &str, registry: &str) -> anyhow::Result<String> {
    let (scheme, host) = check_mirror(mirror)?;
    let fallback = match registry {
        "docker.io" => "https://registry-1.docker.io".to_owned(),
        "_default" => String::new(),
        r => format!("https://{r}"),
    };
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
    Ok(s)
}

/// Writes (or with `dry_run` prints) `<dir>/<registry>/hosts.toml` for each registry.
pub fn containerd(
    mirror: &str,
    registries: &[String],
    dir: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    for r in registries {
        let r = r.trim();
        anyhow::ensure!(
            !r.is_empty() && !r.contains('/') && r != "." && r != "..",
            "registry {r:?} must be a host[:port] such as docker.io or _default"
        );
        let text = hosts_toml(mirror, r)?;
        let path = dir.join(r).join("hosts.toml");
        if dry_run {
            println!("# {}\n{text}", path.display());
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap_or(dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Docker's daemon.json: Docker uses `registry-mirrors` for Docker Hub only; a plain-HTTP mirror
/// must also be listed as an insecure registry.
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
        let t = hosts_toml("http://127.0.0.1:8080", "docker.io").unwrap();
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["server"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(
            v["host"]["http://127.0.0.1:8080"]["capabilities"],
            toml::Value::Array(vec!["pull".into(), "resolve".into()])
        );
        assert!(
            toml::from_str::<toml::Value>(
                &hosts_toml("https://m.example:5000", "_default").unwrap()
            )
            .unwrap()
            .get("server")
            .is_none()
        );
        assert!(hosts_toml("ftp://x", "docker.io").is_err());
        assert!(hosts_toml("http://x/path", "docker.io").is_err());
        let d: serde_json::Value =
            serde_json::from_str(&docker("http://10-0-0-1.local:8080").unwrap()).unwrap();
        assert_eq!(d["registry-mirrors"][0], "http://10-0-0-1.local:8080");
        assert_eq!(d["insecure-registries"][0], "10-0-0-1.local:8080");
    }
}
