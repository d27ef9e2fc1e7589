//! The lean path of Socket.IO websocket clients (WEBSOCKET_API.md section 18): a client
//! that opens `GET /socket.io/?EIO=4&transport=websocket` directly (socket.io-client with
//! `transports: ["websocket"]`, python-socketio with `transports=["websocket"]`) is served
//! here instead of by socketioxide, when `server.lean_websocket` is on and the parser is
//! the JSON one. Long-polling, the polling → websocket upgrade, Engine.IO v3 and msgpack
//! stay socketioxide's.
//!
//! The screening in front of Socket.IO (`socket::screen_handshake`) has counted the
//! request as a pre-auth session and taken a handshake from its address's budget; this
//! opens the Engine.IO session (`0{sid, upgrades: [], pingInterval, pingTimeout,
//! maxPayload}`), waits up to `server.connect_timeout_ms` for a CONNECT to `/` or `/ws`,
//! admits it as the connect middleware does (the same checks and `connect_error` messages)
//! and from then on the socket is a [`super::Member`]: events are the hub's shared frames
//! (the packet text made once per publish, [`crate::sse::Frame::socketio`]), commands run
//! as socketioxide's do, Engine.IO pings (`2`, answered `3`) keep it alive.
//!
//! Packets are read and (but for the shared event text) written with socketioxide's own
//! protocol crates (`socketioxide-parser-common`). One namespace per connection: a second
//! CONNECT on the same websocket (a shared Manager opening `/yjs|...` documents, say) is
//! answered `connect_error` `namespace_unavailable`: such a client opens the documents over
//! another Manager, or turns the lean path off.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketioxide_core::Sid;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Accepted, End, Member, Wire};
use crate::services::Services;
use crate::socket::{CommandError, LeanHandshake, NAMESPACES};
use crate::sse::SseHub;

/// The Engine.IO ping the server sends (the client answers `3`).
pub(super) const PING: &str = "2";

/// `packet` as an Engine.IO message's text.
fn encode(packet: Packet) -> String {
    match CommonParser.encode(packet) {
        socketioxide_core::Value::Str(text, _) => format!("4{}", text.as_str()),
        // The JSON parser writes binaries only for binary data, which nothing here sends.
        socketioxide_core::Value::Bytes(_) => String::new(),
    }
}

/// The ack `id` with `data`: `43<ns>,<id>[data]`.
pub(super) fn ack(ns: &'static str, id: &Value, data: &Value) -> String {
    let id = id.as_i64().unwrap_or_default();
    match CommonParser.encode_value(data, None) {
        Ok(value) => encode(Packet::ack(ns, value, id)),
        Err(_) => String::new(),
    }
}

/// What goes before the websocket's close when the server ends a socket: a Socket.IO
/// DISCONNECT where socketioxide's `disconnect` would send one (the client must not
/// reconnect by itself: revoked, token expired, event abuse); nothing where the transport
/// merely drops (a drain, a slow reader, a message too big: the client reconnects).
pub(super) fn farewell(ns: &'static str, code: CloseCode) -> Option<String> {
    match code {
        CloseCode::Library(4001 | 4003 | 4029) => Some(encode(Packet::disconnect(ns))),
        _ => None,
    }
}

/// Serves the websocket `io` of a direct Socket.IO websocket request the screening passed.
pub async fn serve<S>(io: S, services: Arc<Services>, hub: Arc<SseHub>, handshake: LeanHandshake)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ws = super::websocket(io, &services).await;
    let server = &services.config.server;
    let engine = Sid::new();
    let open = json!({
        "sid": engine.to_string(),
        "upgrades": [],
        "pingInterval": server.ping_interval_ms,
        "pingTimeout": server.ping_timeout_ms,
        "maxPayload": services.config.limits.polling_max_payload_bytes,
    });
    if ws.send(Message::text(format!("0{open}"))).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(Duration::from_millis(server.connect_timeout_ms));
    tokio::pin!(deadline);
    let (ns, accepted) = loop {
        let message = tokio::select! {
            message = ws.next() => message,
            () = &mut deadline => {
                tracing::debug!(sid = %engine, "no namespace connected in time: closing");
                let _ = ws.close(None).await;
                return;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
        };
        let Some(packet) = text.as_str().strip_prefix('4') else {
            if text.as_str() == "1" {
                return; // the client closed the session
            }
            continue; // `3` (a pong) or an Engine.IO packet with nothing to do
        };
        let Ok(packet) = decode(packet) else { continue };
        let PacketData::Connect(auth) = packet.inner else {
            continue; // nothing else means anything before a namespace is connected
        };
        let Some(ns) = NAMESPACES
            .iter()
            .copied()
            .find(|n| *n == packet.ns.as_str())
        else {
            let refusal = encode(Packet::connect_error(packet.ns, "Invalid namespace"));
            if ws.send(Message::text(refusal)).await.is_err() {
                return;
            }
            continue;
        };
        let auth = auth.and_then(|a| serde_json::from_str::<Value>(a.as_str()?).ok());
        match handshake.admit(&services, ns, auth.as_ref()).await {
            Ok((identity, slot)) => {
                let since = auth.filter(|a| a.get("since").is_some());
                break (
                    ns,
                    Accepted {
                        identity,
                        since,
                        slot,
                    },
                );
            }
            Err(message) => {
                let refusal = encode(Packet::connect_error(ns, message));
                if ws.send(Message::text(refusal)).await.is_err() {
                    return;
                }
            }
        }
    };
    let sid = Sid::new();
    let connected = format!("40{}{{\"sid\":\"{sid}\"}}", ns_prefix(ns));
    if ws.send(Message::text(connected)).await.is_err() {
        return;
    }
    super::serve(ws, Wire::SocketIo { ns }, sid, services, hub, accepted).await;
    drop(handshake);
}

/// `/ws,` for namespace `/ws`; nothing for `/`.
fn ns_prefix(ns: &str) -> String {
    if ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

fn decode(text: &str) -> Result<Packet, socketioxide_core::parser::ParseError> {
    // Binary attachments would wait in the state for their frames: a fresh state per packet
    // drops them (the lean path reads none).
    CommonParser.decode_str(
        &ParseConfig::default(),
        &ParserState::default(),
        socketioxide_core::Str::from(text.to_owned()),
    )
}

/// One text frame from a connected socket's client. `Some` ends the connection.
pub(super) fn packet(
    conn: &Arc<Member>,
    services: &Arc<Services>,
    ns: &'static str,
    text: &str,
) -> Option<End> {
    let Some(packet) = text.strip_prefix('4') else {
        return match text {
            // The client closed the Engine.IO session.
            "1" => Some(End::Gone),
            _ => None, // `3`: a pong (hearing it is what counts)
        };
    };
    let packet = match decode(packet) {
        Ok(packet) if packet.ns.as_str() == ns => packet,
        Ok(packet) => {
            if let PacketData::Connect(_) = packet.inner {
                let refusal = Packet::connect_error(packet.ns, "namespace_unavailable");
                conn.send(crate::sse::Frame::wire(encode(refusal)));
            }
            return None;
        }
        Err(_) => {
            let error = CommandError::InvalidPayload(
                "unreadable Socket.IO packet (binary attachments are not read: commands take JSON)"
                    .into(),
            );
            conn.answer(None, Err(error));
            return None;
        }
    };
    match packet.inner {
        PacketData::Event(mut value, ack) => {
            let id = ack.map(Value::from);
            if let Err(end) = conn.spend(services, &id) {
                return end;
            }
            let name = match CommonParser.read_event(&value) {
                Ok(name) => name.to_owned(),
                Err(_) => {
                    let error = CommandError::InvalidPayload("an event has a name".into());
                    conn.answer(id, Err(error));
                    return None;
                }
            };
            let payload = CommonParser
                .decode_value::<Value>(&mut value, true)
                .map_err(|e| e.to_string());
            conn.execute(services, id, name, payload);
            None
        }
        // The client left the namespace: the connection has nothing else.
        PacketData::Disconnect => Some(End::Gone),
        PacketData::BinaryEvent(_, ack) => {
            let error = CommandError::InvalidPayload(
                "binary attachments are not read: commands take JSON".into(),
            );
            conn.answer(ack.map(Value::from), Err(error));
            None
        }
        // No server emit asks for an ack on the main namespaces; a second CONNECT is ignored.
        _ => None,
    }
}
