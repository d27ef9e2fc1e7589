//! Typed events: one struct per payload, the [`Event`] enum over all of them, routing
//! (event → rooms) and the [`Envelope`] every delivery is wrapped in.
//!
//! The list of event types lives once, in [`for_each_event!`]; the enum, the type names,
//! the JSON decoding and the broadcaster's `broadcast_*` methods are generated from it.

pub mod agent;
pub mod ai;
pub mod code;
mod envelope;
pub mod project;
pub mod request;
pub mod system;
pub mod task;
pub mod workflow;

use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use agent::{AgentConnection, AgentStatusChanged};
pub use ai::{AiAnalysisComplete, AiSuggestion};
pub use code::{Issue, PullRequest};
pub use envelope::{Envelope, EventName, Origin, Position, Sender, Timestamp};
pub use project::{ProjectDeleted, ProjectUpdated};
pub use system::{Severity, SystemNotification};
pub use task::{TaskCompleted, TaskFailed, TaskProgress, TaskStarted};
pub use workflow::{WorkflowCompleted, WorkflowFailed, WorkflowProgress, WorkflowStarted};

use crate::rooms::RoomName;

/// Calls `$m!` with the table of event types: `(Variant, "wire.name", Payload, broadcast_method)`.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_event {
    ($m:ident) => {
        $m! {
            (ProjectUpdated, "project.updated", ProjectUpdated, broadcast_project_updated),
            (ProjectDeleted, "project.deleted", ProjectDeleted, broadcast_project_deleted),
            (AgentStatusChanged, "agent.status_changed", AgentStatusChanged, broadcast_agent_status_changed),
            (AgentConnected, "agent.connected", AgentConnection, broadcast_agent_connected),
            (AgentDisconnected, "agent.disconnected", AgentConnection, broadcast_agent_disconnected),
            (WorkflowStarted, "workflow.started", WorkflowStarted, broadcast_workflow_started),
            (WorkflowProgress, "workflow.progress", WorkflowProgress, broadcast_workflow_progress),
            (WorkflowCompleted, "workflow.completed", WorkflowCompleted, broadcast_workflow_completed),
            (WorkflowFailed, "workflow.failed", WorkflowFailed, broadcast_workflow_failed),
            (PrCreated, "pr.created", PullRequest, broadcast_pr_created),
            (PrUpdated, "pr.updated", PullRequest, broadcast_pr_updated),
            (PrClosed, "pr.closed", PullRequest, broadcast_pr_closed),
            (IssueCreated, "issue.created", Issue, broadcast_issue_created),
            (IssueUpdated, "issue.updated", Issue, broadcast_issue_updated),
            (IssueClosed, "issue.closed", Issue, broadcast_issue_closed),
            (AiSuggestion, "ai.suggestion", AiSuggestion, broadcast_ai_suggestion),
            (AiAnalysisComplete, "ai.analysis_complete", AiAnalysisComplete, broadcast_ai_analysis_complete),
            (SystemNotification, "system.notification", SystemNotification, broadcast_system_notification),
            (TaskStarted, "task.started", TaskStarted, broadcast_task_started),
            (TaskProgress, "task.progress", TaskProgress, broadcast_task_progress),
            (TaskCompleted, "task.completed", TaskCompleted, broadcast_task_completed),
            (TaskFailed, "task.failed", TaskFailed, broadcast_task_failed),
        }
    };
}

/// Where an event goes: its room, and for agent events with a project, the project room too.
/// A socket in both rooms receives the event once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub room: RoomName,
    pub also: Option<RoomName>,
}

impl Target {
    pub fn one(room: RoomName) -> Self {
        Self { room, also: None }
    }
    pub fn rooms(&self) -> Vec<RoomName> {
        std::iter::once(self.room.clone())
            .chain(self.also.clone())
            .collect()
    }
}

/// A typed event payload: how it routes and what it checks beyond its JSON shape.
pub trait Payload: Serialize + DeserializeOwned + JsonSchema + Send + Sync {
    fn target(&self) -> Target;
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A payload field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Turns a serde error into the field it is about. serde reports a missing or unknown
    /// field at its parent's path, with the name only in the message.
    pub fn from_serde(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            // An unknown field is already in the path; a missing one is not.
            (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
                path.to_owned()
            }
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "data".to_owned(),
            (None, path) => path.to_owned(),
        };
        // serde_json appends " at line 1 column 42"; the field says where.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        Self { field, message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a `{type, data}` pair is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    UnknownType(String),
    InvalidPayload(FieldError),
}

macro_rules! define_events {
    ($(($variant:ident, $name:literal, $payload:ident, $method:ident)),* $(,)?) => {
        /// Every event type Roomcast knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($variant),* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some(Self::$variant),)* _ => None }
            }

            /// JSON Schema of this type's `data`.
            pub fn data_schema(self) -> schemars::Schema {
                match self { $(Self::$variant => schemars::schema_for!($payload)),* }
            }
        }

        /// A validated, typed event.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Event { $($variant($payload)),* }

        impl Event {
            pub fn event_type(&self) -> EventType {
                match self { $(Self::$variant(_) => EventType::$variant),* }
            }

            pub fn target(&self) -> Target {
                match self { $(Self::$variant(p) => p.target()),* }
            }

            pub fn validate(&self) -> Result<(), FieldError> {
                match self { $(Self::$variant(p) => p.validate()),* }
            }

            /// Decodes and validates `data` as an event of type `event_type`.
            pub fn from_json(event_type: &str, data: Value) -> Result<Self, EventError> {
                let Some(t) = EventType::parse(event_type) else {
                    return Err(EventError::UnknownType(event_type.to_owned()));
                };
                let event = match t {
                    $(EventType::$variant => Self::$variant(
                        serde_path_to_error::deserialize(data)
                            .map_err(|e| EventError::InvalidPayload(FieldError::from_serde(e)))?,
                    )),*
                };
                event.validate().map_err(EventError::InvalidPayload)?;
                Ok(event)
            }
        }

        /// An event serializes as its payload alone: the type travels in the envelope.
        impl Serialize for Event {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $(Self::$variant(p) => p.serialize(s)),* }
            }
        }
    };
}

for_each_event!(define_events);

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_round_trips_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::ALL.len(), 22);
    }

    #[test]
    fn routes_agent_events_to_both_rooms() {
        let e = Event::from_json(
            "agent.status_changed",
            json!({"agent_id": "a1", "status": "busy", "project_id": 7}),
        )
        .unwrap();
        assert_eq!(
            e.target().rooms(),
            vec![
                RoomName::parse("agent:a1").unwrap(),
                RoomName::parse("project:7").unwrap()
            ]
        );
    }

    #[test]
    fn reports_the_failing_field() {
        let err = |t, d| match Event::from_json(t, d) {
            Err(EventError::InvalidPayload(f)) => f.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("project.updated", json!({})), "project_id");
        assert_eq!(
            err("project.updated", json!({"project_id": "a b"})),
            "project_id"
        );
        assert_eq!(
            err("project.updated", json!({"project_id": 1, "x": 1})),
            "x"
        );
        assert_eq!(
            err(
                "workflow.progress",
                json!({"workflow_id": 1, "project_id": 1, "progress": 101})
            ),
            "progress"
        );
        assert_eq!(
            err(
                "workflow.progress",
                json!({"workflow_id": 1, "project_id": 1, "progress": 1000})
            ),
            "progress"
        );
        assert_eq!(
            err("ai.suggestion", json!({"suggestion_id": 1, "content": "x"})),
            "user_id"
        );
        assert_eq!(err("pr.created", json!(null)), "data");
        assert_eq!(
            err(
                "project.updated",
                json!({"project_id": 1, "project_name": 5})
            ),
            "project_name"
        );
    }

    #[test]
    fn unknown_type() {
        assert_eq!(
            Event::from_json("nope", json!({})),
            Err(EventError::UnknownType("nope".into()))
        );
    }

    #[test]
    fn ai_suggestion_routing() {
        let to_user = Event::from_json(
            "ai.suggestion",
            json!({"suggestion_id": "s", "content": "c", "user_id": "u", "project_id": "p"}),
        )
        .unwrap();
        assert_eq!(to_user.target().room, RoomName::parse("user:u").unwrap());
        let to_project = Event::from_json(
            "ai.suggestion",
            json!({"suggestion_id": "s", "content": "c", "project_id": "p"}),
        )
        .unwrap();
        assert_eq!(
            to_project.target().room,
            RoomName::parse("project:p").unwrap()
        );
    }
}
