//! `unsubscribe` `{room}` or `{rooms: [...]}`: leaving a room one is not in is not an error.

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, TryData};

use super::identity_of;
use super::reply::{CommandError, Responder};
use super::subscribe::parse_rooms;

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    let result = parse_rooms(payload).and_then(|rooms| {
        let identity = identity_of(&s).ok_or_else(|| CommandError::Forbidden("*".into()))?;
        s.leave(
            rooms
                .iter()
                .map(|r| r.scoped(&identity.tenant))
                .collect::<Vec<_>>(),
        );
        Ok(json!({"ok": true, "rooms": rooms}))
    });
    reply.result(result);
}
