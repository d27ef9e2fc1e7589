//! `task.*` events → `project:<project_id>`: a long job reporting its progress.
//!
//! A publisher sends `current` (and `total` when it knows it); the broadcaster adds what it
//! computes from the task's recent progress, kept cluster-wide by [`crate::tasks`]:
//! `percent`, `rate_per_sec` and `eta_ms` on `task.progress`, `duration_ms` on
//! `task.completed` / `task.failed`. Those fields are the server's: a publisher that sets
//! one gets `invalid_payload` naming it (an ETA the server did not compute would look like
//! one it did).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, Payload, Target};
use crate::rooms::{Id, RoomName};

/// `task.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskStarted {
    pub task_id: Id,
    pub project_id: Id,
    pub name: String,
    /// How many units of `current` the whole task is, when known (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub total: Option<f64>,
}

/// `task.progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub task_id: Id,
    pub project_id: Id,
    /// Units done so far (files, bytes, steps…), ≥ 0.
    #[schemars(range(min = 0))]
    pub current: f64,
    /// Units in the whole task (> 0). When omitted, the last total given (by
    /// `task.started` or an earlier `task.progress`) is used, and filled in here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set by the server: `100 × current / total`, at most 100, when a total is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("readOnly" = true))]
    pub percent: Option<f64>,
    /// Set by the server: units of `current` per second, an exponentially weighted
    /// average of the recent progress; absent until there are two points in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("readOnly" = true))]
    pub rate_per_sec: Option<f64>,
    /// Set by the server: `(total − current) / rate_per_sec` in milliseconds, when both
    /// are known and the rate is above 0; 0 once `current ≥ total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub eta_ms: Option<u64>,
}

impl TaskProgress {
    /// A progress report of `current` units, with no total, step or message (set them on
    /// the value); the server's fields left to the server.
    pub fn new(task_id: Id, project_id: Id, current: f64) -> Self {
        Self {
            task_id,
            project_id,
            current,
            total: None,
            step: None,
            message: None,
            percent: None,
            rate_per_sec: None,
            eta_ms: None,
        }
    }
}

/// `task.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCompleted {
    pub task_id: Id,
    pub project_id: Id,
    /// Free-form result of the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set by the server: the time since `task.started`, when the server saw it and still
    /// kept the task (see `tasks.idle_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub duration_ms: Option<u64>,
}

/// `task.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFailed {
    pub task_id: Id,
    pub project_id: Id,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Set by the server, as in `task.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("readOnly" = true))]
    pub duration_ms: Option<u64>,
}

/// `invalid_payload` for a field only the server sets.
fn server_field(field: &str) -> FieldError {
    FieldError::new(
        field,
        format!("{field} is computed by the server; a publisher may not set it"),
    )
}

/// `invalid_payload` unless `value` is a finite number ≥ 0 (> 0 when `positive`).
fn amount(field: &str, value: f64, positive: bool) -> Result<(), FieldError> {
    if !value.is_finite() || value < 0.0 || (positive && value == 0.0) {
        let bound = if positive { "above 0" } else { "0 or more" };
        return Err(FieldError::new(
            field,
            format!("{field} must be a number {bound}"),
        ));
    }
    Ok(())
}

fn project(id: &Id) -> Target {
    Target::one(RoomName::Project(id.clone()))
}

impl Payload for TaskStarted {
    fn target(&self) -> Target {
        project(&self.project_id)
    }
    fn validate(&self) -> Result<(), FieldError> {
        self.total.map_or(Ok(()), |t| amount("total", t, true))
    }
}

impl Payload for TaskProgress {
    fn target(&self) -> Target {
        project(&self.project_id)
    }
    fn validate(&self) -> Result<(), FieldError> {
        amount("current", self.current, false)?;
        if let Some(total) = self.total {
            amount("total", total, true)?;
        }
        for (field, set) in [
            ("percent", self.percent.is_some()),
            ("rate_per_sec", self.rate_per_sec.is_some()),
            ("eta_ms", self.eta_ms.is_some()),
        ] {
            if set {
                return Err(server_field(field));
            }
        }
        Ok(())
    }
}

impl Payload for TaskCompleted {
    fn target(&self) -> Target {
        project(&self.project_id)
    }
    fn validate(&self) -> Result<(), FieldError> {
        match self.duration_ms {
            Some(_) => Err(server_field("duration_ms")),
            None => Ok(()),
        }
    }
}

impl Payload for TaskFailed {
    fn target(&self) -> Target {
        project(&self.project_id)
    }
    fn validate(&self) -> Result<(), FieldError> {
        match self.duration_ms {
            Some(_) => Err(server_field("duration_ms")),
            None => Ok(()),
        }
    }
}
