//! `subscribe` `{room}` or `{rooms: [...]}`: all-or-nothing, checked against the token; the
//! ack gives each room's position (`{epoch, seq}`), the cursor to recover from.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::history::Positions;
use crate::rooms::RoomName;

/// The request of `subscribe` and `unsubscribe`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomsRequest {
    room: Option<Value>,
    rooms: Option<Vec<Value>>,
}

impl RoomsRequest {
    pub(super) const USAGE: &str =
        "expected {\"room\": \"<name>\"} or {\"rooms\": [\"<name>\", ...]}";

    /// Unlike the other commands, a frame without a readable argument is told why.
    pub(super) fn decode(payload: Result<Value, String>) -> Result<Self, CommandError> {
        let payload = payload
            .map_err(|e| CommandError::InvalidPayload(format!("unreadable payload: {e}")))?;
        serde_json::from_value(payload)
            .map_err(|_| CommandError::InvalidPayload(Self::USAGE.into()))
    }

    /// The room names, deduplicated, in request order.
    pub(super) fn parse(self) -> Result<Vec<RoomName>, CommandError> {
        let invalid = |m: &str| CommandError::InvalidPayload(m.to_owned());
        let raw = match (self.room, self.rooms) {
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
}

#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct Subscribe(RoomsRequest);

impl Command for Subscribe {
    const NAME: &str = "subscribe";
    const USAGE: &str = RoomsRequest::USAGE;

    fn decode(payload: Result<Value, String>) -> Result<Self, CommandError> {
        RoomsRequest::decode(payload).map(Self)
    }

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        let rooms = self.0.parse()?;
        join(cx, &rooms)?;
        Ok(acked(cx, rooms).await)
    }
}

/// `{ok, rooms, positions}`, the positions read after the socket joined the rooms, so every
/// event after them reaches it live.
async fn acked(cx: &CommandCx<'_>, rooms: Vec<RoomName>) -> Value {
    let positions = match cx
        .services
        .history
        .positions(&cx.identity.tenant, &rooms)
        .await
    {
        Ok(positions) => positions,
        Err(e) => {
            tracing::warn!(sid = %cx.conn.id(), "subscribe without positions: {e}");
            Positions::new()
        }
    };
    json!({"ok": true, "rooms": rooms, "positions": positions})
}

/// Checks and joins the rooms of the request.
fn join(cx: &CommandCx<'_>, rooms: &[RoomName]) -> Result<(), CommandError> {
    let identity = &cx.identity;
    let max_rooms = cx.services.config.limits.max_rooms_per_socket;
    if let Some(denied) = rooms.iter().find(|r| !r.allows(identity)) {
        return Err(CommandError::Forbidden(denied.to_string()));
    }
    let current: HashSet<_> = cx.conn.rooms().into_iter().collect();
    let mut count = cx.public_room_count();
    let mut to_join = Vec::with_capacity(rooms.len());
    let mut joined = Vec::with_capacity(rooms.len());
    for room in rooms {
        let scoped = room.scoped(&identity.tenant);
        if current.contains(&scoped) {
            continue;
        }
        count += 1;
        if count > max_rooms {
            return Err(CommandError::TooManyRooms {
                room: room.to_string(),
                limit: max_rooms,
            });
        }
        to_join.push(scoped);
        joined.push(room);
    }
    let Some(first_new) = to_join.first().cloned() else {
        return Ok(());
    };
    cx.conn.join(to_join.clone());
    // Commands of one socket run concurrently: two subscribes may both pass the check
    // above. Re-count after joining and undo this one if together they went over.
    if cx.public_room_count() > max_rooms {
        cx.conn.leave(to_join);
        let room = RoomName::unscope(&first_new)
            .map_or("", |(_, r)| r)
            .to_owned();
        return Err(CommandError::TooManyRooms {
            room,
            limit: max_rooms,
        });
    }
    if let Some(share) = cx.conn.share()
        && !cx.services.presence.joined(&share, identity, joined)
    {
        // The socket left meanwhile: the adapter must not keep it in these rooms.
        cx.conn.leave(to_join);
    }
    Ok(())
}
