//! Roomcast's own WebSocket transports, beside socketioxide's: connections that need no
//! Engine.IO session of socketioxide's, each one task that writes the hub's shared frames
//! in batches.
//! - [`json`]: `/ws/json`, the plain JSON protocol (WEBSOCKET_API.md section 17).
//! - [`sio`]: the lean path of Socket.IO clients that open a websocket directly
//!   (`transports: ["websocket"]`), WEBSOCKET_API.md section 18.
//!
//! Both are a [`Member`] of [`crate::sse::SseHub`]'s delivery, run the same commands
//! (`socket::execute_named`), rooms, recovery, presence, limits and token lifetime as a
//! socketioxide socket, and share this module's loop ([`run`]): what differs is the
//! [`Wire`], how a frame, a notice, an answer and a ping are written, and how a client
//! frame is read.
//!
//! Lean by construction: one task per connection, which reads the client's frames, writes
//! what the hub queued and keeps the connection's timers; no channel or task of its own
//! besides the hub's queue of shared frames (an event's text is made once per publish and
//! written to every recipient as it is); every frame queued when the task wakes is written
//! with one flush (one syscall for a burst); the read buffer is
//! `limits.ws_read_buffer_bytes`. Commands run each in a task of its own, so a slow one
//! (`rpc`, `lock.acquire` waiting) holds up neither the events nor the next command.

pub mod json;
pub mod sio;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketioxide_core::Sid;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::auth::Identity;
use crate::errors::{Code, Message as Text};
use crate::events::Timestamp;
use crate::hooks_out::{HookEvent, HookKind};
use crate::limits::{EventVerdict, Slot};
use crate::presence::Share;
use crate::rooms::{RoomName, identity_room};
use crate::services::Services;
use crate::socket::command::{Connection, Held};
use crate::socket::{CommandError, Established, execute_named, recover};
use crate::sse::{CloseReason, Frame, Kind, Queue, SseHub};

/// How many bytes tungstenite gathers before it writes without being flushed: frames fed
/// in one wake-up go out together up to this size.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// How long the last frames and the close may take to write before the connection is
/// dropped without them.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// The protocol a lean connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `/ws/json`: `{"type", "data"}` text frames, WebSocket pings.
    Json,
    /// Socket.IO v5 over Engine.IO v4, one socket of namespace `ns` (`/` or `/ws`).
    SocketIo { ns: &'static str },
}

impl Wire {
    fn kind(self) -> Kind {
        match self {
            Self::Json => Kind::Json,
            Self::SocketIo { ns } => Kind::Socket { ns },
        }
    }

    /// The namespace the connection is reported under (webhooks, logs).
    pub fn ns(self) -> &'static str {
        match self {
            Self::Json => json::PATH,
            Self::SocketIo { ns } => ns,
        }
    }

    /// The text `frame` is written as.
    fn text(self, frame: &Frame) -> Utf8Bytes {
        match self {
            Self::Json => frame.data.clone(),
            Self::SocketIo { ns } => frame.socketio(ns),
        }
    }

    /// `kind` with `data`, as the connection's own message.
    fn notice(self, kind: &str, data: &Value) -> Frame {
        match self {
            Self::Json => Frame::wire(json!({ "type": kind, "data": data }).to_string()),
            Self::SocketIo { ns } => {
                Frame::wire(crate::sse::socketio_event(ns, kind, &data.to_string()))
            }
        }
    }

    /// The ack of command `id` carrying `data`.
    fn ack(self, id: Value, data: &Value) -> Frame {
        match self {
            Self::Json => Frame::wire(json!({"type": "ack", "id": id, "data": data}).to_string()),
            Self::SocketIo { ns } => Frame::wire(sio::ack(ns, &id, data)),
        }
    }

    fn ping(self) -> Message {
        match self {
            Self::Json => Message::Ping(Default::default()),
            Self::SocketIo { .. } => Message::text(sio::PING),
        }
    }
}

/// A lean connection as commands and the hub see it.
pub struct Member {
    sid: Sid,
    sid_text: String,
    wire: Wire,
    identity: RwLock<Arc<Identity>>,
    share: Arc<Share>,
    hub: Arc<SseHub>,
    queued: Arc<crate::sse::Conn>,
    open: AtomicBool,
}

impl Connection for Member {
    fn id(&self) -> String {
        self.sid_text.clone()
    }

    fn identity(&self) -> Option<Arc<Identity>> {
        Some(self.current())
    }

    fn share(&self) -> Option<Arc<Share>> {
        Some(self.share.clone())
    }

    fn rooms(&self) -> Vec<Cow<'static, str>> {
        self.queued.rooms()
    }

    fn join(&self, rooms: Vec<Cow<'static, str>>) {
        self.hub
            .join(&self.queued, rooms.into_iter().map(Cow::into_owned));
    }

    fn leave(&self, rooms: Vec<Cow<'static, str>>) {
        self.hub.leave(&self.queued, &rooms);
    }

    fn replace_identity(&self, _old: &Identity, new: Arc<Identity>) {
        // The connection's task reads the new expiry at its next ping or deadline.
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    fn connected(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }
}

impl Member {
    fn current(&self) -> Arc<Identity> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queues a frame of the connection's own (never refused).
    fn send(&self, frame: Frame) {
        self.queued
            .push(Arc::new(frame), false, self.queued.buffer());
    }

    fn notice(&self, kind: &str, data: Value) {
        self.send(self.wire.notice(kind, &data));
    }

    /// The answer to a command: an ack when it has an id, else an `error` for a failure.
    fn answer(&self, id: Option<Value>, result: Result<Value, CommandError>) {
        match (id, result) {
            (Some(id), Ok(data)) => self.send(self.wire.ack(id, &data)),
            (Some(id), Err(e)) => {
                self.send(self.wire.ack(id, &json!({"ok": false, "error": e.body()})))
            }
            (None, Ok(_)) => {}
            (None, Err(e)) => self.notice("error", e.body()),
        }
    }

    /// Spends the event budget for one client command. `Some` ends the connection (the
    /// budget was abused); a refusal is answered here.
    fn spend(&self, services: &Services, id: &Option<Value>) -> Result<(), Option<End>> {
        match services.limits.event(self.sid) {
            EventVerdict::Allowed => Ok(()),
            EventVerdict::Refused(retry_after) => {
                services.counters.limited("events");
                let retry_after_ms = crate::limits::ceil_ms(retry_after);
                self.answer(
                    id.clone(),
                    Err(CommandError::RateLimited { retry_after_ms }),
                );
                Err(None)
            }
            EventVerdict::Abusive => {
                services.counters.limited("events");
                crate::metrics::Counters::incr(&services.counters.rate_limit_disconnects, 1);
                self.notice(
                    "error",
                    json!({"code": Text::EventAbuse.code().as_str(), "message": Text::EventAbuse.text()}),
                );
                Err(Some(End::Close(
                    CloseCode::Library(4029),
                    "rate_limit_exceeded",
                )))
            }
        }
    }

    /// Runs command `name` in a task of its own and queues its answer.
    fn execute(
        self: &Arc<Self>,
        services: &Arc<Services>,
        id: Option<Value>,
        name: String,
        payload: Result<Value, String>,
    ) {
        let (conn, services) = (self.clone(), services.clone());
        tokio::spawn(async move {
            let held = Held::default();
            let answer = execute_named(&name, &*conn, &services, payload, &held).await;
            // Queued before what `held` keeps back (a stream's deltas) can follow.
            conn.answer(id, answer);
            drop(held);
        });
    }
}

/// How a connection ended, as the server tells the client.
pub(crate) enum End {
    /// The client closed, went away or stopped answering pings: nothing to say.
    Gone,
    /// Closed with this code and reason, after what was queued.
    Close(CloseCode, &'static str),
    /// The same, after this last message: the hub's queue has ended already (a drain).
    CloseAfter(Box<Frame>, CloseCode, &'static str),
}

/// What a lean connection starts with, once its client is authenticated.
pub struct Accepted {
    pub identity: Arc<Identity>,
    /// `{"since": {...}}` as a socket's `auth` carries it (for `/ws/json`, from `?since=`).
    pub since: Option<Value>,
    /// Counted against the connection limits until the connection ends.
    pub slot: Slot,
}

/// `101 Switching Protocols` for a websocket request whose `Sec-WebSocket-Key` is `key`.
pub(crate) fn switching_protocols(key: &http::HeaderValue) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::{HeaderValue, header};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    let mut response = http::StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The tungstenite settings of a lean connection.
fn ws_config(services: &Services) -> WebSocketConfig {
    let limits = &services.config.limits;
    WebSocketConfig::default()
        .read_buffer_size(limits.ws_read_buffer_bytes.max(256))
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_message_size(Some(limits.ws_max_message_bytes))
        .max_frame_size(Some(limits.ws_max_frame_bytes))
}

/// `io` (an upgraded HTTP connection) as a server-side websocket.
pub(crate) async fn websocket<S>(io: S, services: &Services) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(services))).await
}

/// Runs an accepted connection of `wire` on `ws` until it ends; `sid` is its session id.
pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    wire: Wire,
    sid: Sid,
    services: Arc<Services>,
    hub: Arc<SseHub>,
    accepted: Accepted,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        identity,
        since,
        slot,
    } = accepted;
    let sid_text = sid.to_string();
    let queue = hub.open_lean(
        wire.kind(),
        &sid_text,
        services.config.limits.socket_buffer_packets,
    );
    let conn = Arc::new(Member {
        sid,
        sid_text,
        wire,
        identity: RwLock::new(identity.clone()),
        share: Arc::default(),
        queued: queue.conn.clone(),
        hub,
        open: AtomicBool::new(true),
    });
    tracing::debug!(sid = %conn.sid_text, ns = wire.ns(), user_id = %identity.user_id, tenant = %identity.tenant, "lean connection opened");
    // First, so a revocation finds the connection by its identity room from here on.
    conn.join(vec![identity_room(&identity.tenant, &identity.user_id)]);
    services.presence.connected(&identity);
    hook(&services, &conn, &identity, None);
    let defaults = [RoomName::Global, RoomName::User(identity.user_id.clone())];
    // Boxed: the catch-up's state is large and needed only now; in the connection's own
    // future it would stay reserved for the connection's life (every idle connection).
    Box::pin(recover::recover(
        &*conn,
        &services,
        &identity,
        since.as_ref(),
        &defaults,
        |outcome| {
            let established = Established::new(
                conn.sid_text.clone(),
                &identity,
                &services.node_id,
                &defaults,
                outcome,
            );
            let data = serde_json::to_value(&established).unwrap_or_default();
            conn.queued
                .first(Arc::new(wire.notice("connection.established", &data)));
        },
        |event, payload| {
            let frame = Arc::new(Frame::event(event, payload));
            conn.queued.push(frame, false, conn.queued.buffer()) == crate::sse::Pushed::Queued
        },
    ))
    .await;

    let end = run(ws, &conn, queue, &services).await;

    conn.open.store(false, Ordering::Relaxed);
    let identity = conn.current();
    let reason = match &end {
        End::Gone => "transport close",
        End::Close(_, reason) | End::CloseAfter(_, _, reason) => reason,
    };
    tracing::debug!(sid = %conn.sid_text, reason, "lean connection closed");
    if services.presence.disconnected(&conn.share, &identity) {
        hook(&services, &conn, &identity, Some(reason));
    }
    if services.locks.held_by(&conn.sid_text) > 0
        && let Some(broadcaster) = services.broadcaster.get()
    {
        broadcaster.release_socket_locks(&conn.sid_text).await;
    }
    drop(slot);
}

/// The connection's loop: frames in, queued frames out, pings and the token's deadlines.
/// Returns how it ended, once what the client should read has been written.
async fn run<S>(
    ws: WebSocketStream<S>,
    conn: &Arc<Member>,
    mut queue: Queue,
    services: &Arc<Services>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = &services.config.server;
    let wire = conn.wire;
    let ping_every = Duration::from_millis(server.ping_interval_ms.max(1));
    let silence = ping_every + Duration::from_millis(server.ping_timeout_ms);
    let write_limit = Duration::from_millis(server.write_timeout_ms.max(1));
    let (mut sink, mut stream) = ws.split();
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lifetime = Lifetime::new(services, &conn.current());
    let deadline = tokio::time::sleep_until(lifetime.next());
    tokio::pin!(deadline);
    let end = loop {
        tokio::select! {
            frame = queue.next() => {
                let Some(frame) = frame else {
                    break closed_by_hub(conn, services);
                };
                let write = async {
                    sink.feed(Message::Text(wire.text(&frame))).await?;
                    while let Some(frame) = queue.try_next() {
                        sink.feed(Message::Text(wire.text(&frame))).await?;
                    }
                    sink.flush().await
                };
                // A client that stopped reading blocks the write: its queue overflowing (or
                // the server draining) ends the connection now, and no write waits longer
                // than `server.write_timeout_ms`.
                let written = tokio::select! {
                    written = tokio::time::timeout(write_limit, write) => written,
                    () = conn.queued.closed() => break closed_by_hub(conn, services),
                };
                if !matches!(written, Ok(Ok(()))) {
                    break End::Gone;
                }
            }
            message = stream.next() => {
                heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let end = match wire {
                            Wire::Json => json::command(conn, services, text.as_str()),
                            Wire::SocketIo { ns } => sio::packet(conn, services, ns, text.as_str()),
                        };
                        if let Some(end) = end {
                            break end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        if let Some(end) = refuse_binary(conn) {
                            break end;
                        }
                    }
                    // tungstenite queues the pong of a ping; the next flush sends it.
                    Some(Ok(Message::Ping(_))) => {
                        if sink.flush().await.is_err() {
                            break End::Gone;
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break End::Gone,
                    Some(Err(WsError::Capacity(_))) => {
                        break End::Close(CloseCode::Size, "message_too_big");
                    }
                    Some(Err(_)) => break End::Gone,
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > silence {
                    break End::Gone;
                }
                // `auth.refresh` moved the expiry: the deadlines follow (a later expiry is
                // also seen when the old deadline comes).
                if lifetime.exp != conn.current().expires_at {
                    lifetime = Lifetime::new(services, &conn.current());
                    deadline.as_mut().reset(lifetime.next());
                }
                if sink.send(wire.ping()).await.is_err() {
                    break End::Gone;
                }
            }
            () = &mut deadline => {
                if lifetime.exp != conn.current().expires_at {
                    lifetime = Lifetime::new(services, &conn.current());
                } else if let Some(end) = lifetime.due(conn) {
                    break end;
                }
                deadline.as_mut().reset(lifetime.next());
            }
        }
    };
    // Closed: no longer counted as open while the last frames go out.
    queue.leave_hub();
    let (last, code, reason) = match end {
        End::Gone => return End::Gone,
        End::Close(code, reason) => (None, code, reason),
        End::CloseAfter(last, code, reason) => (Some(last), code, reason),
    };
    // A client that read too slowly is not written its backlog (it recovers with `since`).
    let backlog = conn.queued.close_reason() != Some(CloseReason::Overflowed);
    let farewell = match wire {
        Wire::Json => None,
        Wire::SocketIo { ns } => sio::farewell(ns, code),
    };
    let close = async {
        // What was queued (the notice that says why among it) first, then the close.
        while let Some(frame) = queue.try_next().filter(|_| backlog) {
            sink.feed(Message::Text(wire.text(&frame))).await?;
        }
        if let Some(last) = &last {
            sink.feed(Message::Text(wire.text(last))).await?;
        }
        if let Some(farewell) = farewell {
            sink.feed(Message::text(farewell)).await?;
        }
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        sink.send(Message::Close(Some(close))).await?;
        sink.close().await
    };
    if !matches!(
        tokio::time::timeout(CLOSE_WRITE_LIMIT, close).await,
        Ok(Ok(()))
    ) {
        tracing::debug!(sid = %conn.sid_text, "lean connection's close not written: dropped");
    }
    match last {
        Some(last) => End::CloseAfter(last, code, reason),
        None => End::Close(code, reason),
    }
}

/// A binary frame: neither protocol sends one to a main namespace (Socket.IO binary
/// attachments are refused on the lean path: commands take JSON).
fn refuse_binary(conn: &Member) -> Option<End> {
    let error = CommandError::InvalidPayload(match conn.wire {
        Wire::Json => "binary frames are not read: send JSON text frames".into(),
        Wire::SocketIo { .. } => "binary attachments are not read: commands take JSON".into(),
    });
    conn.answer(None, Err(error));
    None
}

/// The hub ended the connection: why, and the notice that says so.
fn closed_by_hub(conn: &Member, services: &Services) -> End {
    // The queue has ended: a notice for the client goes with the end itself.
    match conn.queued.close_reason() {
        Some(CloseReason::Overflowed) => End::Close(CloseCode::Library(4008), "buffer_full"),
        Some(CloseReason::Revoked) => End::Close(CloseCode::Library(4003), "disconnected"),
        Some(CloseReason::Draining) | None => End::CloseAfter(
            Box::new(conn.wire.notice(
                "server.shutdown",
                &json!({"reconnect_after_ms": services.config.server.reconnect_after_ms}),
            )),
            CloseCode::Restart,
            "server_shutdown",
        ),
    }
}

/// `connection.opened` / `connection.closed` for the outbound webhooks.
fn hook(services: &Services, conn: &Member, identity: &Identity, closed: Option<&str>) {
    let kind = match closed {
        Some(_) => HookKind::ConnectionClosed,
        None => HookKind::ConnectionOpened,
    };
    if services.hooks.wants(kind) {
        services.hooks.notify(HookEvent::connection(
            &identity.tenant,
            &identity.user_id,
            &conn.sid_text,
            conn.wire.ns(),
            &services.node_id,
            closed,
        ));
    }
}

/// The token's deadlines on a live connection: `auth.expiring` `auth.expiry_warning_secs`
/// before its end (`exp` plus `auth.leeway_secs`), then `auth.expired` and the close.
struct Lifetime {
    exp: u64,
    warn_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl Lifetime {
    fn new(services: &Services, identity: &Identity) -> Self {
        let auth = &services.config.auth;
        let exp = identity.expires_at;
        if exp > crate::socket::lifetime::NO_EXPIRY_AFTER {
            return Self {
                exp,
                warn_at: None,
                end_at: None,
            };
        }
        let now_secs = crate::auth::jwt::now_secs();
        let now = Instant::now();
        let at = |secs: u64| now + Duration::from_secs(secs.saturating_sub(now_secs));
        let end = exp.saturating_add(auth.leeway_secs);
        Self {
            exp,
            warn_at: Some(at(end.saturating_sub(auth.expiry_warning_secs))),
            end_at: Some(at(end)),
        }
    }

    /// When the next deadline is (far away when there is none).
    fn next(&self) -> Instant {
        self.warn_at
            .or(self.end_at)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }

    /// Acts on the deadline that came: the warning, or the end.
    fn due(&mut self, conn: &Member) -> Option<End> {
        let expires_at = Timestamp::from_unix_secs(self.exp);
        if self.warn_at.take().is_some() {
            let left = self.exp.saturating_sub(crate::auth::jwt::now_secs());
            conn.notice(
                "auth.expiring",
                json!({"expires_at": expires_at, "expires_in_secs": left}),
            );
            return None;
        }
        self.end_at.take()?;
        conn.notice(
            "auth.expired",
            json!({"code": Code::TokenExpired.as_str(), "expired_at": expires_at}),
        );
        Some(End::Close(CloseCode::Library(4001), "token_expired"))
    }
}
