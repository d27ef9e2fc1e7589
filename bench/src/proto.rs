//! Engine.IO v4 + Socket.IO v5 framing over one WebSocket, namespace `/` only: just enough
//! to connect with an auth payload, emit with an ack, answer heartbeats and read events.
//! Written by hand so the generator spends its CPU on sockets, not on a client library.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One Engine.IO connection. Dropping it closes the TCP connection without a Socket.IO
/// disconnect or Engine.IO close packet, as a client that loses its network would.
pub struct Conn {
    ws: Ws,
    next_ack: u64,
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
}

impl Text {
    pub fn json(&self) -> &str {
        &self.frame[self.start..]
    }

    /// True when this event packet is named `name` (cheap: no JSON parse).
    pub fn is_event(&self, name: &str) -> bool {
        let json = self.json();
        json.len() > name.len() + 3
            && json.starts_with("[\"")
            && json[2..].starts_with(name)
            && json[2 + name.len()..].starts_with('"')
    }
}

impl Conn {
    /// Opens the WebSocket transport at `base` (`http://host:port`).
    pub async fn open(base: &str) -> anyhow::Result<Self> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        // Small buffers (tungstenite's defaults are 128 KiB each way, per socket) keep the
        // generator's memory low with 15,000 sockets; no Nagle: acks and pongs are tiny.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self { ws, next_ack: 0 })
    }

    /// Sends the namespace CONNECT with `auth` as the handshake payload.
    pub async fn connect(&mut self, auth: &Value) -> anyhow::Result<()> {
        self.send(format!("40{auth}")).await
    }

    /// Emits `[event, data]` asking for an ack; returns the ack id to wait for.
    pub async fn emit_with_ack(&mut self, event: &str, data: &Value) -> anyhow::Result<u64> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(format!("42{id}{}", json!([event, data]))).await?;
        Ok(id)
    }

    async fn send(&mut self, text: String) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    /// The next raw frame. Cancel-safe, so it can sit in a `select!`; pass what it returns
    /// to [`Conn::decode`].
    pub async fn recv(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        self.ws.next().await
    }

    /// Decodes one frame, answering a heartbeat ping itself (`None` then).
    pub async fn decode(&mut self, msg: Message) -> anyhow::Result<Option<Packet>> {
        let frame = match msg {
            Message::Text(frame) => frame,
            Message::Close(_) => return Ok(Some(Packet::Disconnected)),
            _ => return Ok(None),
        };
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
