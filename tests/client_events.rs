//! Clients publish into their rooms (`publish`): permissions from `[client_events]` and the
//! token, every refusal's code, `from` set by the server, echo, volatile events kept out of
//! history, numbered ones recovered, and delivery across a cluster in `seq` order.

mod common;

use common::*;
use roomcast::rooms::{Grant, Id};
use serde_json::{Value, json};

/// Chat and typing in `project:` rooms, a schema for `chat.message`, 256 bytes of data.
fn config() -> String {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-client-events-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("chat.message.json");
    std::fs::write(
        &schema,
        json!({
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "maxLength": 100}}
        })
        .to_string(),
    )
    .unwrap();
    format!(
        "[client_events]\nrooms = [\"project\"]\nevents = [\"chat.*\", \"typing.*\"]\nmax_bytes = 256\n\
         [client_events.schemas]\n\"chat.message\" = {:?}\n",
        schema.display().to_string()
    )
}

/// A token for `sub` in the default tenant granting `projects`, with a `publish` claim
/// when given.
fn member_token(sub: &str, projects: &[&str], publish: Option<Value>) -> String {
    let mut c = claims(sub);
    c.projects = Grant::Some(projects.iter().map(|p| Id::parse(p).unwrap()).collect());
    c.publish = publish.map(|p| serde_json::from_value(p).unwrap());
    token(&c)
}

async fn member(server: &TestServer, sub: &str) -> Client {
    let mut c = server.connect(&member_token(sub, &["1", "2"], None)).await;
    assert_eq!(c.subscribe("project:1").await["ok"], true);
    c
}

async fn publish(c: &mut Client, body: Value) -> Value {
    c.emit_with_ack("publish", body).await
}

fn chat(text: &str) -> Value {
    json!({"room": "project:1", "event": "chat.message", "data": {"text": text}})
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{ack}"))
}

#[tokio::test]
async fn with_the_defaults_nobody_may_publish() {
    let server = TestServer::start().await;
    let mut c = member(&server, "alice").await;
    let ack = publish(&mut c, chat("hi")).await;
    assert_eq!(code(&ack), "forbidden", "{ack}");
    assert_eq!(ack["error"]["room"], "project:1");
}

#[tokio::test]
async fn every_refusal_has_its_code() {
    let server = TestServer::start_with(&config()).await;
    let mut c = member(&server, "alice").await;
    let cases = [
        // A room kind not in client_events.rooms.
        (
            json!({"room": "global", "event": "chat.message", "data": {"text": "x"}}),
            "forbidden",
        ),
        // Not granted by the token (checked before the subscription).
        (
            json!({"room": "project:3", "event": "chat.message", "data": {"text": "x"}}),
            "forbidden",
        ),
        (
            json!({"room": "project:2", "event": "chat.message", "data": {"text": "x"}}),
            "not_subscribed",
        ),
        (
            json!({"room": "nowhere", "event": "chat.message", "data": {}}),
            "invalid_room",
        ),
        (
            json!({"room": "project:1", "event": "deploy.done", "data": {}}),
            "event_not_allowed",
        ),
        (
            json!({"room": "project:1", "event": "presence.joined", "data": {}}),
            "event_not_allowed",
        ),
        (
            json!({"room": "project:1", "event": "Chat Message", "data": {}}),
            "event_not_allowed",
        ),
        (
            json!({"room": "project:1", "event": "project.updated", "data": {}}),
            "event_not_allowed",
        ),
        (
            json!({"room": "project:1", "event": "typing.start", "data": "x".repeat(300)}),
            "payload_too_large",
        ),
        (
            json!({"room": "project:1", "event": "chat.message", "data": {"text": 5}}),
            "invalid_payload",
        ),
        (json!({"room": "project:1"}), "invalid_payload"),
        (
            json!({"room": "project:1", "event": "chat.x", "data": 1, "extra": true}),
            "invalid_payload",
        ),
    ];
    for (body, expected) in cases {
        let ack = publish(&mut c, body.clone()).await;
        assert_eq!(ack["ok"], false, "{body} → {ack}");
        assert_eq!(code(&ack), expected, "{body} → {ack}");
    }
    // The schema's failing field is named by its JSON pointer.
    let ack = publish(&mut c, chat(&"y".repeat(101))).await;
    assert_eq!(code(&ack), "invalid_payload");
    assert_eq!(ack["error"]["field"], "/text", "{ack}");
    // Nothing refused was delivered: the first event of the room is the one allowed.
    let ack = publish(&mut c, chat("fine")).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");
}

#[tokio::test]
async fn the_tokens_publish_claim_narrows_the_rooms() {
    let server = TestServer::start_with(&config()).await;
    let mut narrow = server
        .connect(&member_token(
            "carol",
            &["1", "2"],
            Some(json!(["project:2"])),
        ))
        .await;
    for room in ["project:1", "project:2"] {
        assert_eq!(narrow.subscribe(room).await["ok"], true);
    }
    let ack = publish(&mut narrow, chat("no")).await;
    assert_eq!(code(&ack), "forbidden", "{ack}");
    let mut into_two = chat("yes");
    into_two["room"] = "project:2".into();
    assert_eq!(publish(&mut narrow, into_two).await["ok"], true);

    let mut star = server
        .connect(&member_token("dave", &["1"], Some(json!("*"))))
        .await;
    star.subscribe("project:1").await;
    assert_eq!(publish(&mut star, chat("all")).await["ok"], true);
    let mut wildcard = server
        .connect(&member_token("erin", &["1"], Some(json!(["project:*"]))))
        .await;
    wildcard.subscribe("project:1").await;
    assert_eq!(publish(&mut wildcard, chat("all")).await["ok"], true);
}

#[tokio::test]
async fn the_event_budget_answers_rate_limited() {
    let server = TestServer::start_with(&format!(
        "{}\n[limits]\nevents_per_sec = 1\nevents_burst = 3\n",
        config()
    ))
    .await;
    let mut c = member(&server, "alice").await; // the subscribe spent one
    let mut codes = Vec::new();
    for i in 0..4 {
        let ack = publish(&mut c, chat(&format!("m{i}"))).await;
        codes.push(ack["error"]["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert_eq!(codes, ["ok", "ok", "rate_limited", "rate_limited"]);
}

#[tokio::test]
async fn others_receive_it_from_the_server_and_the_sender_only_with_echo() {
    let server = TestServer::start_with(&config()).await;
    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let alice_sid = alice.established["sid"].clone();

    // A `from` in the data stays in the data: the envelope's is the server's.
    let spoof = json!({"room": "project:1", "event": "chat.message",
        "data": {"text": "hi", "from": {"user_id": "mallory", "sid": "x"}}});
    let ack = publish(&mut alice, spoof).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let got = bob.event("chat.message").await;
    assert_eq!(got["id"], ack["id"]);
    assert_eq!(got["seq"], ack["seq"]);
    assert_eq!(got["room"], "project:1");
    assert_eq!(got["from"], json!({"user_id": "alice", "sid": alice_sid}));
    assert_eq!(got["data"]["from"]["user_id"], "mallory");
    assert_eq!(got["data"]["text"], "hi");
    server.publish_marker().await;
    alice
        .assert_not_before("chat.message", "system.notification")
        .await;

    let ack = publish(
        &mut alice,
        json!({"room": "project:1", "event": "chat.message",
        "data": {"text": "me too"}, "echo": true}),
    )
    .await;
    let mine = alice.event("chat.message").await;
    assert_eq!(mine["id"], ack["id"]);
    assert_eq!(mine["from"]["sid"], alice_sid);
    assert_eq!(bob.event("chat.message").await["id"], ack["id"]);

    // Counted like other publishes, under one label for every client event, in the tenant.
    let (status, metrics) = server.get_text("/metrics", Some(READ_KEY)).await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("roomcast_events_published_total") && l.contains("type=\"client\""))
        .unwrap_or_else(|| panic!("no client events counted:\n{metrics}"));
    assert!(line.contains("tenant=\"default\""), "{line}");
    assert!(line.ends_with(" 2"), "{line}");
}

#[tokio::test]
async fn volatile_events_are_neither_numbered_nor_kept() {
    let server = TestServer::start_with(&config()).await;
    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    let typing =
        json!({"room": "project:1", "event": "typing.start", "data": {}, "volatile": true});
    let ack = publish(&mut alice, typing).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack.get("seq").is_none(), "{ack}");
    let got = bob.event("typing.start").await;
    assert_eq!(got["id"], ack["id"]);
    assert!(got.get("seq").is_none(), "{got}");
    assert_eq!(got["from"]["user_id"], "alice");

    let page = bob
        .emit_with_ack("history", json!({"room": "project:1"}))
        .await;
    assert_eq!(page["events"], json!([]), "{page}");
    // A reconnect from before it replays nothing.
    let position = &bob.established["positions"]["user:bob"];
    assert!(position.is_object());
    let since = json!({"token": member_token("bob", &["1"], None),
        "since": {"project:1": {"epoch": page["epoch"], "seq": 0}}});
    let mut again = Client::connect(server.addr, Auth::Payload(since))
        .await
        .unwrap();
    assert_eq!(again.established["recovery"]["project:1"]["replayed"], 0);
    server.publish_marker().await;
    again
        .assert_not_before("typing.start", "system.notification")
        .await;
}

#[tokio::test]
async fn numbered_events_are_kept_and_recovered_after_a_reconnect() {
    let server = TestServer::start_with(&config()).await;
    let mut alice = member(&server, "alice").await;
    let mut bob = member(&server, "bob").await;
    publish(&mut alice, chat("one")).await;
    let first = bob.event("chat.message").await;
    assert_eq!(first["seq"], 1);
    drop(bob); // the connection dies

    let mut missed = Vec::new();
    for text in ["two", "three"] {
        missed.push(publish(&mut alice, chat(text)).await);
    }
    let since = json!({"token": member_token("bob", &["1"], None),
        "since": {"project:1": {"epoch": first["epoch"], "seq": first["seq"]}}});
    let mut bob = Client::connect(server.addr, Auth::Payload(since))
        .await
        .unwrap();
    assert_eq!(bob.established["recovery"]["project:1"]["replayed"], 2);
    for (ack, text) in missed.iter().zip(["two", "three"]) {
        let got = bob.event("chat.message").await;
        assert_eq!(got["id"], ack["id"]);
        assert_eq!(got["seq"], ack["seq"]);
        assert_eq!(got["data"]["text"], text);
        assert_eq!(got["from"]["user_id"], "alice");
    }
    let page = bob
        .emit_with_ack("history", json!({"room": "project:1"}))
        .await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3), "{page}");
}

#[tokio::test]
async fn across_a_cluster_in_seq_order_without_the_sender() {
    let redis = RedisServer::start().await;
    let prefix = format!("ce{:08x}", rand::random::<u32>());
    let a = TestServer::start_cluster_node_with("a", &redis, &prefix, &config()).await;
    let b = TestServer::start_cluster_node_with("b", &redis, &prefix, &config()).await;
    let mut alice = member(&a, "alice").await;
    let mut neighbour = member(&a, "nina").await;
    let mut bob = member(&b, "bob").await;

    let mut acks = Vec::new();
    for i in 0..10 {
        acks.push(publish(&mut alice, chat(&format!("m{i}"))).await);
    }
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(ack["seq"], i as u64 + 1, "{ack}");
        for c in [&mut bob, &mut neighbour] {
            let got = c.event("chat.message").await;
            assert_eq!(got["id"], ack["id"]);
            assert_eq!(got["seq"], i as u64 + 1);
            assert_eq!(got["data"]["text"], format!("m{i}"));
            assert_eq!(got["from"]["user_id"], "alice");
        }
    }
    a.publish_marker().await;
    alice
        .assert_not_before("chat.message", "system.notification")
        .await;

    // With echo the sender has it too; volatile events cross nodes unnumbered.
    let ack = publish(
        &mut alice,
        json!({"room": "project:1", "event": "chat.message",
        "data": {"text": "echo"}, "echo": true}),
    )
    .await;
    assert_eq!(alice.event("chat.message").await["id"], ack["id"]);
    assert_eq!(bob.event("chat.message").await["seq"], 11);
    let ack = publish(
        &mut bob,
        json!({"room": "project:1", "event": "typing.start",
        "data": {}, "volatile": true}),
    )
    .await;
    let got = alice.event("typing.start").await;
    assert_eq!(got["id"], ack["id"]);
    assert!(got.get("seq").is_none(), "{got}");
    b.publish_marker().await;
    bob.assert_not_before("typing.start", "system.notification")
        .await;
}
