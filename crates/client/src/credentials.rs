//! Where credentials come from: explicit username/password, docker's `config.json` (`auths`), and
//! docker credential helpers (`credHelpers`, `credsStore`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use crate::error::{ClientError, ErrorKind};

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// Username and password (or identity token), used for basic auth and to obtain bearer tokens.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
        }
    }
}

/// A docker `config.json` that is not valid JSON of the expected shape (the file owner's to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid docker config.json: {0}")]
pub struct DockerConfigError(String);

/// The parts of docker's `config.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Keys docker uses for Docker Hub in `auths`.
const HUB_KEYS: [&str; 3] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
];

impl DockerConfig {
    /// Reads a `config.json`.
    pub fn load(path: &Path) -> Result<DockerConfig, ClientError> {
        let bytes = std::fs::read(path).map_err(|e| {
            ClientError::new(
                ErrorKind::Request,
                format!("cannot read docker config {}: {e}", path.display()),
            )
        })?;
        DockerConfig::parse(&bytes).map_err(|e| {
            ClientError::new(
                ErrorKind::Request,
                format!("docker config {}: {e}", path.display()),
            )
        })
    }

    /// Parses `config.json` bytes.
    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, DockerConfigError> {
        serde_json::from_slice(bytes).map_err(|e| DockerConfigError(e.to_string()))
    }

    /// Credentials for `registry` (`host[:port]`): a credential helper if one is configured for it
    /// (or globally), else an `auths` entry, else anonymous.
    pub fn credentials_for(&self, registry: &str) -> Result<Credentials, ClientError> {
        let hub = registry == "docker.io"
            || registry == "registry-1.docker.io"
            || registry == "index.docker.io";
        let keys: Vec<String> = if hub {
            HUB_KEYS.iter().map(|k| (*k).to_owned()).collect()
        } else {
            vec![
                registry.to_owned(),
                format!("https://{registry}"),
                format!("http://{registry}"),
            ]
        };
        let helper = keys
            .iter()
            .find_map(|k| self.cred_helpers.get(k))
            .or(self.creds_store.as_ref());
        if let Some(helper) = helper {
            return run_helper(helper, &keys[0]);
        }
        for k in &keys {
            if let Some(e) = self.auths.get(k) {
                return e.credentials(k);
            }
        }
        Ok(Credentials::Anonymous)
    }
}

impl AuthEntry {
    fn credentials(&self, key: &str) -> Result<Credentials, ClientError> {
        if let Some(token) = &self.identitytoken {
            // Identity tokens are sent as the password with this fixed user name (docker's rule).
            return Ok(Credentials::Basic {
                username: "<token>".into(),
                password: token.clone(),
            });
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            });
        }
        let Some(auth) = &self.auth else {
            return Ok(Credentials::Anonymous);
        };
        let bad = || {
            ClientError::new(
                ErrorKind::Request,
                format!("docker config: auths[{key:?}].auth is not base64 of user:password"),
            )
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        Ok(Credentials::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        })
    }
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn run_helper(helper: &str, server: &str) -> Result<Credentials, ClientError> {
    let program = format!("docker-credential-{helper}");
    let fail = |why: String| {
        ClientError::new(
            ErrorKind::Unauthorized,
            format!("credential helper {program}: {why}"),
        )
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it ({e}); is it on PATH?")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        // "credentials not found" is the helper's way of saying: anonymous.
        let err = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if err.to_lowercase().contains("not found") {
            return Ok(Credentials::Anonymous);
        }
        return Err(fail(format!("exited with {}: {}", out.status, err.trim())));
    }
    let a: HelperAnswer =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable answer: {e}")))?;
    Ok(Credentials::Basic {
        username: a.username,
        password: a.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_entries() {
        let cfg = DockerConfig::parse(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"quay.io":{"username":"q","password":"p"},"ghcr.io":{"identitytoken":"tok"},"bad.io":{"auth":"%%%"}}}"#,
        )
        .unwrap();
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            cfg.credentials_for("docker.io").unwrap(),
            basic("user", "pass")
        );
        assert_eq!(cfg.credentials_for("quay.io").unwrap(), basic("q", "p"));
        assert_eq!(
            cfg.credentials_for("ghcr.io").unwrap(),
            basic("<token>", "tok")
        );
        assert_eq!(
            cfg.credentials_for("other.io").unwrap(),
            Credentials::Anonymous
        );
        assert!(cfg.credentials_for("bad.io").is_err());
        assert!(!format!("{:?}", basic("u", "secret")).contains("secret"));
    }

    #[test]
    fn a_broken_config_json_says_so() {
        let e = DockerConfig::parse(b"{\"auths\": 5}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("not a valid docker config.json: "),
            "{e}"
        );
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let cfg = DockerConfig::parse(br#"{"credHelpers":{"x.io":"ferry-test-no-such-helper"}}"#)
            .unwrap();
        let err = cfg.credentials_for("x.io").unwrap_err();
        assert!(
            err.message
                .contains("docker-credential-ferry-test-no-such-helper"),
            "{err}"
        );
    }
}
