//! `[publish]`: idempotency and batches of the publish API.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// How long a publish's `Idempotency-Key` (or `X-GitHub-Delivery`) is remembered.
    pub idempotency_window_secs: u64,
    /// Most events one `POST /api/v1/events/batch` may carry.
    pub max_batch_events: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            idempotency_window_secs: 300,
            max_batch_events: 100,
        }
    }
}

impl PublishConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_batch_events == 0 {
            return Err(ConfigError::Invalid(
                "publish.max_batch_events must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
