//! `agent.*` events: to `agent:<agent_id>`, and also `project:<project_id>` when given.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Payload, Target};
use crate::rooms::{Id, RoomName};

fn agent_target(agent_id: &Id, project_id: &Option<Id>) -> Target {
    Target {
        room: RoomName::Agent(agent_id.clone()),
        also: project_id.clone().map(RoomName::Project),
    }
}

/// `agent.status_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStatusChanged {
    pub agent_id: Id,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Id>,
}

impl Payload for AgentStatusChanged {
    fn target(&self) -> Target {
        agent_target(&self.agent_id, &self.project_id)
    }
}

/// `agent.connected` and `agent.disconnected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConnection {
    pub agent_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Payload for AgentConnection {
    fn target(&self) -> Target {
        agent_target(&self.agent_id, &self.project_id)
    }
}
