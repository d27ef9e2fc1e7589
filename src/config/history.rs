//! `[history]`: how much of each room's past is kept for replay.

use serde::{Deserialize, Serialize};

/// How much of each room's past is kept for replay: the last `size` events, none older
/// than `ttl_secs`. `project`, `agent`, `user` and `global` override it per room kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    pub size: usize,
    pub ttl_secs: u64,
    pub project: Option<Retention>,
    pub agent: Option<Retention>,
    pub user: Option<Retention>,
    pub global: Option<Retention>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 200,
            ttl_secs: 300,
            project: None,
            agent: None,
            user: None,
            global: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub size: usize,
    pub ttl_secs: u64,
}
