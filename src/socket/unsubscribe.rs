//! `unsubscribe` `{room}` or `{rooms: [...]}`: leaving a room one is not in is not an error.

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::reply::{CommandError, Responder};
use super::subscribe::parse_rooms;
use super::{SocketCtx, identity_of, share_of};
use crate::rooms::RoomName;

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    let result = parse_rooms(payload).and_then(|rooms| {
        let identity = identity_of(&s).ok_or_else(|| CommandError::Forbidden("*".into()))?;
        let current = s.rooms();
        let (held, scoped): (Vec<&RoomName>, Vec<_>) = rooms
            .iter()
            .map(|r| (r, r.scoped(&identity.tenant)))
            .filter(|(_, scoped)| current.contains(scoped))
            .unzip();
        s.leave(scoped);
        if let Some(share) = share_of(&s) {
            ctx.presence.left(&share, &identity, held);
        }
        Ok(json!({"ok": true, "rooms": rooms}))
    });
    reply.result(result);
}
