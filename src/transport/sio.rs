//! The lean path of Socket.IO websocket clients (WEBSOCKET_API.md section 18): a client
//! that opens `GET /socket.io/?EIO=4&transport=websocket` directly (socket.io-client with
//! `transports: ["websocket"]`, `y-socket.io`'s provider, python-socketio with
//! `transports=["websocket"]`) is served here instead of by socketioxide when
//! `server.lean_websocket` is on (the default) and the parser is the JSON one.
//! Long-polling, the polling → websocket upgrade, Engine.IO v3 and msgpack stay
//! socketioxide's.
//!
//! The screening in front of Socket.IO (`socket::screen_handshake`) has counted the
//! request as a pre-auth session and taken a handshake from its address's budget; this
//! opens the Engine.IO session (`0{sid, upgrades: [], pingInterval, pingTimeout,
//! maxPayload}`) and serves its namespaces, multiplexed as socket.io-client's Manager does:
//! `/` and `/ws` as [`super::Member`]s (the connect middleware's checks and `connect_error`
//! messages; then events are the hub's shared frames, the packet text made once per
//! publish, [`crate::sse::Frame::socketio`]) and Yjs documents (`/yjs|...`, [`super::yjs`]).
//! A connection with no namespace connected `server.connect_timeout_ms` after it opened is
//! closed. Engine.IO pings (`2`, answered `3`) keep it alive.
//!
//! Packets are read and written with socketioxide's own protocol crate
//! (`socketioxide-parser-common`), binary attachments included.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::{Value, json};
use socketioxide_core::Sid;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParseError, ParserState};
use socketioxide_parser_common::CommonParser;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Outcome, Role, Session, Sock, Wire};
use crate::services::Services;
use crate::socket::{CommandError, LeanHandshake, NAMESPACES};
use crate::sse::{Frame, SseHub};

/// The Engine.IO ping the server sends (the client answers `3`).
pub(super) const PING: &str = "2";

/// How a socket leaves its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leave {
    pub code: CloseCode,
    pub reason: &'static str,
    /// Whether the client is sent a DISCONNECT (the server meant it: stock clients do not
    /// reconnect by themselves), as socketioxide's `disconnect` sends one.
    pub tell: bool,
}

impl Leave {
    /// The client left the namespace itself.
    pub(crate) const CLIENT: Self = Self {
        code: CloseCode::Normal,
        reason: "client namespace disconnect",
        tell: false,
    };
    /// A document update was refused (`error` sent first).
    pub(crate) const REFUSED: Self = Self {
        code: CloseCode::Normal,
        reason: "update refused",
        tell: true,
    };
}

/// What a lean Socket.IO connection keeps to read its client: the handshake (for each
/// namespace's CONNECT), the parser's state for binary attachments, the next ack id of a
/// server emit, and the raw packets to write before anything else (`connect_error`s).
pub(crate) struct Reader {
    pub(super) handshake: LeanHandshake,
    state: ParserState,
    config: ParseConfig,
    ack: i64,
    pub(super) editors: Weak<super::yjs::Editors>,
    pub(super) outbox: Vec<String>,
}

impl Reader {
    pub(super) fn next_ack(&mut self) -> i64 {
        self.ack += 1;
        self.ack
    }
}

/// `packet` as an Engine.IO message's text, and its binary attachments.
fn encode_all(packet: Packet) -> (String, Vec<Bytes>) {
    match CommonParser.encode(packet) {
        socketioxide_core::Value::Str(text, bins) => (
            format!("4{}", text.as_str()),
            bins.map(Vec::from).unwrap_or_default(),
        ),
        // The JSON parser writes a bytes value only for a binary payload of its own.
        socketioxide_core::Value::Bytes(_) => (String::new(), Vec::new()),
    }
}

fn encode(packet: Packet) -> String {
    encode_all(packet).0
}

/// The ack `id` with `data`: `43<ns>,<id>[data]`.
pub(super) fn ack(ns: &str, id: &Value, data: &Value) -> String {
    let id = id.as_i64().unwrap_or_default();
    match CommonParser.encode_value(data, None) {
        Ok(value) => encode(Packet::ack(ns.to_owned(), value, id)),
        Err(_) => String::new(),
    }
}

/// Event `event` of namespace `ns` carrying one binary, asking for ack `ack` if any.
pub(super) fn binary_event(
    ns: &str,
    event: &str,
    data: Bytes,
    ack: Option<i64>,
) -> (String, Vec<Bytes>) {
    match CommonParser.encode_value(&data, Some(event)) {
        Ok(value) => {
            let mut packet = Packet::event(ns.to_owned(), value);
            if let PacketData::BinaryEvent(_, id) | PacketData::Event(_, id) = &mut packet.inner {
                *id = ack;
            }
            encode_all(packet)
        }
        Err(_) => (String::new(), Vec::new()),
    }
}

/// The ack `id` of namespace `ns` carrying one binary.
pub(super) fn binary_ack(ns: &str, id: i64, data: Bytes) -> (String, Vec<Bytes>) {
    match CommonParser.encode_value(&data, None) {
        Ok(value) => encode_all(Packet::ack(ns.to_owned(), value, id)),
        Err(_) => (String::new(), Vec::new()),
    }
}

/// The CONNECT answer of socket `sid` in `ns`: `40<ns>,{"sid"}`.
pub(super) fn connected(ns: &str, sid: Sid) -> String {
    let payload = socketioxide_core::Value::Str(json!({ "sid": sid }).to_string().into(), None);
    encode(Packet::connect(ns.to_owned(), Some(payload)))
}

/// What is written before a leaving socket's end: a Socket.IO DISCONNECT when the server
/// means it.
pub(super) fn farewell(sock: &Sock, leave: &Leave) -> Option<String> {
    match &sock.role {
        Role::Member(m) if m.wire == Wire::Json => None,
        _ => leave
            .tell
            .then(|| encode(Packet::disconnect(sock.ns().to_owned()))),
    }
}

/// The layer behind the screening: a request it handed to the lean path (with its
/// [`LeanHandshake`]) is answered `101` and served here; any other goes on to socketioxide.
pub async fn intercept(
    axum::extract::State(lean): axum::extract::State<Arc<super::Lean>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(handshake) = req.extensions_mut().remove::<LeanHandshake>() else {
        return next.run(req).await;
    };
    let key = req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned();
    let upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let (Some(key), Some(upgrade)) = (key, upgrade) else {
        return next.run(req).await; // the screening checked both: never here
    };
    let services = lean.services.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                serve(io, services, lean, handshake).await;
            }
            Err(e) => tracing::debug!("lean websocket upgrade failed: {e}"),
        }
    });
    super::switching_protocols(&key)
}

/// Serves the websocket `io` of a direct Socket.IO websocket request the screening passed.
pub async fn serve<S>(
    io: S,
    services: Arc<Services>,
    lean: Arc<super::Lean>,
    handshake: LeanHandshake,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ws = super::websocket(io, &services).await;
    let server = &services.config.server;
    let open = json!({
        "sid": Sid::new().to_string(),
        "upgrades": [],
        "pingInterval": server.ping_interval_ms,
        "pingTimeout": server.ping_timeout_ms,
        "maxPayload": services.config.limits.polling_max_payload_bytes,
    });
    if ws.send(Message::text(format!("0{open}"))).await.is_err() {
        return;
    }
    let limits = &services.config.limits;
    let reader = Reader {
        handshake,
        state: ParserState::default(),
        config: ParseConfig {
            max_incoming_binaries: limits.max_binary_attachments,
            max_incoming_binary_buf_size: limits.max_binary_bytes,
            packet_completion_timeout: crate::BINARY_COMPLETION_TIMEOUT,
        },
        ack: 0,
        editors: Arc::downgrade(&lean.editors),
        outbox: Vec::new(),
    };
    let connect_by = Instant::now() + Duration::from_millis(server.connect_timeout_ms);
    let session = Session::new(Vec::new(), Some(Box::new(reader)));
    super::run(ws, session, services, lean.hub.clone(), Some(connect_by)).await;
}

/// One text frame of the client. `Some` ends a socket or the connection.
pub(super) async fn text(
    session: &mut Session,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    text: &str,
) -> Option<Outcome> {
    let Some(packet) = text.strip_prefix('4') else {
        return match text {
            // The client closed the Engine.IO session.
            "1" => Some(Outcome::Connection(super::End::Gone)),
            _ => None, // `3`: a pong (hearing it is what counts)
        };
    };
    let reader = session.sio.as_mut()?;
    let decoded = CommonParser.decode_str(
        &reader.config,
        &reader.state,
        socketioxide_core::Str::from(packet.to_owned()),
    );
    dispatch(session, services, hub, decoded).await
}

/// One binary frame of the client: an attachment of the packet before it.
pub(super) async fn binary(
    session: &mut Session,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    data: Bytes,
) -> Option<Outcome> {
    let reader = session.sio.as_mut()?;
    let decoded = CommonParser.decode_bin(&reader.config, &reader.state, data);
    dispatch(session, services, hub, decoded).await
}

async fn dispatch(
    session: &mut Session,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    decoded: Result<Packet, ParseError>,
) -> Option<Outcome> {
    let packet = match decoded {
        Ok(packet) => packet,
        // The attachments follow.
        Err(ParseError::NeedsMoreBinaryData) => return None,
        Err(e) => {
            // socketioxide closes a session whose packets it cannot read: so does this.
            tracing::debug!("unreadable Socket.IO packet: {e}");
            return Some(Outcome::Connection(super::End::Gone));
        }
    };
    let index = session
        .socks
        .iter()
        .position(|s| s.ns() == packet.ns.as_str());
    match packet.inner {
        PacketData::Connect(auth) => {
            if index.is_none() {
                connect(session, services, hub, packet.ns.as_str(), auth).await;
            }
            None
        }
        PacketData::Disconnect => index.map(|i| Outcome::Socket(i, Leave::CLIENT)),
        PacketData::Event(value, ack) | PacketData::BinaryEvent(value, ack) => {
            let i = index?;
            event(session, services, i, value, ack).await
        }
        PacketData::EventAck(mut value, id) | PacketData::BinaryAck(mut value, id) => {
            let i = index?;
            let Role::Editor(editor) = &session.socks[i].role else {
                return None;
            };
            let data = CommonParser.decode_value::<Bytes>(&mut value, false).ok();
            super::yjs::acked(editor, services, id, data)
                .await
                .map(|leave| Outcome::Socket(i, leave))
        }
        PacketData::ConnectError(_) => None,
    }
}

/// A CONNECT to `ns`: a socket added, or a `connect_error` queued.
async fn connect(
    session: &mut Session,
    services: &Arc<Services>,
    hub: &Arc<SseHub>,
    ns: &str,
    auth: Option<socketioxide_core::Value>,
) {
    let auth = auth.and_then(|a| serde_json::from_str::<Value>(a.as_str()?).ok());
    let editors = session
        .socks
        .iter()
        .filter(|s| matches!(s.role, Role::Editor(_)))
        .count();
    let Some(reader) = session.sio.as_mut() else {
        return;
    };
    let added = if let Some(main) = NAMESPACES.iter().copied().find(|n| *n == ns) {
        match reader.handshake.admit(services, main, auth.as_ref()).await {
            Ok((identity, slot)) => {
                let since = auth.filter(|a| a.get("since").is_some());
                let accepted = super::Accepted {
                    identity,
                    since,
                    slot,
                };
                let sid = Sid::new();
                let first = Frame::wire(connected(main, sid));
                let wire = Wire::SocketIo { ns: main };
                Ok(super::open_member(wire, sid, services, hub, accepted, Some(first)).await)
            }
            Err(message) => Err(message),
        }
    } else if ns.starts_with(crate::socket::yjs::PREFIX) {
        super::yjs::connect(reader, services, hub, editors, ns, auth.as_ref()).await
    } else {
        Err("Invalid namespace".to_owned())
    };
    match added {
        Ok(sock) => session.socks.push(sock),
        Err(message) => {
            if let Some(reader) = session.sio.as_mut() {
                let refusal = encode(Packet::connect_error(ns.to_owned(), message));
                reader.outbox.push(refusal);
            }
        }
    }
}

/// An event of socket `i`'s client.
async fn event(
    session: &mut Session,
    services: &Arc<Services>,
    i: usize,
    mut value: socketioxide_core::Value,
    ack: Option<i64>,
) -> Option<Outcome> {
    let name = CommonParser.read_event(&value).ok().map(str::to_owned);
    match &session.socks[i].role {
        Role::Member(member) => {
            let member = member.clone();
            let id = ack.map(Value::from);
            if let Err(abusive) = member.spend(services, &id) {
                return abusive.then_some(Outcome::Socket(i, super::ABUSE));
            }
            let Some(name) = name else {
                let error = CommandError::InvalidPayload("an event has a name".into());
                member.answer(id, Err(error));
                return None;
            };
            let payload = CommonParser
                .decode_value::<Value>(&mut value, true)
                .map_err(|e| e.to_string());
            member.execute(services, id, name, payload);
            None
        }
        Role::Editor(editor) => {
            let editor = editor.clone();
            let data = CommonParser.decode_value::<Bytes>(&mut value, true).ok();
            let reader = session.sio.as_mut()?;
            super::yjs::event(&editor, services, reader, name.as_deref()?, data, ack)
                .await
                .map(|leave| Outcome::Socket(i, leave))
        }
    }
}
