//! Several nodes on one real Redis behave as one server: delivery, presence and kicks cross
//! nodes, and a Redis outage is survived and visible.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn prefix() -> String {
    format!("test{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id()
}

async fn member(node: &TestServer, sub: &str, tenant: &str, projects: &[&str]) -> Client {
    let t = token_for(sub, tenant, projects);
    node.connect(&t).await
}

async fn stats(node: &TestServer) -> Value {
    node.get("/api/v1/websocket/stats", Some(KEY)).await.1
}

#[tokio::test]
async fn an_event_published_at_one_node_reaches_every_node() {
    let redis = RedisServer::start().await;
    let p = prefix();
    let a = TestServer::start_cluster_node("a", &redis, &p).await;
    let b = TestServer::start_cluster_node("b", &redis, &p).await;
    let c = TestServer::start_cluster_node("c", &redis, &p).await;

    let mut on_b = member(&b, "u1", "acme", &["1"]).await;
    let mut on_c = member(&c, "u2", "acme", &["1"]).await;
    let mut other_tenant = member(&c, "u3", "globex", &["1"]).await;
    for s in [&mut on_b, &mut on_c, &mut other_tenant] {
        assert_eq!(s.subscribe("project:1").await["ok"], true);
    }
    // ACL holds on every node.
    assert_eq!(
        on_b.subscribe("project:2").await["error"]["code"],
        "forbidden"
    );

    let (status, published) = a
        .post(
            "/api/v1/events",
            json!({"type": "project.updated", "tenant": "acme", "data": {"project_id": 1}}),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    for s in [&mut on_b, &mut on_c] {
        let e = s.event("project.updated").await;
        assert_eq!(e["id"], published["id"]);
        assert_eq!(e["room"], "project:1");
    }
    // globex's socket on node c saw nothing, as its own tenant's marker proves.
    a.post(
        "/api/v1/events",
        json!({"type": "system.notification", "tenant": "globex", "data": {"title": "t", "message": "m"}}),
    )
    .await;
    other_tenant
        .assert_not_before("project.updated", "system.notification")
        .await;

    // Stats and presence count the whole cluster.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = stats(&a).await;
        let nodes: Vec<&str> = s["cluster"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap())
            .collect();
        if nodes == ["a", "b", "c"] && s["cluster"]["connections"] == 3 {
            assert_eq!(s["cluster"]["users"], 3);
            assert_eq!(s["cluster"]["redis"], "up");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, presence) = a
        .get("/api/v1/rooms/project:1/presence?tenant=acme", Some(KEY))
        .await;
    assert_eq!(
        presence["users"],
        json!([{"user_id": "u1", "connections": 1}, {"user_id": "u2", "connections": 1}])
    );
}

#[tokio::test]
async fn kicking_a_user_reaches_every_node() {
    let redis = RedisServer::start().await;
    let p = prefix();
    let a = TestServer::start_cluster_node("a", &redis, &p).await;
    let b = TestServer::start_cluster_node("b", &redis, &p).await;
    let mut on_a = member(&a, "alice", "default", &[]).await;
    let mut on_b = member(&b, "alice", "default", &[]).await;
    let mut bob = member(&b, "bob", "default", &[]).await;
    let (status, body) = a.post("/api/v1/users/alice/disconnect", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 2);
    assert!(on_a.closed().await);
    assert!(on_b.closed().await);
    assert_eq!(bob.emit_with_ack("ping", json!(null)).await["pong"], true);
}

#[tokio::test]
async fn kicking_a_user_finds_them_by_identity_on_another_node() {
    let redis = RedisServer::start().await;
    let p = prefix();
    let a = TestServer::start_cluster_node("a", &redis, &p).await;
    let b = TestServer::start_cluster_node("b", &redis, &p).await;
    let mut alice = member(&b, "alice", "default", &[]).await;
    // Leaving the user room is refused, so events for alice keep reaching her.
    let ack = alice
        .emit_with_ack("unsubscribe", json!({"room": "user:alice"}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    // An admin on either node watching alice's room is not alice.
    let mut admin_claims = claims("root");
    admin_claims.role = Some("admin".into());
    let mut admin_b = b.connect(&token(&admin_claims)).await;
    assert_eq!(admin_b.subscribe("user:alice").await["ok"], true);
    let mut admin_a = a.connect(&token(&admin_claims)).await;
    assert_eq!(admin_a.subscribe("user:alice").await["ok"], true);

    let (status, body) = a.post("/api/v1/users/alice/disconnect", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disconnected"], 1, "{body}");
    assert!(alice.closed().await);
    assert_eq!(
        admin_b.emit_with_ack("ping", json!(null)).await["pong"],
        true
    );
    assert_eq!(
        admin_a.emit_with_ack("ping", json!(null)).await["pong"],
        true
    );
}

#[tokio::test]
async fn presence_is_announced_once_per_user_across_nodes() {
    let redis = RedisServer::start().await;
    let p = prefix();
    let a = TestServer::start_cluster_node("a", &redis, &p).await;
    let b = TestServer::start_cluster_node("b", &redis, &p).await;
    let mut watcher = member(&a, "watcher", "default", &["1"]).await;
    watcher.subscribe("project:1").await;
    watcher.event("presence.joined").await;

    let mut alice_a = member(&a, "alice", "default", &["1"]).await;
    let mut alice_b = member(&b, "alice", "default", &["1"]).await;
    alice_a.subscribe("project:1").await;
    alice_b.subscribe("project:1").await;
    assert_eq!(
        watcher.event("presence.joined").await["data"]["user_id"],
        "alice"
    );
    drop(alice_a);
    drop(alice_b);
    assert_eq!(
        watcher.event("presence.left").await["data"]["user_id"],
        "alice"
    );
    a.publish_marker().await;
    watcher.event("system.notification").await;
    let extra: Vec<_> = watcher
        .received()
        .into_iter()
        .filter(|e| e.starts_with("presence."))
        .collect();
    assert!(extra.is_empty(), "{extra:?}");
}

#[tokio::test]
async fn a_redis_outage_is_survived_and_visible() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let p = prefix();
    let a = TestServer::start_cluster_node("a", &redis, &p).await;
    let b = TestServer::start_cluster_node("b", &redis, &p).await;
    let mut on_b = member(&b, "u", "default", &["1"]).await;
    on_b.subscribe("project:1").await;
    let publish = json!({"type": "project.updated", "data": {"project_id": 1}});

    redis.kill();
    a.until_ready(false).await;
    let (status, body) = a.post("/api/v1/events", publish.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("cluster_unavailable"))
    );
    // The node itself still serves its local sockets.
    assert_eq!(on_b.emit_with_ack("ping", json!(null)).await["pong"], true);

    let _redis = RedisServer::start_on(port).await;
    a.until_ready(true).await;
    b.until_ready(true).await;
    let (status, body) = a.post("/api/v1/events", publish).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(on_b.event("project.updated").await["id"], body["id"]);
}

#[tokio::test]
async fn a_node_starts_while_redis_is_down_and_joins_later() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = prefix();
    let node = TestServer::start_node(
        "late",
        &format!("[cluster]\nredis_url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"{p}\""),
    )
    .await;
    node.until_ready(false).await;
    let (_, ready) = node.get("/ready", None).await;
    assert!(
        ready["reason"].as_str().unwrap().contains("redis"),
        "{ready}"
    );
    // Its own sockets connect and subscribe meanwhile, at once, without positions.
    let started = std::time::Instant::now();
    let mut local = member(&node, "v", "default", &["1"]).await;
    assert_eq!(local.established["positions"], json!({}));
    let ack = local.subscribe("project:1").await;
    assert_eq!((&ack["ok"], &ack["positions"]), (&json!(true), &json!({})));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let redis = RedisServer::start_on(port).await;
    node.until_ready(true).await;
    let peer = TestServer::start_cluster_node("peer", &redis, &p).await;
    let mut s = member(&peer, "u", "default", &["1"]).await;
    s.subscribe("project:1").await;
    let (status, body) = node
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": 1}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(s.event("project.deleted").await["id"], body["id"]);
}

#[tokio::test]
async fn nodes_work_on_a_redis_cluster() {
    let redis = RedisCluster::start().await;
    let p = prefix();
    let a = TestServer::start_cluster_node_on("a", &redis.urls(), "cluster", &p, "").await;
    let b = TestServer::start_cluster_node_on("b", &redis.urls(), "cluster", &p, "").await;
    let mut watcher = member(&a, "watcher", "default", &["1"]).await;
    watcher.subscribe("project:1").await;
    watcher.event("presence.joined").await;
    let mut on_b = member(&b, "alice", "default", &["1"]).await;
    on_b.subscribe("project:1").await;
    // Presence is shared (the scripts run on one shard under a hash tag)...
    assert_eq!(
        watcher.event("presence.joined").await["data"]["user_id"],
        "alice"
    );
    // ...delivery crosses nodes over sharded pub/sub...
    let (status, body) = a
        .post(
            "/api/v1/events",
            json!({"type": "project.deleted", "data": {"project_id": 1}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let e = on_b.event("project.deleted").await;
    assert_eq!(e["id"], body["id"]);
    // ...events are numbered in Redis (streams and scripts on one shard)...
    assert_eq!(e["seq"], 1, "{e}");
    let (_, page) = b
        .get("/api/v1/rooms/project:1/history", Some(READ_KEY))
        .await;
    assert_eq!(page["events"][0]["id"], body["id"], "{page}");
    // ...and so do kicks.
    let (_, kicked) = a.post("/api/v1/users/alice/disconnect", json!({})).await;
    assert_eq!(kicked["disconnected"], 1);
    assert!(on_b.closed().await);
    assert_eq!(
        watcher.event("presence.left").await["data"]["user_id"],
        "alice"
    );
}
