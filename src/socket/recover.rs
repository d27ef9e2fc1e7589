//! Recovery on reconnect: the handshake's `auth.since` `{room: {epoch, seq}}` names where the
//! client stopped; the socket re-joins those rooms (access checked again) and receives
//! every missed event in order, before any live event of those rooms, or learns of a gap.
//! The same on a single node (logs in memory) and in a cluster (Redis streams), whichever
//! node the client comes back to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::{SocketCtx, share_of};
use crate::auth::Identity;
use crate::history::redis::{Numbered, RoomRead, Stored};
use crate::history::{Cursor, History, HistoryStore, Positions, RedisHistory, Replay};
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
    /// Where each room the socket was put in is (the rooms joined by default too): every
    /// event after it reaches the socket.
    pub positions: Positions,
}

/// A room of `auth.since` the socket may re-join, with its scoped name.
struct Accepted {
    room: RoomName,
    scoped: String,
    cursor: Option<Cursor>,
}

/// Joins `defaults` and the rooms of `auth.since`, calls `send_established` with the
/// report, then sends the backlog; no live event of a recovered room reaches the socket
/// before its backlog. A room of `since` that is also a default is joined only once its
/// backlog is ready, so it gets no live event early either.
pub async fn recover<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    identity: &Identity,
    auth: Option<&Value>,
    defaults: &[RoomName],
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
        positions: Positions::new(),
    };
    let named: HashSet<Option<RoomName>> = since.keys().map(|k| RoomName::parse(k)).collect();
    let defaults: Vec<RoomName> = defaults
        .iter()
        .filter(|r| !named.contains(&Some((*r).clone())))
        .cloned()
        .collect();
    s.join(
        defaults
            .iter()
            .map(|r| r.scoped(&identity.tenant))
            .collect::<Vec<_>>(),
    );
    let accepted = check(s, ctx, identity, since, &mut outcome);
    let job = Job {
        s,
        ctx,
        identity,
        defaults,
        accepted,
        outcome,
    };
    match &ctx.history {
        HistoryStore::Memory(history) => from_memory(job, history, send_established).await,
        HistoryStore::Redis(history) => from_redis(job, history, send_established).await,
    }
}

/// What both ways of recovering work on.
struct Job<'a, A: Adapter> {
    s: &'a SocketRef<A>,
    ctx: &'a SocketCtx,
    identity: &'a Identity,
    /// Rooms joined by default (and not named in `since`), already joined.
    defaults: Vec<RoomName>,
    accepted: Vec<Accepted>,
    outcome: Outcome,
}

/// Checks every room of `since` against the token and the room limit; refused rooms go
/// into the report.
fn check<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    identity: &Identity,
    since: Map<String, Value>,
    outcome: &mut Outcome,
) -> Vec<Accepted> {
    let mut accepted = Vec::new();
    let mut count = s.rooms().len();
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
        count += 1;
        if count > ctx.max_rooms {
            outcome.report.insert(name, refuse("too_many_rooms"));
            outcome.recovered = false;
            continue;
        }
        accepted.push(Accepted {
            scoped: room.scoped(&identity.tenant).into_owned(),
            room,
            cursor: serde_json::from_value::<Cursor>(cursor).ok(),
        });
    }
    accepted
}

/// Joins the accepted rooms and records the join for presence.
fn join<A: Adapter>(s: &SocketRef<A>, ctx: &SocketCtx, identity: &Identity, rooms: &[Accepted]) {
    let scoped: Vec<String> = rooms.iter().map(|a| a.scoped.clone()).collect();
    s.join(scoped.clone());
    if let Some(share) = share_of(s)
        && !ctx
            .presence
            .joined(&share, identity, rooms.iter().map(|a| &a.room))
    {
        // The socket left meanwhile: the adapter must not keep it in these rooms.
        s.leave(scoped);
    }
}

/// The positions of the rooms joined by default, read after the join; without them (Redis
/// unreachable) the socket connects all the same.
async fn default_positions<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    identity: &Identity,
    defaults: &[RoomName],
    outcome: &mut Outcome,
) {
    match ctx.history.positions(&identity.tenant, defaults).await {
        Ok(positions) => outcome.positions = positions,
        Err(e) => tracing::warn!(sid = %s.id, "connect without positions: {e}"),
    }
}

/// The report entry of one room: where the room is, and what was replayed or the gap.
fn report(epoch: &str, seq: u64, replayed: Option<usize>) -> Value {
    match replayed {
        Some(n) => json!({ "epoch": epoch, "seq": seq, "replayed": n }),
        None => json!({ "epoch": epoch, "seq": seq, "gap": true }),
    }
}

fn emit<A: Adapter>(
    s: &SocketRef<A>,
    ctx: &SocketCtx,
    event: &str,
    payload: &serde_json::value::RawValue,
) -> bool {
    match s.emit(event, &super::Payload::new(ctx.parser, payload)) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(sid = %s.id, "replay stopped: {e}");
            false
        }
    }
}

/// Single node: the rooms' logs are held from reading the backlog to sending it, which
/// keeps publishes to those rooms waiting meanwhile.
async fn from_memory<A: Adapter>(
    job: Job<'_, A>,
    history: &History,
    send_established: impl FnOnce(&Outcome),
) {
    let Job {
        s,
        ctx,
        identity,
        defaults,
        accepted,
        mut outcome,
    } = job;
    // Joined already: read now, every later event reaches the socket.
    default_positions(s, ctx, identity, &defaults, &mut outcome).await;
    let keys: Vec<_> = accepted
        .iter()
        .map(|a| (a.scoped.clone(), a.room.clone()))
        .collect();
    let mut logs = history.lock(&keys).await;
    join(s, ctx, identity, &accepted);
    let mut backlog = Vec::new();
    for (a, log) in accepted.iter().zip(logs.iter_mut()) {
        outcome.rooms.push(a.room.clone());
        let replay = match &a.cursor {
            Some(cursor) => log.since(cursor),
            None => Replay::Gap,
        };
        let replayed = match replay {
            Replay::Events(events) => {
                let n = events.len();
                backlog.extend(events);
                Some(n)
            }
            Replay::Gap => {
                outcome.recovered = false;
                None
            }
        };
        let entry = report(&log.epoch, log.last_seq, replayed);
        outcome.report.insert(a.room.to_string(), entry);
        let cursor = Cursor {
            epoch: log.epoch.to_string(),
            seq: log.last_seq,
        };
        outcome.positions.insert(a.room.to_string(), cursor);
    }
    send_established(&outcome);
    // In publish order; an event in two replayed rooms (one payload) is sent once.
    backlog.sort_by_key(|e| e.at);
    let mut seen = HashSet::new();
    backlog.retain(|e| seen.insert(Arc::as_ptr(&e.payload).cast::<u8>() as usize));
    for entry in backlog {
        if !emit(s, ctx, &entry.event, &entry.payload) {
            break;
        }
    }
    drop(logs);
}

/// Cluster: registers for the rooms' live events, reads every backlog in one atomic step,
/// waits until this node has delivered what Redis numbered before the read, then, holding
/// the node's delivery lock, sends the backlog, then the live events that
/// arrived meanwhile and are newer than it, and joins the rooms.
async fn from_redis<A: Adapter>(
    job: Job<'_, A>,
    history: &RedisHistory,
    send_established: impl FnOnce(&Outcome),
) {
    let Job {
        s,
        ctx,
        identity,
        defaults,
        accepted,
        mut outcome,
    } = job;
    if accepted.is_empty() {
        // A plain connect: one round trip, for the positions of the rooms just joined.
        default_positions(s, ctx, identity, &defaults, &mut outcome).await;
        send_established(&outcome);
        return;
    }
    let scoped: Vec<String> = accepted.iter().map(|a| a.scoped.clone()).collect();
    let catchup = history.catchups.register(&scoped).await;
    let mut wanted: Vec<_> = accepted
        .iter()
        .map(|a| {
            let since = a.cursor.as_ref().map_or(0, |c| c.seq);
            (
                a.scoped.clone(),
                a.room.clone(),
                since,
                history.size_of(&a.room),
            )
        })
        .collect();
    // The default rooms' positions come with the same read (limit 0: the position only).
    wanted.extend(
        defaults
            .iter()
            .map(|r| (r.scoped(&identity.tenant).into_owned(), r.clone(), 0, 0)),
    );
    let reads = history.read_synced(&wanted).await.map(|mut reads| {
        let at = reads.len().min(accepted.len());
        for (room, read) in defaults.iter().zip(reads.split_off(at)) {
            let cursor = Cursor {
                epoch: read.epoch,
                seq: read.last_seq,
            };
            outcome.positions.insert(room.to_string(), cursor);
        }
        reads
    });
    let (_delivery, live) = history.catchups.finish(&catchup, &scoped).await;
    join(s, ctx, identity, &accepted);

    // The newest `seq` the read saw per room: live events up to it are in the backlog.
    let mut read_up_to: HashMap<&str, u64> = HashMap::new();
    let mut backlogs: Vec<Vec<Stored>> = Vec::new();
    match reads {
        Ok(reads) => {
            for (a, read) in accepted.iter().zip(reads) {
                outcome.rooms.push(a.room.clone());
                let RoomRead {
                    epoch,
                    last_seq,
                    events,
                    ..
                } = &read;
                let complete = a.cursor.as_ref().is_some_and(|c| read.complete_from(c));
                let replayed = complete.then_some(events.len());
                if !complete {
                    outcome.recovered = false;
                }
                outcome
                    .report
                    .insert(a.room.to_string(), report(epoch, *last_seq, replayed));
                let cursor = Cursor {
                    epoch: epoch.clone(),
                    seq: *last_seq,
                };
                outcome.positions.insert(a.room.to_string(), cursor);
                read_up_to.insert(&a.scoped, *last_seq);
                backlogs.push(if complete { read.events } else { Vec::new() });
            }
        }
        Err(e) => {
            tracing::warn!(sid = %s.id, "recovery could not read history: {e}");
            outcome.recovered = false;
            for a in &accepted {
                outcome.rooms.push(a.room.clone());
                outcome
                    .report
                    .insert(a.room.to_string(), json!({ "gap": true }));
            }
        }
    }
    send_established(&outcome);

    let mut sent = HashSet::new();
    for stored in merge(backlogs) {
        if sent.insert(stored.id.clone()) && !emit(s, ctx, &stored.event, &stored.payload) {
            return;
        }
    }
    for numbered in live {
        if newer(&numbered, &read_up_to) && sent.insert(numbered.id.clone()) {
            emit(s, ctx, &numbered.event, &numbered.payload);
        }
    }
}

/// Whether a live event is past what the backlog read saw in one of the socket's rooms
/// (every live event is, when the read failed).
fn newer(numbered: &Numbered, read_up_to: &HashMap<&str, u64>) -> bool {
    read_up_to.is_empty()
        || numbered
            .rooms
            .iter()
            .any(|p| read_up_to.get(p.room.as_str()).is_some_and(|m| p.seq > *m))
}

/// Merges per-room backlogs into one, oldest first by the time each was kept, keeping
/// every room's own order.
fn merge(backlogs: Vec<Vec<Stored>>) -> Vec<Stored> {
    let mut queues: Vec<std::collections::VecDeque<Stored>> =
        backlogs.into_iter().map(Into::into).collect();
    let mut merged = Vec::new();
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|e| (e.at_ms, i)))
            .min();
        let Some((_, i)) = next else { break };
        merged.extend(queues[i].pop_front());
    }
    merged
}
