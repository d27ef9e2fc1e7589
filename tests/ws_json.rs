//! The plain JSON WebSocket (`GET /ws/json`) over a real WebSocket client: how a connection
//! ends (token expiry, revocation, a drain: each with its notice and close code), and a
//! cluster where a connection's own publish skips it on every node while the other nodes'
//! connections and sockets get it. The JS and Python suites cover the rest of the protocol.

mod common;

use std::time::Duration;

use common::{DEADLINE, RedisServer, TestServer, claims, token, token_for};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

struct Json {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// What a connection read until it ended.
#[derive(Debug)]
struct Ended {
    /// The `type` of every message read.
    types: Vec<String>,
    /// The close frame's code and reason, if one came.
    close: Option<(u16, String)>,
}

impl Json {
    async fn open(server: &TestServer, token: &str) -> Self {
        let url = format!("ws://{}/ws/json?token={token}", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        let mut conn = Self { ws, next_id: 1 };
        let first = conn.next().await.expect("connection.established");
        assert_eq!(first["type"], "connection.established", "{first}");
        conn
    }

    /// The next message within the deadline; `None` once the connection is closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("nothing within the deadline")?;
            match message.ok()? {
                Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next message of `type`, skipping others.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let message = self
                .next()
                .await
                .unwrap_or_else(|| panic!("closed before {kind}"));
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Sends a command and returns its answer.
    async fn command(&mut self, kind: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "type": kind, "data": data});
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = self.next().await.expect("closed before the answer");
            if message["type"] == "ack" && message["id"] == id {
                return message["data"].clone();
            }
        }
    }

    /// Reads until the server closes the connection.
    async fn until_closed(&mut self) -> Ended {
        let mut ended = Ended {
            types: Vec::new(),
            close: None,
        };
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("still open after the deadline");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    ended
                        .types
                        .push(value["type"].as_str().unwrap_or("").to_owned());
                }
                Some(Ok(Message::Close(frame))) => {
                    ended.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return ended;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return ended,
            }
        }
    }
}

#[tokio::test]
async fn a_connection_ends_at_token_expiry_revocation_and_shutdown_with_its_code() {
    let mut server = TestServer::start().await;

    // Expiry (the test server has no leeway): auth.expiring, auth.expired, then 4001.
    let mut short = claims("alice");
    short.exp = roomcast::auth::jwt::now_secs() + 2;
    let mut expiring = Json::open(&server, &token(&short)).await;
    let ended = expiring.until_closed().await;
    assert_eq!(
        ended.types.last().map(String::as_str),
        Some("auth.expired"),
        "{ended:?}"
    );
    assert!(
        ended.types.contains(&"auth.expiring".to_owned()),
        "{ended:?}"
    );
    assert_eq!(ended.close, Some((4001, "token_expired".into())));

    // Revocation: the user's connection ends with 4003, counted; another user's goes on.
    let mut alice = Json::open(&server, &token_for("alice", "default", &[])).await;
    let mut bob = Json::open(&server, &token_for("bob", "default", &[])).await;
    let (status, body) = server
        .post("/api/v1/users/alice/disconnect", json!({}))
        .await;
    assert_eq!(
        (status, body["disconnected"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let ended = alice.until_closed().await;
    assert_eq!(ended.close, Some((4003, "disconnected".into())));
    server.publish_marker().await;
    bob.until("system.notification").await;

    // A drain: server.shutdown, then 1012 (service restart), and the drain does not wait.
    server.shutdown();
    let ended = bob.until_closed().await;
    assert_eq!(ended.types, ["server.shutdown"], "{ended:?}");
    assert_eq!(
        ended.close.map(|(code, _)| code),
        Some(u16::from(CloseCode::Restart))
    );
    assert!(server.stopped_within(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn in_a_cluster_a_publish_skips_its_sender_on_every_node_and_reaches_the_others() {
    let redis = RedisServer::start().await;
    let extra = "[client_events]\nrooms = [\"project\"]\nevents = [\"chat.*\"]\n";
    let a = TestServer::start_cluster_node_with("json-a", &redis, "json", extra).await;
    let b = TestServer::start_cluster_node_with("json-b", &redis, "json", extra).await;
    let alice = token_for("alice", "default", &["1"]);
    let bob = token_for("bob", "default", &["1"]);
    let mut sender = Json::open(&b, &alice).await;
    let mut here = Json::open(&b, &bob).await;
    let mut there = Json::open(&a, &bob).await;
    let mut socket = a.connect(&bob).await;
    for conn in [&mut sender, &mut here, &mut there] {
        let ack = conn
            .command("subscribe", json!({"room": "project:1"}))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    socket.subscribe("project:1").await;

    let ack = sender
        .command(
            "publish",
            json!({"room": "project:1", "event": "chat.message", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    for conn in [&mut here, &mut there] {
        let event = conn.until("chat.message").await;
        assert_eq!(
            (&event["data"]["text"], &event["room"], &event["seq"]),
            (&json!("hi"), &json!("project:1"), &ack["seq"]),
            "{event}"
        );
    }
    let event = socket.event("chat.message").await;
    assert_eq!(event["data"]["text"], "hi");

    // The sender: a marker published after its own event comes, its own event does not.
    let (status, _) = a
        .post(
            "/api/v1/broadcast",
            json!({"room": "project:1", "event": "marker", "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    loop {
        let message = sender.next().await.expect("open");
        assert_ne!(
            message["type"], "chat.message",
            "the sender got its own event"
        );
        if message["type"] == "marker" {
            break;
        }
    }
}
