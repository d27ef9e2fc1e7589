//! Presence on a single node: who is in a room, `presence.joined` once per user,
//! `presence.left` after the grace period unless the user comes back, and kicking a user.

mod common;

use common::*;
use serde_json::json;

async fn member(server: &TestServer, sub: &str, projects: &[&str]) -> Client {
    let t = token_for(sub, "default", projects);
    server.connect(&t).await
}

async fn presence_of(server: &TestServer, room: &str) -> serde_json::Value {
    let (status, body) = server
        .get(&format!("/api/v1/rooms/{room}/presence"), Some(KEY))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits, within the deadline, until the presence endpoint reports `connections` in `room`.
async fn until_connections(server: &TestServer, room: &str, connections: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let body = presence_of(server, room).await;
        if body["connections"] == connections {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{room}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn joined_once_per_user_and_left_after_the_grace() {
    let server = TestServer::start_with("[cluster]\npresence_grace_secs = 1").await;
    let mut watcher = member(&server, "watcher", &["1"]).await;
    watcher.subscribe("project:1").await;
    let joined = watcher.event("presence.joined").await;
    assert_eq!(
        joined["data"],
        json!({"user_id": "watcher", "room": "project:1"})
    );

    let mut a1 = member(&server, "alice", &["1"]).await;
    let mut a2 = member(&server, "alice", &["1"]).await;
    a1.subscribe("project:1").await;
    a2.subscribe("project:1").await;
    let joined = watcher.event("presence.joined").await;
    assert_eq!(joined["type"], "presence.joined");
    assert_eq!(joined["room"], "project:1");
    assert_eq!(joined["data"]["user_id"], "alice");

    let body = until_connections(&server, "project:1", 3).await;
    assert_eq!(
        body["users"],
        json!([{"user_id": "alice", "connections": 2}, {"user_id": "watcher", "connections": 1}])
    );
    // The socket command answers the same, for subscribers only.
    let ack = watcher
        .emit_with_ack("presence", json!({"room": "project:1"}))
        .await;
    assert_eq!(ack["ok"], true);
    assert_eq!(ack["connections"], 3);
    let ack = watcher
        .emit_with_ack("presence", json!({"room": "project:2"}))
        .await;
    assert_eq!(ack["error"]["code"], "not_subscribed");

    // One of alice's sockets leaves: she is still there, nothing is announced.
    drop(a1);
    until_connections(&server, "project:1", 2).await;
    // Both gone: one presence.left, after the grace period.
    a2.emit_with_ack("unsubscribe", json!({"room": "project:1"}))
        .await;
    let left = watcher.event("presence.left").await;
    assert_eq!(
        left["data"],
        json!({"user_id": "alice", "room": "project:1"})
    );
    let events = watcher.received();
    assert!(
        !events.iter().any(|e| e.starts_with("presence.")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_quick_reconnect_announces_nothing() {
    let server = TestServer::start_with("[cluster]\npresence_grace_secs = 1").await;
    let mut watcher = member(&server, "watcher", &["1"]).await;
    watcher.subscribe("project:1").await;
    watcher.event("presence.joined").await;
    let mut bob = member(&server, "bob", &["1"]).await;
    bob.subscribe("project:1").await;
    assert_eq!(
        watcher.event("presence.joined").await["data"]["user_id"],
        "bob"
    );
    drop(bob);
    until_connections(&server, "project:1", 1).await;
    let mut bob = member(&server, "bob", &["1"]).await;
    bob.subscribe("project:1").await;
    until_connections(&server, "project:1", 2).await;
    // Past the grace period: no presence.left, no second presence.joined.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.publish_marker().await;
    watcher.event("system.notification").await;
    let events = watcher.received();
    assert!(
        !events.iter().any(|e| e.starts_with("presence.")),
        "{events:?}"
    );
}

/// A client's `disconnect()` sends DISCONNECT and closes the transport right behind it.
/// socketioxide runs the disconnect handler in a task of its own, and the transport's close
/// takes the socket out of its adapter rooms meanwhile: the socket must stop counting all
/// the same, in its rooms as in the user count, or its user is a ghost in presence forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_disconnects_and_closes_at_once_stops_counting() {
    let server = TestServer::start().await;
    // Many sockets leaving together keep the server's workers busy, so the disconnect
    // handlers run late: without the fix most of them saw no rooms left.
    const SOCKETS: u64 = 50;
    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        let mut s = member(&server, &format!("u{i}"), &["1"]).await;
        assert_eq!(s.subscribe("project:1").await["ok"], true);
        sockets.push(s);
    }
    until_connections(&server, "project:1", SOCKETS).await;
    until_connections(&server, "global", SOCKETS).await;
    futures_util::future::join_all(sockets.into_iter().map(Client::disconnect)).await;
    until_connections(&server, "project:1", 0).await;
    until_connections(&server, "global", 0).await;
}

#[tokio::test]
async fn global_and_user_presence_and_stats() {
    let server = TestServer::start().await;
    let _a = member(&server, "alice", &[]).await;
    let _b = member(&server, "alice", &[]).await;
    let _c = member(&server, "carol", &[]).await;
    let body = until_connections(&server, "global", 3).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 2);
    let body = presence_of(&server, "user:alice").await;
    assert_eq!(
        body["users"],
        json!([{"user_id": "alice", "connections": 2}])
    );
    let (_, stats) = server.get("/api/v1/websocket/stats", Some(KEY)).await;
    assert_eq!(stats["cluster"]["mode"], "single");
    assert_eq!(stats["cluster"]["connections"], 3);
    assert_eq!(stats["cluster"]["users"], 2);
    assert_eq!(stats["cluster"]["nodes"][0]["node_id"], "test-node");
    // Another tenant's view is empty; a tenant-bound key cannot look elsewhere.
    let (status, body) = server
        .get("/api/v1/rooms/global/presence?tenant=acme", Some(KEY))
        .await;
    assert_eq!((status, body["connections"].as_u64()), (200, Some(0)));
    let (status, body) = server.get("/api/v1/rooms/nope/presence", Some(KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_room"))
    );
}

#[tokio::test]
async fn kicking_a_user_disconnects_all_their_sockets() {
    let server = TestServer::start().await;
    let mut a1 = member(&server, "alice", &[]).await;
    let mut a2 = member(&server, "alice", &[]).await;
    let mut bob = member(&server, "bob", &[]).await;
    let (status, body) = server
        .post("/api/v1/users/alice/disconnect", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"user_id": "alice", "tenant": "default", "disconnected": 2})
    );
    assert!(a1.closed().await);
    assert!(a2.closed().await);
    assert_eq!(bob.emit_with_ack("ping", json!(null)).await["pong"], true);
    let (status, _) = server
        .post_raw(
            "/api/v1/users/alice/disconnect",
            Some(READ_KEY),
            "{}".into(),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn rooms_past_the_announce_limit_announce_nothing() {
    let server = TestServer::start_with(
        "[limits]\npresence_announce_max_users = 2\n[cluster]\npresence_grace_secs = 1",
    )
    .await;
    let mut watcher = member(&server, "watcher", &["1"]).await;
    watcher.subscribe("project:1").await;
    assert_eq!(
        watcher.event("presence.joined").await["data"]["user_id"],
        "watcher"
    );
    let mut alice = member(&server, "alice", &["1"]).await;
    alice.subscribe("project:1").await;
    assert_eq!(
        watcher.event("presence.joined").await["data"]["user_id"],
        "alice"
    );
    // A third user makes the room too big to announce in...
    let mut bob = member(&server, "bob", &["1"]).await;
    bob.subscribe("project:1").await;
    until_connections(&server, "project:1", 3).await;
    server.publish_marker().await;
    watcher
        .assert_not_before("presence.joined", "system.notification")
        .await;
    // ...and its leave is not announced either; once back at two users, leaves are.
    drop(bob);
    until_connections(&server, "project:1", 2).await;
    drop(alice);
    let left = watcher.event("presence.left").await;
    assert_eq!(
        left["data"]["user_id"], "alice",
        "bob's leave was not announced: {left}"
    );
}
