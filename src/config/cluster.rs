//! `[cluster]`: many nodes on one Redis (or Redis Cluster).

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`: turns cluster mode on. Unset: a single node, in memory.
    /// With `mode = "cluster"`, one or more nodes of the Redis Cluster, comma-separated.
    /// A secret: the URLs may carry passwords.
    pub redis_url: Option<Secret>,
    /// `standalone` (one Redis, or a primary behind a proxy) or `cluster` (Redis Cluster).
    pub mode: ClusterMode,
    /// Prefix of every Redis key and pub/sub channel Roomcast uses.
    pub key_prefix: String,
    /// A node that has not renewed its heartbeat for this long is dead: it leaves stats and
    /// presence, and its users' presence ends.
    pub node_ttl_secs: u64,
    /// A user's last socket leaving a room announces `presence.left` only after this long,
    /// so a quick reconnect does not flap.
    pub presence_grace_secs: u64,
    /// While Redis is unreachable: `fail` answers publishes with `503 cluster_unavailable`;
    /// `local` delivers them to this node's sockets only.
    pub on_unavailable: OnUnavailable,
    /// How long a cluster-wide request (fetching or disconnecting remote sockets, a
    /// revocation's count of the other nodes' connections) waits.
    pub request_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            mode: ClusterMode::Standalone,
            key_prefix: "roomcast".into(),
            node_ttl_secs: 15,
            presence_grace_secs: 5,
            on_unavailable: OnUnavailable::Fail,
            request_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    Standalone,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    Fail,
    Local,
}

impl ClusterConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(urls) = &self.redis_url
            && urls
                .expose()
                .split(',')
                .any(|url| redis::Client::open(url.trim()).is_err())
        {
            return invalid(
                "cluster.redis_url is not a valid redis:// URL (or list of them)".into(),
            );
        }
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c == '#')
        {
            return invalid(
                "cluster.key_prefix must be non-empty, without spaces, '#', '{' or '}'".into(),
            );
        }
        if self.node_ttl_secs < 2 {
            return invalid("cluster.node_ttl_secs must be at least 2".into());
        }
        Ok(())
    }

    /// The credentials of every listed node replaced by `***`.
    pub(super) fn mask_secrets(&mut self) {
        if let Some(urls) = &mut self.redis_url {
            *urls = urls.masked_urls();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn redis_credentials_are_masked() {
        let config =
            Config::from_toml("[cluster]\nredis_url = \"redis://user:hunter2@127.0.0.1:6379/0\"")
                .unwrap();
        let text = config.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://***@127.0.0.1:6379/0"), "{text}");
    }
}
