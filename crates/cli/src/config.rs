//! The effective configuration: built-in defaults, then the TOML file, then `FERRY_*` environment
//! variables, then command-line flags (clap merges env and flags; the file sits beneath both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `ferry serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where blobs, manifests and uploads live.
    pub data_dir: PathBuf,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `ferry_server=debug,info`.
    pub log_level: String,
    /// Registry behaviour.
    pub registry: RegistryConfig,
    /// Resource bounds.
    pub limits: LimitsConfig,
}

/// `[registry]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Allow DELETE of manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Refuse manifests whose blobs are not pushed yet.
    pub check_manifest_references: bool,
    /// Answer a mount without `from` with 201 when the blob exists in any repository.
    pub auto_mount: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Seconds a client has to send its request headers.
    pub header_read_timeout_secs: u64,
    /// Seconds an upload body may stay silent before it is aborted.
    pub body_idle_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Hours an unfinished upload session is kept.
    pub upload_ttl_hours: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            registry: RegistryConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            delete_enabled: true,
            check_manifest_references: true,
            auto_mount: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_connections: 4096,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            shutdown_grace_secs: 30,
            upload_ttl_hours: 24 * 7,
        }
    }
}

/// `~/.local/share/ferry` (the platform's data dir), or `./ferry-data` when there is no home.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("ferry"))
        .unwrap_or_else(|| PathBuf::from("ferry-data"))
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| {
            format!(
                "config file {} is invalid (`ferry config print` shows every key with its default)",
                path.display()
            )
        })
    }

    /// Parses TOML text over the defaults.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values that would make the server misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.limits.max_connections > 0,
            "limits.max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.limits.max_manifest_bytes >= 1024,
            "limits.max_manifest_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.limits.header_read_timeout_secs > 0 && self.limits.body_idle_timeout_secs > 0,
            "timeouts must be at least 1 second"
        );
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Store tunables.
    pub fn store_options(&self) -> ferry_store::StoreOptions {
        ferry_store::StoreOptions {
            upload_ttl: Duration::from_secs(self.limits.upload_ttl_hours * 3600),
            max_manifest_bytes: self.limits.max_manifest_bytes,
        }
    }

    /// Registry API switches.
    pub fn registry_options(&self) -> ferry_server::RegistryOptions {
        ferry_server::RegistryOptions {
            delete_enabled: self.registry.delete_enabled,
            check_manifest_references: self.registry.check_manifest_references,
            auto_mount: self.registry.auto_mount,
            body_idle_timeout: Duration::from_secs(self.limits.body_idle_timeout_secs),
        }
    }

    /// Connection limits.
    pub fn serve_options(&self) -> ferry_server::ServeOptions {
        ferry_server::ServeOptions {
            max_connections: self.limits.max_connections,
            header_read_timeout: Duration::from_secs(self.limits.header_read_timeout_secs),
            shutdown_grace: Duration::from_secs(self.limits.shutdown_grace_secs),
            ..ferry_server::ServeOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_roundtrip_through_toml() {
        let c = Config::default();
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let c =
            Config::parse("listen = \"127.0.0.1:9999\"\n[limits]\nmax_connections = 7\n").unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.limits.max_connections, 7);
        assert!(c.registry.delete_enabled);
        let err = Config::parse("listn = \"x\"").unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        assert!(Config::parse("[limits]\nmax_connections = 0").is_err());
        assert!(Config::parse("listen = \"not an address\"").is_err());
    }
}
