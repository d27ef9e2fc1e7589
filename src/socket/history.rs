//! `history` `{room, since_seq?, limit?}` → `{ok, room, epoch, seq, gap, events}`, for
//! sockets subscribed to the room.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::reply::{CommandError, Responder};
use super::{SocketCtx, identity_of};
use crate::history::default_page;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryRequest {
    room: String,
    #[serde(default)]
    since_seq: u64,
    #[serde(default = "default_page")]
    limit: usize,
}

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    let result = async {
        let request: HistoryRequest = payload
            .ok()
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| {
                CommandError::InvalidPayload(
                    "expected {\"room\": \"<name>\", \"since_seq\"?: n, \"limit\"?: n}".into(),
                )
            })?;
        let room = RoomName::parse(&request.room).ok_or(CommandError::InvalidRoom(request.room))?;
        let identity = identity_of(&s).ok_or_else(|| CommandError::Forbidden(room.to_string()))?;
        if !s.rooms().contains(&room.scoped(&identity.tenant)) {
            return Err(CommandError::NotSubscribed(room.to_string()));
        }
        let page = ctx
            .history
            .page(&identity.tenant, &room, request.since_seq, request.limit)
            .await
            .map_err(|e| CommandError::Unavailable(e.0))?;
        let mut body = serde_json::to_value(&page).unwrap_or_default();
        body["ok"] = json!(true);
        Ok(body)
    }
    .await;
    reply.result(result);
}
