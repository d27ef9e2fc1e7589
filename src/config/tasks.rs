//! `[tasks]`: the progress state behind `task.progress`'s `percent`, `rate_per_sec` and
//! `eta_ms` (WEBSOCKET_API.md section 5.15c).

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// How long a task's progress state is kept after its last `task.*` event (a task whose
    /// publisher died without `task.completed` or `task.failed`). A task heard of again
    /// after that starts over: no rate until its next progress, no `duration_ms`.
    pub idle_secs: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self { idle_secs: 3600 }
    }
}

impl TasksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_secs == 0 {
            return Err(ConfigError::Invalid(
                "tasks.idle_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
