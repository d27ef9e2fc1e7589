//! `GET /api/v1/sse?rooms=project:42,user:alice`: the rooms' events as Server-Sent Events,
//! for a plain `EventSource` (WEBSOCKET_API.md section 14).
//!
//! The request is screened as a socket handshake is: the address's handshake budget first
//! (nothing else is done for a refused address), then the client JWT (`Authorization:
//! Bearer` or `?token=`, never logged), the user's handshake budget, the rooms against the
//! token's grants, and last the connection limits (the connection is counted like a socket
//! until it ends). Every refusal is the usual JSON error. Then the connection joins its
//! rooms in [`crate::sse::SseHub`], catches up from `Last-Event-ID` (or
//! `?last_event_id=`) with the history store's catch-up, the one sockets recover with,
//! sends each `?streams=<id>:<offset>` snapshot under the stream's delivery lock (as
//! `stream.resume` does), and streams what comes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::{AuthError, Identity};
use crate::errors::Message;
use crate::events::{FieldError, Timestamp};
use crate::history::{CatchUp, Cursor, Wanted};
use crate::limits::{LimitError, Slot};
use crate::rooms::RoomName;
use crate::sse::{Frame, Pushed, Queue, ResumeToken};
use crate::streams::StreamId;

/// A token longer than this is refused `token_invalid` unread (as at a socket handshake).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The most streams one connection may ask snapshots of.
const MAX_STREAMS: usize = 32;

/// The query of the request; other parameters are ignored (cache busters).
#[derive(Default)]
struct Params {
    rooms: Option<String>,
    token: Option<String>,
    last_event_id: Option<String>,
    streams: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match &*key {
                "rooms" => &mut params.rooms,
                "token" => &mut params.token,
                "last_event_id" => &mut params.last_event_id,
                "streams" => &mut params.streams,
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value.into_owned());
            }
        }
        params
    }
}

fn refused(
    template: Message,
    args: &[(&str, &dyn std::fmt::Display)],
    retry: Option<u64>,
) -> ApiError {
    ApiError::Refused {
        template,
        message: template.render(args),
        retry_after_ms: retry,
    }
}

pub(super) async fn sse(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let params = Params::parse(parts.uri.query());
    let identity = screen(&state, &parts, params.token.as_deref()).await?;
    let rooms = rooms(&state, &identity, params.rooms.as_deref())?;
    let streams = streams(&state, &identity, &rooms, params.streams.as_deref()).await?;
    let resume = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|v| !v.is_empty())
        .or(params.last_event_id)
        .map(|text| ResumeToken::decode(&text));
    let slot = admit(&state, &identity)?;
    let opened = open(&state, &identity, &rooms, resume).await;
    snapshots(&state, &identity, &opened.queue, &streams).await;
    tracing::debug!(
        user_id = %identity.user_id,
        tenant = %identity.tenant,
        rooms = rooms.len(),
        "sse connection opened"
    );
    Ok(respond(&state, &identity, opened, slot))
}

/// Screens a connection request (SSE, `/ws/json`) as a socket handshake is: the address's
/// handshake budget first (nothing costly for an address over it: not even the token), then
/// the client JWT (`Authorization: Bearer`, else `token_in_query`), then the user's
/// handshake budget.
pub(super) async fn screen(
    state: &AppState,
    parts: &http::request::Parts,
    token_in_query: Option<&str>,
) -> Result<Arc<Identity>, ApiError> {
    let services = &state.services;
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| services.limits.client_ip(peer.ip(), &parts.headers));
    if let Some(ip) = ip
        && let Err(e) = services.limits.handshake(ip)
    {
        services.counters.limited("handshakes_ip");
        return Err(refused(
            Message::HandshakesFromAddress,
            &[],
            Some(e.retry_after_ms()),
        ));
    }
    let identity = Arc::new(authenticate(state, &parts.headers, token_in_query).await?);
    if let Err(e) = services.limits.user_handshake(&identity) {
        services.counters.limited("handshakes_user");
        return Err(refused(
            Message::SseUserHandshakes,
            &[],
            Some(e.retry_after_ms()),
        ));
    }
    Ok(identity)
}

/// The client JWT: the first non-empty `Authorization: Bearer`, else `?token=`.
async fn authenticate(
    state: &AppState,
    headers: &http::HeaderMap,
    from_query: Option<&str>,
) -> Result<Identity, ApiError> {
    let from_header = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .filter_map(|h| {
            let (scheme, token) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .find(|t| !t.is_empty());
    let result = match from_header.or(from_query) {
        None => Err(AuthError::TokenMissing),
        Some(token) if token.len() > MAX_TOKEN_BYTES => Err(AuthError::TokenInvalid),
        Some(token) => state.services.verifier.verify_or_refresh(token).await,
    };
    result.map_err(|e| {
        state.services.counters.auth_failed(e.code());
        let template = match e {
            AuthError::TokenMissing => Message::SseTokenMissing,
            other => other.handshake_message(),
        };
        refused(template, &[], None)
    })
}

/// The rooms of `?rooms=`, deduplicated, each granted by the token.
fn rooms(
    state: &AppState,
    identity: &Identity,
    raw: Option<&str>,
) -> Result<Vec<RoomName>, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::InvalidPayload(FieldError::new(
            "rooms",
            "rooms is required: ?rooms=project:42,user:alice",
        ))
    })?;
    let mut rooms: Vec<RoomName> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let room = RoomName::parse(name).ok_or_else(|| {
            ApiError::InvalidRoom(FieldError::new(
                "rooms",
                format!(
                    "invalid room {name:?}: rooms are global, user:<id>, project:<id> or agent:<id>; an id is 1 to 128 of [A-Za-z0-9_.-]"
                ),
            ))
        })?;
        if !rooms.contains(&room) {
            rooms.push(room);
        }
        let limit = state.services.config.limits.max_rooms_per_socket;
        if rooms.len() > limit {
            return Err(refused(Message::SseRooms, &[("limit", &limit)], None));
        }
    }
    if rooms.is_empty() {
        return Err(ApiError::InvalidPayload(FieldError::new(
            "rooms",
            "rooms names at least one room",
        )));
    }
    if let Some(denied) = rooms.iter().find(|r| !r.allows(identity)) {
        return Err(ApiError::Forbidden(format!(
            "your token does not grant the room {denied}"
        )));
    }
    Ok(rooms)
}

/// The streams of `?streams=<id>[:<offset>],...`, each in one of `rooms`.
async fn streams(
    state: &AppState,
    identity: &Identity,
    rooms: &[RoomName],
    raw: Option<&str>,
) -> Result<Vec<(StreamId, u64)>, ApiError> {
    let mut out: Vec<(StreamId, u64)> = Vec::new();
    let invalid = |m: String| ApiError::InvalidPayload(FieldError::new("streams", m));
    for item in raw
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let (id, offset) = match item.rsplit_once(':') {
            Some((id, offset)) => (id, offset.parse::<u64>().ok()),
            None => (item, Some(0)),
        };
        let (Some(id), Some(offset)) = (StreamId::parse(id), offset) else {
            return Err(invalid(format!(
                "{item:?}: streams are <stream_id>:<offset>, the offset in code points"
            )));
        };
        if !out.iter().any(|(known, _)| *known == id) {
            out.push((id, offset));
        }
        if out.len() > MAX_STREAMS {
            return Err(invalid(format!("at most {MAX_STREAMS} streams")));
        }
    }
    for (id, _) in &out {
        let info = state
            .services
            .streams
            .info(&identity.tenant, id)
            .await
            .map_err(ApiError::Stream)?;
        if !rooms.contains(&info.room) {
            return Err(invalid(format!(
                "the stream {id} is in the room {}: add it to rooms",
                info.room
            )));
        }
    }
    Ok(out)
}

/// Counts the connection against the connection limits, as a socket.
pub(super) fn admit(state: &AppState, identity: &Arc<Identity>) -> Result<Slot, ApiError> {
    state
        .services
        .limits
        .connections
        .admit(identity)
        .map_err(|e| match e {
            LimitError::TooManyConnections { which, limit } => {
                state.services.counters.limited(match which {
                    "node" => "connections_node",
                    "tenant" => "connections_tenant",
                    _ => "connections_user",
                });
                refused(
                    Message::SseConnections,
                    &[("which", &which), ("limit", &limit)],
                    None,
                )
            }
            // `admit` refuses with a connection limit only.
            other => ApiError::Internal(other.to_string()),
        })
}

/// A connection in its rooms, its catch-up queued.
struct Opened {
    queue: Queue,
    /// Where it starts in each room: the `id:` of `connection.established`.
    start: ResumeToken,
}

/// Joins the rooms and catches up: `connection.established` (with the starting resume
/// token), a `gap` for each room that cannot be recovered, then the backlog, all queued
/// before any live event of those rooms.
async fn open(
    state: &AppState,
    identity: &Identity,
    rooms: &[RoomName],
    resume: Option<Option<ResumeToken>>,
) -> Opened {
    let services = &state.services;
    let tenant = &identity.tenant;
    let queue = state.sse.open();
    let conn = queue.conn.clone();
    let buffer = state.sse.buffer();
    let (mut wanted, mut defaults) = (Vec::new(), Vec::new());
    for room in rooms {
        let cursor = match &resume {
            None => None,
            Some(None) => Some(None),
            Some(Some(token)) => token.0.get(&room.to_string()).map(|(epoch, seq)| {
                Some(Cursor {
                    epoch: epoch.clone(),
                    seq: *seq,
                })
            }),
        };
        match cursor {
            // A room the token has (or an unreadable token: a gap) recovers.
            Some(cursor) => wanted.push(Wanted {
                scoped: room.scoped(tenant).into_owned(),
                room: room.clone(),
                cursor,
            }),
            None => defaults.push(room.clone()),
        }
    }
    // Its identity room too (no event is ever sent there): a revocation of the user
    // (`POST /api/v1/users/{id}/disconnect`) finds the connection by it, as it finds sockets.
    let identity_room = crate::rooms::identity_room(tenant, &identity.user_id).into_owned();
    state.sse.join(
        &conn,
        defaults
            .iter()
            .map(|r| r.scoped(tenant).into_owned())
            .chain([identity_room]),
    );
    let mut start = ResumeToken::default();
    services
        .history
        .catch_up(
            tenant,
            &wanted,
            &defaults,
            || {
                state
                    .sse
                    .join(&conn, wanted.iter().map(|w| w.scoped.clone()))
            },
            |found| {
                let (established, gaps) =
                    established(state, identity, rooms, &wanted, found, &mut start);
                conn.first(Arc::new(Frame::notice(
                    "connection.established",
                    &established,
                    true,
                )));
                for gap in gaps {
                    conn.push(Arc::new(Frame::notice("gap", &gap, false)), false, buffer);
                }
            },
            |event, payload| {
                conn.push(Arc::new(Frame::event(event, payload)), false, buffer) == Pushed::Queued
            },
        )
        .await;
    Opened { queue, start }
}

/// `connection.established` and the `gap` events; sets `start`, where the connection
/// starts in each room (a recovered room at the client's cursor: its backlog follows).
fn established(
    state: &AppState,
    identity: &Identity,
    rooms: &[RoomName],
    wanted: &[Wanted],
    found: CatchUp,
    start: &mut ResumeToken,
) -> (Value, Vec<Value>) {
    let mut recovery = serde_json::Map::new();
    let mut gaps = Vec::new();
    let mut recovered = !wanted.is_empty();
    match found.defaults {
        Ok(positions) => {
            for (room, cursor) in positions {
                start.0.insert(room, (cursor.epoch, cursor.seq));
            }
        }
        Err(e) => tracing::warn!("sse connection without positions: {e}"),
    }
    match found.rooms {
        Ok(caught) => {
            for (w, room) in wanted.iter().zip(caught) {
                let name = w.room.to_string();
                match (room.replayed, &w.cursor) {
                    (Some(n), Some(cursor)) => {
                        recovery.insert(
                            name.clone(),
                            json!({"epoch": room.epoch, "seq": room.seq, "replayed": n}),
                        );
                        start.0.insert(name, (cursor.epoch.clone(), cursor.seq));
                    }
                    _ => {
                        recovered = false;
                        recovery.insert(
                            name.clone(),
                            json!({"epoch": room.epoch, "seq": room.seq, "gap": true}),
                        );
                        gaps.push(json!({
                            "room": name,
                            "epoch": room.epoch,
                            "seq": room.seq,
                            "since": w.cursor,
                        }));
                        start.0.insert(name, (room.epoch, room.seq));
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!("sse recovery could not read history: {e}");
            recovered = false;
            for w in wanted {
                let name = w.room.to_string();
                recovery.insert(name.clone(), json!({"gap": true}));
                gaps.push(json!({"room": name, "since": w.cursor}));
            }
        }
    }
    let positions: BTreeMap<&String, Value> = start
        .0
        .iter()
        .map(|(room, (epoch, seq))| (room, json!({"epoch": epoch, "seq": seq})))
        .collect();
    let established = json!({
        "user_id": identity.user_id.as_str(),
        "tenant": identity.tenant.as_str(),
        "rooms": rooms,
        "server_time": Timestamp::now(),
        "node_id": &*state.services.node_id,
        "recovered": recovered,
        "recovery": recovery,
        "positions": positions,
    });
    (established, gaps)
}

/// Queues a `stream.snapshot` for each stream asked for, read holding the stream's
/// delivery lock on this node: no delta queued after it is missing from it.
async fn snapshots(
    state: &AppState,
    identity: &Identity,
    queue: &Queue,
    streams: &[(StreamId, u64)],
) {
    let buffer = state.sse.buffer();
    for (id, offset) in streams {
        let data = match state
            .services
            .streams
            .resume(&identity.tenant, id, *offset)
            .await
        {
            Ok((snapshot, order)) => {
                let data = json!({
                    "stream_id": id.as_str(),
                    "room": snapshot.info.room,
                    "status": snapshot.info.status.as_str(),
                    "offset": snapshot.offset,
                    "text": snapshot.text,
                    "length": snapshot.info.length,
                });
                queue.conn.push(
                    Arc::new(Frame::notice("stream.snapshot", &data, false)),
                    false,
                    buffer,
                );
                drop(order);
                continue;
            }
            Err(e) => json!({
                "stream_id": id.as_str(),
                "error": {"code": e.template().code().as_str(), "message": e.message()},
            }),
        };
        queue.conn.push(
            Arc::new(Frame::notice("stream.snapshot", &data, false)),
            false,
            buffer,
        );
    }
}

/// What a connection's response stream keeps.
struct Writer {
    queue: Queue,
    token: ResumeToken,
    /// Counted against the connection limits until the stream ends.
    _slot: Slot,
    /// The token's expiry (plus the leeway): `auth.expired`, then the end.
    expires: tokio::time::Instant,
    /// `retry:` for the first event.
    retry: Option<Duration>,
    done: bool,
}

impl Writer {
    fn event(&mut self, frame: &Frame) -> Event {
        self.token.advance(frame);
        let mut event = Event::default().event(&frame.event).data(&*frame.data);
        if frame.with_id {
            event = event.id(self.token.encode());
        }
        if let Some(retry) = self.retry.take() {
            event = event.retry(retry);
        }
        event
    }
}

fn respond(
    state: &AppState,
    identity: &Identity,
    Opened { queue, start }: Opened,
    slot: Slot,
) -> Response {
    let config = &state.services.config;
    let now = crate::streams::now_ms() / 1000;
    let left = identity
        .expires_at
        .saturating_add(config.auth.leeway_secs)
        .saturating_sub(now)
        // Far enough: a token good for longer outlives any connection.
        .min(10 * 365 * 24 * 3600);
    let writer = Writer {
        queue,
        token: start,
        _slot: slot,
        expires: tokio::time::Instant::now() + Duration::from_secs(left),
        retry: Some(Duration::from_millis(config.sse.retry_ms)),
        done: false,
    };
    let stream = futures_util::stream::unfold(writer, |mut w| async move {
        if w.done {
            return None;
        }
        tokio::select! {
            frame = w.queue.next() => {
                let frame = frame?;
                let event = w.event(&frame);
                Some((Ok::<_, Infallible>(event), w))
            }
            _ = tokio::time::sleep_until(w.expires) => {
                w.done = true;
                let data = json!({"code": crate::errors::Code::TokenExpired.as_str()});
                Some((Ok(Event::default().event("auth.expired").data(data.to_string())), w))
            }
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(config.sse.heartbeat_secs))
                .text("heartbeat"),
        )
        .into_response();
    // Proxies that buffer answers (nginx) pass this one on as it comes.
    response
        .headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}
