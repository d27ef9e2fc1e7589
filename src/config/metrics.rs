//! `[metrics]`: `GET /metrics`.

use serde::{Deserialize, Serialize};

/// `GET /metrics` (Prometheus text format).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without an API key. By default it needs a key with the `read` scope
    /// (Prometheus sends it with `authorization: {credentials: ...}`): a loopback bind
    /// behind a same-host reverse proxy would otherwise publish it to the world.
    pub public: bool,
}
