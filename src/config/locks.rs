//! `[locks]`: locks for critical sections (`lock.acquire`, `POST /api/v1/locks/...`;
//! WEBSOCKET_API.md section 15): how long a lock may be held without a renewal, and how
//! many one socket may hold.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocksConfig {
    /// The lifetime of a lock acquired or renewed without `ttl_ms`.
    pub default_ttl_ms: u64,
    /// The shortest `ttl_ms` accepted (`invalid_payload` below it).
    pub min_ttl_ms: u64,
    /// The longest `ttl_ms` accepted (`invalid_payload` above it): a holder that needs
    /// longer renews.
    pub max_ttl_ms: u64,
    /// The most locks one socket may hold at once (`too_many_locks` past it).
    pub max_per_socket: usize,
    /// How often a node looks for expired locks it did not grant itself (in a cluster, those
    /// of a node that died); a node wakes at the expiry of the locks it granted anyway.
    pub sweep_ms: u64,
}

impl Default for LocksConfig {
    fn default() -> Self {
        Self {
            default_ttl_ms: 30_000,
            min_ttl_ms: 100,
            max_ttl_ms: 600_000,
            max_per_socket: 16,
            sweep_ms: 1000,
        }
    }
}

impl LocksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_ttl_ms == 0 || self.min_ttl_ms > self.max_ttl_ms {
            return Err(ConfigError::Invalid(
                "locks.min_ttl_ms must be at least 1 and at most locks.max_ttl_ms".into(),
            ));
        }
        if !(self.min_ttl_ms..=self.max_ttl_ms).contains(&self.default_ttl_ms) {
            return Err(ConfigError::Invalid(
                "locks.default_ttl_ms must be within locks.min_ttl_ms and locks.max_ttl_ms".into(),
            ));
        }
        // A day: expiry times stay far from any overflow, and a lock that long is a bug.
        if self.max_ttl_ms > 86_400_000 {
            return Err(ConfigError::Invalid(
                "locks.max_ttl_ms must be at most 86400000 (a day)".into(),
            ));
        }
        if self.max_per_socket == 0 || self.sweep_ms == 0 || self.sweep_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "locks.max_per_socket must be at least 1 and locks.sweep_ms 1 to 60000".into(),
            ));
        }
        Ok(())
    }

    /// `ttl_ms` as asked (the default when `None`), if within the bounds.
    pub fn ttl(&self, asked: Option<u64>) -> Result<u64, String> {
        let ttl = asked.unwrap_or(self.default_ttl_ms);
        if (self.min_ttl_ms..=self.max_ttl_ms).contains(&ttl) {
            Ok(ttl)
        } else {
            Err(format!(
                "ttl_ms is {} to {} (locks.min_ttl_ms, locks.max_ttl_ms)",
                self.min_ttl_ms, self.max_ttl_ms
            ))
        }
    }
}
