//! Engine.IO v4 + Socket.IO v5 framing over one WebSocket: just enough to connect with an
//! auth payload, emit with an ack, answer heartbeats and read events. Namespace `/` with
//! JSON payloads for most scenarios ([`Conn::decode`]); one other namespace with binary
//! attachments for `yjs` ([`Conn::decode_nsp`]: `451-/nsp,["name",{"_placeholder":true,
//! "num":0}]` followed by the attachment in a binary WebSocket frame). Written by hand so
//! the generator spends its CPU on sockets, not on a client library.
//!
//! With [`Protocol::Json`] the same [`Conn`] speaks Roomcast's plain JSON WebSocket
//! (`/ws/json`, one JSON object per text frame) instead: the token (and `since`) go in the
//! URL, a command is `{"id","type","data"}`, an answer `{"type":"ack","id","data"}`, an
//! event the envelope itself. [`Packet`] and [`Text`] hide the difference from the socket.

use std::borrow::Cow;
use std::ops::Range;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the bench sockets speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Engine.IO v4 + Socket.IO v5 at `/socket.io/` (Roomcast and the Node reference).
    #[default]
    Socketio,
    /// Roomcast's plain JSON WebSocket at `/ws/json` (no reference equivalent).
    Json,
}

/// One Engine.IO connection. Dropping it closes the TCP connection without a Socket.IO
/// disconnect or Engine.IO close packet, as a client that loses its network would.
pub struct Conn {
    ws: Ws,
    protocol: Protocol,
    next_ack: u64,
    /// A binary packet whose attachments are still arriving ([`Conn::decode_nsp`]).
    partial: Option<NspPacket>,
}

/// A Socket.IO packet of a namespace other than `/`, its binary attachments in.
#[derive(Debug)]
pub struct NspPacket {
    /// The packet type: `b'0'` CONNECT, `b'1'` DISCONNECT, `b'2'` EVENT, `b'3'` ACK,
    /// `b'4'` CONNECT_ERROR, `b'5'` BINARY_EVENT, `b'6'` BINARY_ACK.
    pub kind: u8,
    pub id: Option<u64>,
    /// The JSON part (placeholders left as they are).
    pub json: String,
    /// How many attachments the packet announced.
    pub expected: usize,
    pub attachments: Vec<tungstenite::Bytes>,
}

impl NspPacket {
    /// An event (plain or binary) is named `name`.
    pub fn is_event(&self, name: &str) -> bool {
        matches!(self.kind, b'2' | b'5')
            && self.json.starts_with("[\"")
            && self.json[2..].starts_with(name)
            && self.json[2 + name.len()..].starts_with('"')
    }

    /// The first attachment, the payload of every binary packet Yjs sends.
    pub fn binary(&self) -> Option<&[u8]> {
        self.attachments.first().map(|b| &b[..])
    }
}

/// A Socket.IO packet the server sent.
pub enum Packet {
    /// `42[name, ...args]`
    Event(Text),
    /// `43<id>[...args]`
    Ack(u64, Text),
    /// `40{sid, pid?}`: the namespace accepted the handshake.
    Connected(Text),
    /// `44{message}`: the handshake was refused.
    Refused(Text),
    /// `41`, or Engine.IO `1` (close).
    Disconnected,
}

/// The JSON part of a packet, kept in the frame's buffer (no copy).
pub struct Text {
    frame: Utf8Bytes,
    start: usize,
    /// A `/ws/json` frame: where its `type` is in the frame. The JSON is then the object
    /// itself (an event's envelope, or `{type, data}`), not a Socket.IO argument array.
    plain: Option<Range<usize>>,
}

impl Text {
    pub fn json(&self) -> &str {
        &self.frame[self.start..]
    }

    /// Whether this is a `/ws/json` frame, whose JSON is the envelope itself.
    pub fn is_plain(&self) -> bool {
        self.plain.is_some()
    }

    /// True when this event packet is named `name` (cheap: no JSON parse).
    pub fn is_event(&self, name: &str) -> bool {
        if let Some(kind) = &self.plain {
            return &self.frame[kind.clone()] == name;
        }
        let json = self.json();
        json.len() > name.len() + 3
            && json.starts_with("[\"")
            && json[2..].starts_with(name)
            && json[2 + name.len()..].starts_with('"')
    }

    /// An event's argument: `arg` of `[name, arg]`, or a `/ws/json` frame's `data`.
    pub fn event_arg(&self) -> anyhow::Result<Value> {
        self.nth(1)
    }

    /// An ack's answer: `answer` of `[answer]`, or a `/ws/json` ack's `data`.
    pub fn ack_answer(&self) -> anyhow::Result<Value> {
        self.nth(0)
    }

    fn nth(&self, arg: usize) -> anyhow::Result<Value> {
        let mut v: Value = serde_json::from_str(self.json())?;
        Ok(match self.plain {
            Some(_) => v["data"].take(),
            None => v[arg].take(),
        })
    }
}

impl Conn {
    /// Opens the Socket.IO WebSocket transport at `base` (`http://host:port`).
    pub async fn open(base: &str) -> anyhow::Result<Self> {
        Self::open_url(
            base,
            "/socket.io/?EIO=4&transport=websocket",
            Protocol::Socketio,
        )
        .await
    }

    /// Opens a connection at `base` speaking `protocol` and connects it with `auth`
    /// (`{token, since?, pid?, offset?}`): the Socket.IO CONNECT, or for `/ws/json` the
    /// upgrade itself with `?token=` and `?since=` (a refusal is the upgrade's error).
    pub async fn connect_with(
        base: &str,
        protocol: Protocol,
        auth: &Value,
    ) -> anyhow::Result<Self> {
        if protocol == Protocol::Socketio {
            let mut conn = Self::open(base).await?;
            conn.connect(auth).await?;
            return Ok(conn);
        }
        let token = auth["token"].as_str().unwrap_or("");
        let mut query = format!("/ws/json?token={}", percent_encoded(token));
        if let Some(since) = auth.get("since") {
            query.push_str("&since=");
            query.push_str(&percent_encoded(&since.to_string()));
        }
        Self::open_url(base, &query, protocol).await
    }

    async fn open_url(base: &str, path: &str, protocol: Protocol) -> anyhow::Result<Self> {
        let url = format!("{}{path}", base.replacen("http", "ws", 1));
        // Small buffers (tungstenite's defaults are 128 KiB each way, per socket) keep the
        // generator's memory low with 15,000 sockets; no Nagle: acks and pongs are tiny.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let connected =
            tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await;
        // Named without its query, which holds the token.
        let at = url.split('?').next().unwrap_or_default();
        let (ws, _) = match connected {
            // A refused handshake (`/ws/json`: 401, 429...): its error body says why.
            Err(tungstenite::Error::Http(refusal)) => {
                let body = refusal.body().as_deref().unwrap_or_default();
                anyhow::bail!(
                    "connecting to {at}: {} {}",
                    refusal.status(),
                    String::from_utf8_lossy(body)
                )
            }
            other => other.with_context(|| format!("connecting to {at}"))?,
        };
        Ok(Self {
            ws,
            protocol,
            // `/ws/json` command ids count from 1: the first `subscribe` is `{"id": 1, ...}`.
            next_ack: u64::from(protocol == Protocol::Json),
            partial: None,
        })
    }

    /// Sends the namespace CONNECT with `auth` as the handshake payload.
    pub async fn connect(&mut self, auth: &Value) -> anyhow::Result<()> {
        self.send(format!("40{auth}")).await
    }

    /// Emits `[event, data]` asking for an ack; returns the ack id to wait for.
    pub async fn emit_with_ack(&mut self, event: &str, data: &Value) -> anyhow::Result<u64> {
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = match self.protocol {
            Protocol::Socketio => format!("42{id}{}", json!([event, data])),
            Protocol::Json => json!({ "id": id, "type": event, "data": data }).to_string(),
        };
        self.send(packet).await?;
        Ok(id)
    }

    /// Sends the CONNECT of namespace `nsp` (`/name`) with `auth`.
    pub async fn connect_nsp(&mut self, nsp: &str, auth: &Value) -> anyhow::Result<()> {
        self.send(format!("40{nsp},{auth}")).await
    }

    /// Emits `[event, <bytes>]` in namespace `nsp` as a binary event; with `ack`, asks for
    /// an ack and returns its id.
    pub async fn emit_binary(
        &mut self,
        nsp: &str,
        event: &str,
        bytes: Vec<u8>,
        ack: bool,
    ) -> anyhow::Result<Option<u64>> {
        let id = ack.then(|| {
            self.next_ack += 1;
            self.next_ack - 1
        });
        let id_text = id.map(|i| i.to_string()).unwrap_or_default();
        let head = format!("451-{nsp},{id_text}[\"{event}\",{PLACEHOLDER}]");
        self.send_with_attachment(head, bytes).await?;
        Ok(id)
    }

    /// Answers the server's ack request `id` in namespace `nsp` with `[<bytes>]`.
    pub async fn ack_binary(&mut self, nsp: &str, id: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        let head = format!("461-{nsp},{id}[{PLACEHOLDER}]");
        self.send_with_attachment(head, bytes).await
    }

    /// The packet's text frame and its attachment, written together.
    async fn send_with_attachment(&mut self, head: String, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.feed(Message::text(head)).await?;
        Ok(self.ws.send(Message::binary(bytes)).await?)
    }

    /// Decodes one frame of a namespace connection, answering a heartbeat ping itself;
    /// `None` until a whole packet is in (a binary packet waits for its attachments).
    pub async fn decode_nsp(&mut self, msg: Message) -> anyhow::Result<Option<NspPacket>> {
        let frame = match msg {
            Message::Binary(bytes) => {
                let Some(mut packet) = self.partial.take() else {
                    anyhow::bail!("a binary frame without a packet announcing it");
                };
                packet.attachments.push(bytes);
                if packet.attachments.len() < packet.expected {
                    self.partial = Some(packet);
                    return Ok(None);
                }
                return Ok(Some(packet));
            }
            Message::Text(frame) => frame,
            Message::Close(_) => return Ok(Some(NspPacket::closed())),
            _ => return Ok(None),
        };
        match frame.as_bytes().first() {
            Some(b'2') => self.send("3".into()).await.map(|()| None),
            Some(b'1') => Ok(Some(NspPacket::closed())),
            Some(b'4') => {
                let packet = nsp_packet(&frame[1..]).context("a malformed Socket.IO packet")?;
                if packet.expected > 0 {
                    self.partial = Some(packet);
                    return Ok(None);
                }
                Ok(Some(packet))
            }
            _ => Ok(None),
        }
    }

    async fn send(&mut self, text: String) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    /// The next raw frame. Cancel-safe, so it can sit in a `select!`; pass what it returns
    /// to [`Conn::decode`].
    pub async fn recv(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        self.ws.next().await
    }

    /// Decodes one frame, answering a heartbeat ping itself (`None` then). (A `/ws/json`
    /// server pings at the WebSocket level: tungstenite answers while reading.)
    pub async fn decode(&mut self, msg: Message) -> anyhow::Result<Option<Packet>> {
        let frame = match msg {
            Message::Text(frame) => frame,
            Message::Close(_) => return Ok(Some(Packet::Disconnected)),
            _ => return Ok(None),
        };
        if self.protocol == Protocol::Json {
            return plain(frame).map(Some);
        }
        match frame.as_bytes().first() {
            Some(b'2') => self.send("3".into()).await.map(|()| None),
            Some(b'1') => Ok(Some(Packet::Disconnected)),
            Some(b'4') => Ok(socket_io(frame)),
            // 0 open, 3 pong, 6 noop: nothing to do.
            _ => Ok(None),
        }
    }

    /// The next Socket.IO packet; an error once the connection is gone.
    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            let msg = self.recv().await.context("connection closed")??;
            if let Some(packet) = self.decode(msg).await? {
                return Ok(packet);
            }
        }
    }
}

const PLACEHOLDER: &str = r#"{"_placeholder":true,"num":0}"#;

impl NspPacket {
    /// The connection closed (a WebSocket close, or an Engine.IO close packet): a
    /// DISCONNECT whose text says so (a Socket.IO one has none).
    fn closed() -> Self {
        Self {
            kind: b'1',
            id: None,
            json: "the connection was closed".into(),
            expected: 0,
            attachments: Vec::new(),
        }
    }
}

/// `<type>[<attachments>-][<nsp>,][<ack id>]<json>`, the namespace dropped (a connection
/// here has one).
fn nsp_packet(text: &str) -> Option<NspPacket> {
    let kind = *text.as_bytes().first()?;
    let mut rest = &text[1..];
    let mut expected = 0;
    if matches!(kind, b'5' | b'6') {
        let dash = rest.find('-')?;
        expected = rest[..dash].parse().ok()?;
        rest = &rest[dash + 1..];
    }
    if rest.starts_with('/') {
        rest = rest.find(',').map_or("", |comma| &rest[comma + 1..]);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse().ok();
    Some(NspPacket {
        kind,
        id,
        json: rest[digits..].to_owned(),
        expected,
        attachments: Vec::with_capacity(expected),
    })
}

/// A `/ws/json` frame: `{"type":"ack","id","data"}` answers the command `id`; anything else
/// (an envelope, named by its `type`, or a notice `{type, data}`) is an event.
fn plain(frame: Utf8Bytes) -> anyhow::Result<Packet> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct AckId {
        id: u64,
    }
    let head: Head = serde_json::from_str(&frame).context("a /ws/json frame without a type")?;
    let kind = match head.kind {
        // Where the name is in the frame, so that `is_event` needs no parse.
        Cow::Borrowed(name) => {
            let start = name.as_ptr() as usize - frame.as_ptr() as usize;
            start..start + name.len()
        }
        // An escaped name (none the bench waits for): matches nothing.
        Cow::Owned(_) => 0..0,
    };
    let is_ack = &frame[kind.clone()] == "ack";
    let text = Text {
        frame,
        start: 0,
        plain: Some(kind),
    };
    if is_ack {
        let AckId { id } = serde_json::from_str(text.json()).context("an ack without our id")?;
        return Ok(Packet::Ack(id, text));
    }
    Ok(Packet::Event(text))
}

/// `text` with every byte but the URL-unreserved ones percent-encoded (a query value).
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Socket.IO packet inside an Engine.IO message (`4<type>[<ack id>]<json>`).
fn socket_io(frame: Utf8Bytes) -> Option<Packet> {
    let bytes = frame.as_bytes();
    let kind = *bytes.get(1)?;
    let digits = bytes[2..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&bytes[2..2 + digits])
        .ok()?
        .parse()
        .ok();
    let text = Text {
        start: 2 + digits,
        frame,
        plain: None,
    };
    match kind {
        b'0' => Some(Packet::Connected(text)),
        b'1' => Some(Packet::Disconnected),
        b'2' => Some(Packet::Event(text)),
        b'3' => Some(Packet::Ack(id?, text)),
        b'4' => Some(Packet::Refused(text)),
        _ => None,
    }
}
