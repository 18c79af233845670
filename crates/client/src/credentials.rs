//! Where credentials come from: explicit `user:password` or a bearer token, containers'
//! `auth.json`, docker's `config.json` (`auths`), and docker credential helpers (`credHelpers`,
//! `credsStore`); [`resolve_credentials`] looks through them in order.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    /// A bearer token sent as is with every request to the registry (no token exchange).
    Bearer {
        /// The token.
        token: String,
    },
}

impl Credentials {
    /// Parses `USER:PASSWORD` (what `--creds` takes): split at the first colon, so a password
    /// may contain colons; the user may not be empty.
    pub fn from_user_password(text: &str) -> Result<Credentials, ClientError> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::Basic {
                username: user.to_owned(),
                password: password.to_owned(),
            }),
            Some(_) => Err(ClientError::new(
                ErrorKind::Request,
                "credentials must be USER:PASSWORD with a user name before the colon",
            )),
            None => Err(ClientError::new(
                ErrorKind::Request,
                "credentials must be USER:PASSWORD (no colon found)",
            )),
        }
    }
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
            Credentials::Bearer { .. } => f.write_str("Bearer(****)"),
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

/// Keys docker uses for Docker Hub in `auths` (the first is the one it writes and the one a
/// credential helper is asked for).
const HUB_KEYS: [&str; 4] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
];

/// `registry` as `host[:port]`, with Docker Hub's names all `docker.io` (as docker reads them:
/// `docker.io`, `index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`).
fn registry_key(registry: &str) -> String {
    let host = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

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
        let registry = registry_key(registry);
        let registry = registry.as_str();
        let hub = registry == "docker.io";
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

/// Where [`resolve_credentials`] may find credentials besides the usual files.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// `USER:PASSWORD` given on the command line (`--creds`).
    pub creds: Option<String>,
    /// A bearer token given on the command line (`--token`).
    pub token: Option<String>,
    /// An auth file named on the command line (`--authfile`): containers' `auth.json` or
    /// docker's `config.json`, which share their format.
    pub auth_file: Option<PathBuf>,
}

/// The credentials for `registry_host` (`host[:port]`; Docker Hub by any of its names), looked
/// up as podman and docker do, first found wins:
///
/// 1. `sources.creds` or `sources.token` (not both);
/// 2. `sources.auth_file` (it must exist);
/// 3. the file named by `$REGISTRY_AUTH_FILE`;
/// 4. containers' `$XDG_RUNTIME_DIR/containers/auth.json`;
/// 5. docker's `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
///
/// In each file a credential helper for the registry (`credHelpers`), else the default store
/// (`credsStore`), else an `auths` entry; a file without an entry passes to the next. Nothing
/// found is [`Credentials::Anonymous`]. A file that exists but cannot be read or parsed is an
/// error, not a silent anonymous pull.
pub fn resolve_credentials(
    registry_host: &str,
    sources: &CredentialSources,
) -> Result<Credentials, ClientError> {
    resolve_with(registry_host, sources, &|name| std::env::var_os(name))
}

fn resolve_with(
    registry_host: &str,
    sources: &CredentialSources,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Credentials, ClientError> {
    match (&sources.creds, &sources.token) {
        (Some(_), Some(_)) => {
            return Err(ClientError::new(
                ErrorKind::Request,
                "give credentials (USER:PASSWORD) or a bearer token, not both",
            ));
        }
        (Some(creds), None) => return Credentials::from_user_password(creds),
        (None, Some(token)) if token.is_empty() => {
            return Err(ClientError::new(
                ErrorKind::Request,
                "the bearer token is empty",
            ));
        }
        (None, Some(token)) => {
            return Ok(Credentials::Bearer {
                token: token.clone(),
            });
        }
        (None, None) => {}
    }
    if let Some(path) = &sources.auth_file {
        let found = DockerConfig::load(path)?.credentials_for(registry_host)?;
        if found != Credentials::Anonymous {
            return Ok(found);
        }
    }
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let docker = set("DOCKER_CONFIG")
        .or_else(|| set("HOME").map(|home| home.join(".docker")))
        .map(|dir| dir.join("config.json"));
    let files = [
        set("REGISTRY_AUTH_FILE"),
        set("XDG_RUNTIME_DIR").map(|dir| dir.join("containers").join("auth.json")),
        docker,
    ];
    for path in files.into_iter().flatten() {
        if !path.is_file() {
            continue;
        }
        let found = DockerConfig::load(&path)?.credentials_for(registry_host)?;
        if found != Credentials::Anonymous {
            return Ok(found);
        }
    }
    Ok(Credentials::Anonymous)
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
    fn docker_hub_by_any_of_its_names() {
        for key in HUB_KEYS {
            let cfg = DockerConfig::parse(
                format!(r#"{{"auths":{{"{key}":{{"username":"u","password":"p"}}}}}}"#).as_bytes(),
            )
            .unwrap();
            for name in HUB_KEYS {
                assert_eq!(
                    cfg.credentials_for(name).unwrap(),
                    Credentials::Basic {
                        username: "u".into(),
                        password: "p".into()
                    },
                    "entry {key}, asked {name}"
                );
            }
            assert_eq!(
                cfg.credentials_for("quay.io").unwrap(),
                Credentials::Anonymous
            );
        }
    }

    /// A file holding `host`'s entry for `user`.
    fn auth_file(dir: &Path, name: &str, host: &str, user: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"{host}":{{"username":"{user}","password":"pw"}}}}}}"#),
        )
        .unwrap();
        path
    }

    fn user(c: Credentials) -> String {
        match c {
            Credentials::Basic { username, .. } => username,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn credentials_are_looked_up_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let explicit = auth_file(d, "explicit.json", "r.io", "explicit");
        let env_file = auth_file(d, "env.json", "r.io", "env");
        auth_file(d, "run/containers/auth.json", "r.io", "containers");
        auth_file(d, "dockercfg/config.json", "r.io", "docker");
        auth_file(d, "home/.docker/config.json", "r.io", "home");
        let vars: BTreeMap<&str, PathBuf> = [
            ("REGISTRY_AUTH_FILE", env_file.clone()),
            ("XDG_RUNTIME_DIR", d.join("run")),
            ("DOCKER_CONFIG", d.join("dockercfg")),
            ("HOME", d.join("home")),
        ]
        .into();
        let resolve = |sources: &CredentialSources, unset: &[&str]| {
            let env = |name: &str| {
                (!unset.contains(&name))
                    .then(|| vars.get(name).map(|p| p.clone().into_os_string()))
                    .flatten()
            };
            resolve_with("r.io", sources, &env)
        };
        let none = CredentialSources::default();
        let given = |creds: Option<&str>, token: Option<&str>| CredentialSources {
            creds: creds.map(str::to_owned),
            token: token.map(str::to_owned),
            auth_file: Some(explicit.clone()),
        };
        assert_eq!(
            user(resolve(&given(Some("cli:x"), None), &[]).unwrap()),
            "cli"
        );
        assert_eq!(
            resolve(&given(None, Some("tok")), &[]).unwrap(),
            Credentials::Bearer {
                token: "tok".into()
            }
        );
        assert!(resolve(&given(Some("a:b"), Some("tok")), &[]).is_err());
        assert_eq!(user(resolve(&given(None, None), &[]).unwrap()), "explicit");
        assert_eq!(user(resolve(&none, &[]).unwrap()), "env");
        assert_eq!(
            user(resolve(&none, &["REGISTRY_AUTH_FILE"]).unwrap()),
            "containers"
        );
        assert_eq!(
            user(resolve(&none, &["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"]).unwrap()),
            "docker"
        );
        assert_eq!(
            user(
                resolve(
                    &none,
                    &["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"]
                )
                .unwrap()
            ),
            "home"
        );
        assert_eq!(
            resolve(
                &none,
                &[
                    "REGISTRY_AUTH_FILE",
                    "XDG_RUNTIME_DIR",
                    "DOCKER_CONFIG",
                    "HOME"
                ]
            )
            .unwrap(),
            Credentials::Anonymous
        );
        // A file without an entry for the registry passes to the next one.
        let other = auth_file(d, "other.json", "elsewhere.io", "other");
        let sources = CredentialSources {
            auth_file: Some(other),
            ..CredentialSources::default()
        };
        assert_eq!(user(resolve(&sources, &[]).unwrap()), "env");
        // A named auth file that does not exist is an error, not anonymous.
        let sources = CredentialSources {
            auth_file: Some(d.join("missing.json")),
            ..CredentialSources::default()
        };
        assert!(resolve(&sources, &[]).is_err());
        // So is a broken file on the way.
        std::fs::write(&env_file, "{").unwrap();
        assert!(resolve(&none, &[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn user_password_splits_at_the_first_colon(
            user in "[^:]{1,20}",
            password in "\\PC{0,30}",
        ) {
            let parsed = Credentials::from_user_password(&format!("{user}:{password}")).unwrap();
            proptest::prop_assert_eq!(parsed, Credentials::Basic { username: user, password });
        }

        #[test]
        fn user_password_without_a_user_or_a_colon_is_refused(rest in "\\PC{0,30}") {
            let no_user = format!(":{rest}");
            proptest::prop_assert!(Credentials::from_user_password(&no_user).is_err());
            let no_colon = rest.replace(':', "");
            proptest::prop_assert!(Credentials::from_user_password(&no_colon).is_err());
        }
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
