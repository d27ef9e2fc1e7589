//! `ai.*` events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldError, Payload, Target};
use crate::rooms::{Id, RoomName};

/// `ai.suggestion` → `user:<user_id>` when given, else `project:<project_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiSuggestion {
    pub suggestion_id: Id,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the suggestion is about, e.g. `code`, `review`, `workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Id>,
}

impl Payload for AiSuggestion {
    fn target(&self) -> Target {
        match (&self.user_id, &self.project_id) {
            (Some(user), _) => Target::one(RoomName::User(user.clone())),
            (None, Some(project)) => Target::one(RoomName::Project(project.clone())),
            // `validate` refuses this before routing; `global` is never reached.
            (None, None) => Target::one(RoomName::Global),
        }
    }
    fn validate(&self) -> Result<(), FieldError> {
        if self.user_id.is_none() && self.project_id.is_none() {
            return Err(FieldError::new(
                "user_id",
                "ai.suggestion needs user_id or project_id",
            ));
        }
        Ok(())
    }
}

/// `ai.analysis_complete` → `project:<project_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiAnalysisComplete {
    pub analysis_id: Id,
    pub project_id: Id,
    pub summary: String,
}

impl Payload for AiAnalysisComplete {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
}
