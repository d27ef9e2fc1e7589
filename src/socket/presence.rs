//! `presence` `{room}` → `{ok, room, users: [{user_id, connections}], connections}`, for
//! sockets subscribed to the room.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::reply::{CommandError, Responder};
use super::{SocketCtx, identity_of};
use crate::presence::members;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceRequest {
    room: String,
}

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    let request = payload
        .ok()
        .and_then(|p| serde_json::from_value::<PresenceRequest>(p).ok())
        .ok_or_else(|| CommandError::InvalidPayload("expected {\"room\": \"<name>\"}".into()));
    let result = async {
        let request = request?;
        let room = RoomName::parse(&request.room).ok_or(CommandError::InvalidRoom(request.room))?;
        let identity = identity_of(&s).ok_or_else(|| CommandError::Forbidden(room.to_string()))?;
        if !s.rooms().contains(&room.scoped(&identity.tenant)) {
            return Err(CommandError::NotSubscribed(room.to_string()));
        }
        let users = members(&*ctx.presence_store, &identity.tenant, &room)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let connections: u64 = users.iter().map(|m| m.connections).sum();
        Ok(json!({"ok": true, "room": room, "users": users, "connections": connections}))
    }
    .await;
    reply.result(result);
}
