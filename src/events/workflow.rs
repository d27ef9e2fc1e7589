//! `workflow.*` events → `project:<project_id>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, Payload, Target};
use crate::rooms::{Id, RoomName};

/// `workflow.started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStarted {
    pub workflow_id: Id,
    pub project_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
}

/// `workflow.progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowProgress {
    pub workflow_id: Id,
    pub project_id: Id,
    /// Percent done, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub progress: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// `workflow.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowCompleted {
    pub workflow_id: Id,
    pub project_id: Id,
    /// Free-form result of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `workflow.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFailed {
    pub workflow_id: Id,
    pub project_id: Id,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

macro_rules! project_target {
    ($($ty:ty),*) => {$(
        impl Payload for $ty {
            fn target(&self) -> Target {
                Target::one(RoomName::Project(self.project_id.clone()))
            }
        }
    )*};
}
project_target!(WorkflowStarted, WorkflowCompleted, WorkflowFailed);

impl Payload for WorkflowProgress {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
    fn validate(&self) -> Result<(), FieldError> {
        if self.progress > 100 {
            return Err(FieldError::new(
                "progress",
                "progress must be between 0 and 100",
            ));
        }
        Ok(())
    }
}
