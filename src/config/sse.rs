//! `[sse]`: Server-Sent Events (`GET /api/v1/sse`): heartbeats, the per-connection queue
//! and the reconnect delay told to `EventSource`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// Seconds between heartbeat comments (`: heartbeat`) on a quiet connection, so proxies
    /// keep it open and a dead client is noticed at the next write.
    pub heartbeat_secs: u64,
    /// The most live events one connection may have queued; a connection whose reader falls
    /// that far behind is closed (its client reconnects and recovers with `Last-Event-ID`).
    pub buffer: usize,
    /// The reconnect delay sent as `retry:` in the first event: how long `EventSource` waits
    /// before reconnecting after the connection drops.
    pub retry_ms: u64,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 15,
            buffer: 1024,
            retry_ms: 1000,
        }
    }
}

impl SseConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_secs == 0 || self.buffer == 0 {
            return Err(ConfigError::Invalid(
                "sse.heartbeat_secs and sse.buffer must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
