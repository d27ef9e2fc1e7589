//! Code-hosting events: `pr.*` and `issue.*` → `project:<project_id>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Payload, Target};
use crate::rooms::{Id, RoomName};

/// `pr.created`, `pr.updated`, `pr.closed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub project_id: Id,
    pub number: u64,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,
    /// What happened, e.g. GitHub's `synchronize` or `labeled` for a `pr.updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// `issue.created`, `issue.updated`, `issue.closed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    pub project_id: Id,
    pub number: u64,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What happened, e.g. GitHub's `labeled` or `assigned` for an `issue.updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Payload for PullRequest {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
}

impl Payload for Issue {
    fn target(&self) -> Target {
        Target::one(RoomName::Project(self.project_id.clone()))
    }
}
