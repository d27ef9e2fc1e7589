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
pub mod yjs;

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
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocketConfig};
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
    /// `socket{sid, user_id, tenant, ns}`, as socketioxide's sockets have (a disabled span,
    /// a few bytes, with the default `info` filter).
    span: tracing::Span,
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

    /// Spends the event budget for one client command; a refusal is answered here.
    /// `Err(true)`: the budget was abused, the socket ends ([`ABUSE`]).
    fn spend(&self, services: &Services, id: &Option<Value>) -> Result<(), bool> {
        match services.limits.event(self.sid) {
            EventVerdict::Allowed => Ok(()),
            EventVerdict::Refused(retry_after) => {
                services.counters.limited("events");
                tracing::debug!(parent: &self.span, "event refused: rate_limited");
                let retry_after_ms = crate::limits::ceil_ms(retry_after);
                self.answer(
                    id.clone(),
                    Err(CommandError::RateLimited { retry_after_ms }),
                );
                Err(false)
            }
            EventVerdict::Abusive => {
                services.counters.limited("events");
                crate::metrics::Counters::incr(&services.counters.rate_limit_disconnects, 1);
                tracing::info!(sid = %self.sid_text, user_id = %self.current().user_id, "socket disconnected: rate_limit_exceeded");
                self.notice(
                    "error",
                    json!({"code": Text::EventAbuse.code().as_str(), "message": Text::EventAbuse.text()}),
                );
                Err(true)
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
    /// The server drains: every member is sent `server.shutdown` after what was queued,
    /// then the websocket closes (`1012`), as a dropped transport (no DISCONNECT).
    Drain,
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
    WebSocketStream::from_raw_socket(io, WsRole::Server, Some(ws_config(services))).await
}

/// One socket of a lean connection: `/ws/json`'s only one, or one namespace of a
/// Socket.IO connection (`/` or `/ws`, and Yjs documents).
pub(crate) struct Sock {
    role: Role,
    queue: Queue,
    lifetime: Lifetime,
    /// Counted against the connection limits until the socket ends.
    slot: Option<Slot>,
}

pub(crate) enum Role {
    /// Runs the client commands, in rooms.
    Member(Arc<Member>),
    /// Edits a Yjs document.
    Editor(Arc<yjs::Editor>),
}

impl Sock {
    fn conn(&self) -> &crate::sse::Conn {
        &self.queue.conn
    }

    /// Its namespace, as its packets name it.
    fn ns(&self) -> &str {
        match &self.role {
            Role::Member(m) => m.wire.ns(),
            Role::Editor(e) => e.ns(),
        }
    }

    /// The text `frame` is written as on this socket.
    fn text(&self, frame: &Frame) -> Utf8Bytes {
        match &self.role {
            Role::Member(m) => m.wire.text(frame),
            Role::Editor(_) => frame.data.clone(),
        }
    }
}

/// A lean connection: its sockets, and (Socket.IO) what reads its client's packets.
pub(crate) struct Session {
    socks: Vec<Sock>,
    /// `None` for `/ws/json`.
    sio: Option<Box<sio::Reader>>,
}

/// The sockets a blocked write watches.
enum Watch {
    Nothing,
    One(Arc<crate::sse::Conn>),
    Many(Vec<Arc<crate::sse::Conn>>),
}

impl Watch {
    /// Resolves once the hub closed any of them.
    async fn closed(&self) {
        match self {
            Self::Nothing => std::future::pending().await,
            Self::One(conn) => conn.closed().await,
            Self::Many(conns) => {
                futures_util::future::select_all(conns.iter().map(|c| Box::pin(c.closed()))).await;
            }
        }
    }
}

/// What ends: one socket (its index), or the whole connection.
pub(crate) enum Outcome {
    Socket(usize, sio::Leave),
    Connection(End),
}

/// A socket whose token ran out.
const EXPIRED: sio::Leave = sio::Leave {
    code: CloseCode::Library(4001),
    reason: "token_expired",
    tell: true,
};

/// A socket that kept sending past its event budget.
pub(crate) const ABUSE: sio::Leave = sio::Leave {
    code: CloseCode::Library(4029),
    reason: "rate_limit_exceeded",
    tell: true,
};

/// The lean path's shared parts: the hub its sockets are members of, and the registry of
/// its Yjs editors.
pub struct Lean {
    pub services: Arc<Services>,
    pub hub: Arc<SseHub>,
    pub editors: Arc<yjs::Editors>,
}

/// Opens the hub side of a member socket: in its identity room, in presence, hooked,
/// `connection.established` queued after recovering `since`.
pub(crate) async fn open_member(
    wire: Wire,
    sid: Sid,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    accepted: Accepted,
    first: Option<Frame>,
) -> Sock {
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
    let span = tracing::debug_span!(
        "socket",
        sid = %sid_text,
        user_id = %identity.user_id,
        tenant = %identity.tenant,
        ns = %wire.ns()
    );
    let conn = Arc::new(Member {
        sid,
        sid_text,
        wire,
        identity: RwLock::new(identity.clone()),
        share: Arc::default(),
        queued: queue.conn.clone(),
        hub: hub.clone(),
        open: AtomicBool::new(true),
        span,
    });
    tracing::debug!(parent: &conn.span, "socket connected");
    // First, so a revocation finds the connection by its identity room from here on.
    conn.join(vec![identity_room(&identity.tenant, &identity.user_id)]);
    services.presence.connected(&identity);
    hook(services, &conn, &identity, None);
    let defaults = [RoomName::Global, RoomName::User(identity.user_id.clone())];
    // Boxed: the catch-up's state is large and needed only now; in the connection's own
    // future it would stay reserved for the connection's life (every idle connection).
    Box::pin(recover::recover(
        &*conn,
        services,
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
            // The CONNECT answer (Socket.IO), then `connection.established`, before any event.
            if let Some(first) = first {
                conn.send(first);
            }
            conn.queued
                .first(Arc::new(wire.notice("connection.established", &data)));
        },
        |event, payload| {
            let frame = Arc::new(Frame::event(event, payload));
            conn.queued.push(frame, false, conn.queued.buffer()) == crate::sse::Pushed::Queued
        },
    ))
    .await;
    Sock {
        lifetime: Lifetime::new(services, &identity, true),
        role: Role::Member(conn),
        queue,
        slot: Some(slot),
    }
}

impl Member {
    /// The socket ended (`reason`): its presence, webhook and locks.
    async fn finish(&self, services: &Services, reason: &str) {
        self.open.store(false, Ordering::Relaxed);
        let identity = self.current();
        tracing::debug!(parent: &self.span, reason, "socket disconnected");
        if services.presence.disconnected(&self.share, &identity) {
            hook(services, self, &identity, Some(reason));
        }
        if services.locks.held_by(&self.sid_text) > 0
            && let Some(broadcaster) = services.broadcaster.get()
        {
            broadcaster.release_socket_locks(&self.sid_text).await;
        }
    }
}

impl Session {
    pub(crate) fn new(socks: Vec<Sock>, sio: Option<Box<sio::Reader>>) -> Self {
        Self { socks, sio }
    }

    /// The next frame of any socket; `None` for a socket the hub closed.
    fn poll_frame(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<(usize, Option<Arc<Frame>>)> {
        for (i, sock) in self.socks.iter_mut().enumerate() {
            if let std::task::Poll::Ready(frame) = sock.queue.poll_next(cx) {
                return std::task::Poll::Ready((i, frame));
            }
        }
        std::task::Poll::Pending
    }

    /// What to watch for the hub closing any socket while a write is blocked.
    fn watch(&self) -> Watch {
        match self.socks.as_slice() {
            [] => Watch::Nothing,
            [one] => Watch::One(one.queue.conn.clone()),
            many => Watch::Many(many.iter().map(|s| s.queue.conn.clone()).collect()),
        }
    }

    /// The hub ended socket `i`: why.
    fn closed_by_hub(&self, i: usize) -> Outcome {
        let sock = &self.socks[i];
        match sock.conn().close_reason() {
            Some(CloseReason::Overflowed) => {
                Outcome::Connection(End::Close(CloseCode::Library(4008), "buffer_full"))
            }
            Some(CloseReason::Revoked) => Outcome::Socket(
                i,
                sio::Leave {
                    code: CloseCode::Library(4003),
                    reason: "disconnected",
                    tell: true,
                },
            ),
            Some(CloseReason::Draining) | None => Outcome::Connection(End::Drain),
        }
    }

    /// When the next deadline of any socket is (`connect_by` while none is connected).
    fn next_deadline(&self, connect_by: Option<Instant>) -> Option<Instant> {
        self.socks
            .iter()
            .filter_map(|s| s.lifetime.next())
            .chain(connect_by.filter(|_| self.socks.is_empty()))
            .min()
    }

    /// Acts on the deadlines that came; the first socket whose token ran out.
    fn due(&mut self, services: &Services) -> Option<Outcome> {
        let now = Instant::now();
        for (i, sock) in self.socks.iter_mut().enumerate() {
            let current = match &sock.role {
                Role::Member(m) => m.current().expires_at,
                Role::Editor(e) => e.expires_at(),
            };
            if sock.lifetime.exp != current {
                if let Role::Member(m) = &sock.role {
                    sock.lifetime = Lifetime::new(services, &m.current(), true);
                }
                continue;
            }
            if sock.lifetime.next().is_none_or(|at| at > now) {
                continue;
            }
            match (sock.lifetime.due(), &sock.role) {
                (Some(Due::Warn(data)), Role::Member(m)) => m.notice("auth.expiring", data),
                (Some(Due::Warn(_)), Role::Editor(_)) => {}
                (Some(Due::Expired(data)), Role::Member(m)) => {
                    m.notice("auth.expired", data);
                    return Some(Outcome::Socket(i, EXPIRED));
                }
                (Some(Due::Expired(_)), Role::Editor(e)) => {
                    e.expired();
                    return Some(Outcome::Socket(i, EXPIRED));
                }
                (None, _) => {}
            }
        }
        None
    }
}

/// Runs `session` on `ws` until it ends; `connect_by` (Socket.IO) is when a connection
/// that has not connected a namespace yet is closed.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    mut session: Session,
    services: Arc<Services>,
    hub: Arc<SseHub>,
    connect_by: Option<Instant>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = &services.config.server;
    let json = session.sio.is_none();
    let ping_every = Duration::from_millis(server.ping_interval_ms.max(1));
    let silence = ping_every + Duration::from_millis(server.ping_timeout_ms);
    let write_limit = Duration::from_millis(server.write_timeout_ms.max(1));
    let ping_message = || match json {
        true => Message::Ping(Default::default()),
        false => Message::text(sio::PING),
    };
    let (mut sink, mut stream) = ws.split();
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // With no deadline the timer waits for ever (a year).
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut next = session.next_deadline(connect_by);
    let deadline = tokio::time::sleep_until(next.unwrap_or(never));
    tokio::pin!(deadline);
    let end = loop {
        let outcome = tokio::select! {
            (i, frame) = std::future::poll_fn(|cx| session.poll_frame(cx)) => match frame {
                // What the hub closed the socket for.
                None => match session.closed_by_hub(i) {
                    Outcome::Connection(end) => break end,
                    socket => Some(socket),
                },
                Some(frame) => {
                let watch = session.watch();
                let write = async {
                    write_frame(&mut sink, &session.socks[i], &frame).await?;
                    for sock in &mut session.socks {
                        while let Some(frame) = sock.queue.try_next() {
                            write_frame(&mut sink, sock, &frame).await?;
                        }
                    }
                    sink.flush().await
                };
                // A client that stopped reading blocks the write: its queue overflowing (or
                // the server draining) ends the connection now, and no write waits longer
                // than `server.write_timeout_ms`.
                let written = tokio::select! {
                    written = tokio::time::timeout(write_limit, write) => written,
                    () = watch.closed() => Ok(Ok(())),
                };
                if !matches!(written, Ok(Ok(()))) {
                    break End::Gone;
                }
                None
                }
            },
            message = stream.next() => {
                heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => match &mut session.sio {
                        None => match &session.socks[0].role {
                            Role::Member(m) => json::command(m, &services, text.as_str()),
                            Role::Editor(_) => None,
                        },
                        Some(_) => Box::pin(sio::text(&mut session, &services, &hub, text.as_str())).await,
                    },
                    Some(Ok(Message::Binary(data))) => match &session.sio {
                        None => {
                            refuse_binary(&session.socks[0]);
                            None
                        }
                        Some(_) => Box::pin(sio::binary(&mut session, &services, &hub, data)).await,
                    },
                    // tungstenite queues the pong of a ping; the next flush sends it.
                    Some(Ok(Message::Ping(_))) => {
                        if sink.flush().await.is_err() {
                            break End::Gone;
                        }
                        None
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => None,
                    Some(Err(WsError::Capacity(_))) => {
                        Some(Outcome::Connection(End::Close(CloseCode::Size, "message_too_big")))
                    }
                    // The reads end: the client went away, or the drain severed them after
                    // closing every socket (then the socket's close, notice and all, is
                    // still written).
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        match session.socks.iter().position(|s| s.conn().is_closed()) {
                            Some(i) => match session.closed_by_hub(i) {
                                Outcome::Connection(end) => break end,
                                socket => Some(socket),
                            },
                            None => break End::Gone,
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > silence {
                    break End::Gone;
                }
                if sink.send(ping_message()).await.is_err() {
                    break End::Gone;
                }
                None
            }
            () = &mut deadline => {
                if session.socks.is_empty() && connect_by.is_some_and(|by| by <= Instant::now()) {
                    tracing::debug!("no namespace connected in time: closing");
                    break End::Gone;
                }
                session.due(&services)
            }
        };
        // What the reader answered itself (`connect_error`s) goes out first.
        if let Some(reader) = session.sio.as_mut()
            && !reader.outbox.is_empty()
        {
            let mut sent = Ok(());
            for text in reader.outbox.drain(..) {
                sent = sent.and(sink.feed(Message::text(text)).await);
            }
            if sent.and(sink.flush().await).is_err() {
                break End::Gone;
            }
        }
        // A deadline came, a connect added a socket: the next deadline (a refreshed token's
        // is read when its old deadline comes).
        let now_next = session.next_deadline(connect_by);
        if now_next != next {
            next = now_next;
            deadline.as_mut().reset(next.unwrap_or(never));
        }
        match outcome {
            None => {}
            Some(Outcome::Connection(end)) => break end,
            Some(Outcome::Socket(i, leave)) => {
                let mut sock = session.socks.remove(i);
                sock.queue.leave_hub();
                let farewell = sio::farewell(&sock, &leave);
                let last = async {
                    while let Some(frame) = sock.queue.try_next() {
                        write_frame(&mut sink, &sock, &frame).await?;
                    }
                    if let Some(farewell) = farewell {
                        sink.feed(Message::text(farewell)).await?;
                    }
                    sink.flush().await
                };
                let written = tokio::time::timeout(CLOSE_WRITE_LIMIT, last).await;
                Box::pin(finish(sock, &services, leave.reason)).await;
                if !matches!(written, Ok(Ok(()))) {
                    break End::Gone;
                }
                // Its last socket gone, the connection closes with the socket's reason.
                if session.socks.is_empty() {
                    break End::Close(leave.code, leave.reason);
                }
            }
        }
    };
    // Boxed: needed once, at the end.
    Box::pin(end_connection(sink, session, end, &services)).await;
}

/// The connection ended (`end`): the last frames and the close are written, every socket
/// left is finished.
async fn end_connection<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut session: Session,
    end: End,
    services: &Services,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reason = match &end {
        End::Gone => "transport close",
        End::Close(_, reason) => reason,
        End::Drain => "server_shutdown",
    };
    // Closed: no longer counted as open while the last frames go out.
    for sock in &session.socks {
        sock.queue.leave_hub();
    }
    let close = match end {
        End::Gone => None,
        End::Close(code, why) => Some((code, why, false)),
        End::Drain => Some((CloseCode::Restart, "server_shutdown", true)),
    };
    if let Some((code, why, drain)) = close {
        // A client that read too slowly is not written its backlog (it recovers with `since`).
        let backlog = why != "buffer_full";
        let shutdown = json!({"reconnect_after_ms": services.config.server.reconnect_after_ms});
        let close = async {
            // What was queued (the notice that says why among it) first, then the close.
            for sock in &mut session.socks {
                while let Some(frame) = sock.queue.try_next().filter(|_| backlog) {
                    write_frame(&mut sink, sock, &frame).await?;
                }
                if let (true, Role::Member(m)) = (drain, &sock.role) {
                    let notice = m.wire.notice("server.shutdown", &shutdown);
                    write_frame(&mut sink, sock, &notice).await?;
                }
            }
            let close = CloseFrame {
                code,
                reason: why.into(),
            };
            sink.send(Message::Close(Some(close))).await?;
            sink.close().await
        };
        if !matches!(
            tokio::time::timeout(CLOSE_WRITE_LIMIT, close).await,
            Ok(Ok(()))
        ) {
            tracing::debug!("lean connection's close not written: dropped");
        }
    }
    for sock in session.socks.drain(..) {
        finish(sock, services, reason).await;
    }
}

/// Writes `frame` of `sock` (its attachments after it).
async fn write_frame<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    sock: &Sock,
    frame: &Frame,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    sink.feed(Message::Text(sock.text(frame))).await?;
    for binary in &frame.binary {
        sink.feed(Message::Binary(binary.clone())).await?;
    }
    Ok(())
}

/// A socket is over: what it held is given back.
async fn finish(sock: Sock, services: &Services, reason: &str) {
    match &sock.role {
        Role::Member(m) => m.finish(services, reason).await,
        Role::Editor(e) => e.leave(services).await,
    }
    drop(sock.slot);
}

/// A binary frame on `/ws/json`: not read.
fn refuse_binary(sock: &Sock) {
    if let Role::Member(m) = &sock.role {
        let error = CommandError::InvalidPayload(
            "binary frames are not read: send JSON text frames".into(),
        );
        m.answer(None, Err(error));
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

/// The token's deadlines on a live socket: `auth.expiring` `auth.expiry_warning_secs`
/// before its end (`exp` plus `auth.leeway_secs`), then `auth.expired` and the end.
struct Lifetime {
    exp: u64,
    warn_at: Option<Instant>,
    end_at: Option<Instant>,
}

/// A deadline that came, with its notice's data.
enum Due {
    Warn(Value),
    Expired(Value),
}

impl Lifetime {
    /// The deadlines of `identity`'s token; with `warn`, the warning before the end too.
    fn new(services: &Services, identity: &Identity, warn: bool) -> Self {
        Self::of(services, identity.expires_at, warn)
    }

    fn of(services: &Services, exp: u64, warn: bool) -> Self {
        let auth = &services.config.auth;
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
            warn_at: warn.then(|| at(end.saturating_sub(auth.expiry_warning_secs))),
            end_at: Some(at(end)),
        }
    }

    /// When the next deadline is.
    fn next(&self) -> Option<Instant> {
        self.warn_at.or(self.end_at)
    }

    /// The deadline that came: the warning, or the end.
    fn due(&mut self) -> Option<Due> {
        let expires_at = Timestamp::from_unix_secs(self.exp);
        if self.warn_at.take().is_some() {
            let left = self.exp.saturating_sub(crate::auth::jwt::now_secs());
            return Some(Due::Warn(
                json!({"expires_at": expires_at, "expires_in_secs": left}),
            ));
        }
        self.end_at.take()?;
        Some(Due::Expired(
            json!({"code": Code::TokenExpired.as_str(), "expired_at": expires_at}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection keeps its task's future for its life: what is needed only at
    /// its start or end is boxed or awaited elsewhere, so the future stays this small.
    #[tokio::test]
    async fn a_connections_future_stays_small() {
        let services = Arc::new(crate::socket::command::tests::services());
        let hub = Arc::new(SseHub::new(16));
        let (io, _peer) = tokio::io::duplex(64);
        let ws = websocket(io, &services).await;
        let running = run(ws, Session::new(Vec::new(), None), services, hub, None);
        let size = std::mem::size_of_val(&running);
        assert!(size <= 2048, "the connection's future is {size} bytes");
    }
}
