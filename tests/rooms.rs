//! Room commands: access by claims, all-or-nothing lists, limits, malformed input, and
//! tenant isolation of delivery.

mod common;

use common::*;
use roomcast::rooms::Grant;
use serde_json::json;

async fn connect(server: &TestServer, t: String) -> Client {
    server.connect(&t).await
}

#[tokio::test]
async fn access_follows_the_claims() {
    let server = TestServer::start().await;
    let mut c = connect(&server, token_for("alice", "default", &["1", "2"])).await;
    for room in ["project:1", "project:2", "user:alice", "global"] {
        let ack = c.subscribe(room).await;
        assert_eq!((&ack["ok"], &ack["rooms"]), (&json!(true), &json!([room])));
        assert!(ack["positions"][room]["epoch"].is_string(), "{ack}");
    }
    for room in ["project:3", "user:bob", "agent:a1"] {
        let ack = c.subscribe(room).await;
        assert_eq!(ack["ok"], false, "{room}");
        assert_eq!(ack["error"]["code"], "forbidden");
        assert_eq!(ack["error"]["room"], room);
    }

    let mut star = claims("dave");
    star.projects = Grant::All;
    star.agents = Grant::All;
    let mut d = connect(&server, token(&star)).await;
    assert_eq!(d.subscribe("project:anything").await["ok"], true);
    assert_eq!(d.subscribe("agent:x").await["ok"], true);
    assert_eq!(d.subscribe("user:alice").await["ok"], false);

    let mut admin = claims("root");
    admin.role = Some("admin".into());
    let mut a = connect(&server, token(&admin)).await;
    for room in ["project:9", "agent:z", "user:alice"] {
        assert_eq!(a.subscribe(room).await["ok"], true, "{room}");
    }
}

#[tokio::test]
async fn invalid_names_and_payloads() {
    let server = TestServer::start().await;
    let mut c = connect(&server, token(&claims("alice"))).await;
    let long = format!("project:{}", "a".repeat(129));
    for room in [
        "project:",
        "foo:1",
        "project:a/b",
        "project:é",
        long.as_str(),
    ] {
        let ack = c.subscribe(room).await;
        assert_eq!(ack["error"]["code"], "invalid_room", "{room}");
    }
    for payload in [
        json!("project:1"),
        json!(5),
        json!({}),
        json!({"room": 5}),
        json!({"rooms": []}),
        json!({"room": "global", "rooms": ["global"]}),
        json!({"room": "global", "extra": 1}),
    ] {
        let ack = c.emit_with_ack("subscribe", payload.clone()).await;
        assert_eq!(ack["error"]["code"], "invalid_payload", "{payload}");
    }
    // Still connected and answering.
    assert_eq!(c.emit_with_ack("ping", json!(null)).await["pong"], true);
    let ack = c.emit_with_ack("no.such.command", json!({})).await;
    assert_eq!(ack["error"]["code"], "unknown_command");
}

#[tokio::test]
async fn failures_without_ack_become_error_events() {
    let server = TestServer::start().await;
    let mut c = connect(&server, token(&claims("alice"))).await;
    c.emit("subscribe", json!({"room": "project:1"})).await;
    let e = c.event("error").await;
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["room"], "project:1");
    c.emit("subscribe", json!(42)).await;
    assert_eq!(c.event("error").await["code"], "invalid_payload");
}

#[tokio::test]
async fn lists_are_all_or_nothing() {
    let server = TestServer::start().await;
    let mut c = connect(&server, token_for("alice", "default", &["1"])).await;
    let ack = c
        .emit_with_ack("subscribe", json!({"rooms": ["project:1", "project:2"]}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden");
    assert_eq!(ack["error"]["room"], "project:2");
    // project:1 was not joined: an event there does not arrive before one to user:alice.
    server
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": 1}}),
        )
        .await;
    server
        .post(
            "/api/v1/events",
            json!({"type": "ai.suggestion", "data": {"suggestion_id": "s", "content": "c", "user_id": "alice"}}),
        )
        .await;
    c.assert_not_before("project.deleted", "ai.suggestion")
        .await;
}

#[tokio::test]
async fn room_limit_counts_every_room() {
    let server = TestServer::start_with("[limits]\nmax_rooms_per_socket = 4").await;
    let mut c = connect(&server, token_for("alice", "default", &["*"])).await;
    // global + user:alice + 2 more = 4.
    let ack = c
        .emit_with_ack("subscribe", json!({"rooms": ["project:1", "project:2"]}))
        .await;
    assert_eq!(ack["ok"], true);
    // Re-subscribing to a room already joined costs nothing.
    assert_eq!(c.subscribe("project:1").await["ok"], true);
    let ack = c.subscribe("project:3").await;
    assert_eq!(ack["error"]["code"], "too_many_rooms");
    assert_eq!(ack["error"]["room"], "project:3");
    // Leaving frees a place.
    let ack = c
        .emit_with_ack("unsubscribe", json!({"room": "project:2"}))
        .await;
    assert_eq!(ack, json!({"ok": true, "rooms": ["project:2"]}));
    assert_eq!(c.subscribe("project:3").await["ok"], true);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let mut c = connect(&server, token_for("alice", "default", &["1"])).await;
    c.subscribe("project:1").await;
    let publish = json!({"type": "project.updated", "data": {"project_id": 1}});
    server.post("/api/v1/events", publish.clone()).await;
    c.event("project.updated").await;
    c.emit_with_ack("unsubscribe", json!({"rooms": ["project:1"]}))
        .await;
    server.post("/api/v1/events", publish).await;
    server.publish_marker().await;
    c.assert_not_before("project.updated", "system.notification")
        .await;
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let server = TestServer::start().await;
    let mut acme = connect(&server, token_for("u1", "acme", &["1"])).await;
    let mut globex = connect(&server, token_for("u1", "globex", &["1"])).await;
    acme.subscribe("project:1").await;
    globex.subscribe("project:1").await;

    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.updated", "tenant": "acme", "data": {"project_id": 1}}),
        )
        .await;
    assert_eq!((status, body["tenant"].as_str()), (202, Some("acme")));
    server
        .post(
            "/api/v1/events",
            json!({"type": "system.notification", "tenant": "acme", "data": {"title": "t", "message": "m"}}),
        )
        .await;
    assert_eq!(acme.event("project.updated").await["room"], "project:1");
    acme.event("system.notification").await;

    // globex sees neither, as its own tenant's global event proves.
    server
        .post(
            "/api/v1/events",
            json!({"type": "system.notification", "tenant": "globex", "data": {"title": "g", "message": "m"}}),
        )
        .await;
    let g = globex.event("system.notification").await;
    assert_eq!(g["data"]["title"], "g");
    assert!(!globex.received().contains(&"project.updated".to_string()));

    // The same user id in another tenant is another user: user:u1 is scoped too.
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["tenants"], 2);
}
