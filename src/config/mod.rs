//! The whole configuration schema: one file per TOML section, each struct with its
//! defaults (`impl Default`) right below it and its own checks (`validate`) beside them.
//! This file holds [`Config`], loading (defaults, the TOML file, `ROOMCAST_<SECTION>__<KEY>`
//! environment overrides), the checks that span sections, and the masked rendering.
//! Every setting is documented in `config.toml`.
//!
//! Credentials are [`Secret`]s: they print as `***`, so a `{:?}` of a config never shows
//! one, and `to_masked_toml` replaces them.
//!
//! Adding a section: a file here with the struct, its `Default` and `validate`, a field of
//! [`Config`] (the field order is the order `check-config` prints), and the section in
//! `config.toml`.

mod api_keys;
mod auth;
mod client_events;
mod cluster;
mod documents;
mod github;
mod history;
mod ingest;
mod limits;
mod log;
mod metrics;
mod pages;
mod publish;
mod rpc;
mod secret;
mod server;
mod sse;
mod storage;
mod streams;
mod tasks;
mod webhooks;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use api_keys::{ApiKeyConfig, DEV_API_KEY, RESERVED_KEY_NAMES, Scope};
pub use auth::{AuthConfig, DEV_JWT_SECRET, KeyConfig};
pub use client_events::{ClientEventsConfig, SchemaMismatch, Schemas};
pub use cluster::{ClusterConfig, ClusterMode, OnUnavailable};
pub use documents::DocumentsConfig;
pub use github::GithubConfig;
pub use history::{HistoryConfig, Retention};
pub use ingest::{IngestConfig, RedisStreamsIngest};
pub use limits::{IpRange, LimitsConfig};
pub use log::{LogConfig, LogFormat, log_filter};
pub use metrics::MetricsConfig;
pub use pages::PagesConfig;
pub use publish::PublishConfig;
pub use rpc::{MAX_METHOD_LEN, RpcConfig, method_char};
pub use secret::Secret;
pub use server::{Parser, ServerConfig, Transport};
pub use sse::SseConfig;
pub use storage::StorageConfig;
pub use streams::{CancelPolicy, StreamsConfig};
pub use tasks::TasksConfig;
pub use webhooks::{HookKind, MIN_WEBHOOK_SECRET, RoomKind, WebhookConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub api_keys: Vec<ApiKeyConfig>,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
    pub publish: PublishConfig,
    pub client_events: ClientEventsConfig,
    pub history: HistoryConfig,
    pub storage: StorageConfig,
    pub streams: StreamsConfig,
    pub documents: DocumentsConfig,
    pub tasks: TasksConfig,
    pub sse: SseConfig,
    pub pages: PagesConfig,
    pub github: GithubConfig,
    pub ingest: IngestConfig,
    pub rpc: RpcConfig,
    pub metrics: MetricsConfig,
    /// `[[webhooks]]`: backends sent what happens in rooms (none by default).
    pub webhooks: Vec<WebhookConfig>,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            api_keys: api_keys::default_api_keys(),
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
            publish: PublishConfig::default(),
            client_events: ClientEventsConfig::default(),
            history: HistoryConfig::default(),
            storage: StorageConfig::default(),
            streams: StreamsConfig::default(),
            documents: DocumentsConfig::default(),
            tasks: TasksConfig::default(),
            sse: SseConfig::default(),
            pages: PagesConfig::default(),
            github: GithubConfig::default(),
            ingest: IngestConfig::default(),
            rpc: RpcConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: Vec::new(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where a configuration comes from.
pub enum Source<'a> {
    /// `--config PATH` given explicitly: the file must exist.
    Explicit(&'a Path),
    /// The default `./config.toml`: used when present, defaults otherwise.
    Default(&'a Path),
}

impl Config {
    /// Loads defaults, then the file, then `ROOMCAST_<SECTION>__<KEY>` environment variables,
    /// and validates the result.
    pub fn load(source: Source<'_>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match source {
            Source::Explicit(path) if !path.exists() => {
                return Err(ConfigError::Missing(path.into()));
            }
            Source::Explicit(path) | Source::Default(path) => {
                if path.exists() {
                    // A file that lists API keys replaces the default dev key instead of
                    // merging with it, so the dev key never lingers beside real ones.
                    figment = figment.merge(Toml::file_exact(path));
                }
            }
        }
        // Only keys with a section separator are settings: `ROOMCAST_CONFIG` and friends are not.
        figment = figment.merge(
            Env::prefixed("ROOMCAST_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config = figment
            .extract::<Config>()
            .map_err(Box::new)?
            .with_fallbacks();
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string on top of the defaults (no environment); for tests and embedding.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract::<Config>()
            .map_err(Box::new)?
            .with_fallbacks();
        config.validate()?;
        Ok(config)
    }

    /// Uses the development JWT secret when no verification key is configured at all.
    pub fn with_fallbacks(mut self) -> Self {
        self.auth.with_fallbacks();
        self
    }

    /// Each section's own checks, then those that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate()?;
        self.server.validate()?;
        let loopback = self.server.bind.ip().is_loopback();
        if self.dev_secrets_in_use() && !loopback {
            return Err(ConfigError::Invalid(format!(
                "the development JWT secret or API key is in use and server.bind ({}) is not a loopback address; \
                 set auth.jwt_secret and api_keys (see `roomcast check-config`)",
                self.server.bind
            )));
        }
        api_keys::validate(&self.api_keys, loopback)?;
        self.cluster.validate()?;
        self.limits.validate()?;
        self.publish.validate()?;
        self.client_events.validate()?;
        self.github.validate()?;
        self.ingest.validate(&self.cluster)?;
        self.rpc.validate()?;
        self.streams.validate()?;
        self.documents.validate()?;
        self.tasks.validate()?;
        self.sse.validate()?;
        webhooks::validate(&self.webhooks)?;
        Ok(())
    }

    /// The Redis the stream ingest reads, when it is on.
    pub fn ingest_redis_url(&self) -> Option<&str> {
        self.ingest.redis_url(&self.cluster)
    }

    /// True when the shipped development secret or API key is configured.
    pub fn dev_secrets_in_use(&self) -> bool {
        self.auth.jwt_secret.as_ref().map(Secret::expose) == Some(DEV_JWT_SECRET)
            || self
                .api_keys
                .iter()
                .any(|k| k.key.as_ref().map(Secret::expose) == Some(DEV_API_KEY))
    }

    /// The configuration as TOML with every secret replaced by `"***"` (and the
    /// credentials in URLs).
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        masked.auth.mask_secrets();
        api_keys::mask_secrets(&mut masked.api_keys);
        masked.cluster.mask_secrets();
        masked.github.mask_secrets();
        masked.ingest.mask_secrets();
        masked.rpc.mask_secrets();
        webhooks::mask_secrets(&mut masked.webhooks);
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_on_loopback() {
        let config = Config::default().with_fallbacks();
        config.validate().unwrap();
        assert!(config.dev_secrets_in_use());
    }

    #[test]
    fn dev_secrets_refused_off_loopback() {
        let err = Config::from_toml("[server]\nbind = \"0.0.0.0:8000\"").unwrap_err();
        assert!(err.to_string().contains("not a loopback"), "{err}");
    }

    #[test]
    fn real_secrets_allowed_off_loopback() {
        Config::from_toml(
            "[server]\nbind = \"0.0.0.0:8000\"\n[auth]\njwt_secret = \"0123456789abcdef0123\"\n\
             [[api_keys]]\nname = \"b\"\nkey_sha256 = \"8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92\"",
        )
        .unwrap();
    }

    #[test]
    fn masked_output_hides_secrets() {
        let text = Config::default().with_fallbacks().to_masked_toml();
        assert!(!text.contains(DEV_JWT_SECRET));
        assert!(!text.contains(DEV_API_KEY));
        assert!(text.contains("***"));
    }

    #[test]
    fn the_shipped_file_matches_the_defaults() {
        let shipped = Config::from_toml(include_str!("../../config.toml")).unwrap();
        let mut default = Config::default().with_fallbacks();
        // The one exception: `roomcast serve` keeps history across restarts (unset by
        // default, so an embedding program or a test writes nothing to disk unasked).
        assert_eq!(shipped.storage.path, Some(PathBuf::from("data")));
        default.storage.path = shipped.storage.path.clone();
        assert_eq!(shipped.to_masked_toml(), default.to_masked_toml());
    }

    #[test]
    fn every_credential_in_a_url_is_masked() {
        let config = Config::from_toml(
            "[cluster]\nmode = \"cluster\"\nredis_url = \"redis://a:pw1@h1:7000,redis://b:pw2@h2:7000\"\n\
             [auth]\njwks_url = \"https://u:pw3@idp.example/jwks?token=pw4\"",
        )
        .unwrap();
        let text = config.to_masked_toml();
        for secret in ["pw1", "pw2", "pw3", "pw4"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("redis://***@h1:7000,redis://***@h2:7000"),
            "{text}"
        );
        assert!(text.contains("https://***@idp.example/jwks?***"), "{text}");
    }

    /// A config printed with `{:?}` (a log line, a panic, an assertion) shows no
    /// credential: every one is a [`Secret`].
    #[test]
    fn debug_output_hides_every_secret() {
        let secrets = [
            "jwt-secret-0123456789",
            "kid-secret-0123456789",
            "plain-api-key-0123",
            "webhook-secret-0123456789",
            "clusterpw",
            "ingestpw",
            "jwkspw",
            "jwkstoken",
        ];
        let config = Config::from_toml(&format!(
            "[auth]\njwt_secret = \"{}\"\njwks_url = \"https://u:{}@idp.example/jwks?t={}\"\n\
             [[auth.keys]]\nkid = \"k1\"\nsecret = \"{}\"\n\
             [[api_keys]]\nname = \"a\"\nkey = \"{}\"\n\
             [github]\nwebhook_secret = \"{}\"\n\
             [cluster]\nredis_url = \"redis://u:{}@127.0.0.1:6379\"\n\
             [ingest.redis_streams]\nredis_url = \"redis://u:{}@127.0.0.1:6380\"",
            secrets[0],
            secrets[6],
            secrets[7],
            secrets[1],
            secrets[2],
            secrets[3],
            secrets[4],
            secrets[5],
        ))
        .unwrap();
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            for secret in secrets {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("***"), "{text}");
        }
        // The values are still there for the code that uses them.
        assert_eq!(
            config.auth.jwt_secret.as_ref().map(Secret::expose),
            Some(secrets[0])
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("[server]\nbnid = \"x\"").is_err());
    }
}
