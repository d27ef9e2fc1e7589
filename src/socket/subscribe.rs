//! `subscribe` `{room}` or `{rooms: [...]}`: all-or-nothing, checked against the token; the
//! ack gives each room's position (`{epoch, seq}`), the cursor to recover from.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::reply::{CommandError, Responder};
use super::{SocketCtx, identity_of, share_of};
use crate::auth::Identity;
use crate::history::Positions;
use crate::rooms::RoomName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsRequest {
    room: Option<Value>,
    rooms: Option<Vec<Value>>,
}

/// Parses `{room}` / `{rooms}` into room names, deduplicated, in request order.
pub(super) fn parse_rooms(
    payload: Result<Value, impl std::fmt::Display>,
) -> Result<Vec<RoomName>, CommandError> {
    let invalid = |m: &str| CommandError::InvalidPayload(m.to_owned());
    let payload =
        payload.map_err(|e| CommandError::InvalidPayload(format!("unreadable payload: {e}")))?;
    let request: RoomsRequest = serde_json::from_value(payload).map_err(|_| {
        invalid("expected {\"room\": \"<name>\"} or {\"rooms\": [\"<name>\", ...]}")
    })?;
    let raw = match (request.room, request.rooms) {
        (Some(room), None) => vec![room],
        (None, Some(rooms)) if !rooms.is_empty() => rooms,
        (None, Some(_)) => return Err(invalid("rooms must not be empty")),
        _ => return Err(invalid("give either room or rooms")),
    };
    let mut rooms = Vec::with_capacity(raw.len());
    for value in raw {
        let Value::String(name) = value else {
            return Err(invalid("room names are strings"));
        };
        let room = RoomName::parse(&name).ok_or(CommandError::InvalidRoom(name))?;
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

pub async fn handle<A: Adapter>(
    s: SocketRef<A>,
    State(ctx): State<SocketCtx>,
    TryData(payload): TryData<Value>,
    reply: Responder<A>,
) {
    let result = match join(&s, &ctx, payload) {
        Ok((identity, rooms)) => Ok(acked(&s, &ctx, &identity, rooms).await),
        Err(e) => Err(e),
    };
    reply.result(result);
}

/// `{ok, rooms, positions}`, the positions read after the socket joined the rooms, so every
/// event after them reaches it live.
async fn acked<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    identity: &Identity,
    rooms: Vec<RoomName>,
) -> Value {
    let positions = match ctx.history.positions(&identity.tenant, &rooms).await {
        Ok(positions) => positions,
        Err(e) => {
            tracing::warn!(sid = %s.id, "subscribe without positions: {e}");
            Positions::new()
        }
    };
    json!({"ok": true, "rooms": rooms, "positions": positions})
}

/// Checks and joins the rooms of the request; returns them, in request order.
fn join<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    payload: Result<Value, impl std::fmt::Display>,
) -> Result<(Arc<Identity>, Vec<RoomName>), CommandError> {
    let rooms = parse_rooms(payload)?;
    let identity = identity_of(s).ok_or_else(|| CommandError::Forbidden("*".into()))?;
    if let Some(denied) = rooms.iter().find(|r| !r.allows(&identity)) {
        return Err(CommandError::Forbidden(denied.to_string()));
    }
    let current: HashSet<_> = s.rooms().into_iter().collect();
    let mut count = current.len();
    let mut to_join = Vec::with_capacity(rooms.len());
    let mut joined = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let scoped = room.scoped(&identity.tenant);
        if current.contains(&scoped) {
            continue;
        }
        count += 1;
        if count > ctx.max_rooms {
            return Err(CommandError::TooManyRooms {
                room: room.to_string(),
                limit: ctx.max_rooms,
            });
        }
        to_join.push(scoped);
        joined.push(room);
    }
    let Some(first_new) = to_join.first().cloned() else {
        return Ok((identity, rooms));
    };
    s.join(to_join.clone());
    // Commands of one socket run concurrently: two subscribes may both pass the check
    // above. Re-count after joining and undo this one if together they went over.
    if s.rooms().len() > ctx.max_rooms {
        s.leave(to_join);
        let room = RoomName::unscope(&first_new)
            .map_or("", |(_, r)| r)
            .to_owned();
        return Err(CommandError::TooManyRooms {
            room,
            limit: ctx.max_rooms,
        });
    }
    if let Some(share) = share_of(s)
        && !ctx.presence.joined(&share, &identity, joined)
    {
        // The socket left meanwhile: the adapter must not keep it in these rooms.
        s.leave(to_join);
    }
    Ok((identity, rooms))
}
