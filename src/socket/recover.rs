//! Recovery on reconnect: the handshake's `auth.since` `{room: {epoch, seq}}` names where the
//! client stopped; the socket re-joins those rooms (access checked again) and receives
//! every missed event in order, before any live event of those rooms, or learns of a gap.
//! The same whichever history store the node has and whichever node the client comes
//! back to: [`crate::history::HistoryStore::catch_up`] does the ordering. Over any
//! [`Connection`]: a Socket.IO socket (`auth.since`) or a `/ws/json` one (`?since=`).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::command::Connection;
use crate::auth::Identity;
use crate::history::{CatchUp, Cursor, Positions, Wanted};
use crate::rooms::RoomName;
use crate::services::Services;

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
    /// Where each room the socket was put in is (the rooms joined by default too): every
    /// event after it reaches the socket.
    pub positions: Positions,
}

/// Joins `defaults` and the rooms of `auth.since`, calls `send_established` with the
/// report, then sends the backlog; no live event of a recovered room reaches the socket
/// before its backlog. A room of `since` that is also a default is joined only once its
/// backlog is ready, so it gets no live event early either. `emit` sends one event of the
/// backlog (false: the connection is gone, stop).
pub async fn recover(
    conn: &dyn Connection,
    services: &Services,
    identity: &Identity,
    auth: Option<&Value>,
    defaults: &[RoomName],
    send_established: impl FnOnce(&Outcome),
    emit: impl FnMut(&str, &RawValue) -> bool,
) {
    let since = auth
        .and_then(|a| serde_json::from_value::<Since>(a.clone()).ok())
        .and_then(|s| s.since)
        .unwrap_or_default();
    let mut outcome = Outcome {
        rooms: Vec::new(),
        report: Map::new(),
        recovered: !since.is_empty(),
        positions: Positions::new(),
    };
    let named: HashSet<Option<RoomName>> = since.keys().map(|k| RoomName::parse(k)).collect();
    let defaults: Vec<RoomName> = defaults
        .iter()
        .filter(|r| !named.contains(&Some((*r).clone())))
        .cloned()
        .collect();
    conn.join(
        defaults
            .iter()
            .map(|r| r.scoped(&identity.tenant))
            .collect::<Vec<_>>(),
    );
    let accepted = check(conn, services, identity, since, &mut outcome);
    let mut send_established = Some(send_established);
    services
        .history
        .catch_up(
            &identity.tenant,
            &accepted,
            &defaults,
            || join(conn, services, identity, &accepted),
            |found| {
                record(conn, &accepted, found, &mut outcome);
                if let Some(send) = send_established.take() {
                    send(&outcome);
                }
            },
            emit,
        )
        .await;
}

/// Checks every room of `since` against the token and the room limit; refused rooms go
/// into the report.
fn check(
    conn: &dyn Connection,
    services: &Services,
    identity: &Identity,
    since: Map<String, Value>,
    outcome: &mut Outcome,
) -> Vec<Wanted> {
    let mut accepted = Vec::new();
    let mut count = conn
        .rooms()
        .iter()
        .filter(|r| !crate::rooms::is_identity_room(r))
        .count();
    for (name, cursor) in since {
        let refuse = |code: crate::errors::Code| json!({ "error": code.as_str() });
        let Some(room) = RoomName::parse(&name) else {
            outcome
                .report
                .insert(name, refuse(crate::errors::Code::InvalidRoom));
            outcome.recovered = false;
            continue;
        };
        if !room.allows(identity) {
            outcome
                .report
                .insert(name, refuse(crate::errors::Code::Forbidden));
            outcome.recovered = false;
            continue;
        }
        count += 1;
        if count > services.config.limits.max_rooms_per_socket {
            outcome
                .report
                .insert(name, refuse(crate::errors::Code::TooManyRooms));
            outcome.recovered = false;
            continue;
        }
        accepted.push(Wanted {
            scoped: room.scoped(&identity.tenant).into_owned(),
            room,
            cursor: serde_json::from_value::<Cursor>(cursor).ok(),
        });
    }
    accepted
}

/// Joins the accepted rooms and records the join for presence.
fn join(conn: &dyn Connection, services: &Services, identity: &Identity, rooms: &[Wanted]) {
    let scoped: Vec<std::borrow::Cow<'static, str>> =
        rooms.iter().map(|a| a.scoped.clone().into()).collect();
    conn.join(scoped.clone());
    if let Some(share) = conn.share()
        && !services
            .presence
            .joined(&share, identity, rooms.iter().map(|a| &a.room))
    {
        // The socket left meanwhile: the adapter must not keep it in these rooms.
        conn.leave(scoped);
    }
}

/// Puts what the catch-up found into the outcome: the rooms re-joined, each one's report
/// entry and position, and the positions of the rooms joined by default. Without history
/// (the store unreachable) the socket connects all the same, every room of `since` a gap.
fn record(conn: &dyn Connection, accepted: &[Wanted], found: CatchUp, outcome: &mut Outcome) {
    match found.defaults {
        Ok(positions) => outcome.positions = positions,
        Err(e) => tracing::warn!(sid = %conn.id(), "connect without positions: {e}"),
    }
    let caught = match found.rooms {
        Ok(caught) => caught,
        Err(e) => {
            tracing::warn!(sid = %conn.id(), "recovery could not read history: {e}");
            outcome.recovered = false;
            for w in accepted {
                outcome.rooms.push(w.room.clone());
                outcome
                    .report
                    .insert(w.room.to_string(), json!({ "gap": true }));
            }
            return;
        }
    };
    for (w, room) in accepted.iter().zip(caught) {
        outcome.rooms.push(w.room.clone());
        if room.replayed.is_none() {
            outcome.recovered = false;
        }
        let entry = report(&room.epoch, room.seq, room.replayed);
        outcome.report.insert(w.room.to_string(), entry);
        let cursor = Cursor {
            epoch: room.epoch,
            seq: room.seq,
        };
        outcome.positions.insert(w.room.to_string(), cursor);
    }
}

/// The report entry of one room: where the room is, and what was replayed or the gap.
fn report(epoch: &str, seq: u64, replayed: Option<usize>) -> Value {
    match replayed {
        Some(n) => json!({ "epoch": epoch, "seq": seq, "replayed": n }),
        None => json!({ "epoch": epoch, "seq": seq, "gap": true }),
    }
}
