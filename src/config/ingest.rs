//! `[ingest.redis_streams]`: durable ingest from a Redis stream.

use serde::{Deserialize, Serialize};

use super::{ClusterConfig, ClusterMode, ConfigError, Secret};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Durable ingest from a Redis stream; off unless the section is present.
    pub redis_streams: Option<RedisStreamsIngest>,
}

/// Consume events from a Redis stream as one consumer group: every node of the group takes
/// a share, acknowledges an entry only after publishing it, and takes over the entries of
/// consumers that died.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisStreamsIngest {
    /// The Redis holding the stream; `cluster.redis_url` when unset (standalone Redis only).
    /// A secret: the URL may carry a password.
    pub redis_url: Option<Secret>,
    pub stream: String,
    pub group: String,
    /// Where entries that can never be published go, with the validation error.
    pub dead_letter_stream: String,
    /// The dead-letter stream is trimmed to about this many entries.
    pub dead_letter_max_len: u64,
    /// Entries read per round trip.
    pub batch_size: usize,
    /// How long one XREADGROUP waits for new entries.
    pub block_ms: u64,
    /// An entry another consumer read but has not acknowledged for this long is taken over
    /// (its consumer is presumed dead).
    pub claim_idle_ms: u64,
    /// How often to look for such entries.
    pub claim_interval_ms: u64,
}

impl Default for RedisStreamsIngest {
    fn default() -> Self {
        Self {
            redis_url: None,
            stream: "roomcast:events".into(),
            group: "roomcast".into(),
            dead_letter_stream: "roomcast:events:dead".into(),
            dead_letter_max_len: 10_000,
            batch_size: 100,
            block_ms: 2_000,
            claim_idle_ms: 30_000,
            claim_interval_ms: 5_000,
        }
    }
}

impl IngestConfig {
    /// The Redis the stream ingest reads, when it is on: its own, else the cluster's.
    pub fn redis_url<'a>(&'a self, cluster: &'a ClusterConfig) -> Option<&'a str> {
        let ingest = self.redis_streams.as_ref()?;
        ingest
            .redis_url
            .as_ref()
            .or(cluster.redis_url.as_ref())
            .map(Secret::expose)
    }

    /// Needs the cluster's settings: without its own `redis_url` the ingest reads the
    /// cluster's Redis.
    pub(super) fn validate(&self, cluster: &ClusterConfig) -> Result<(), ConfigError> {
        let Some(ingest) = &self.redis_streams else {
            return Ok(());
        };
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match (&ingest.redis_url, &cluster.redis_url, cluster.mode) {
            (Some(url), _, _) => {
                if redis::Client::open(url.expose()).is_err() {
                    return invalid(
                        "ingest.redis_streams.redis_url is not a valid redis:// URL".into(),
                    );
                }
            }
            (None, Some(_), ClusterMode::Standalone) => {}
            (None, Some(_), ClusterMode::Cluster) => {
                return invalid(
                    "ingest.redis_streams: set redis_url (ingest reads one standalone Redis, not a Redis Cluster)"
                        .into(),
                );
            }
            (None, None, _) => {
                return invalid(
                    "ingest.redis_streams needs redis_url (or cluster.redis_url)".into(),
                );
            }
        }
        if ingest.stream.is_empty()
            || ingest.group.is_empty()
            || ingest.dead_letter_stream.is_empty()
        {
            return invalid(
                "ingest.redis_streams: stream, group and dead_letter_stream must be non-empty"
                    .into(),
            );
        }
        if ingest.stream == ingest.dead_letter_stream {
            return invalid(
                "ingest.redis_streams: dead_letter_stream must differ from stream".into(),
            );
        }
        if ingest.batch_size == 0 || ingest.block_ms == 0 || ingest.claim_interval_ms == 0 {
            return invalid(
                "ingest.redis_streams: batch_size, block_ms and claim_interval_ms must be at least 1"
                    .into(),
            );
        }
        if ingest.claim_idle_ms < 1000 {
            return invalid("ingest.redis_streams.claim_idle_ms must be at least 1000".into());
        }
        Ok(())
    }

    pub(super) fn mask_secrets(&mut self) {
        if let Some(url) = self
            .redis_streams
            .as_mut()
            .and_then(|i| i.redis_url.as_mut())
        {
            *url = url.masked_url();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn ingest_needs_a_redis() {
        let err = Config::from_toml("[ingest.redis_streams]\nstream = \"s\"").unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        let config = Config::from_toml(
            "[cluster]\nredis_url = \"redis://127.0.0.1:1\"\n[ingest.redis_streams]",
        )
        .unwrap();
        assert_eq!(config.ingest_redis_url(), Some("redis://127.0.0.1:1"));
        assert!(Config::default().ingest_redis_url().is_none());
    }
}
