//! `POST /api/v1/users/{id}/disconnect` cannot be evaded: a user cannot leave `global` or
//! its own `user:` room, and is found by identity, so an admin watching `user:<id>` is not
//! disconnected with them. (Across nodes: `tests/cluster.rs`.)

mod common;

use common::*;
use serde_json::json;

fn forbidden(ack: &serde_json::Value, room: &str) {
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    assert_eq!(ack["error"]["room"], room, "{ack}");
}

#[tokio::test]
async fn a_user_cannot_leave_global_or_their_own_room_and_is_still_disconnected() {
    let server = TestServer::start().await;
    let mut alice = server.connect(&token_for("alice", "default", &["1"])).await;
    alice.subscribe("project:1").await;
    forbidden(
        &alice
            .emit_with_ack("unsubscribe", json!({"room": "user:alice"}))
            .await,
        "user:alice",
    );
    forbidden(
        &alice
            .emit_with_ack("unsubscribe", json!({"room": "global"}))
            .await,
        "global",
    );
    // All-or-nothing: the allowed room of the same request is kept too.
    forbidden(
        &alice
            .emit_with_ack("unsubscribe", json!({"rooms": ["project:1", "user:alice"]}))
            .await,
        "user:alice",
    );
    // Another user's room is not its own: leaving it (not being in it) is fine.
    let ack = alice
        .emit_with_ack("unsubscribe", json!({"room": "user:bob"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");

    // Events still arrive in all three rooms.
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "ai.suggestion", "data": {"suggestion_id": "s", "content": "c", "user_id": "alice"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(alice.event("ai.suggestion").await["room"], "user:alice");
    server.publish_marker().await;
    assert_eq!(alice.event("system.notification").await["room"], "global");
    let (status, body) = server
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": "1", "deleted_by": "u"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    alice.event("project.deleted").await;

    let (status, body) = server
        .post("/api/v1/users/alice/disconnect", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 1, "{body}");
    assert!(alice.closed().await);
}

#[tokio::test]
async fn disconnecting_a_user_spares_an_admin_in_their_room() {
    let server = TestServer::start().await;
    let mut alice = server.connect(&token_for("alice", "default", &[])).await;
    let mut c = claims("root");
    c.role = Some("admin".into());
    let mut admin = server.connect(&token(&c)).await;
    assert_eq!(admin.subscribe("user:alice").await["ok"], true);
    // Alice in another tenant is someone else.
    let mut other_alice = server.connect(&token_for("alice", "acme", &[])).await;

    let (status, body) = server
        .post("/api/v1/users/alice/disconnect", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 1, "{body}");
    assert!(alice.closed().await);
    assert_eq!(admin.emit_with_ack("ping", json!(null)).await["pong"], true);
    assert_eq!(
        other_alice.emit_with_ack("ping", json!(null)).await["pong"],
        true
    );
    // The admin still receives alice's events.
    let (status, _) = server
        .post(
            "/api/v1/events",
            json!({"type": "ai.suggestion", "data": {"suggestion_id": "s", "content": "c", "user_id": "alice"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(admin.event("ai.suggestion").await["room"], "user:alice");
}
