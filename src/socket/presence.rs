//! `presence` `{room}` → `{ok, room, users: [{user_id, connections}], connections}`, for
//! sockets subscribed to the room.

use serde::Deserialize;
use serde_json::json;

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::presence::members;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Presence {
    room: String,
}

impl Command for Presence {
    const NAME: &str = "presence";
    const USAGE: &str = "expected {\"room\": \"<name>\"}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let room = cx.subscribed(self.room)?;
        let users = members(&*cx.services.presence_store, &cx.identity.tenant, &room)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let connections: u64 = users.iter().map(|m| m.connections).sum();
        Ok(json!({"ok": true, "room": room, "users": users, "connections": connections}))
    }
}
