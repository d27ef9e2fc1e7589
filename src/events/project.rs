//! `project.*` events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Payload, Target};
use crate::rooms::{Id, RoomName};

/// `project.updated` → `project:<project_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdated {
    pub project_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
    /// Free-form description of what changed, e.g. `{"status": ["draft", "active"]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Map<String, Value>>,
}

impl Payload for ProjectUpdated {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
}

/// `project.deleted` → `project:<project_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectDeleted {
    pub project_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
}

impl Payload for ProjectDeleted {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
}
