//! `[storage]`: where a single node keeps room history and idempotency answers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Unset by default, so an embedding program or a test writes nothing to disk unasked; the
/// shipped `config.toml` sets `path = "data"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A directory (created if missing; relative to the working directory) holding one
    /// `roomcast.redb` file: history, room epochs and `seq`s and idempotency answers survive
    /// a restart. Unset: kept in memory only. Not used in cluster mode (Redis keeps them).
    pub path: Option<PathBuf>,
}
