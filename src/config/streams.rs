//! `[streams]`: AI output streams (`POST /api/v1/streams`, `broadcaster.stream`): how long
//! a stream's text is kept, how large it may grow, and who may cancel it.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// How long a stream's text and status stay readable (`stream.resume`, `GET`) after it
    /// finished, failed or was cancelled.
    pub keep_secs: u64,
    /// How long an open stream stays without an append before it is dropped (a producer
    /// that died without `finish`).
    pub idle_secs: u64,
    /// The most a stream's text may hold, in bytes of UTF-8; an append past it is refused
    /// (`413 stream_too_large`) and appends nothing.
    pub max_bytes: usize,
    /// Who may `stream.cancel`: any socket subscribed to the stream's room (`room`), or
    /// only the user named `requested_by` when the stream was created (`requester`).
    pub cancel: CancelPolicy,
    /// Milliseconds a stream's deltas are at least apart under a steady flow: an append
    /// within this time of the stream's last delta waits (at most this long) and goes out
    /// with the appends that join it. 0 (the default) waits for nothing: only what piles
    /// up while a delta is being delivered is coalesced.
    pub coalesce_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelPolicy {
    Room,
    Requester,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            keep_secs: 600,
            idle_secs: 3600,
            max_bytes: 1024 * 1024,
            cancel: CancelPolicy::Room,
            coalesce_ms: 0,
        }
    }
}

impl StreamsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.keep_secs == 0 || self.idle_secs == 0 || self.max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "streams.keep_secs, streams.idle_secs and streams.max_bytes must be at least 1"
                    .into(),
            ));
        }
        if self.coalesce_ms > 1000 {
            return Err(ConfigError::Invalid(
                "streams.coalesce_ms must be at most 1000".into(),
            ));
        }
        Ok(())
    }
}
