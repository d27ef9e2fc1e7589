//! `system.*` events → `global`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Payload, Target};
use crate::rooms::RoomName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// `system.notification` → `global` of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemNotification {
    pub title: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

impl Payload for SystemNotification {
    fn target(&self) -> Target {
        Target::one(RoomName::Global)
    }
}
