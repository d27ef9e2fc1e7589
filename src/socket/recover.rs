//! Recovery on reconnect: the handshake's `auth.since` `{room: {epoch, seq}}` names where the
//! client stopped; the socket re-joins those rooms (access checked again) and receives
//! every missed event in order, before any live event of those rooms, or learns of a gap.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::SocketCtx;
use crate::auth::Identity;
use crate::history::{Cursor, Replay};
use crate::rooms::RoomName;

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: Option<Map<String, Value>>,
}

/// What `connection.established` reports of a recovery.
pub struct Outcome {
    /// Rooms re-joined, for the `rooms` list.
    pub rooms: Vec<RoomName>,
    /// `{room: {replayed, epoch, seq} | {gap: true, epoch?, seq?} | {error}}`.
    pub report: Map<String, Value>,
    /// True when every room was recovered completely.
    pub recovered: bool,
}

/// Re-joins the rooms of `auth.since` and returns the report; `send` is then called with
/// the backlog while the rooms' logs are still held, so no live event overtakes it.
pub async fn recover<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    identity: &Identity,
    auth: Option<&Value>,
    send_established: impl FnOnce(&Outcome),
) {
    let since = auth
        .and_then(|a| serde_json::from_value::<Since>(a.clone()).ok())
        .and_then(|s| s.since)
        .unwrap_or_default();
    let mut outcome = Outcome {
        rooms: Vec::new(),
        report: Map::new(),
        recovered: !since.is_empty(),
    };
    // Check every room first; all accepted rooms are then locked, joined and replayed.
    let mut accepted: Vec<(RoomName, Option<Cursor>)> = Vec::new();
    let current: HashSet<_> = s.rooms().into_iter().collect();
    let mut count = current.len();
    for (name, cursor) in since {
        let refuse = |code: &str| json!({ "error": code });
        let Some(room) = RoomName::parse(&name) else {
            outcome.report.insert(name, refuse("invalid_room"));
            outcome.recovered = false;
            continue;
        };
        if !room.allows(identity) {
            outcome.report.insert(name, refuse("forbidden"));
            outcome.recovered = false;
            continue;
        }
        if !current.contains(&room.scoped(&identity.tenant)) {
            count += 1;
        }
        if count > ctx.max_rooms {
            outcome.report.insert(name, refuse("too_many_rooms"));
            outcome.recovered = false;
            continue;
        }
        accepted.push((room, serde_json::from_value::<Cursor>(cursor).ok()));
    }

    let keys: Vec<_> = accepted
        .iter()
        .map(|(room, _)| (room.scoped(&identity.tenant).into_owned(), room.clone()))
        .collect();
    let mut logs = match &ctx.history {
        Some(history) => history.lock(&keys).await,
        None => Vec::new(),
    };
    let fresh: Vec<RoomName> = accepted
        .iter()
        .filter(|(r, _)| !current.contains(&r.scoped(&identity.tenant)))
        .map(|(r, _)| r.clone())
        .collect();
    s.join(keys.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
    ctx.presence.joined(identity, &fresh);

    let mut backlog = Vec::new();
    for (i, (room, cursor)) in accepted.iter().enumerate() {
        outcome.rooms.push(room.clone());
        let Some(log) = logs.get_mut(i) else {
            // No history on this node (cluster mode): nothing can be proven complete.
            outcome
                .report
                .insert(room.to_string(), json!({ "gap": true }));
            outcome.recovered = false;
            continue;
        };
        let here = json!({ "epoch": log.epoch, "seq": log.last_seq });
        let replay = match cursor {
            Some(cursor) => log.since(cursor),
            None => Replay::Gap,
        };
        let mut entry = here;
        match replay {
            Replay::Events(events) => {
                entry["replayed"] = json!(events.len());
                backlog.extend(events);
            }
            Replay::Gap => {
                entry["gap"] = json!(true);
                outcome.recovered = false;
            }
        }
        outcome.report.insert(room.to_string(), entry);
    }

    send_established(&outcome);
    // In publish order; an event in two replayed rooms (one payload) is sent once.
    backlog.sort_by_key(|e| e.at);
    let mut seen = HashSet::new();
    backlog.retain(|e| seen.insert(std::sync::Arc::as_ptr(&e.payload).cast::<u8>() as usize));
    for entry in backlog {
        if let Err(e) = s.emit(&*entry.event, &*entry.payload) {
            tracing::debug!(sid = %s.id, "replay stopped: {e}");
            break;
        }
    }
    drop(logs);
}
